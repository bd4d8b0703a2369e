#!/usr/bin/env bash
# The whole test suite. Run as root on Debian 12 (the kernel tests create network namespaces and
# talk to nf_tables). Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."

. tools/lib.sh
require_root
ensure_commands nft:nftables ip:iproute2 unshare:util-linux setpriv:util-linux script:bsdutils \
  dbus-daemon:dbus-daemon busctl:systemd systemd-socket-activate:systemd pkcheck:polkitd \
  pkttyagent:polkitd gdbus:libglib2.0-bin pgrep:procps

echo "== format and lints"
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings

echo "== tests (unit, kernel and traffic in network namespaces, bench smoke runs)"
# A hung test must fail the run, not use up CI's time; every failing suite is reported, not just the first.
timeout 1500 cargo test --all-targets --locked --no-fail-fast
