# The polkit actions and the delegation example, as the real polkitd reads them (sourced by
# tools/testbed.sh). Subjects are processes of each user (pkcheck --process).

check "polkitd knows the six actions" \
  test "$(pkaction | grep -c '^org\.nftlbd1\.')" = 6
for a in info farm.manage backend.manage backend.set-state policy.manage config; do
  check "org.nftlbd1.$a lets the service user ask about callers" \
    bash -c "pkaction --verbose --action-id org.nftlbd1.$a | grep -q 'org.freedesktop.policykit.owner -> unix-user:nftlbd'"
done
check "changing farms needs an administrator" \
  bash -c "pkaction --verbose --action-id org.nftlbd1.farm.manage | grep -q 'implicit any: *auth_admin_keep'"

ALICE=$(hold opsalice); BOB=$(hold bob); ROOT=$(hold root)
sleep 0.1
# allowed? (pkcheck exit status 0 = yes) for: subject, action, farm
allowed() { pkcheck --action-id "org.nftlbd1.$2" --process "$1" --detail farm "$3" --detail verb test >/dev/null 2>&1; }
check "webops may set backend states of farm web" allowed "$ALICE" backend.set-state web
check "... not of farm db" bash -c "! pkcheck --action-id org.nftlbd1.backend.set-state --process $ALICE --detail farm db >/dev/null 2>&1"
for a in backend.manage farm.manage policy.manage config; do
  check "... and may not $a" bash -c "! pkcheck --action-id org.nftlbd1.$a --process $ALICE --detail farm web >/dev/null 2>&1"
done
for a in backend.set-state backend.manage farm.manage policy.manage config; do
  check "bob may not $a" bash -c "! pkcheck --action-id org.nftlbd1.$a --process $BOB --detail farm web >/dev/null 2>&1"
done
check "bob may read (info)" allowed "$BOB" info web
for a in info farm.manage backend.manage backend.set-state policy.manage config; do
  check "root may $a" allowed "$ROOT" "$a" web
done

# The bus policy: only root or the service user may own the name; others are refused by the bus.
own() { asuser "$1" busctl --system call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus RequestName su org.nftlbd1 4 2>&1; }
for u in bob opsalice; do
  check "$u may not own org.nftlbd1" bash -c "$(declare -f asuser own); own $u | grep -q 'Access denied'"
done
check "the service user may own org.nftlbd1" bash -c "$(declare -f asuser own); own nftlbd | grep -q '^u 1$'"
check "root may own org.nftlbd1" bash -c "$(declare -f asuser own); own root | grep -q '^u 1$'"
