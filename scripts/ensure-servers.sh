#!/usr/bin/env bash
# Make sure the server binaries used by devstack/ and the tests are installed:
# PostgreSQL (server), redis-server and nginx (with its perl module); with --bench also wrk (make serve-bench),
# with --gate valgrind (make bench-gate), with --browser Debian's chromium (make test: the API
# reference page is checked in a headless browser; Playwright drives it, it downloads none).
# `make cluster` needs nothing more: pg_basebackup comes with the server (postgresql-client-N is
# a dependency), a Sentinel is `redis-server --sentinel` (Debian's redis-sentinel package only
# adds a service unit and a symlink), redis-cli and redis-benchmark with redis-tools (a dependency).
# Idempotent; silent when all are present.
# Debian/Ubuntu only (apt-get). Service auto-start is suppressed during the install:
# we run our own throwaway servers on random ports.
set -euo pipefail

pg_bindir() {
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)
    if [[ -z "$dir" ]] && command -v pg_config >/dev/null; then
        dir=$(pg_config --bindir)
    fi
    [[ -n "$dir" && -x "$dir/initdb" && -x "$dir/pg_ctl" ]] && echo "$dir"
}

have() { command -v "$1" >/dev/null || [[ -x "/usr/sbin/$1" || -x "/usr/bin/$1" ]]; }

bench=0
gate=0
browser=0
for arg in "$@"; do
    case $arg in
        --bench) bench=1 ;;  # wrk for make serve-bench
        --gate) gate=1 ;;    # valgrind for the instruction-count gate (make bench-gate)
        --browser) browser=1 ;;  # chromium for tests/live/test_docs_browser.py
    esac
done

missing=()
pg_bindir >/dev/null || missing+=(postgresql)
have redis-server || missing+=(redis-server)
have nginx || missing+=(nginx-light)
# nginx.conf loads the embedded Perl module (the edge's Age on STALE answers).
[[ -e /usr/lib/nginx/modules/ngx_http_perl_module.so ]] || missing+=(libnginx-mod-http-perl)
[[ $bench -eq 1 ]] && ! have wrk && missing+=(wrk)
[[ $gate -eq 1 ]] && ! have valgrind && missing+=(valgrind)
[[ $browser -eq 1 ]] && ! have chromium && missing+=(chromium)

[[ ${#missing[@]} -eq 0 ]] && exit 0

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        SUDO=(sudo -n)
    else
        echo "ensure-servers: missing ${missing[*]} and not root (no passwordless sudo)." >&2
        echo "Run as root: apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${missing[*]}" >&2
        exit 1
    fi
fi
if ! command -v apt-get >/dev/null; then
    echo "ensure-servers: apt-get not found; install ${missing[*]} with your package manager." >&2
    exit 1
fi
echo "ensure-servers: installing ${missing[*]}" >&2

# Keep the packages' maintainer scripts from starting system-wide services (port 80/5432/6379).
policy=/usr/sbin/policy-rc.d
if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy" >/dev/null
    "${SUDO[@]}" chmod 755 "$policy"
    trap '"${SUDO[@]}" rm -f "$policy"' EXIT
fi

"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

pg_bindir >/dev/null || { echo "ensure-servers: PostgreSQL server binaries still missing" >&2; exit 1; }
[[ -x "$(pg_bindir)/pg_basebackup" ]] || { echo "ensure-servers: pg_basebackup missing" >&2; exit 1; }
have redis-server || { echo "ensure-servers: redis-server still missing" >&2; exit 1; }
have nginx || { echo "ensure-servers: nginx still missing" >&2; exit 1; }
[[ -e /usr/lib/nginx/modules/ngx_http_perl_module.so ]] || { echo "ensure-servers: nginx's perl module still missing" >&2; exit 1; }
[[ $bench -eq 0 ]] || have wrk || { echo "ensure-servers: wrk still missing" >&2; exit 1; }
[[ $gate -eq 0 ]] || have valgrind || { echo "ensure-servers: valgrind still missing" >&2; exit 1; }
[[ $browser -eq 0 ]] || have chromium || { echo "ensure-servers: chromium still missing" >&2; exit 1; }
