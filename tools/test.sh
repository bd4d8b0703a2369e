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

echo "== the library's unit tests as an unprivileged user (service and front ends on the in-memory engine)"
# They must need no root, no kernel and no bus: run the same test binary as nobody.
lib_tests=$(cargo test --lib --locked --no-run --message-format=json 2>/dev/null |
  sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
[ -n "$lib_tests" ] || { echo "no library test binary found" >&2; exit 1; }
scratch=$(mktemp -d)
chown 65534:65534 "$scratch"
chmod o+rx "$lib_tests"
# Every directory above the binary must be searchable for nobody.
d=$(dirname "$lib_tests"); while [ "$d" != / ]; do chmod o+x "$d"; d=$(dirname "$d"); done
timeout 300 setpriv --reuid=65534 --regid=65534 --clear-groups env HOME="$scratch" TMPDIR="$scratch" "$lib_tests"
rm -rf "$scratch"
