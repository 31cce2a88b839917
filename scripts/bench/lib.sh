# Shared pieces of the benchmarks: a work dir, a PKI, servers pinned to one
# core and load generators pinned to the other, CPU and RSS accounting from
# /proc. Sourced by scripts/bench.sh; every server started here is stopped by
# PID on exit.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SERVER_CORE=${SERVER_CORE:-0}
LOAD_CORE=${LOAD_CORE:-1}
DURATION=${DURATION:-10}
CLK_TCK=$(getconf CLK_TCK)
STARTED_PIDS=()

cleanup() {
  for pid in "${STARTED_PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${STARTED_PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  # Keep the results and logs; the generated content runs to gigabytes.
  if [[ -n "${WORK:-}" && -d "$WORK" && -z "${KEEP_WORK:-}" ]]; then
    find "$WORK" -mindepth 1 -maxdepth 1 -type d -exec rm -rf {} +
  fi
}
trap cleanup EXIT

log() { printf '%s\n' "$*" >&2; }

setup_workdir() {
  WORK=$(mktemp -d /tmp/mirror-bench.XXXXXX)
  RESULTS="$WORK/results.tsv"
  : >"$RESULTS"
  # wrk has no cipher option: pin its OpenSSL to the suite every server is
  # measured with, so rustls (which follows the client's order) does not end up
  # on AES-256 where nginx is on AES-128.
  WRK_OPENSSL_CONF="$WORK/openssl-wrk.cnf"
  cat >"$WRK_OPENSSL_CONF" <<'CNF'
openssl_conf = openssl_init
[openssl_init]
ssl_conf = ssl_module
[ssl_module]
system_default = tls_defaults
[tls_defaults]
MinProtocol = TLSv1.3
Ciphersuites = TLS_AES_128_GCM_SHA256
CNF
  log "work dir: $WORK"
}

build_release() {
  (cd "$ROOT" && cargo build --release --quiet)
  MIRROR="$ROOT/target/release/mirror"
}

make_pki() {
  "$MIRROR" pki init --dir "$WORK/pki" >/dev/null
  "$MIRROR" pki issue-server --dir "$WORK/pki" --san 127.0.0.1 localhost >/dev/null
  htpasswd -B -b -c "$WORK/htpasswd" bench bench-password 2>/dev/null
  BASIC="Authorization: Basic $(printf 'bench:bench-password' | base64)"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_port() {
  local port=$1
  for _ in $(seq 1 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  log "nothing listening on $port"
  return 1
}

# cpu_ticks PID → utime+stime in clock ticks
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
peak_rss_kib() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }
# Starts a new peak-RSS window for PID (Linux: clear_refs 5 resets VmHWM).
reset_peak_rss() { echo 5 >"/proc/$1/clear_refs" 2>/dev/null || log "cannot reset the peak RSS of $1"; }

# Starts nginx pinned to SERVER_CORE serving $1 over TLS 1.3 on a new port.
start_nginx() {
  local docroot=$1
  NGINX_PORT=$(free_port)
  local dir="$WORK/nginx"
  mkdir -p "$dir/logs"
  cat >"$dir/nginx.conf" <<CONF
user root;
worker_processes 1;
daemon off;
error_log $dir/logs/error.log warn;
pid $dir/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  keepalive_requests 1000000;
  keepalive_timeout 120s;
  types { application/octet-stream bin; }
  default_type application/octet-stream;
  server {
    listen 127.0.0.1:$NGINX_PORT ssl http2;
    ssl_certificate $WORK/pki/server.crt;
    ssl_certificate_key $WORK/pki/server.key;
    ssl_protocols TLSv1.3;
    ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256;
    ssl_session_cache off;
    ssl_session_tickets off;
    root $docroot;
  }
}
CONF
  taskset -c "$SERVER_CORE" nginx -c "$dir/nginx.conf" -p "$dir" &
  NGINX_PID=$!
  STARTED_PIDS+=("$NGINX_PID")
  wait_port "$NGINX_PORT"
  # The master forks one worker; that worker does the work.
  sleep 0.2
  NGINX_WORKER=$(pgrep -P "$NGINX_PID" | head -1)
}

