#!/usr/bin/env bash
# tools/testbed.sh CHECKS.sh | --exec CMD...: runs CHECKS.sh (or CMD) against a real system bus and polkitd, with the
# project's files installed at their real paths, in private mount, PID and network namespaces
# (nothing leaks to the host, not even an nftables table; every process dies with the namespace).
# For machines without systemd.
#
# Inside, CHECKS.sh is sourced with: users nftlbd (the service), opsalice (group webops), bob, carol
# (no rule names her unless a test adds one), and admin (password "secret", the only member of group
# sudo: polkit's administrator); the delegation example rules (polkit/50-nftlbd-delegate.rules.example)
# in /etc/polkit-1/rules.d, and the rules files NFTLBD_TESTBED_RULES names (paths separated by ':');
# the stock dbus-daemon --system and polkitd running; and these helpers:
#   check DESC CMD...   one check (counted; a failure fails the run)
#   asuser U CMD...     run as user U (with its groups)
#   hold U              start `sleep` as U in the background; prints its PID (a pkcheck subject)
#   wait_for SECS CMD   poll CMD every 10 ms
# With --exec, CMD runs instead (a test binary, say), with the same users, bus and polkitd; its
# exit status is the run's. NFTLBD_BIN=path installs that daemon as /usr/local/sbin/nftlbd (and
# NFTLBCTL_BIN, or the nftlbctl beside it, as /usr/local/bin/nftlbctl).
set -uo pipefail
SELF=$(readlink -f "$0")
REPO=$(cd "$(dirname "$SELF")/.." && pwd)

