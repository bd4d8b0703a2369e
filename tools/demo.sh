#!/usr/bin/env bash
# Demo, as root on Debian 12: a client, a balancer and three web backends in network namespaces.
# The nftlbd daemon runs in the balancer's namespace and serves org.nftlbd1 on a system bus with
# polkit; busctl creates a farm, real HTTP traffic is balanced round robin, and the farm is
# changed live over D-Bus (a backend added, one drained, a weight set, a delegated operator
# allowed one thing and refused another), one kernel transaction each. Then the daemon is killed
# with SIGKILL (the kernel keeps balancing) and restarted: every object is back, nothing is
# rewritten.
#
# It runs in tools/testbed.sh (private mount, PID and network namespaces with their own
# dbus-daemon --system and polkitd), so the host's bus, polkit rules and ruleset are untouched.
set -euo pipefail
cd "$(dirname "$0")/.."
. tools/lib.sh
require_root
if [ "${_TESTBED_INNER:-}" != 1 ]; then
  ensure_commands nft:nftables ip:iproute2 curl:curl /usr/bin/python3:python3 unshare:util-linux \
    dbus-daemon:dbus-daemon busctl:systemd pkcheck:polkitd gdbus:libglib2.0-bin
  if [ -z "${NFTLBD_BIN:-}" ]; then
    cargo build -q --release --bin nftlbd --bin nftlbctl
    NFTLBD_BIN=$PWD/target/release/nftlbd
  fi
  NFTLBD_BIN=$NFTLBD_BIN exec tools/testbed.sh --exec "$PWD/tools/demo.sh"
fi

P=nftlbd-demo; C=$P-client; L=$P-lb; WWW=$(mktemp -d); STATE=$(mktemp -d); PIDS=()
del_netns() { for n in $C $L $P-b1 $P-b2 $P-b3; do ip netns del "$n" 2>/dev/null || true; done; }
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  del_netns
  rm -rf "$WWW" "$STATE"
}
del_netns; trap cleanup EXIT

for n in $C $L $P-b1 $P-b2 $P-b3; do ip netns add "$n"; ip -n "$n" link set lo up; done
ip link add c0 netns $C type veth peer name lbc netns $L
ip -n $C addr add 10.0.0.2/24 dev c0; ip -n $C link set c0 up; ip -n $C route add default via 10.0.0.1
ip -n $L addr add 10.0.0.1/24 dev lbc; ip -n $L link set lbc up
ip -n $L link add br0 type bridge; ip -n $L addr add 10.1.0.1/24 dev br0; ip -n $L link set br0 up
ip netns exec $L sysctl -qw net.ipv4.ip_forward=1
for i in 1 2 3; do
  b=$P-b$i; a=10.1.0.$((i + 1))
  ip link add eth0 netns "$b" type veth peer name vb$i netns $L
  ip -n $L link set vb$i master br0; ip -n $L link set vb$i up
  ip -n "$b" addr add $a/24 dev eth0; ip -n "$b" link set eth0 up; ip -n "$b" route add default via 10.1.0.1
  mkdir -p "$WWW/b$i"; echo "backend-$i" > "$WWW/b$i/index.html"
  ip netns exec "$b" /usr/bin/python3 -m http.server 80 --bind $a --directory "$WWW/b$i" >/dev/null 2>&1 &
  PIDS+=($!)
done
for i in 1 2 3; do
  for _ in $(seq 50); do ip netns exec $L curl -sf --noproxy '*' -m 1 -o /dev/null http://10.1.0.$((i + 1))/ && break; sleep 0.1; done
done

requests() {
  local out=""
  for _ in $(seq "$1"); do out+="$(ip netns exec $C curl -s --noproxy '*' -m 2 http://10.9.0.100/ || echo FAIL) "; done
  echo "  client got: $out"
}
bus() { echo "  \$ busctl $*"; busctl --system "$@" | sed 's/^/    /'; }
as() { local u=$1; shift; echo "  \$ ($u) busctl $*"; setpriv --reuid="$u" --regid="$u" --init-groups -- busctl --system "$@" 2>&1 | sed 's/^/    /' || true; }
start() {
  ip netns exec $L /usr/local/sbin/nftlbd --state-dir "$STATE" run > "$STATE/run$1.out" 2>&1 & D=$!; PIDS+=($D)
  for _ in $(seq 50); do grep -q READY "$STATE/run$1.out" && break; sleep 0.1; done
}
W=/org/nftlbd1/farm/web

echo "== the daemon: nftlbd run in the balancer's namespace, serving org.nftlbd1"
start 1
echo "  daemon says: $(grep 'nftlbd: running' "$STATE/run1.out")"
echo "== CreateFarm web: VIP 10.9.0.100:80, round robin over 2 backends, one transaction"
bus call org.nftlbd1 /org/nftlbd1 org.nftlbd1.Manager CreateFarm 'sa{sv}' web 4 \
  VirtualAddresses as 1 10.9.0.100 VirtualPorts s 80 Scheduler s rr \
  Backends 'aa{sv}' 2 2 Name s b1 IpAddr s 10.1.0.2 2 Name s b2 IpAddr s 10.1.0.3
requests 6
echo "== live: AddBackend b3"
bus call org.nftlbd1 $W org.nftlbd1.Farm AddBackend 'sa{sv}' b3 1 IpAddr s 10.1.0.4
requests 6
echo "== live: b2 drains (no new connections; open ones would continue)"
bus call org.nftlbd1 $W/backend/b2 org.nftlbd1.Backend SetState s drain
requests 4
echo "== live: b3 weighs 3 (a property set is one transaction too)"
bus set-property org.nftlbd1 $W/backend/b3 org.nftlbd1.Backend Weight u 3
requests 8
echo "== delegation: group webops may set backend states of farm web, nothing else"
as opsalice call org.nftlbd1 $W/backend/b2 org.nftlbd1.Backend SetState s up
as opsalice set-property org.nftlbd1 $W/backend/b3 org.nftlbd1.Backend Weight u 1
as bob call org.nftlbd1 $W/backend/b2 org.nftlbd1.Backend SetState s off
requests 5
echo "== the daemon: kill -9 (the kernel keeps balancing), start again (nothing is rewritten)"
kill -9 $D; wait $D 2>/dev/null || true
requests 5
start 2
echo "  daemon says: $(grep "nftlbd: the kernel" "$STATE/run2.out")"
bus tree org.nftlbd1
echo "== nftlbctl, the administrators' command line: the farm, its backends and their traffic"
echo "  \$ nftlbctl show web"; nftlbctl show web | sed 's/^/    /'
kill $D; wait $D 2>/dev/null || true
echo "== the ruleset, as nft shows it"
ip netns exec $L nft list table ip nftlbd