stop_pid() {
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

# start_registry STORAGE_DIR [htpasswd FILE] [CORE] — docker-registry over TLS
# (the bench PKI) on a new port, its storage in STORAGE_DIR, with the in-memory
# blob descriptor cache (its fastest setting), pinned to CORE (default
# SERVER_CORE; "any" leaves it unpinned). REGISTRY_ACCESS_LOG=1 writes its
# access log (one line per request) to $WORK/registry.log, for counting.
start_registry() {
  local storage=$1 htpasswd=${2:-} core=${3:-$SERVER_CORE}
  REGISTRY_PORT=$(free_port)
  local config="$WORK/registry-$REGISTRY_PORT.yml"
  local auth="" access_off=true
  [[ "${REGISTRY_ACCESS_LOG:-}" == 1 ]] && access_off=false
  if [[ -n "$htpasswd" ]]; then
    auth=$(printf 'auth:\n  htpasswd:\n    realm: bench\n    path: %s\n' "$htpasswd")
  fi
  cat >"$config" <<CONF
version: 0.1
log:
  level: error
  accesslog:
    disabled: $access_off
storage:
  filesystem:
    rootdirectory: $storage
  cache:
    blobdescriptor: inmemory
http:
  addr: 127.0.0.1:$REGISTRY_PORT
  tls:
    certificate: $WORK/pki/server.crt
    key: $WORK/pki/server.key
$auth
CONF
  if [[ "$core" == any ]]; then
    docker-registry serve "$config" >"$WORK/registry.log" 2>&1 &
  else
    taskset -c "$core" docker-registry serve "$config" >"$WORK/registry.log" 2>&1 &
  fi
  REGISTRY_PID=$!
  STARTED_PIDS+=("$REGISTRY_PID")
  wait_port "$REGISTRY_PORT"
}

# Starts mirror pinned to SERVER_CORE with the config in $1 (a file).
start_mirror() {
  local config=$1
  taskset -c "$SERVER_CORE" "$MIRROR" serve --config "$config" 2>"${MIRROR_LOG:-$WORK/mirror.log}" &
  MIRROR_PID=$!
  STARTED_PIDS+=("$MIRROR_PID")
  wait_port "$MIRROR_PORT"
}

# mirror_config FILE [extra toml] — TLS 1.2/1.3 mTLS-optional config on a new port.
# MIRROR_READ (default anonymous) is the read policy, MIRROR_DATA the data dir.
mirror_config() {
  local file=$1 extra=${2:-}
  MIRROR_PORT=$(free_port)
  cat >"$file" <<CONF
listen = "127.0.0.1:$MIRROR_PORT"
data_dir = "${MIRROR_DATA:-$WORK/mirror-data}"

[tls]
cert = "$WORK/pki/server.crt"
key = "$WORK/pki/server.key"
client_ca = "$WORK/pki/ca.crt"
client_auth = "optional"

[auth]
htpasswd = "$WORK/htpasswd"
read = "${MIRROR_READ:-anonymous}"

[log]
level = "warn"

$extra
CONF
}

# wrk_run NAME PID URL [extra wrk args] — HTTP/1.1 keep-alive load from LOAD_CORE.
# Records name, req/s, p50, p99, server CPU µs per request (also left in
# WRK_RPS, WRK_P50, WRK_P99, WRK_CPU_US; WRK_NON2XX counts failed answers).
wrk_run() {
  local name=$1 pid=$2 url=$3
  shift 3
  load_run "$name" "$pid" wrk -t1 -c16 -d"${DURATION}s" --latency "$@" "$url"
}

# wrk2t_run NAME PID URL [extra wrk args] — the same from two threads with 32
# connections, as a build farm's HTTP/1.1 clients load a mirror.
wrk2t_run() {
  local name=$1 pid=$2 url=$3
  shift 3
  load_run "$name" "$pid" wrk -t2 -c32 -d"${DURATION}s" --latency "$@" "$url"
}

# h2_run NAME PID URL [extra h2load args] — HTTP/2 load from LOAD_CORE: h2load,
# one thread, 16 connections with up to 10 streams each (containerd and Go
# multiplex like this). Recorded like wrk_run; p50 and p99 come from h2load's
# per-request log, since its summary has no percentiles.
h2_run() {
  local name=$1 pid=$2 url=$3
  shift 3
  local requests_log="$WORK/h2load-requests.log"
  load_measure "$pid" h2load -t1 -c16 -m10 -D"$DURATION" --log-file="$requests_log" "$@" "$url"
  load_record "$name" "$(h2load_as_wrk "$LOAD_OUT" "$requests_log")" "$LOAD_TICKS"
  rm -f "$requests_log"
}

# h2load_as_wrk SUMMARY REQUESTS_LOG — h2load's result in the lines of wrk's
# summary that load_record reads.
h2load_as_wrk() {
  local summary=$1 requests_log=$2
  local succeeded failed rps
  succeeded=$(awk '$1 == "requests:" {print $8}' <<<"$summary")
  failed=$(awk '$1 == "requests:" {print $10 + $12 + $14}' <<<"$summary")
  failed=$((failed + $(awk '$1 == "status" {print $5 + $7 + $9}' <<<"$summary")))
  rps=$(awk '$1 == "finished" {print $4}' <<<"$summary")
  printf 'Requests/sec: %s\n  %s requests in h2load\n' "$rps" "$succeeded"
  ((failed == 0)) || printf 'Non-2xx or 3xx responses: %s\n' "$failed"
  # Column 3: microseconds from the request's start to the end of its response.
  awk -F'\t' '$2 >= 200 && $2 < 300 {print $3}' "$requests_log" | sort -n | awk '
    { v[NR] = $1 }
    function at(q,  i) { i = int(NR * q) + 1; return v[i > NR ? NR : i] }
    function shown(us) { return us < 1000 ? sprintf("%.2fus", us) : sprintf("%.2fms", us / 1000) }
    END { if (NR > 0) printf "     50%%  %s\n     99%%  %s\n", shown(at(0.5)), shown(at(0.99)) }'
}

# head_run NAME PID URL [-H header]... — the same for HEAD requests, with
# scripts/bench/headload.rs (wrk 4.1 cannot parse HEAD answers; see that file).
head_run() {
  local name=$1 pid=$2 url=$3
  shift 3
  load_run "$name" "$pid" "$HEADLOAD" -c16 -d"$DURATION" --ca "$WORK/pki/ca.crt" "$@" "$url"
}

build_headload() {
  (cd "$ROOT" && cargo build --release --quiet --example headload)
  HEADLOAD="$ROOT/target/release/examples/headload"
}

# load_run NAME PID COMMAND... — runs a wrk-like load generator from LOAD_CORE
# and records its summary.
load_run() {
  local name=$1 pid=$2
  shift 2
  load_measure "$pid" "$@"
  load_record "$name" "$LOAD_OUT" "$LOAD_TICKS"
}

# load_measure PID COMMAND... — runs COMMAND from LOAD_CORE; leaves its output
# in LOAD_OUT and the CPU ticks PID used meanwhile in LOAD_TICKS.
load_measure() {
  local pid=$1
  shift
  local before after
  before=$(cpu_ticks "$pid")
  LOAD_OUT=$(OPENSSL_CONF="$WRK_OPENSSL_CONF" taskset -c "$LOAD_CORE" "$@")
  after=$(cpu_ticks "$pid")
  LOAD_TICKS=$((after - before))
}

# load_record NAME SUMMARY TICKS — reads a wrk summary, records name, req/s,
# p50, p99 and server CPU µs per request (also left in WRK_RPS, WRK_P50,
# WRK_P99, WRK_CPU_US; WRK_NON2XX counts failed answers).
load_record() {
  local name=$1 out=$2 ticks=$3
  local rps p50 p99 requests
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  requests=$(awk '/requests in/ {print $1}' <<<"$out")
  local non2xx
  non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
  if [[ -n "$non2xx" ]]; then
    log "$name: $non2xx non-2xx responses"
    log "$out"
  fi
  local cpu_us
  cpu_us=$(awk -v t="$ticks" -v hz="$CLK_TCK" -v n="$requests" 'BEGIN { printf "%.1f", (n > 0 ? t / hz * 1e6 / n : 0) }')
  WRK_NON2XX=${non2xx:-0} WRK_RPS=$rps WRK_P50=$p50 WRK_P99=$p99 WRK_CPU_US=$cpu_us
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$rps" "$p50" "$p99" "$cpu_us" | tee -a "$RESULTS" >&2
}

# curl_stream NAME PID URL CLIENTS [curl args] — large-body throughput: CLIENTS
# parallel curls from LOAD_CORE; records MB/s, server CPU seconds per GB, and
# the server's peak RSS during the streams (also left in STREAM_MBPS,
# STREAM_CPU_GB, STREAM_RSS_MIB and STREAM_BYTES).
curl_stream() {
  local name=$1 pid=$2 url=$3 clients=$4
  shift 4
  local before after start end bytes=0 sizes
  reset_peak_rss "$pid"
  before=$(cpu_ticks "$pid")
  start=$(date +%s.%N)
  sizes=$(for _ in $(seq 1 "$clients"); do
    taskset -c "$LOAD_CORE" curl -sS --cacert "$WORK/pki/ca.crt" --tlsv1.3 --tls13-ciphers TLS_AES_128_GCM_SHA256 \
      --http1.1 -o /dev/null -w '%{size_download}\n' "$@" "$url" &
  done; wait)
  end=$(date +%s.%N)
  after=$(cpu_ticks "$pid")
  bytes=$(awk '{s += $1} END {printf "%.0f", s}' <<<"$sizes")
  local mbps cpu_per_gb
  mbps=$(awk -v b="$bytes" -v s="$start" -v e="$end" 'BEGIN { printf "%.0f", b / (e - s) / 1e6 }')
  cpu_per_gb=$(awk -v t=$((after - before)) -v hz="$CLK_TCK" -v b="$bytes" 'BEGIN { printf "%.2f", t / hz / (b / 1e9) }')
  STREAM_MBPS=$mbps STREAM_CPU_GB=$cpu_per_gb STREAM_BYTES=$bytes
  STREAM_RSS_MIB=$(( $(peak_rss_kib "$pid") / 1024 ))
  printf '%s\t%s MB/s\t%s CPU-s/GB\trss %s MiB\n' "$name" "$mbps" "$cpu_per_gb" "$STREAM_RSS_MIB" | tee -a "$RESULTS" >&2
}
