#!/usr/bin/env bash
# Installs the real clients and peers the tests drive, with apt-get. Idempotent:
# does nothing (and needs no network) when everything is already there.
set -euo pipefail

# command → Debian package that provides it
declare -A needs=(
  [/usr/lib/go-1.19/bin/go]=golang-1.19-go
  [/usr/share/gocode/src/golang.org/x/mod/sumdb/server.go]=golang-golang-x-mod-dev
  [/usr/bin/docker-registry]=docker-registry
  [/usr/bin/skopeo]=skopeo
  [/usr/bin/podman]=podman
  [/usr/bin/curl]=curl
  [/usr/bin/openssl]=openssl
  [/usr/bin/htpasswd]=apache2-utils
  [/usr/bin/git]=git
  [/usr/bin/ip]=iproute2        # network namespaces for tests/upstream_trust.rs (netns)
  [/usr/bin/prlimit]=util-linux # a lowered file limit for tests/http_dispatch.rs (/readyz)
)
if [[ "${MIRROR_BENCH_DEPS:-}" == 1 ]]; then
  needs[/usr/sbin/nginx]=nginx
  needs[/usr/bin/wrk]=wrk
  needs[/usr/bin/h2load]=nghttp2-client
  needs[/usr/bin/taskset]=util-linux
fi

missing=()
for path in "${!needs[@]}"; do
  [[ -e "$path" ]] || missing+=("${needs[$path]}")
done
if ((${#missing[@]} == 0)); then
  exit 0
fi

sudo=""
if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
echo "installing test dependencies: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends ca-certificates "${missing[@]}" >/dev/null
