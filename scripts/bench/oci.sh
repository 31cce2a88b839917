# OCI benchmark: the same image served by nginx (static files), docker-registry
# (its own storage) and mirror (cache hits), each alone on SERVER_CORE with the
# load generator on LOAD_CORE, plus a cold fill through mirror vs a direct pull.
# Sourced by scripts/bench.sh after setup_workdir, build_release and make_pki.
#
# Content (generated in the work dir, never in git): one image whose layers are
# a 1 GiB blob, a 200 MiB blob, a ~30 KB blob and a tiny one, pushed with skopeo
# to a docker-registry over TLS, which is also mirror's upstream. nginx serves
# hard links to the same blob files at the same URL paths.
#
# Results: $OCI_RESULTS (TSV: kind, scenario, auth, server, values…) and a
# markdown table with the ratios, printed at the end.

OCI_REPO=bench/oci
BIG_SIZE=${BIG_SIZE:-$((1024 * 1024 * 1024))}
MID_SIZE=${MID_SIZE:-$((200 * 1024 * 1024))}
MID_CLIENTS=${MID_CLIENTS:-16}
SMALL_SIZE=30000
TINY_SIZE=40
MANIFEST_ACCEPT="Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json"

# oci_row KIND SCENARIO AUTH SERVER VALUES...
oci_row() {
  local IFS=$'\t'
  printf '%s\n' "$*" >>"$OCI_RESULTS"
}

# blob_of NAME → digest, from the layout's blobs.tsv
blob_of() { awk -v n="$1" '$1 == n {print $2}' "$WORK/layout/blobs.tsv"; }
size_of() { awk -v n="$1" '$1 == n {print $3}' "$WORK/layout/blobs.tsv"; }

oci_content() {
  log "== oci: generating the image (1 GiB + 200 MiB + 30 KB + tiny layers)"
  python3 "$ROOT/scripts/bench/oci_content.py" "$WORK/layout" \
    big="$BIG_SIZE" mid="$MID_SIZE" small="$SMALL_SIZE" tiny="$TINY_SIZE"
  BIG=$(blob_of big) MID=$(blob_of mid) SMALL=$(blob_of small) TINY=$(blob_of tiny)
  MANIFEST=$(blob_of manifest)
  # skopeo and containers/image read a certs.d-style folder: *.crt are CAs.
  mkdir -p "$WORK/certs"
  cp "$WORK/pki/ca.crt" "$WORK/certs/ca.crt"
  # nginx: the same bytes (hard links) at the registry's URL paths.
  local www="$WORK/www-oci/v2/$OCI_REPO"
  mkdir -p "$www/blobs" "$www/manifests"
  local name digest
  for name in big mid small tiny config manifest; do
    digest=$(blob_of "$name")
    ln "$WORK/layout/blobs/sha256/${digest#sha256:}" "$www/blobs/$digest"
  done
  ln "$WORK/layout/blobs/sha256/${MANIFEST#sha256:}" "$www/manifests/latest"
}

oci_push() {
  log "== oci: pushing the image to docker-registry with skopeo"
  start_registry "$WORK/registry-data" "" any
  skopeo --insecure-policy copy -q --dest-cert-dir "$WORK/certs" \
    "oci:$WORK/layout:latest" "docker://127.0.0.1:$REGISTRY_PORT/$OCI_REPO:latest"
  local pushed
  pushed=$(curl -sS --cacert "$WORK/pki/ca.crt" -I -H "$MANIFEST_ACCEPT" \
    "https://127.0.0.1:$REGISTRY_PORT/v2/$OCI_REPO/manifests/latest" |
    awk -F': ' 'tolower($1) == "docker-content-digest" {print $2}' | tr -d '\r')
  if [[ "$pushed" != "$MANIFEST" ]]; then
    log "registry serves manifest $pushed, the layout has $MANIFEST"
    return 1
  fi
}

# The upstream stanza of every mirror config in this benchmark.
oci_mirror_toml() {
  local upstream_port=$1 read=$2
  cat <<TOML
[registry]
read = "$read"

[[registry.upstream]]
name = "upstream"
url = "https://127.0.0.1:$upstream_port"
default = true
ca = "$WORK/pki/ca.crt"
tag_ttl = "24h"
TOML
}

