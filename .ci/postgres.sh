#!/usr/bin/env bash
# Start a PostgreSQL server on 127.0.0.1 for doe-sr's multi-machine storage tests and print
# the SQLAlchemy URL to export as DOE_SR_TEST_POSTGRES (the only line on stdout).
#
#   export DOE_SR_TEST_POSTGRES="$(.ci/postgres.sh)"
#
# Idempotent: installs Debian's `postgresql` package only if no server binaries exist,
# creates the cluster, role and database only if missing, and leaves a running server
# running. Needs root (apt-get, and running pg_ctlcluster/psql as the postgres user).
# Settings: DOE_SR_PG_PORT (5432), DOE_SR_PG_USER (doe_sr), DOE_SR_PG_PASSWORD (doe_sr),
# DOE_SR_PG_DB (doe_sr_test).
set -euo pipefail

PORT="${DOE_SR_PG_PORT:-5432}"
ROLE="${DOE_SR_PG_USER:-doe_sr}"
PASSWORD="${DOE_SR_PG_PASSWORD:-doe_sr}"
DB="${DOE_SR_PG_DB:-doe_sr_test}"
log() { echo "postgres.sh: $*" >&2; }

if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    log "installing PostgreSQL from Debian's packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq postgresql >&2
fi

VERSION="$(ls /usr/lib/postgresql | sort -V | tail -n 1)"
if ! pg_lsclusters -h 2>/dev/null | awk '{print $1, $2}' | grep -qx "$VERSION main"; then
    log "creating cluster $VERSION/main on port $PORT"
    pg_createcluster "$VERSION" main --port "$PORT" >&2
fi
CLUSTER_PORT="$(pg_lsclusters -h | awk -v v="$VERSION" '$1 == v && $2 == "main" {print $3}')"
if [ "$CLUSTER_PORT" != "$PORT" ]; then
    log "cluster $VERSION/main listens on $CLUSTER_PORT, not $PORT; set DOE_SR_PG_PORT=$CLUSTER_PORT"
    exit 1
fi
STATUS="$(pg_lsclusters -h | awk -v v="$VERSION" '$1 == v && $2 == "main" {print $4}')"
if [ "$STATUS" != "online" ]; then
    log "starting cluster $VERSION/main"
    pg_ctlcluster "$VERSION" main start >&2
fi
for _ in $(seq 1 30); do
    runuser -u postgres -- pg_isready -q -h 127.0.0.1 -p "$PORT" && break
    sleep 1
done
runuser -u postgres -- pg_isready -h 127.0.0.1 -p "$PORT" >&2

psql_admin() { runuser -u postgres -- psql -v ON_ERROR_STOP=1 -q -p "$PORT" -tA "$@"; }
if [ "$(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = '$ROLE'")" != "1" ]; then
    log "creating role $ROLE"
    psql_admin -c "CREATE ROLE \"$ROLE\" LOGIN PASSWORD '$PASSWORD'"
fi
if [ "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = '$DB'")" != "1" ]; then
    log "creating database $DB"
    psql_admin -c "CREATE DATABASE \"$DB\" OWNER \"$ROLE\""
fi
# Prove the URL works over TCP with the password (what the tests do).
PGPASSWORD="$PASSWORD" psql -q -h 127.0.0.1 -p "$PORT" -U "$ROLE" -d "$DB" -tA -c "SELECT 1" >/dev/null
log "ready: database $DB on 127.0.0.1:$PORT"
echo "postgresql+psycopg2://$ROLE:$PASSWORD@127.0.0.1:$PORT/$DB"
