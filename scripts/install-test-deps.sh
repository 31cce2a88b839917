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
  [/usr/bin/ip]=iproute2        # network namespaces: tests/upstream_trust.rs, tests/docker_e2e.rs
  [/usr/bin/prlimit]=util-linux # a lowered file limit for tests/http_dispatch.rs (/readyz)
  [/usr/sbin/dockerd]=docker.io
  [/usr/bin/docker]=docker.io
  [/usr/bin/containerd]=containerd
  [/usr/bin/ctr]=containerd
)
# Packages that bookworm has only in bookworm-backports (Go 1.23 beside 1.19).
declare -A backports=(
  [/usr/lib/go-1.23/bin/go]=golang-1.23-go
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
missing_backports=()
for path in "${!backports[@]}"; do
  [[ -e "$path" ]] || missing_backports+=("${backports[$path]}")
done
if ((${#missing[@]} == 0 && ${#missing_backports[@]} == 0)); then
  exit 0
fi

sudo=""
if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
echo "installing test dependencies: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
if ((${#missing_backports[@]} > 0)) &&
  ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
  echo "deb http://deb.debian.org/debian bookworm-backports main" |
    $sudo tee /etc/apt/sources.list.d/bookworm-backports.list >/dev/null
fi
$sudo apt-get update -qq
if ((${#missing[@]} > 0)); then
  $sudo apt-get install -y -qq --no-install-recommends ca-certificates "${missing[@]}" >/dev/null
fi
if ((${#missing_backports[@]} > 0)); then
  $sudo apt-get install -y -qq --no-install-recommends -t bookworm-backports \
    "${missing_backports[@]}" >/dev/null
fi
