#!/usr/bin/env bash
# Installs nftlbd where each file belongs. DESTDIR-aware (packaging: DESTDIR=/tmp/pkg ./tools/install.sh).
#   PREFIX   where the program goes (default /usr/local: $PREFIX/sbin/nftlbd)
#   NFTLBD_BIN  the daemon to install (default: target/release/nftlbd, built if missing);
#               NFTLBD_BIN=none installs only the data files.
#   NFTLBCTL_BIN  the command-line client, $PREFIX/bin/nftlbctl (default: next to NFTLBD_BIN)
# Data files go where the bus, polkit and systemd read them, whatever PREFIX is:
#   /usr/share/dbus-1/system.d/org.nftlbd1.conf          who may own and call org.nftlbd1
#   /usr/share/dbus-1/system-services/org.nftlbd1.service  D-Bus activation
#   /usr/share/polkit-1/actions/org.nftlbd1.policy       the org.nftlbd1.* actions
#   $UNITDIR/nftlbd.service (default /usr/lib/systemd/system)   the hardened unit
#   $UNITDIR/nftlbd.socket                                the varlink socket (activation)
#   /usr/lib/sysusers.d/nftlbd.conf                      the service user (created now when
#                                                        installing for real and systemd-sysusers exists)
#   /usr/share/doc/nftlbd/                               README and a delegation rules file to adapt
#   /etc/nftlbd/farms.d/                                 farm files (owned by the service user)
set -euo pipefail
cd "$(dirname "$0")/.."
DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/usr/local}
BIN=${NFTLBD_BIN:-target/release/nftlbd}

if [ "$BIN" != none ]; then
  CTL=${NFTLBCTL_BIN:-$(dirname "$BIN")/nftlbctl}
  if [ "$BIN" = target/release/nftlbd ] && { [ ! -x "$BIN" ] || [ ! -x "$CTL" ]; }; then
    cargo build --release --locked --bin nftlbd --bin nftlbctl
  fi
  install -D -m 0755 "$BIN" "$DESTDIR$PREFIX/sbin/nftlbd"
  install -D -m 0755 "$CTL" "$DESTDIR$PREFIX/bin/nftlbctl"
fi
UNITDIR=${UNITDIR:-/usr/lib/systemd/system}
DOCDIR=/usr/share/doc/nftlbd
subst() { sed -e "s#@SBINDIR@#$PREFIX/sbin#g" -e "s#@DOCDIR@#$DOCDIR#g" "$1"; }
put() { install -D -m 0644 /dev/stdin "$DESTDIR$1"; }

install -D -m 0644 dbus/org.nftlbd1.conf "$DESTDIR/usr/share/dbus-1/system.d/org.nftlbd1.conf"
subst dbus/org.nftlbd1.service.in | put /usr/share/dbus-1/system-services/org.nftlbd1.service
for i in Manager Farm Backend Policy Checkpoint; do   # the interfaces, documented (what D-Bus tools read)
  install -D -m 0644 "dbus/org.nftlbd1.$i.xml" "$DESTDIR/usr/share/dbus-1/interfaces/org.nftlbd1.$i.xml"
done
install -D -m 0644 polkit/org.nftlbd1.policy "$DESTDIR/usr/share/polkit-1/actions/org.nftlbd1.policy"
subst systemd/nftlbd.service.in | put "$UNITDIR/nftlbd.service"
install -D -m 0644 systemd/nftlbd.socket "$DESTDIR$UNITDIR/nftlbd.socket"
install -D -m 0644 varlink/org.nftlbd1.varlink "$DESTDIR$DOCDIR/org.nftlbd1.varlink"
install -D -m 0644 systemd/nftlbd.sysusers "$DESTDIR/usr/lib/sysusers.d/nftlbd.conf"
install -D -m 0644 README.md "$DESTDIR$DOCDIR/README.md"
install -D -m 0644 polkit/50-nftlbd-delegate.rules.example "$DESTDIR$DOCDIR/examples/50-nftlbd-delegate.rules"
# Farm files: the daemon reads them and writes a farm back (RuntimeToPersistent). Readable by
# all, as /etc is: a daemon started as root by hand keeps no CAP_DAC_OVERRIDE, and must read
# them too (a file holding secrets, a health check's header, can be made 0640 on its own).
install -d -m 0755 "$DESTDIR/etc/nftlbd/farms.d"
if [ -z "$DESTDIR" ] && command -v systemd-sysusers >/dev/null; then
  systemd-sysusers /usr/lib/sysusers.d/nftlbd.conf
  chown nftlbd:nftlbd /etc/nftlbd/farms.d
fi
echo "installed into ${DESTDIR:-/}"
