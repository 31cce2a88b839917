# The cluster benchmark's shared services, as tests/common/postgres.rs and
# tests/common/garage.rs start them: a private PostgreSQL 15 (a copy of one
# initdb, trust on loopback only, the postmaster run as the postgres user via
# setpriv so its PID is ours to stop) and a single-node Garage with one bucket
# and key, both on loopback ports, unpinned (they stand for other machines).
# Sourced by scripts/bench/cluster.sh; every process is stopped by PID.

PG_BIN=/usr/lib/postgresql/15/bin
PG_DATABASE=mirror
PG_ROLE=mirror
# Three replicas' pools (32 each) plus their listener and leader connections.
PG_MAX_CONNECTIONS=150
GARAGE_BUCKET=mirror
GARAGE_REGION=garage
START_LIMIT=30

# engines_check: a clear failure when PostgreSQL 15 or Garage is missing.
engines_check() {
  local tool
  for tool in initdb postgres pg_isready psql; do
    if [[ ! -x "$PG_BIN/$tool" ]]; then
      log "cluster bench: $PG_BIN/$tool is missing (Debian package postgresql; scripts/install-test-deps.sh installs it)"
      return 1
    fi
  done
  if [[ $(id -u) -eq 0 ]] && ! command -v setpriv >/dev/null; then
    log "cluster bench: setpriv is missing (util-linux): PostgreSQL refuses to run as root"
    return 1
  fi
  GARAGE_BIN="${CARGO_HOME:-$HOME/.cargo}/bin/garage"
  [[ -x "$GARAGE_BIN" ]] || GARAGE_BIN=$(command -v garage || true)
  if [[ -z "$GARAGE_BIN" || ! -x "$GARAGE_BIN" ]]; then
    log "cluster bench: garage is missing (scripts/install-test-deps.sh builds it with cargo install)"
    return 1
  fi
}

# The prefix that runs a PostgreSQL binary as the postgres user when we are
# root (initdb and postgres refuse root); setpriv execs in place, so the PID we
# hold is postgres itself.
PG_AS=()
[[ $(id -u) -ne 0 ]] || PG_AS=(setpriv --reuid=postgres --regid=postgres --init-groups --)

# pg_dir DIR: a directory the postgres user owns (under a WORK it may enter).
pg_dir() {
  mkdir -p "$1"
  [[ $(id -u) -ne 0 ]] || chown postgres:postgres "$1"
}

# pg_template: one initdb for every cluster of the run.
pg_template() {
  [[ -d "$WORK/pg/template" ]] && return 0
  chmod o+x "$WORK"
  pg_dir "$WORK/pg"
  (cd "$WORK/pg" && timeout 120 "${PG_AS[@]}" "$PG_BIN/initdb" --pgdata "$WORK/pg/template" --username=postgres --auth=trust \
    --encoding=UTF8 --locale=C --no-sync --no-instructions) >"$WORK/pg/initdb.log" 2>&1 || {
    log "initdb failed: $(tail -5 "$WORK/pg/initdb.log")"
    return 1
  }
}

# start_postgres NAME: a fresh cluster (a copy of the template) with the mirror
# role and database; leaves PG_PID, PG_PORT and PG_URL.
start_postgres() {
  local name=$1 dir="$WORK/pg/$1"
  pg_template
  pg_dir "$dir"
  pg_dir "$dir/sockets"
  cp -a "$WORK/pg/template" "$dir/data"
  cat >>"$dir/data/postgresql.conf" <<CONF
# scripts/bench/engines.sh
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir/sockets'
max_connections = $PG_MAX_CONNECTIONS
fsync = off
synchronous_commit = off
full_page_writes = off
CONF
  PG_PORT=$(free_port)
  (cd "$dir" && exec "${PG_AS[@]}" "$PG_BIN/postgres" -D "$dir/data" -p "$PG_PORT") >"$WORK/postgres-$name.log" 2>&1 &
  PG_PID=$!
  STARTED_PIDS+=("$PG_PID")
  local deadline=$((SECONDS + START_LIMIT))
  until "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -t 2; do
    if ! kill -0 "$PG_PID" 2>/dev/null || ((SECONDS > deadline)); then
      log "postgres $name did not start: $(tail -5 "$WORK/postgres-$name.log")"
      return 1
    fi
    sleep 0.1
  done
  timeout 30 "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres \
    -c "CREATE ROLE $PG_ROLE LOGIN" -c "CREATE DATABASE $PG_DATABASE OWNER $PG_ROLE" >/dev/null
  PG_URL="postgres://$PG_ROLE@127.0.0.1:$PG_PORT/$PG_DATABASE"
}

