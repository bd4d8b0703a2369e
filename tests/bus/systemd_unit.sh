# The installed systemd unit and activation file (sourced by tools/testbed.sh, after the real
# install step with the daemon installed as /usr/local/sbin/nftlbd).
UNIT=/usr/lib/systemd/system/nftlbd.service
check "the unit is installed" test -f $UNIT
out=$(systemd-analyze verify --man=no $UNIT 2>&1); rc=$?
check "systemd-analyze verify: rc=$rc, nothing printed ${out:+[$out]}" test $rc = 0 -a -z "$out"
level=$(systemd-analyze security --offline=yes $UNIT 2>&1 | sed -n 's/.*Overall exposure level for nftlbd.service: \([0-9.]*\).*/\1/p')
check "systemd-analyze security rates the unit $level (at most 2.0)" awk -v l="$level" 'BEGIN { exit !(l != "" && l <= 2.0) }'
check "it runs as its own user with CAP_NET_ADMIN only" \
  bash -c "grep -qx 'User=nftlbd' $UNIT && grep -qx 'AmbientCapabilities=CAP_NET_ADMIN' $UNIT && grep -qx 'CapabilityBoundingSet=CAP_NET_ADMIN' $UNIT"
check "its ExecStart is the installed daemon" grep -qx 'ExecStart=/usr/local/sbin/nftlbd run' $UNIT
check "activation starts the same daemon" \
  grep -qx 'Exec=/usr/local/sbin/nftlbd run' /usr/share/dbus-1/system-services/org.nftlbd1.service
check "under systemd, activation starts nftlbd.service, whose bus name is org.nftlbd1" bash -c \
  "grep -qx 'SystemdService=nftlbd.service' /usr/share/dbus-1/system-services/org.nftlbd1.service && grep -qx 'BusName=org.nftlbd1' $UNIT"
out=$(systemd-analyze verify --man=no /usr/lib/systemd/system/nftlbd.socket 2>&1); rc=$?
check "the varlink socket unit verifies: rc=$rc, nothing printed ${out:+[$out]}" test $rc = 0 -a -z "$out"
check "the sysusers file names the user" grep -q '^u nftlbd ' /usr/lib/sysusers.d/nftlbd.conf
# verify catches a broken unit (so the check above can fail).
sed 's/^BusName=.*//' $UNIT > "$STAGE/broken.service"
out=$(systemd-analyze verify --man=no "$STAGE/broken.service" 2>&1)
check "verify notices a Type=dbus unit without BusName" grep -q "D-Bus service name" <<<"$out"
