# Cluster mode measured (issue 12): what a replica on PostgreSQL + Garage
# costs against the embedded single node (SQLite + files), in one run:
#   hits     a 63-byte blob GET and a manifest GET by tag, cached, from nginx
#            (the same bytes as static files), a single node, a 1-replica
#            cluster and 3 replicas; each under one wrk (-t1 -c16) and under
#            three at once (one per replica for the 3 replicas), summed; all
#            setups stay up and take turns, ROUNDS times (default 3), and the
#            report takes the medians;
#   fills    a cold 1 GiB blob: straight from the upstream docker-registry,
#            through a single node (files), one replica (S3) and 3 replicas
#            with one client each at once; every body hashed by the client;
#            the upstream GETs counted in the registry's access log;
#   streams  16 streamed GETs of the cached 1 GiB blob over the 3 replicas:
#            each replica's RSS before and its peak (VmHWM) during them.
# Replicas are pinned to SERVER_CORE, clients to LOAD_CORE; docker-registry,
# PostgreSQL and Garage are unpinned (they stand for other machines). On a
# 2-core machine the 3 replicas share one core: the figure that matters is the
# CPU per request, not a scaling factor. Each fill series is cold: a fresh
# data_dir, a fresh PostgreSQL cluster and a fresh Garage.
# Sourced by scripts/bench.sh after setup_workdir, build_release and make_pki.
#
# Results: $CLUSTER_RESULTS (TSV, see cluster_report.py) and markdown tables.

source "$ROOT/scripts/bench/oci.sh"
source "$ROOT/scripts/bench/engines.sh"

CLUSTER_BIG=${CLUSTER_BIG:-$((1024 * 1024 * 1024))}
CLUSTER_STREAMS=${CLUSTER_STREAMS:-16}
# Bounds on every transfer: a 1 GiB body at 10 MB/s, and a wrk run.
TRANSFER_LIMIT=${TRANSFER_LIMIT:-120}
STREAMS_LIMIT=${STREAMS_LIMIT:-600}
# Hits: rounds of every setup in turn; the report takes each figure's median.
CLUSTER_ROUNDS=${ROUNDS:-3}

cluster_row() {
  local IFS=$'\t'
  printf '%s\n' "$*" >>"$CLUSTER_RESULTS"
}

# The layout (a 1 GiB layer and a tiny one), pushed to a docker-registry that
# writes its access log and stays up as every mirror's upstream; nginx's copy
# of the tiny blob and the manifest at the same URL paths.
cluster_content() {
  log "== cluster: generating the image (1 GiB + tiny layers)"
  python3 "$ROOT/scripts/bench/oci_content.py" "$WORK/layout" big="$CLUSTER_BIG" tiny="$TINY_SIZE"
  BIG=$(blob_of big) TINY=$(blob_of tiny) MANIFEST=$(blob_of manifest)
  cluster_row blob big "$(size_of big)"
  cluster_row blob tiny "$(size_of tiny)"
  mkdir -p "$WORK/certs"
  cp "$WORK/pki/ca.crt" "$WORK/certs/ca.crt"
  local www="$WORK/www-cluster/v2/$OCI_REPO"
  mkdir -p "$www/blobs" "$www/manifests"
  ln "$WORK/layout/blobs/sha256/${TINY#sha256:}" "$www/blobs/$TINY"
  ln "$WORK/layout/blobs/sha256/${MANIFEST#sha256:}" "$www/manifests/latest"
  REGISTRY_ACCESS_LOG=1 oci_push
  UPSTREAM_PORT=$REGISTRY_PORT
}

# upstream_gets PATH → GETs of PATH in the registry's access log so far.
upstream_gets() {
  grep -c "\"GET $1 " "$WORK/registry.log" || true
}

# CLUSTER_CURL: TLS 1.3 AES-128-GCM over HTTP/1.1 from LOAD_CORE, bounded.
CLUSTER_CURL=()
cluster_curl_init() {
  CLUSTER_CURL=(taskset -c "$LOAD_CORE" curl -sS --fail --max-time "$TRANSFER_LIMIT"
    --cacert "$WORK/pki/ca.crt" --tlsv1.3 --tls13-ciphers TLS_AES_128_GCM_SHA256 --http1.1)
}

# verified_get URL DIGEST: the body hashed as it arrives; fails unless it is
# the blob.
verified_get() {
  local url=$1 digest=$2 got
  got=$("${CLUSTER_CURL[@]}" "$url" | taskset -c "$LOAD_CORE" openssl dgst -sha256 -r | cut -d' ' -f1)
  if [[ "sha256:$got" != "$digest" ]]; then
    log "GET $url: body hashes to sha256:$got, expected $digest"
    return 1
  fi
}