# stop_postgres: fast shutdown (SIGINT), SIGKILL after 15 s.
stop_postgres() {
  stop_bounded "$PG_PID" INT 15
}

# stop_bounded PID SIGNAL SECONDS: signal, then SIGKILL if still there.
stop_bounded() {
  local pid=$1 signal=$2 limit=$3
  kill "-$signal" "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + limit))
  while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# start_garage NAME: a fresh single-node Garage with one bucket and key;
# leaves GARAGE_PID and GARAGE_TOML (a [storage] section for mirror).
start_garage() {
  local name=$1 dir="$WORK/garage-$1"
  mkdir -p "$dir"
  local rpc s3 admin token key secret
  rpc=$(free_port) s3=$(free_port) admin=$(free_port)
  token=$(openssl rand -hex 32)
  key="GK$(openssl rand -hex 12)"
  secret=$(openssl rand -hex 32)
  (
    umask 077
    cat >"$dir/garage.toml" <<CONF
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "sqlite"
replication_factor = 1
metadata_fsync = false
data_fsync = false
disable_scrub = true
rpc_bind_addr = "127.0.0.1:$rpc"
rpc_public_addr = "127.0.0.1:$rpc"
rpc_secret = "$(openssl rand -hex 32)"

[s3_api]
s3_region = "$GARAGE_REGION"
api_bind_addr = "127.0.0.1:$s3"

[admin]
api_bind_addr = "127.0.0.1:$admin"
admin_token = "$token"
CONF
  )
  GARAGE_DEFAULT_ACCESS_KEY=$key GARAGE_DEFAULT_SECRET_KEY=$secret GARAGE_DEFAULT_BUCKET=$GARAGE_BUCKET \
    RUST_LOG=warn "$GARAGE_BIN" --config "$dir/garage.toml" server --single-node --default-bucket \
    >"$WORK/garage-$name.log" 2>&1 &
  GARAGE_PID=$!
  STARTED_PIDS+=("$GARAGE_PID")
  # /health answers 200 once the layout is applied and the node serves reads
  # and writes; the bucket and key exist before the S3 listener opens.
  local deadline=$((SECONDS + START_LIMIT))
  until [[ $(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$admin/health") == 200 ]] &&
    (exec 3<>"/dev/tcp/127.0.0.1/$s3") 2>/dev/null; do
    if ! kill -0 "$GARAGE_PID" 2>/dev/null || ((SECONDS > deadline)); then
      log "garage $name did not start: $(tail -5 "$WORK/garage-$name.log")"
      return 1
    fi
    sleep 0.1
  done
  GARAGE_TOML=$(
    cat <<TOML
[storage]
backend = "s3"
endpoint = "http://127.0.0.1:$s3"
bucket = "$GARAGE_BUCKET"
region = "$GARAGE_REGION"
path_style = true
access_key_id = "$key"
secret_access_key = "$secret"
TOML
  )
}

# tree_ticks PID → CPU ticks of PID, its reaped children and its live
# children (PostgreSQL's backends are children of the postmaster).
tree_ticks() {
  local pid=$1 total child
  total=$(awk '{print $14 + $15 + $16 + $17}' "/proc/$pid/stat")
  for child in $(pgrep -P "$pid" || true); do
    total=$((total + $(awk '{print $14 + $15}' "/proc/$child/stat" 2>/dev/null || echo 0)))
  done
  echo "$total"
}

# sum_ticks PID... → the CPU ticks of all of them (threads included).
sum_ticks() {
  local total=0 pid
  for pid in "$@"; do total=$((total + $(cpu_ticks "$pid"))); done
  echo "$total"
}
