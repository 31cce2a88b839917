#!/usr/bin/env bash
# Benchmarks against peers measured in the same run: nginx serving the same
# bytes over TLS, and docker-registry. Server pinned to core 0, load generator
# to core 1, TLS 1.3 AES-128-GCM, cache hits unless a scenario says otherwise.
#
#   scripts/bench.sh base     # TLS + HTTP overhead: tiny GETs, Basic auth, new connections
#   scripts/bench.sh go       # cached .info/.mod/.zip vs nginx
#   scripts/bench.sh gofill   # cold .zip fills, go.verify off vs sumdb (ROUNDS, default 20)
#   scripts/bench.sh oci      # blobs and manifests vs nginx and docker-registry
#   scripts/bench.sh verify   # 1 GiB streamed hit, cache.verify_on_read small vs all
#                             # (MIRROR_BEFORE=path/to/older/mirror adds that build first)
#   scripts/bench.sh shapes   # 74-byte blob and .info hits vs nginx under wrk -t1 -c16,
#                             # wrk -t2 -c32 and h2load -c16 -m10 (MIRROR_BEFORE, ROUNDS)
#   scripts/bench.sh cluster  # PostgreSQL + Garage: hits on 1 node vs 1 and 3 replicas, cold
#                             # 1 GiB fills (fs, S3, 3 replicas at once) vs a direct pull,
#                             # RSS per replica during 16 streams
#   scripts/bench.sh all
#
# DURATION (seconds per wrk run, default 10) can be set in the environment;
# KEEP_WORK=1 keeps the generated content in the work dir (results and logs
# are always kept).
set -euo pipefail
source "$(dirname "$0")/bench/lib.sh"

scenario=${1:-all}
# Only the cluster scenario needs Garage (built from crates.io once per machine).
garage=""
[[ "$scenario" == cluster || "$scenario" == all ]] && garage=1
MIRROR_BENCH_DEPS=1 MIRROR_BENCH_GARAGE=$garage "$ROOT/scripts/install-test-deps.sh"
setup_workdir
build_release
make_pki

bench_base() {
  log "== base: 74-byte GET, keep-alive"
  mkdir -p "$WORK/www"
  head -c 74 /dev/urandom >"$WORK/www/tiny.bin"
  start_nginx "$WORK/www"
  wrk_run "nginx tiny GET" "$NGINX_WORKER" "https://127.0.0.1:$NGINX_PORT/tiny.bin"
  stop_pid "$NGINX_PID"

  mirror_config "$WORK/base.toml"
  start_mirror "$WORK/base.toml"
  wrk_run "mirror /healthz" "$MIRROR_PID" "https://127.0.0.1:$MIRROR_PORT/healthz"
  wrk_run "mirror /v2/ Basic" "$MIRROR_PID" "https://127.0.0.1:$MIRROR_PORT/v2/" -H "$BASIC"
  stop_pid "$MIRROR_PID"
}

case "$scenario" in
  base) bench_base ;;
  go) source "$ROOT/scripts/bench/go.sh"; bench_go ;;
  gofill) source "$ROOT/scripts/bench/go.sh"; bench_go_fill ;;
  oci) source "$ROOT/scripts/bench/oci.sh"; bench_oci ;;
  verify) source "$ROOT/scripts/bench/verify.sh"; bench_verify ;;
  shapes) source "$ROOT/scripts/bench/shapes.sh"; bench_shapes ;;
  cluster) source "$ROOT/scripts/bench/cluster.sh"; bench_cluster ;;
  all)
    bench_base
    source "$ROOT/scripts/bench/go.sh"; bench_go; bench_go_fill
    source "$ROOT/scripts/bench/oci.sh"; bench_oci
    source "$ROOT/scripts/bench/verify.sh"; bench_verify
    source "$ROOT/scripts/bench/shapes.sh"; bench_shapes
    source "$ROOT/scripts/bench/cluster.sh"; bench_cluster
    ;;
  *) echo "usage: $0 [base|go|gofill|oci|verify|shapes|cluster|all]" >&2; exit 2 ;;
esac

log ""
log "results (name, req/s, p50, p99, server CPU µs/request) in $RESULTS:"
cat "$RESULTS"
