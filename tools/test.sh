#!/usr/bin/env bash
# The whole test suite. Run as root on Debian 12 (the kernel tests create network namespaces and
# talk to nf_tables). Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" = 0 ] || { echo "tools/test.sh: run as root (kernel tests need CAP_NET_ADMIN and namespaces)" >&2; exit 2; }

need=()
command -v nft >/dev/null || need+=(nftables)
command -v ip >/dev/null || need+=(iproute2)
command -v unshare >/dev/null || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

echo "== format and lints"
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings

echo "== tests (unit, kernel in fresh network namespaces, bench smoke run)"
cargo test --all-targets --locked
