#!/bin/sh
# The play log's PostgreSQL server (docker/Dockerfile target "postgres"): on the first start makes
# a cluster in $PGDATA (a named volume) with the role and database "musicrec", password
# $POSTGRES_PASSWORD; then runs postgres in the foreground on $PGPORT. Extra arguments go to
# postgres (e.g. -c max_connections=200).
set -eu

: "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD (the musicrec role's password)}"
listen=${POSTGRES_LISTEN_ADDRESSES:-*}

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    echo "musicrec-postgres: first start, making a cluster in $PGDATA"
    # The password file lives on the tmpfs /tmp only while initdb reads it.
    pwfile=$(mktemp /tmp/pwfile.XXXXXX)
    printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
    initdb --pgdata "$PGDATA" --username musicrec --pwfile "$pwfile" --auth-local trust \
        --auth-host scram-sha-256 --encoding UTF8 --locale C.UTF-8
    rm -f "$pwfile"
    # Clients come from other containers: password logins from any address.
    printf 'host all all 0.0.0.0/0 scram-sha-256\nhost all all ::/0 scram-sha-256\n' >>"$PGDATA/pg_hba.conf"
    echo 'CREATE DATABASE musicrec;' | postgres --single -D "$PGDATA" -c listen_addresses='' postgres >/dev/null
fi

# The socket directory is the tmpfs /tmp (the root file system is read-only).
exec postgres -D "$PGDATA" -p "$PGPORT" -c listen_addresses="$listen" -k /tmp "$@"
