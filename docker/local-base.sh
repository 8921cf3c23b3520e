#!/usr/bin/env bash
# Builds a local stand-in for the official python:3.11-slim image, for machines that reach Debian's
# package mirror and PyPI but no image registry. Debian bookworm's python3 is CPython 3.11, so a
# minimal bookworm root file system with python3 + python3-venv is all the Dockerfile needs.
#
#   docker/local-base.sh [IMAGE]      (default IMAGE: musicrec/python:3.11-bookworm-local)
#
# The image is cached in the Docker engine: when IMAGE already exists nothing is rebuilt (set
# MUSICREC_REBUILD_BASE=1 to force). Runs as root (debootstrap, chroot). Environment:
#   DOCKER                 docker CLI to use (default: docker)
#   DEBIAN_MIRROR          default http://deb.debian.org/debian
#   DEBIAN_SECURITY_MIRROR default http://deb.debian.org/debian-security
#   HOST_CA_BUNDLE         CA bundle copied into the image so that TLS through this machine's
#                          intercepting proxy (if any) verifies; default: $PIP_CERT, $SSL_CERT_FILE,
#                          $REQUESTS_CA_BUNDLE or /etc/ssl/certs/ca-certificates.crt, the first that exists.
set -euo pipefail

IMAGE=${1:-musicrec/python:3.11-bookworm-local}
DOCKER=${DOCKER:-docker}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
SUITE=bookworm

log() { printf '[local-base] %s\n' "$*" >&2; }
die() { printf '[local-base] ERROR: %s\n' "$*" >&2; exit 1; }

if [[ ${MUSICREC_REBUILD_BASE:-0} != 1 ]] && $DOCKER image inspect "$IMAGE" >/dev/null 2>&1; then
    log "reusing cached base image $IMAGE"
    exit 0
fi
[[ $(id -u) == 0 ]] || die "building the local base image needs root (debootstrap, chroot)"

ca_bundle=${HOST_CA_BUNDLE:-}
if [[ -z $ca_bundle ]]; then
    for candidate in "${PIP_CERT:-}" "${SSL_CERT_FILE:-}" "${REQUESTS_CA_BUNDLE:-}" /etc/ssl/certs/ca-certificates.crt; do
        if [[ -n $candidate && -f $candidate ]]; then ca_bundle=$candidate; break; fi
    done
fi
[[ -n $ca_bundle && -f $ca_bundle ]] || die "no CA bundle found (set HOST_CA_BUNDLE)"

if ! command -v debootstrap >/dev/null; then
    log "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends debootstrap >/dev/null \
        || die "apt-get install debootstrap failed"
fi

rootfs=$(mktemp -d /var/tmp/musicrec-base.XXXXXX)
chmod 0755 "$rootfs"  # becomes the image's "/": mktemp's 0700 would lock out non-root users
build_log="$rootfs.log"  # beside the root file system, not in it
mounted=()
cleanup() {
    local m
    for m in "${mounted[@]}"; do umount -l "$m" 2>/dev/null || true; done
    rm -rf --one-file-system "$rootfs" "$build_log"
}
# fail WHAT: the end of the build log, then die.
fail() { tail -30 "$build_log" >&2; die "$1 (log above)"; }
trap cleanup EXIT

log "debootstrap $SUITE (minbase + python3, python3-venv, ca-certificates) from $MIRROR"
started=$SECONDS
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    "$SUITE" "$rootfs" "$MIRROR" >>"$build_log" 2>&1 || fail "debootstrap failed"

# Same sources as the official Debian images, so that the build stage's apt-get sees security
# updates and gets python3-dev matching the installed python3.11.
cat >"$rootfs/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $SECURITY_MIRROR $SUITE-security main
EOF
# Like the official slim images: no docs, man pages or translations from later installs.
cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
EOF
cat >"$rootfs/etc/apt/apt.conf.d/docker-slim" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
EOF

log "upgrading to $SUITE-updates / $SUITE-security"
cp /etc/resolv.conf "$rootfs/etc/resolv.conf"
mount -t proc proc "$rootfs/proc" && mounted+=("$rootfs/proc")
chroot "$rootfs" /bin/sh -c 'export DEBIAN_FRONTEND=noninteractive &&
    apt-get update -qq && apt-get -y -qq -o Dpkg::Options::=--force-confold upgrade' \
    >>"$build_log" 2>&1 || fail "apt-get upgrade inside the new root file system failed"

# This machine's CA bundle (it may hold the CA of an intercepting proxy): added as a local CA so
# that update-ca-certificates keeps it in every later rebuild of the system bundle.
install -m 0644 "$ca_bundle" "$rootfs/usr/local/share/ca-certificates/musicrec-build-host.crt"
chroot "$rootfs" update-ca-certificates >>"$build_log" 2>&1 || fail "update-ca-certificates failed"
cat >"$rootfs/etc/pip.conf" <<'EOF'
[global]
cert = /etc/ssl/certs/ca-certificates.crt
EOF
umount "$rootfs/proc" && mounted=()

# The official image's conveniences: `python` on PATH.
ln -sf /usr/bin/python3 "$rootfs/usr/local/bin/python"
ln -sf /usr/bin/python3 "$rootfs/usr/local/bin/python3"
chroot "$rootfs" apt-get clean >>"$build_log" 2>&1
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/log/*.log \
    "$rootfs"/usr/share/doc/*/changelog* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
    "$rootfs"/usr/share/locale/* "$rootfs"/tmp/* "$rootfs"/root/.cache
: >"$rootfs/etc/resolv.conf"

version=$(chroot "$rootfs" python3 -c 'import platform; print(platform.python_version())')
log "importing as $IMAGE (python $version)"
tar --numeric-owner -C "$rootfs" -c . | $DOCKER import \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change "ENV PYTHON_VERSION=$version" \
    --change 'CMD ["python3"]' \
    --message "musicrec local base: debian $SUITE minbase + python3 $version" \
    - "$IMAGE" >/dev/null || die "docker import failed"
log "built $IMAGE in $((SECONDS - started)) s ($($DOCKER image inspect -f '{{.Size}}' "$IMAGE" | numfmt --to=iec-i --suffix=B))"
