# The polkit actions and the delegation example, as the real polkitd reads them (sourced by
# tools/testbed.sh). Subjects are processes of each user (pkcheck --process).

# Output is read whole before it is searched: `grep -q` leaving a pipe early would kill its
# writer with SIGPIPE, and a failing lister must fail the check.
actions() { local out; out=$(pkaction) && grep -c '^org\.nftlbd1\.' <<<"$out"; }
check "polkitd knows the seven actions" test "$(actions)" = 7
# has ACTION PATTERN: pkaction's description of org.nftlbd1.ACTION has a line matching PATTERN.
has() { local out; out=$(pkaction --verbose --action-id "org.nftlbd1.$1") && grep -q "$2" <<<"$out"; }
for a in info farm.manage backend.manage backend.set-state policy.manage config checkpoint; do
  check "org.nftlbd1.$a lets the service user ask about callers" \
    has "$a" 'org.freedesktop.policykit.owner -> unix-user:nftlbd'
done
check "changing farms needs an administrator" \
  has farm.manage 'implicit any: *auth_admin_keep'

ALICE=$(hold opsalice); BOB=$(hold bob); ROOT=$(hold root)
sleep 0.1
# allowed? (pkcheck exit status 0 = yes) for: subject, action, farm
allowed() { pkcheck --action-id "org.nftlbd1.$2" --process "$1" --detail farm "$3" --detail verb test >/dev/null 2>&1; }
# refused (same arguments): polkit's own "no" for these callers, an administrator's password
# being needed and no agent allowed: exit status 2 and exactly this message. Any other failure
# (pkcheck missing 127, a bad argument 126, an unknown action 127) is not a refusal.
refused() {
  local err rc
  err=$(pkcheck --action-id "org.nftlbd1.$2" --process "$1" --detail farm "$3" 2>&1 >/dev/null); rc=$?
  [ "$rc" = 2 ] && [ "$err" = "Authorization requires authentication and -u wasn't passed." ] ||
    { echo "    pkcheck: exit $rc: $err"; return 1; }
}
check "webops may set backend states of farm web" allowed "$ALICE" backend.set-state web
check "... not of farm db" refused "$ALICE" backend.set-state db
for a in backend.manage farm.manage policy.manage config; do
  check "... and may not $a" refused "$ALICE" "$a" web
done
for a in backend.set-state backend.manage farm.manage policy.manage config; do
  check "bob may not $a" refused "$BOB" "$a" web
done
check "bob may read (info)" allowed "$BOB" info web
for a in info farm.manage backend.manage backend.set-state policy.manage config checkpoint; do
  check "root may $a" allowed "$ROOT" "$a" web
done

# The bus policy: only root or the service user may own the name; others are refused by the bus.
own() { asuser "$1" busctl --system call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus RequestName su org.nftlbd1 4 2>&1; }
# owner_refused USER / owner_granted USER: busctl's exit status as well as its answer.
owner_refused() { local out; out=$(own "$1") && return 1; grep -q 'Access denied' <<<"$out"; }
owner_granted() { local out; out=$(own "$1") && [ "$out" = "u 1" ]; }
for u in bob opsalice; do
  check "$u may not own org.nftlbd1" owner_refused $u
done
check "the service user may own org.nftlbd1" owner_granted nftlbd
check "root may own org.nftlbd1" owner_granted root
