#!/usr/bin/env bash
# Installs nftlbd where each file belongs. DESTDIR-aware (packaging: DESTDIR=/tmp/pkg ./tools/install.sh).
#   PREFIX   where the program goes (default /usr/local: $PREFIX/sbin/nftlbd)
#   NFTLBD_BIN  the program to install (default: target/release/nftlbd, built if missing);
#               NFTLBD_BIN=none installs only the data files.
# Data files go where the bus and polkit read them, whatever PREFIX is:
#   /usr/share/dbus-1/system.d/org.nftlbd1.conf       who may own and call org.nftlbd1
#   /usr/share/polkit-1/actions/org.nftlbd1.policy    the org.nftlbd1.* actions
#   /usr/share/doc/nftlbd/examples/                   a delegation rules file to adapt
set -euo pipefail
cd "$(dirname "$0")/.."
DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/usr/local}
BIN=${NFTLBD_BIN:-target/release/nftlbd}

if [ "$BIN" != none ]; then
  if [ "$BIN" = target/release/nftlbd ] && [ ! -x "$BIN" ]; then
    cargo build --release --locked --bin nftlbd
  fi
  install -D -m 0755 "$BIN" "$DESTDIR$PREFIX/sbin/nftlbd"
fi
install -D -m 0644 dbus/org.nftlbd1.conf "$DESTDIR/usr/share/dbus-1/system.d/org.nftlbd1.conf"
install -D -m 0644 polkit/org.nftlbd1.policy "$DESTDIR/usr/share/polkit-1/actions/org.nftlbd1.policy"
install -D -m 0644 polkit/50-nftlbd-delegate.rules.example \
  "$DESTDIR/usr/share/doc/nftlbd/examples/50-nftlbd-delegate.rules"
echo "installed into ${DESTDIR:-/}"
