//! docs/varlink.md: which operation and action each method is, then the interface file itself,
//! which is the reference for the types.

use super::markdown::{block, code, codes, table};
use super::sources::{VARLINK, varlink_methods};
use super::{GENERATED, action_text};
use crate::schema::{BUS_NAME, VARLINK_SOCKET};
use crate::service::operation::OPERATIONS;

pub fn render() -> String {
    let mut out = format!("# Varlink API\n\n{GENERATED}\n");
    out.push_str(&format!(
        "The daemon serves interface {iface} on the unix socket {sock} (or on the socket systemd passes it: \
         `nftlbd.socket`). Farms, backends, policies and whole configurations are [canonical JSON](json.md); \
         in the `changes` of an update, a key set to `null` goes back to its default. Any varlink client \
         will do; `nftlbctl varlink org.nftlbd1.METHOD [JSON] [--more]` is one.\n\n\
         Changes check the same polkit action and details as over D-Bus, for the calling process (the \
         kernel's credentials of the connection); a call with `\"allowInteractiveAuthentication\": true` \
         lets polkit ask the caller's agent for a password. Errors are `{name}.<Name>` \
         ([errors.md](errors.md)).\n\n\
         `Monitor` with `more` answers at once with the current generation and names, then once per \
         committed change, whoever made it: the farms, backends and policies added, removed or changed, \
         each changed key with its old and new value (`null`: not set), backend state transitions with \
         their reason, and backends that start or stop taking new connections.\n\n",
        iface = code(BUS_NAME),
        name = BUS_NAME,
        sock = code(VARLINK_SOCKET),
    ));
    let rows: Vec<Vec<String>> = varlink_methods()
        .into_iter()
        .map(|m| {
            let specs: Vec<_> = OPERATIONS
                .iter()
                .filter(|s| s.varlink_methods().contains(&m))
                .collect();
            if specs.is_empty() {
                return vec![
                    code(m),
                    "none (reports changes)".into(),
                    "none: anyone may".into(),
                ];
            }
            let names: Vec<&str> = specs.iter().map(|s| s.name).collect();
            let mut actions: Vec<String> = specs.iter().map(|s| action_text(s)).collect();
            actions.dedup();
            vec![code(m), codes(&names), actions.join(", ")]
        })
        .collect();
    out.push_str(&format!(
        "## Methods\n\n{}\nThe operations are described in [operations.md](operations.md).\n\n",
        table(&["method", "operations", "action"], &rows)
    ));
    out.push_str(&format!(
        "## Interface\n\nAs `org.varlink.service.GetInterfaceDescription` returns it:\n\n{}",
        block("", VARLINK)
    ));
    out
}
