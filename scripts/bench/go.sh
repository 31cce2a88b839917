# Go benchmark: cached .info, .mod and .zip GETs with keep-alive through mirror
# (hits), against nginx serving the same files from a static GOPROXY tree over
# TLS, each alone on SERVER_CORE with wrk on LOAD_CORE; mirror with and without
# Basic auth. Sourced by scripts/bench.sh after setup_workdir, build_release
# and make_pki.

GO_MODULE=example.com/bench/mod
GO_VERSION=v1.0.0

bench_go() {
  log "== go: generating a GOPROXY tree"
  local tree="$WORK/goproxy"
  python3 "$ROOT/scripts/bench/go_content.py" "$tree" "$GO_MODULE" "$GO_VERSION" 12 4000
  local files=(info mod zip) base="/$GO_MODULE/@v/$GO_VERSION"
  local zip_size
  zip_size=$(stat -c %s "$tree$base.zip")
  log "zip: $zip_size bytes"

  # The upstream mirror fills from: plain HTTP, unpinned (only used to warm up).
  local upstream_port
  upstream_port=$(free_port)
  python3 -m http.server --bind 127.0.0.1 --directory "$tree" "$upstream_port" >/dev/null 2>&1 &
  local upstream_pid=$!
  STARTED_PIDS+=("$upstream_pid")
  wait_port "$upstream_port"

  start_nginx "$tree"
  local kind
  for kind in "${files[@]}"; do
    wrk_run "go nginx .$kind" "$NGINX_WORKER" "https://127.0.0.1:$NGINX_PORT$base.$kind"
  done
  stop_pid "$NGINX_PID"

  local stanza
  stanza=$(printf '[go]\nupstream = "http://127.0.0.1:%s"\nsumdb = []\n' "$upstream_port")
  for auth in anonymous authenticated; do
    MIRROR_READ=$auth mirror_config "$WORK/go-$auth.toml" "$stanza"
    start_mirror "$WORK/go-$auth.toml"
    local header=()
    if [[ $auth == authenticated ]]; then header=(-H "$BASIC"); fi
    for kind in "${files[@]}"; do
      # Warm: the first GET fills the store from upstream.
      curl -sS --fail --cacert "$WORK/pki/ca.crt" "${header[@]}" -o /dev/null \
        "https://127.0.0.1:$MIRROR_PORT$base.$kind"
    done
    for kind in "${files[@]}"; do
      wrk_run "go mirror .$kind $auth" "$MIRROR_PID" "https://127.0.0.1:$MIRROR_PORT$base.$kind" "${header[@]}"
    done
    stop_pid "$MIRROR_PID"
  done
  stop_pid "$upstream_pid"
  go_report
}

# A markdown table of the Go rows of $RESULTS with ratios to nginx.
go_report() {
  log ""
  log "| file | nginx req/s | mirror req/s | ratio | mirror + Basic req/s | ratio | p50 / p99 mirror | CPU µs/req nginx / mirror |"
  log "|---|---|---|---|---|---|---|---|"
  local kind
  for kind in info mod zip; do
    awk -F'\t' -v k=".$kind" '
      $1 == "go nginx " k { n = $2; ncpu = $5 }
      $1 == "go mirror " k " anonymous" { m = $2; p50 = $3; p99 = $4; mcpu = $5 }
      $1 == "go mirror " k " authenticated" { a = $2 }
      END { printf "| %s | %.0f | %.0f | %.2f | %.0f | %.2f | %s / %s | %s / %s |\n", k, n, m, m / n, a, a / n, p50, p99, ncpu, mcpu }
    ' "$RESULTS" >&2
  done
}
