#!/bin/sh
# An outside health checker for nftlbd: runs a Nagios-style plugin for each backend of a farm and
# tells the daemon its verdict with `nftlbctl set-health`, as nftlbd's own `exec` check would.
#
#   nagios-health.sh [--once] [--interval SECONDS] FARM BACKEND=HOST[:PORT]... -- PLUGIN [ARG...]
#
# An IPv6 address with a port is written [ADDRESS]:PORT. An argument HOST or PORT of the plugin is replaced by the backend's address or port (as the
# exec check does). Exit 0 (OK) and 1 (WARNING) make the backend healthy, 2 (CRITICAL) failing,
# anything else (3 UNKNOWN, a plugin that cannot run) unknown; the plugin's first line of output
# is the reason. A verdict is sent when it changed, so a steady farm costs no transactions.
# The caller needs polkit's org.nftlbd1.backend.set-state for the farm (see docs/polkit.md).
#
# Example, every 5 seconds:
#   nagios-health.sh web a=10.0.0.1:80 b=10.0.0.2:80 -- /usr/lib/nagios/plugins/check_http -H HOST -p PORT
set -u

usage() {
    echo "usage: $0 [--once] [--interval SECONDS] FARM BACKEND=HOST[:PORT]... -- PLUGIN [ARG...]" >&2
    exit 2
}

NFTLBCTL=${NFTLBCTL:-nftlbctl}
once=false
interval=5
while [ $# -gt 0 ]; do
    case $1 in
    --once) once=true; shift ;;
    --interval) [ $# -ge 2 ] || usage; interval=$2; shift 2 ;;
    -*) usage ;;
    *) break ;;
    esac
done
[ $# -ge 1 ] || usage
farm=$1
shift
backends=
while [ $# -gt 0 ] && [ "$1" != -- ]; do
    case $1 in
    *=*) backends="$backends $1" ;;
    *) usage ;;
    esac
    shift
done
[ $# -ge 2 ] && [ -n "$backends" ] || usage
shift
state_dir=$(mktemp -d) || exit 1
trap 'rm -rf "$state_dir"' EXIT INT TERM

# check NAME HOST PORT: runs the plugin once for a backend, tells a changed verdict.
check() {
    name=$1 host=$2 port=$3
    shift 3
    # The plugin's words again, after them, with HOST and PORT replaced; then the old ones go.
    n=$#
    for a in "$@"; do
        case $a in
        HOST) a=$host ;;
        PORT) a=$port ;;
        esac
        set -- "$@" "$a"
    done
    shift "$n"
    output=$("$@" 2>&1 </dev/null)
    code=$?
    case $code in
    0 | 1) health=healthy ;;
    2) health=failing ;;
    *) health=unknown ;;
    esac
    reason=$(printf '%s\n' "$output" | head -n 1)
    last="$state_dir/$name"
    if [ "$(cat "$last" 2>/dev/null)" != "$health $reason" ]; then
        if "$NFTLBCTL" set-health "$farm" "$name" "$health" "$reason"; then
            printf '%s' "$health $reason" >"$last"
        fi
    fi
}

while :; do
    for b in $backends; do
        name=${b%%=*}
        addr=${b#*=}
        case $addr in
        \[*\]:*) host=${addr%%]:*} host=${host#[} port=${addr##*]:} ;; # [IPv6]:PORT
        *:*:*) host=$addr port= ;;                                    # IPv6 alone
        *:*) host=${addr%:*} port=${addr##*:} ;;
        *) host=$addr port= ;;
        esac
        check "$name" "$host" "$port" "$@"
    done
    $once && exit 0
    sleep "$interval"
done