# timed_get NAME URL [curl args] → wall seconds for one GET from LOAD_CORE,
# checking the body has the blob's size.
timed_get() {
  local url=$1 expected=$2
  shift 2
  local start end size
  start=$(date +%s.%N)
  size=$(taskset -c "$LOAD_CORE" curl -sS --fail --cacert "$WORK/pki/ca.crt" --tlsv1.3 \
    --tls13-ciphers TLS_AES_128_GCM_SHA256 --http1.1 -o /dev/null -w '%{size_download}' "$@" "$url")
  end=$(date +%s.%N)
  if [[ "$size" != "$expected" ]]; then
    log "GET $url: $size bytes, expected $expected"
    return 1
  fi
  awk -v s="$start" -v e="$end" 'BEGIN { printf "%.2f", e - s }'
}

# Cold fill of the 1 GiB blob: straight from docker-registry (alone on
# SERVER_CORE) vs through a fresh mirror on SERVER_CORE whose upstream is that
# registry, unpinned as a remote upstream would be. Then warms the mirror with a
# skopeo pull of the whole image.
oci_cold_fill() {
  log "== oci: cold fill of the $BIG_SIZE-byte blob"
  local path="/v2/$OCI_REPO/blobs/$BIG" expected wall before after
  expected=$(size_of big)
  start_registry "$WORK/registry-data"
  before=$(cpu_ticks "$REGISTRY_PID")
  wall=$(timed_get "https://127.0.0.1:$REGISTRY_PORT$path" "$expected")
  after=$(cpu_ticks "$REGISTRY_PID")
  oci_row fill "cold 1 GiB blob" none docker-registry "$wall" \
    "$(awk -v b="$expected" -v w="$wall" 'BEGIN { printf "%.0f", b / w / 1e6 }')" \
    "$(awk -v t=$((after - before)) -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", t / hz }')"
  log "docker-registry direct: $wall s"
  stop_pid "$REGISTRY_PID"

  start_registry "$WORK/registry-data" "" any
  UPSTREAM_PORT=$REGISTRY_PORT
  rm -rf "$WORK/mirror-data"
  MIRROR_DATA="$WORK/mirror-data" mirror_config "$WORK/oci-mirror.toml" \
    "$(oci_mirror_toml "$UPSTREAM_PORT" anonymous)"
  start_mirror "$WORK/oci-mirror.toml"
  before=$(cpu_ticks "$MIRROR_PID")
  wall=$(timed_get "https://127.0.0.1:$MIRROR_PORT$path" "$expected")
  after=$(cpu_ticks "$MIRROR_PID")
  oci_row fill "cold 1 GiB blob" none mirror "$wall" \
    "$(awk -v b="$expected" -v w="$wall" 'BEGIN { printf "%.0f", b / w / 1e6 }')" \
    "$(awk -v t=$((after - before)) -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", t / hz }')"
  log "through mirror (cold): $wall s"

  log "== oci: warming the mirror with a skopeo pull"
  skopeo --insecure-policy copy -q --src-cert-dir "$WORK/certs" \
    "docker://127.0.0.1:$MIRROR_PORT/$OCI_REPO:latest" "dir:$WORK/pulled"
  rm -rf "$WORK/pulled"
  stop_pid "$MIRROR_PID"
  stop_pid "$REGISTRY_PID"
}

# oci_streams SERVER PID BASE_URL: the large-blob scenarios.
oci_streams() {
  local server=$1 pid=$2 base=$3 expected
  expected=$(size_of big)
  curl_stream "$server 1 GiB x1" "$pid" "$base/v2/$OCI_REPO/blobs/$BIG" 1
  check_bytes "$expected"
  oci_row stream "1 GiB blob GET, 1 client" none "$server" "$STREAM_MBPS" "$STREAM_CPU_GB" "$STREAM_RSS_MIB"
  expected=$(($(size_of mid) * MID_CLIENTS))
  curl_stream "$server 200 MiB x$MID_CLIENTS" "$pid" "$base/v2/$OCI_REPO/blobs/$MID" "$MID_CLIENTS"
  check_bytes "$expected"
  oci_row stream "200 MiB blob GET, $MID_CLIENTS clients" none "$server" "$STREAM_MBPS" "$STREAM_CPU_GB" "$STREAM_RSS_MIB"
}