# cold_fill SERIES "PID..." BASE_URL...: one client per base URL at once, the
# wall time to the last verified body, the upstream GETs meanwhile, and the CPU
# of the PIDs (mirror) and of PostgreSQL and Garage if they run.
cold_fill() {
  local series=$1 pids=$2
  shift 2
  local path="/v2/$OCI_REPO/blobs/$BIG" gets_before before backing_before start clients=() base client
  gets_before=$(upstream_gets "$path")
  # shellcheck disable=SC2086 # a list of PIDs
  before=$(sum_ticks $pids)
  backing_before=$(backing_ticks)
  start=$(date +%s.%N)
  for base in "$@"; do
    verified_get "$base$path" "$BIG" &
    clients+=("$!")
  done
  local failed=0
  for client in "${clients[@]}"; do wait "$client" || failed=1; done
  local end
  end=$(date +%s.%N)
  if ((failed)); then
    log "cold fill $series: a client did not get the blob"
    return 1
  fi
  local wall gets cpu backing
  wall=$(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.2f", e - s }')
  gets=$(($(upstream_gets "$path") - gets_before))
  # shellcheck disable=SC2086
  cpu=$(ticks_s $(($(sum_ticks $pids) - before)))
  backing=$(ticks_s $(($(backing_ticks) - backing_before)))
  log "cold fill $series: $wall s to the last of $# verified bodies, $gets upstream GET(s), CPU $cpu s (+ $backing s PG/Garage)"
  cluster_row fill "$series" "$#" "$wall" \
    "$(awk -v b="$(size_of big)" -v w="$wall" 'BEGIN { printf "%.0f", b / w / 1e6 }')" "$gets" "$cpu" "$backing"
}

ticks_s() { awk -v t="$1" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", t / hz }'; }

# backing_ticks → CPU ticks of the PostgreSQL (with its backends) and the
# Garage in BACKING_PIDS, the ones the setup measured uses; 0 if none.
backing_ticks() {
  local total=0 pid
  for pid in ${BACKING_PIDS:-}; do total=$((total + $(tree_ticks "$pid"))); done
  echo "$total"
}

# warm BASE_URL...: each replica answers the tiny blob and the manifest twice,
# the same bytes as the layout (the first may fill, the second is a hit).
warm() {
  local base path
  for base in "$@"; do
    for path in "/v2/$OCI_REPO/blobs/$TINY" "/v2/$OCI_REPO/manifests/latest"; do
      for _ in 1 2; do
        "${CLUSTER_CURL[@]}" -H "$MANIFEST_ACCEPT" -o "$WORK/warm-got" "$base$path"
      done
      local want="$WORK/layout/blobs/sha256/${TINY#sha256:}"
      [[ $path == */manifests/* ]] && want="$WORK/layout/blobs/sha256/${MANIFEST#sha256:}"
      cmp -s "$WORK/warm-got" "$want" || {
        log "$base$path answered other bytes"
        return 1
      }
    done
  done
}

# hits_round: for each file and load shape, each setup in turn (all of them
# up, idle but for the one measured, so the rounds interleave and a change in
# the machine's background load hits every setup alike). "1 wrk" is one wrk on
# the setup's first base, "3 wrk" one per base at once (three on one base for
# a single server).
hits_round() {
  local file path shape setup
  for file in blob manifest; do
    path="/v2/$OCI_REPO/blobs/$TINY"
    [[ $file == manifest ]] && path="/v2/$OCI_REPO/manifests/latest"
    for shape in "1 wrk" "3 wrk"; do
      for setup in "${SETUPS[@]}"; do
        local bases
        read -ra bases <<<"${SETUP_BASES[$setup]}"
        ((${#bases[@]} == 1)) && bases=("${bases[0]}" "${bases[0]}" "${bases[0]}")
        if [[ $shape == "1 wrk" ]]; then
          # Three replicas under one wrk would leave two idle.
          [[ $setup == "3 replicas" ]] && continue
          bases=("${bases[0]}")
        fi
        BACKING_PIDS=${SETUP_BACKING[$setup]} parallel_wrk "$setup" "$file" "$shape" \
          "${SETUP_PIDS[$setup]}" "${bases[@]/%/$path}"
      done
    done
  done
}

# parallel_wrk SETUP FILE SHAPE "PID..." URL...: one wrk -t1 -c16 per URL, all
# at once from LOAD_CORE; req/s summed, the worst p50 and p99 of the wrks, the
# PIDs' CPU and PostgreSQL's and Garage's per request.
parallel_wrk() {
  local setup=$1 file=$2 shape=$3 pids=$4
  shift 4
  local gets_before before backing_before outs=() wrks=() i=0 url
  gets_before=$(wc -l <"$WORK/registry.log")
  # shellcheck disable=SC2086
  before=$(sum_ticks $pids)
  backing_before=$(backing_ticks)
  for url in "$@"; do
    OPENSSL_CONF="$WRK_OPENSSL_CONF" timeout $((DURATION + 30)) taskset -c "$LOAD_CORE" \
      wrk -t1 -c16 -d"${DURATION}s" --latency -H "$MANIFEST_ACCEPT" "$url" >"$WORK/wrk-$i.out" &
    wrks+=("$!")
    outs+=("$WORK/wrk-$i.out")
    i=$((i + 1))
  done
  local wrk
  for wrk in "${wrks[@]}"; do wait "$wrk"; done
  local ticks backing_ticks_used
  # shellcheck disable=SC2086
  ticks=$(($(sum_ticks $pids) - before))
  backing_ticks_used=$(($(backing_ticks) - backing_before))
  local upstream
  upstream=$(($(wc -l <"$WORK/registry.log") - gets_before))
  local summary
  summary=$(awk -v t="$ticks" -v bt="$backing_ticks_used" -v hz="$CLK_TCK" '
    function us(v) {
      if (v ~ /us$/) return v + 0; if (v ~ /ms$/) return v * 1000; if (v ~ /s$/) return v * 1e6; return v
    }
    /Requests\/sec/ { rps += $2 }
    /requests in/ { n += $1 }
    /Non-2xx/ { bad += $NF }
    $1 == "50%" { p = us($2); if (p > p50) p50 = p }
    $1 == "99%" { p = us($2); if (p > p99) p99 = p }
    END {
      printf "%.0f\t%.0f\t%.0f\t%.1f\t%.1f\t%d\n", rps, p50, p99,
        (n > 0 ? t / hz * 1e6 / n : 0), (n > 0 ? bt / hz * 1e6 / n : 0), bad
    }' "${outs[@]}")
  local bad=${summary##*$'\t'}
  if [[ "$bad" != 0 || "$upstream" != 0 ]]; then
    log "$setup $file $shape: $bad failed answers, $upstream upstream requests; the figure is not valid"
    cat "${outs[@]}" >&2
    return 1
  fi
  log "$setup $file $shape: $(tr '\t' ' ' <<<"${summary%$'\t'*}") (req/s, p50 µs, p99 µs, CPU µs/req, PG+Garage µs/req)"
  cluster_row hit "$setup" "$file" "$shape" "${summary%$'\t'*}"
  printf '%s\t%s\n' "cluster $setup $file $shape" "${summary%$'\t'*}" >>"$RESULTS"
}

# start_replica TAG NAME [cluster]: a mirror on SERVER_CORE with the registry
# upstream, its config, log and data dir named TAG-NAME; with "cluster", replica
# NAME on PG_URL and GARAGE_TOML with a peer endpoint. Leaves MIRROR_PID and
# REPLICA_BASE.
start_replica() {
  local tag="$1-$2" name=$2 mode=${3:-}
  local extra peer=""
  extra=$(oci_mirror_toml "$UPSTREAM_PORT" anonymous)
  if [[ $mode == cluster ]]; then
    peer=$(free_port)
    extra+=$(printf '\n\n[index]\nurl = "%s"\n\n%s\n\n[cluster]\nreplica = "%s"\npeer_listen = "127.0.0.1:%s"\npeer_url = "https://127.0.0.1:%s"\n' \
      "$PG_URL" "$GARAGE_TOML" "$name" "$peer" "$peer")
  fi
  # The config holds the S3 secret: ours alone to read.
  local mask
  mask=$(umask)
  umask 077
  MIRROR_DATA="$WORK/$tag-data" mirror_config "$WORK/$tag.toml" "$extra"
  umask "$mask"
  MIRROR_LOG="$WORK/$tag.log" start_mirror "$WORK/$tag.toml"
  [[ -z "$peer" ]] || wait_port "$peer"
  REPLICA_BASE="https://127.0.0.1:$MIRROR_PORT"
}

# streams_rss "PID..." BASE_URL...: CLUSTER_STREAMS streamed GETs of the big
# blob spread over the bases, all at once; each PID's RSS before and its peak.
streams_rss() {
  local pids
  read -ra pids <<<"$1"
  shift
  local bases=("$@") pid baseline=()
  for pid in "${pids[@]}"; do
    reset_peak_rss "$pid"
    baseline+=("$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")")
  done
  local start sizes i
  start=$(date +%s.%N)
  sizes=$(for i in $(seq 0 $((CLUSTER_STREAMS - 1))); do
    taskset -c "$LOAD_CORE" curl -sS --fail --max-time "$STREAMS_LIMIT" --cacert "$WORK/pki/ca.crt" --tlsv1.3 \
      --tls13-ciphers TLS_AES_128_GCM_SHA256 --http1.1 -o /dev/null -w '%{size_download}\n' \
      "${bases[i % ${#bases[@]}]}/v2/$OCI_REPO/blobs/$BIG" &
  done; wait)
  local end bytes expected
  end=$(date +%s.%N)
  bytes=$(awk '{s += $1} END {printf "%.0f", s}' <<<"$sizes")
  expected=$(($(size_of big) * CLUSTER_STREAMS))
  if [[ "$bytes" != "$expected" ]]; then
    log "streams: $bytes bytes, expected $expected"
    return 1
  fi
  local mbps
  mbps=$(awk -v b="$bytes" -v s="$start" -v e="$end" 'BEGIN { printf "%.0f", b / (e - s) / 1e6 }')
  cluster_row streams "$CLUSTER_STREAMS" "$(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.1f", e - s }')" "$mbps"
  for i in "${!pids[@]}"; do
    log "replica m$((i + 1)): RSS $((baseline[i])) KiB before, peak $(peak_rss_kib "${pids[i]}") KiB during $CLUSTER_STREAMS streams"
    cluster_row rss "m$((i + 1))" "${baseline[i]}" "$(peak_rss_kib "${pids[i]}")"
  done
}

# add_setup NAME "PID..." "BACKING_PID..." BASE_URL...
add_setup() {
  local name=$1
  SETUPS+=("$name")
  SETUP_PIDS[$name]=$2
  SETUP_BACKING[$name]=$3
  shift 3
  SETUP_BASES[$name]="$*"
}

bench_cluster() {
  CLUSTER_RESULTS="$WORK/cluster.tsv"
  : >"$CLUSTER_RESULTS"
  engines_check
  cluster_curl_init
  SETUPS=()
  declare -gA SETUP_PIDS SETUP_BACKING SETUP_BASES
  log "== cluster: load $(uptime | sed 's/.*load average/load average/')"
  cluster_content

  log "== cluster: cold fills (each series on fresh data dirs, a fresh PostgreSQL and Garage)"
  BACKING_PIDS="" cold_fill direct "$REGISTRY_PID" "https://127.0.0.1:$REGISTRY_PORT"

  start_replica single m0
  BACKING_PIDS="" cold_fill "single node, files" "$MIRROR_PID" "$REPLICA_BASE"
  warm "$REPLICA_BASE"
  add_setup "single node" "$MIRROR_PID" "" "$REPLICA_BASE"

  start_postgres one
  start_garage one
  start_replica one m1 cluster
  BACKING_PIDS="$PG_PID $GARAGE_PID" cold_fill "1 replica, S3" "$MIRROR_PID" "$REPLICA_BASE"
  warm "$REPLICA_BASE"
  add_setup "1 replica" "$MIRROR_PID" "$PG_PID $GARAGE_PID" "$REPLICA_BASE"
  local one_engines=("$PG_PID" "$GARAGE_PID")

  start_postgres three
  start_garage three
  local pids=() bases=() name
  for name in m1 m2 m3; do
    start_replica three "$name" cluster
    pids+=("$MIRROR_PID")
    bases+=("$REPLICA_BASE")
  done
  BACKING_PIDS="$PG_PID $GARAGE_PID" cold_fill "3 replicas, 1 client each" "${pids[*]}" "${bases[@]}"
  warm "${bases[@]}"
  add_setup "3 replicas" "${pids[*]}" "$PG_PID $GARAGE_PID" "${bases[@]}"

  log "== cluster: $CLUSTER_STREAMS streams of the big blob over 3 replicas"
  streams_rss "${pids[*]}" "${bases[@]}"

  start_nginx "$WORK/www-cluster"
  SETUPS=(nginx "${SETUPS[@]}")
  SETUP_PIDS[nginx]=$NGINX_WORKER SETUP_BACKING[nginx]="" SETUP_BASES[nginx]="https://127.0.0.1:$NGINX_PORT"
  local round
  for round in $(seq 1 "$CLUSTER_ROUNDS"); do
    log "== cluster: hits, round $round of $CLUSTER_ROUNDS"
    hits_round
  done

  stop_pid "$NGINX_PID"
  for name in ${SETUP_PIDS["single node"]} ${SETUP_PIDS["1 replica"]} "${pids[@]}"; do stop_pid "$name"; done
  stop_bounded "$GARAGE_PID" TERM 15
  stop_postgres
  stop_bounded "${one_engines[1]}" TERM 15
  PG_PID=${one_engines[0]} stop_postgres
  stop_pid "$REGISTRY_PID"

  log ""
  log "load after the run: $(uptime | sed 's/.*load average/load average/')"
  python3 "$ROOT/scripts/bench/cluster_report.py" "$CLUSTER_RESULTS"
  log "TSV: $CLUSTER_RESULTS"
}
