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
  # Hits only: the warm-up fills are not measured, and no checksum database
  # knows the generated module (bench_go_fill measures what verifying costs).
  stanza=$(printf '[go]\nupstream = "http://127.0.0.1:%s"\nsumdb = []\nverify = "off"\n' "$upstream_port")
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

# Cold .zip fills, verify = "off" against "sumdb": ROUNDS module versions
# (default 20), each a first GET through a fresh mirror data dir, with a real
# checksum database (tests/go/sumdbserver, x/mod's server and signer, 1000
# records logged first so proofs need full and partial tiles) on loopback.
# Reports the mean wall time of a cold GET and the mirror's CPU per fill.
bench_go_fill() {
  local rounds=${ROUNDS:-20}
  log "== go fill: $rounds cold .zip fills, verify off vs sumdb"
  local tree="$WORK/goproxy-fill" i
  for ((i = 0; i < rounds; i++)); do
    python3 "$ROOT/scripts/bench/go_content.py" "$tree" "$GO_MODULE" "v1.0.$i" 12 4000
  done
  local upstream_port
  upstream_port=$(free_port)
  python3 -m http.server --bind 127.0.0.1 --directory "$tree" "$upstream_port" >/dev/null 2>&1 &
  local upstream_pid=$!
  STARTED_PIDS+=("$upstream_pid")
  wait_port "$upstream_port"

  # Debian's go 1.19 and x/mod, in GOPATH mode, as tests/common/go builds it.
  (cd "$ROOT" && PATH="/usr/lib/go-1.19/bin:$PATH" GO111MODULE=off GOPATH=/usr/share/gocode \
    GOCACHE="$WORK/gocache" CGO_ENABLED=0 go build -o "$WORK/sumdbserver" tests/go/sumdbserver/main.go)
  "$WORK/sumdbserver" -name sum.bench.test -tree "$tree" -fill 1000 >"$WORK/sumdb.out" 2>"$WORK/sumdb.log" &
  local sumdb_pid=$!
  STARTED_PIDS+=("$sumdb_pid")
  for _ in $(seq 1 200); do [[ -s "$WORK/sumdb.out" ]] && break; sleep 0.05; done
  local addr vkey
  read -r addr vkey <"$WORK/sumdb.out"

  local mode
  for mode in off sumdb; do
    local stanza
    stanza=$(printf '[go]\nupstream = "http://127.0.0.1:%s"\nverify = "%s"\ndefault_sumdb = false\n\n[[go.sumdb]]\nname = "sum.bench.test"\nurl = "http://%s"\nkey = "%s"\n' \
      "$upstream_port" "$mode" "$addr" "$vkey")
    MIRROR_DATA="$WORK/fill-$mode-data" mirror_config "$WORK/fill-$mode.toml" "$stanza"
    start_mirror "$WORK/fill-$mode.toml"
    local ticks_before wall=0 start end
    ticks_before=$(cpu_ticks "$MIRROR_PID")
    for ((i = 0; i < rounds; i++)); do
      start=$(date +%s%N)
      curl -sS --fail --cacert "$WORK/pki/ca.crt" -o /dev/null \
        "https://127.0.0.1:$MIRROR_PORT/$GO_MODULE/@v/v1.0.$i.zip"
      end=$(date +%s%N)
      wall=$((wall + end - start))
    done
    local ticks=$(($(cpu_ticks "$MIRROR_PID") - ticks_before))
    local ms_per_fill cpu_ms
    ms_per_fill=$(awk -v w="$wall" -v n="$rounds" 'BEGIN { printf "%.2f", w / n / 1e6 }')
    cpu_ms=$(awk -v t="$ticks" -v hz="$CLK_TCK" -v n="$rounds" 'BEGIN { printf "%.2f", t * 1000 / hz / n }')
    log "cold .zip verify=$mode: ${ms_per_fill} ms per GET, mirror CPU ${cpu_ms} ms per fill"
    printf 'go fill .zip verify=%s\t%s ms/GET\t-\t-\t%s ms CPU/fill\n' "$mode" "$ms_per_fill" "$cpu_ms" >>"$RESULTS"
    stop_pid "$MIRROR_PID"
  done
  stop_pid "$sumdb_pid"
  stop_pid "$upstream_pid"
}