if [ "${_TESTBED_INNER:-}" != 1 ]; then
  [ "$(id -u)" = 0 ] || { echo "testbed.sh: run as root" >&2; exit 2; }
  [ $# -ge 1 ] || { echo "usage: $0 CHECKS.sh | --exec CMD..." >&2; exit 2; }
  STAGE=$(mktemp -d "${TMPDIR:-/tmp}/nftlbd-testbed.XXXXXX")
  if [ "$1" = --exec ]; then shift; set -- --exec "$@"; else set -- "$(readlink -f "$1")"; fi
  _TESTBED_INNER=1 _TESTBED_STAGE=$STAGE \
    unshare --mount --propagation private --pid --mount-proc --net --kill-child -- "$SELF" "$@"
  rc=$?
  rmdir "$STAGE" 2>/dev/null || { echo "LEAK: $STAGE not empty"; rc=1; }
  exit $rc
fi

# ---- inside: PID 1 of a new PID namespace, private mounts ----
unset DBUS_SYSTEM_BUS_ADDRESS DBUS_SESSION_BUS_ADDRESS
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C
STAGE=$_TESTBED_STAGE
FAILS=0; NCHECK=0; PIDS=()
check() { local d=$1; shift; NCHECK=$((NCHECK+1)); if "$@"; then echo "  PASS $d"; else FAILS=$((FAILS+1)); echo "  FAIL $d"; fi; }
asuser() { local u=$1; shift; setpriv --reuid="$u" --regid="$u" --init-groups -- "$@"; }
hold() { setpriv --reuid="$1" --regid="$1" --init-groups -- sleep 600 >/dev/null 2>&1 & PIDS+=($!); echo $!; }
wait_for() { local end=$(( ${EPOCHREALTIME/./} + $1*1000000 )); shift
  until "$@" >/dev/null 2>&1; do [ ${EPOCHREALTIME/./} -gt $end ] && return 1; sleep 0.01; done; }
cleanup() { local p; for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; }
trap cleanup EXIT; trap 'exit 143' TERM; trap 'exit 130' INT

mount -n -t tmpfs -o mode=0755 testbed "$STAGE" || exit 1
L=$STAGE/logs; mkdir -p "$L"
mount -n -t tmpfs -o mode=0755 testbed-rundbus /run/dbus
mkdir -p /run/nftlbd && mount -n -t tmpfs -o mode=0755 testbed-runnftlbd /run/nftlbd   # varlink
mkdir -p /run/netns && mount -n -t tmpfs -o mode=0755 testbed-netns /run/netns
# Writable copies (same owner and mode) over the directories the install step writes to.
overlay() {
  local d=$1 st="$STAGE/ov$(echo "$1" | tr / _)"
  mkdir -p "$d" "$st"; cp -a "$d/." "$st/"; chown --reference="$d" "$st"; chmod --reference="$d" "$st"
  mount -n --bind "$st" "$d"
}
for d in /usr/share/polkit-1/actions /etc/polkit-1/rules.d /usr/share/dbus-1/system.d \
         /usr/share/dbus-1/system-services /usr/share/dbus-1/interfaces /usr/share/doc /usr/local/sbin /usr/local/bin \
         /usr/lib/systemd/system /usr/lib/sysusers.d /run/systemd; do overlay "$d"; done
mkdir -p /var/lib/nftlbd && mount -n -t tmpfs -o mode=0700 testbed-state /var/lib/nftlbd
ip link set lo up
for f in passwd group shadow gshadow; do cp -a /etc/$f "$STAGE/$f"; done
printf 'nftlbd:x:2950:2950:nftlbd service:/nonexistent:/usr/sbin/nologin\nopsalice:x:2951:2951:webops:/nonexistent:/usr/sbin/nologin\nbob:x:2952:2952:nobody special:/nonexistent:/usr/sbin/nologin\nadmin:x:2953:2953:an administrator:/nonexistent:/bin/sh\ncarol:x:2954:2954:delegated by a test rule:/nonexistent:/usr/sbin/nologin\n' >>"$STAGE/passwd"
# admin (password "secret") is polkit's only administrator: the only member of group sudo.
sed -i 's/^sudo:\([^:]*\):\([^:]*\):.*/sudo:\1:\2:admin/' "$STAGE/group"
sed -i 's/^sudo:\([^:]*\):\([^:]*\):.*/sudo:\1:\2:admin/' "$STAGE/gshadow"
printf 'nftlbd:x:2950:\nopsalice:x:2951:\nbob:x:2952:\nadmin:x:2953:\ncarol:x:2954:\nwebops:x:2960:opsalice\n' >>"$STAGE/group"
printf 'nftlbd:!:19000::::::\nopsalice:!:19000::::::\nbob:!:19000::::::\ncarol:!:19000::::::\n' >>"$STAGE/shadow"
printf 'admin:%s:19000:0:99999:7:::\n' '$6$nftlbdtestbd$.iMvixWcsw/bfcFQ8swR5uzDpG/OLszuKovD9I6nuxgiWt9EbFuIoY7snP.j9cH7/s2d7VQsn5s1Y7sW4MBgP0' >>"$STAGE/shadow"
printf 'nftlbd:!::\nopsalice:!::\nbob:!::\nadmin:!::\ncarol:!::\nwebops:!::opsalice\n' >>"$STAGE/gshadow"
for f in passwd group shadow gshadow; do mount -n --bind "$STAGE/$f" /etc/$f; done

# The project's real install step, at the real paths.
NFTLBD_BIN=${NFTLBD_BIN:-none} "$REPO/tools/install.sh" >"$L/install.log" 2>&1 || { cat "$L/install.log"; exit 1; }
# The delegation example is enabled before polkitd starts: polkitd does re-read rules.d on change,
# but under load that took more than 5 s in CI, and every user of the testbed wants the rule.
install -m 0644 /usr/share/doc/nftlbd/examples/50-nftlbd-delegate.rules /etc/polkit-1/rules.d/
# A test's own rules, likewise before polkitd starts.
IFS=: read -ra EXTRA_RULES <<<"${NFTLBD_TESTBED_RULES:-}"
for r in "${EXTRA_RULES[@]}"; do
  install -m 0644 "$r" /etc/polkit-1/rules.d/ || { echo "cannot install rules $r"; exit 1; }
done

dbus-daemon --system --nofork --nopidfile </dev/null >"$L/dbus.log" 2>&1 & PIDS+=($!)
wait_for 10 busctl --system --auto-start=no status org.freedesktop.DBus || { echo "no system bus"; cat "$L/dbus.log"; exit 1; }
/usr/lib/polkit-1/polkitd --no-debug </dev/null >"$L/polkitd.log" 2>&1 & PIDS+=($!)
gdbus wait --system --timeout 10 org.freedesktop.PolicyKit1 || { echo "no polkitd"; cat "$L/polkitd.log"; exit 1; }

cd "$REPO"
if [ "$1" = --exec ]; then
  shift
  "$@"; rc=$?
  for n in $(ip netns list | awk '{print $1}'); do ip netns del "$n"; done
  cleanup; trap - EXIT
  umount -n /etc/passwd /etc/group /etc/shadow /etc/gshadow 2>/dev/null
  exit $rc
fi
. "$1"
cleanup; trap - EXIT
umount -n /etc/passwd /etc/group /etc/shadow /etc/gshadow 2>/dev/null
printf '%d checks, %d failed\n' $NCHECK $FAILS
if [ $FAILS != 0 ]; then   # what the daemons said, for a failure seen only in CI
  echo "-- polkitd:"; tail -n 30 "$L/polkitd.log"; echo "-- dbus-daemon:"; tail -n 30 "$L/dbus.log"
fi
[ $FAILS = 0 ]