check_bytes() {
  if [[ "$STREAM_BYTES" != "$1" ]]; then
    log "streamed $STREAM_BYTES bytes, expected $1"
    return 1
  fi
}

# oci_requests SERVER PID BASE_URL AUTH [wrk args]: the keep-alive request scenarios.
oci_requests() {
  local server=$1 pid=$2 base=$3 auth=$4
  shift 4
  local scenario url
  for scenario in tiny small head; do
    case $scenario in
      tiny) url="$base/v2/$OCI_REPO/blobs/$TINY" ;;
      small) url="$base/v2/$OCI_REPO/blobs/$SMALL" ;;
      head) url="$base/v2/$OCI_REPO/manifests/latest" ;;
    esac
    local label
    case $scenario in
      tiny) label="tiny blob GET ($(size_of tiny) B)" ;;
      small) label="small blob GET ($(size_of small) B)" ;;
      head) label="manifest HEAD (by tag)" ;;
    esac
    if [[ $scenario == head ]]; then
      head_run "$server $auth $label" "$pid" "$url" -H "$MANIFEST_ACCEPT" "$@"
    else
      wrk_run "$server $auth $label" "$pid" "$url" "$@"
    fi
    if [[ "$WRK_NON2XX" != 0 ]]; then
      log "$server $label: $WRK_NON2XX non-2xx answers; the figure is not valid"
      return 1
    fi
    oci_row rps "$label" "$auth" "$server" "$WRK_RPS" "$WRK_P50" "$WRK_P99" "$WRK_CPU_US"
  done
}

bench_oci() {
  OCI_RESULTS="$WORK/oci.tsv"
  : >"$OCI_RESULTS"
  build_headload
  log "== oci: load $(uptime | sed 's/.*load average/load average/')"
  oci_content
  oci_push
  stop_pid "$REGISTRY_PID"
  oci_cold_fill

  log "== oci: nginx (static files)"
  start_nginx "$WORK/www-oci"
  local base="https://127.0.0.1:$NGINX_PORT"
  oci_streams nginx "$NGINX_WORKER" "$base"
  oci_requests nginx "$NGINX_WORKER" "$base" none
  stop_pid "$NGINX_PID"

  log "== oci: docker-registry"
  start_registry "$WORK/registry-data"
  base="https://127.0.0.1:$REGISTRY_PORT"
  oci_streams docker-registry "$REGISTRY_PID" "$base"
  oci_requests docker-registry "$REGISTRY_PID" "$base" none
  stop_pid "$REGISTRY_PID"
  start_registry "$WORK/registry-data" "$WORK/htpasswd"
  oci_requests docker-registry "$REGISTRY_PID" "https://127.0.0.1:$REGISTRY_PORT" basic -H "$BASIC"
  stop_pid "$REGISTRY_PID"

  # Hits only: the upstream is not running.
  log "== oci: mirror (read = anonymous)"
  MIRROR_DATA="$WORK/mirror-data" mirror_config "$WORK/oci-mirror.toml" \
    "$(oci_mirror_toml "$UPSTREAM_PORT" anonymous)"
  start_mirror "$WORK/oci-mirror.toml"
  base="https://127.0.0.1:$MIRROR_PORT"
  oci_streams mirror "$MIRROR_PID" "$base"
  oci_requests mirror "$MIRROR_PID" "$base" none
  stop_pid "$MIRROR_PID"
  log "== oci: mirror (read = authenticated, htpasswd)"
  MIRROR_DATA="$WORK/mirror-data" mirror_config "$WORK/oci-mirror.toml" \
    "$(oci_mirror_toml "$UPSTREAM_PORT" authenticated)"
  start_mirror "$WORK/oci-mirror.toml"
  oci_requests mirror "$MIRROR_PID" "https://127.0.0.1:$MIRROR_PORT" basic -H "$BASIC"
  stop_pid "$MIRROR_PID"

  log ""
  log "load after the run: $(uptime | sed 's/.*load average/load average/')"
  python3 "$ROOT/scripts/bench/oci_report.py" "$OCI_RESULTS"
  log "TSV: $OCI_RESULTS"
}
