# Re-verification on read, measured: server CPU per GB of a 1 GiB streamed
# hit (HTTP/1.1, TLS 1.3 AES-128-GCM, server on SERVER_CORE, curl on
# LOAD_CORE), and CPU per request of a 30 KB blob read whole (wrk), with
# cache.verify_on_read = "small" and = "all", and first, if MIRROR_BEFORE
# names another build (main's, say), the same through it: all back to back
# in one run, so the ratios hold even on a busy machine. The blobs are
# pushed once into a hosted repository; a hosted hit and a cached one take
# the same read path. Sourced by scripts/bench.sh.
#
# Results: rows "verify <series> ..." in $RESULTS, and per series the median
# CPU-s/GB of the stream and CPU µs of the small GET with their ratios to
# the first series, printed at the end.

VERIFY_SIZE=${VERIFY_SIZE:-$((1024 * 1024 * 1024))}
VERIFY_ROUNDS=${VERIFY_ROUNDS:-5}

# verify_push FILE DIGEST — a streamed push into the hosted repository: a
# session, one PATCH with the whole file (curl streams it), the closing PUT.
verify_push() {
  local base="https://127.0.0.1:$MIRROR_PORT" location
  local curl=(taskset -c "$LOAD_CORE" curl -sS --fail --cacert "$WORK/pki/ca.crt")
  location=$("${curl[@]}" -o /dev/null -D - -X POST "$base/v2/bench/verify/blobs/uploads/" |
    awk 'tolower($1) == "location:" {print $2}' | tr -d '\r')
  "${curl[@]}" -o /dev/null -X PATCH -T "$1" -H "Content-Type: application/octet-stream" "$base$location"
  "${curl[@]}" -o /dev/null -X PUT "$base$location?digest=$2"
}

# verify_series NAME BINARY EXTRA_TOML — the small GET, then VERIFY_ROUNDS
# streams of the big blob, through BINARY; appends "NAME stream-median
# small-µs" to VERIFY_SUMMARY.
verify_series() {
  local name=$1 binary=$2 extra=$3 round values=()
  MIRROR_DATA="$WORK/verify-data" mirror_config "$WORK/verify.toml" \
    "$(printf '[registry]\nwrite = "anonymous"\nhosted = ["bench"]\n\n%s\n' "$extra")"
  MIRROR=$binary start_mirror "$WORK/verify.toml"
  if [[ ! -f "$WORK/verify-pushed" ]]; then
    verify_push "$WORK/verify.bin" "$VERIFY_DIGEST"
    verify_push "$WORK/verify-small.bin" "$VERIFY_SMALL"
    touch "$WORK/verify-pushed"
  fi
  wrk_run "verify $name 30 KB GET" "$MIRROR_PID" \
    "https://127.0.0.1:$MIRROR_PORT/v2/bench/verify/blobs/$VERIFY_SMALL"
  local small_us=$WRK_CPU_US
  for round in $(seq 1 "$VERIFY_ROUNDS"); do
    curl_stream "verify $name #$round" "$MIRROR_PID" \
      "https://127.0.0.1:$MIRROR_PORT/v2/bench/verify/blobs/$VERIFY_DIGEST" 1
    if [[ "$STREAM_BYTES" != "$VERIFY_SIZE" ]]; then
      log "verify $name: streamed $STREAM_BYTES bytes, expected $VERIFY_SIZE"
      return 1
    fi
    values+=("$STREAM_CPU_GB")
  done
  stop_pid "$MIRROR_PID"
  VERIFY_SUMMARY+=("$name $(printf '%s\n' "${values[@]}" | sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}') $small_us")
}

bench_verify() {
  log "== verify: $VERIFY_SIZE-byte streamed hit, verify_on_read small vs all"
  head -c "$VERIFY_SIZE" /dev/urandom >"$WORK/verify.bin"
  VERIFY_DIGEST="sha256:$(sha256sum "$WORK/verify.bin" | cut -d' ' -f1)"
  head -c 30000 /dev/urandom >"$WORK/verify-small.bin"
  VERIFY_SMALL="sha256:$(sha256sum "$WORK/verify-small.bin" | cut -d' ' -f1)"
  VERIFY_SUMMARY=()
  # The older build first: it does not know this build's index migrations.
  if [[ -n "${MIRROR_BEFORE:-}" ]]; then
    verify_series before "$MIRROR_BEFORE" ""
  fi
  verify_series small "$MIRROR" $'[cache]\nverify_on_read = "small"'
  verify_series all "$MIRROR" $'[cache]\nverify_on_read = "all"'
  rm -f "$WORK/verify.bin" "$WORK/verify-small.bin"
  log ""
  log "verify: 1 GiB stream, median server CPU-s per GB over $VERIFY_ROUNDS; 30 KB GET, server CPU µs"
  log "each; both with the ratio to the first series"
  printf '%s\n' "${VERIFY_SUMMARY[@]}" | awk 'NR == 1 {base = $2; small = $3}
    {printf "  %-7s stream %s CPU-s/GB %.2fx   30 KB GET %s µs %.2fx\n", $1, $2, $2 / base, $3, $3 / small}' | tee -a "$RESULTS" >&2
}
