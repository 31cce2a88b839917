# Hit path under the load shapes real clients make: a 74-byte blob hit and a
# Go `.info` of the same 74 bytes, from nginx (the same bytes as static files,
# the same TLS settings) and from mirror, under three shapes:
#   h1 16 conn   wrk -t1 -c16: the other scenarios' shape;
#   h1 32 conn   wrk -t2 -c32: HTTP/1.1 clients on many connections (Go, skopeo);
#   h2 16x10     h2load -c16 -m10: HTTP/2 with 10 streams per connection
#                (containerd, Go's module fetches).
# MIRROR_BEFORE=/path/to/mirror adds an older binary, measured in the same run,
# so a change is judged against the same noise. Every server is pinned to
# SERVER_CORE and stays up (idle) while the others are measured; the runs
# interleave server by server within each (file, shape), ROUNDS times
# (default 1), and the report takes each figure's median over the rounds.
# Sourced by scripts/bench.sh after setup_workdir, build_release and make_pki.
#
# Results: $SHAPES_RESULTS (TSV: file, shape, server, req/s, p50, p99,
# CPU µs/request) and a markdown table with the ratios to nginx.

SHAPES_REPO=bench/tiny
SHAPES_MODULE=example.com/bench/hit
SHAPES_VERSION=v1.0.0
SHAPES_SIZE=74
ROUNDS=${ROUNDS:-1}

# shapes_content DOCROOT: the blob and the .info, 74 bytes each, at the URL
# paths mirror asks its upstream for (nginx is that upstream too).
shapes_content() {
  local www=$1
  mkdir -p "$www/v2/$SHAPES_REPO/blobs" "$www/$SHAPES_MODULE/@v"
  local tmp="$www/tiny.tmp"
  head -c "$SHAPES_SIZE" /dev/urandom >"$tmp"
  SHAPES_DIGEST="sha256:$(sha256sum "$tmp" | cut -d' ' -f1)"
  mv "$tmp" "$www/v2/$SHAPES_REPO/blobs/$SHAPES_DIGEST"
  local info="$www/$SHAPES_MODULE/@v/$SHAPES_VERSION.info"
  printf '{"Version":"%s","Time":"2026-01-02T03:04:05Z","Origin":{"VCS":"git"}}\n' \
    "$SHAPES_VERSION" >"$info"
  local size
  size=$(stat -c %s "$info")
  if [[ "$size" != "$SHAPES_SIZE" ]]; then
    log "the .info is $size bytes, not $SHAPES_SIZE"
    return 1
  fi
}

# shapes_mirror NAME BINARY: starts BINARY (on a new port, its own data dir)
# with nginx as its Go and OCI upstream, fills both files and checks a hit
# answers the same bytes. Leaves SHAPES_PID[NAME] and SHAPES_BASE[NAME].
shapes_mirror() {
  local name=$1 binary=$2
  local stanza
  stanza=$(
    cat <<TOML
[go]
upstream = "https://127.0.0.1:$NGINX_PORT"
sumdb = []
ca = "$WORK/pki/ca.crt"

[[registry.upstream]]
name = "nginx"
url = "https://127.0.0.1:$NGINX_PORT"
default = true
ca = "$WORK/pki/ca.crt"
TOML
  )
  MIRROR_DATA="$WORK/shapes-$name-data" mirror_config "$WORK/shapes-$name.toml" "$stanza"
  MIRROR="$binary" MIRROR_LOG="$WORK/shapes-$name.log" start_mirror "$WORK/shapes-$name.toml"
  SHAPES_PID[$name]=$MIRROR_PID
  SHAPES_BASE[$name]="https://127.0.0.1:$MIRROR_PORT"
  local path
  for path in "${SHAPES_PATHS[@]}"; do
    local round
    for round in fill hit; do
      if ! curl -sS --fail --cacert "$WORK/pki/ca.crt" -o "$WORK/shapes-got" \
        "${SHAPES_BASE[$name]}$path"; then
        log "$name: GET $path failed ($round)"
        return 1
      fi
    done
    cmp -s "$WORK/shapes-got" "$WORK/www-shapes$path" || {
      log "$name: GET $path answered other bytes"
      return 1
    }
  done
}

# shapes_run SERVER FILE SHAPE URL: one measurement, recorded in SHAPES_RESULTS.
shapes_run() {
  local server=$1 file=$2 shape=$3 url=$4
  local label="shapes $server $file $shape"
  case $shape in
    "h1 16 conn") wrk_run "$label" "${SHAPES_PID[$server]}" "$url" ;;
    "h1 32 conn") wrk2t_run "$label" "${SHAPES_PID[$server]}" "$url" ;;
    "h2 16x10") h2_run "$label" "${SHAPES_PID[$server]}" "$url" ;;
  esac
  if [[ "$WRK_NON2XX" != 0 ]]; then
    log "$label: $WRK_NON2XX failed answers; the figure is not valid"
    return 1
  fi
  local IFS=$'\t'
  printf '%s\n' "$file" "$shape" "$server" "$WRK_RPS" "$WRK_P50" "$WRK_P99" "$WRK_CPU_US" |
    paste -s - >>"$SHAPES_RESULTS"
}

bench_shapes() {
  SHAPES_RESULTS="$WORK/shapes.tsv"
  : >"$SHAPES_RESULTS"
  log "== shapes: load $(uptime | sed 's/.*load average/load average/')"
  local www="$WORK/www-shapes"
  shapes_content "$www"
  SHAPES_PATHS=("/v2/$SHAPES_REPO/blobs/$SHAPES_DIGEST" "/$SHAPES_MODULE/@v/$SHAPES_VERSION.info")
  declare -gA SHAPES_PID SHAPES_BASE
  start_nginx "$www"
  SHAPES_PID[nginx]=$NGINX_WORKER
  SHAPES_BASE[nginx]="https://127.0.0.1:$NGINX_PORT"
  local servers=(nginx)
  if [[ -n "${MIRROR_BEFORE:-}" ]]; then
    shapes_mirror before "$MIRROR_BEFORE"
    servers+=(before)
  fi
  shapes_mirror mirror "$MIRROR"
  servers+=(mirror)

  local round shape file server
  for round in $(seq 1 "$ROUNDS"); do
    log "== shapes: round $round of $ROUNDS"
    for shape in "h1 16 conn" "h1 32 conn" "h2 16x10"; do
      for file in blob info; do
        local path=${SHAPES_PATHS[0]}
        [[ $file == info ]] && path=${SHAPES_PATHS[1]}
        for server in "${servers[@]}"; do
          shapes_run "$server" "$file" "$shape" "${SHAPES_BASE[$server]}$path"
        done
      done
    done
  done
  for server in "${servers[@]}"; do
    [[ $server == nginx ]] || stop_pid "${SHAPES_PID[$server]}"
  done
  stop_pid "$NGINX_PID"
  log "load after the run: $(uptime | sed 's/.*load average/load average/')"
  python3 "$ROOT/scripts/bench/shapes_report.py" "$SHAPES_RESULTS"
  log "TSV: $SHAPES_RESULTS"
}
