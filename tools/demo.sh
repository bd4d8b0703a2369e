#!/usr/bin/env bash
# Demo, as root on Debian 12: a client, a balancer and three web backends in network namespaces;
# the balancer's nf_tables ruleset is written by nftlbd's netlink layer, traffic is balanced
# round-robin, then a third backend is added live in one atomic transaction.
set -euo pipefail
cd "$(dirname "$0")/.."
. tools/lib.sh
require_root
ensure_commands nft:nftables ip:iproute2 curl:curl /usr/bin/python3:python3
cargo build -q --release --example lb_demo
DEMO=$PWD/target/release/examples/lb_demo

P=nftlbd-demo; C=$P-client; L=$P-lb; WWW=$(mktemp -d); PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for n in $C $L $P-b1 $P-b2 $P-b3; do ip netns del "$n" 2>/dev/null || true; done
  rm -rf "$WWW"
}
trap cleanup EXIT
cleanup; trap cleanup EXIT

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
  set +e
  local out=""
  for _ in $(seq "$1"); do out+="$(ip netns exec $C curl -s --noproxy '*' -m 2 http://10.9.0.100/ || echo FAIL) "; done
  echo "  client got: $out"
}
echo "== balancer with 2 backends"
ip netns exec $L "$DEMO" apply 10.1.0.2 10.1.0.3
requests 6
echo "== add a third backend, live"
ip netns exec $L "$DEMO" apply 10.1.0.2 10.1.0.3 10.1.0.4
requests 6
echo "== the ruleset, as nft shows it"
ip netns exec $L nft list table ip nftlbd-demo
