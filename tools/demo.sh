#!/usr/bin/env bash
# Demo, as root on Debian 12: a client, a balancer and three web backends in network namespaces.
# nftlbd balances real HTTP traffic round robin, is changed live (a backend added, one drained)
# in one transaction each, and its daemon is killed with SIGKILL and restarted without changing
# anything in the kernel. (The D-Bus front end comes next; until then changes go through
# `nftlbd apply`.)
set -euo pipefail
cd "$(dirname "$0")/.."
. tools/lib.sh
require_root
ensure_commands nft:nftables ip:iproute2 curl:curl /usr/bin/python3:python3
if [ -z "${NFTLBD_BIN:-}" ]; then
  cargo build -q --release --bin nftlbd
  NFTLBD_BIN=$PWD/target/release/nftlbd
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

nftlbd() { ip netns exec $L "$NFTLBD_BIN" --state-dir "$STATE" "$@"; }
requests() {
  local out=""
  for _ in $(seq "$1"); do out+="$(ip netns exec $C curl -s --noproxy '*' -m 2 http://10.9.0.100/ || echo FAIL) "; done
  echo "  client got: $out"
}
farm() {  # farm BACKEND_JSON...
  local IFS=,
  echo "{\"farms\": [{\"name\": \"web\", \"virtual-addresses\": [\"10.9.0.100\"], \"virtual-ports\": \"80\",
         \"scheduler\": \"rr\", \"backends\": [$*]}]}"
}
be() { echo "{\"name\": \"b$1\", \"ip-addr\": \"10.1.0.$(($1 + 1))\"${2:+, \"state\": \"$2\"}}"; }

echo "== farm web: VIP 10.9.0.100:80, round robin over 2 backends"
farm "$(be 1)" "$(be 2)" > "$STATE/web.json"
nftlbd apply "$STATE/web.json"
requests 6
echo "== live: add a third backend"
farm "$(be 1)" "$(be 2)" "$(be 3)" > "$STATE/web.json"
nftlbd apply "$STATE/web.json"
requests 6
echo "== live: drain backend-2 (no new connections; open ones would continue)"
farm "$(be 1)" "$(be 2 drain)" "$(be 3)" > "$STATE/web.json"
nftlbd apply "$STATE/web.json"
requests 4
echo "== the daemon: start, kill -9, start again (the kernel keeps balancing; nothing is rewritten)"
ip netns exec $L "$NFTLBD_BIN" --state-dir "$STATE" --no-bus run > "$STATE/run1.out" 2>&1 & D=$!; PIDS+=($D)
for _ in $(seq 50); do grep -q READY "$STATE/run1.out" && break; sleep 0.1; done
kill -9 $D; wait $D 2>/dev/null || true
requests 2
ip netns exec $L "$NFTLBD_BIN" --state-dir "$STATE" --no-bus run > "$STATE/run2.out" 2>&1 & D=$!; PIDS+=($D)
for _ in $(seq 50); do grep -q READY "$STATE/run2.out" && break; sleep 0.1; done
echo "  daemon says: $(grep "nftlbd: the kernel" "$STATE/run2.out")"
kill $D; wait $D 2>/dev/null || true
echo "== the ruleset, as nft shows it"
ip netns exec $L nft list table ip nftlbd
