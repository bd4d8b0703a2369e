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
    out.push_str(&limits());
    out.push_str(&format!(
        "## Interface\n\nAs `org.varlink.service.GetInterfaceDescription` returns it:\n\n{}",
        block("", VARLINK)
    ));
    out
}

/// The socket's limits, from the constants the daemon enforces.
fn limits() -> String {
    use crate::varlink::limits::*;
    let t = Timeouts::DAEMON;
    let mib = |n: usize| format!("{} MiB", n >> 20);
    let rows = vec![
        vec![
            "message-size".into(),
            format!("{} ({} bytes)", mib(MAX_MESSAGE), MAX_MESSAGE),
            "One message, its NUL included. A whole configuration of 60,000 backends, each with \
             name, IPv6 address, port, weight, priority, state, mark and connection limit, is about \
             8.2 MiB of compact JSON."
                .into(),
        ],
        vec![
            "connections".into(),
            MAX_CONNECTIONS.to_string(),
            format!(
                "Open at once, all users together; users other than root are refused from {} on, \
                 so root always finds {MAX_CONNECTIONS_ROOT} free.",
                MAX_CONNECTIONS - MAX_CONNECTIONS_ROOT
            ),
        ],
        vec![
            "connections-per-user".into(),
            format!("{MAX_CONNECTIONS_PER_USER} (root: {MAX_CONNECTIONS_ROOT})"),
            "Open at once by one user (the kernel's credentials of the connection).".into(),
        ],
        vec![
            "buffered-bytes".into(),
            format!(
                "{} per user, {} for all users but root, {} for root",
                mib(BUFFER_PER_USER),
                mib(BUFFER_OTHERS),
                mib(BUFFER_ROOT)
            ),
            format!(
                "Bytes of messages being received or not yet answered. A message that finds no room \
                 waits (the client's writes block) for up to {} s, then its connection is closed.",
                t.stall.as_secs()
            ),
        ],
        vec![
            "stall-seconds".into(),
            t.stall.as_secs().to_string(),
            "Between two pieces of an unfinished message.".into(),
        ],
        vec![
            "message-seconds".into(),
            t.message.as_secs().to_string(),
            "From a message's first byte to its last.".into(),
        ],
        vec![
            "idle".into(),
            format!("{} s", t.idle.as_secs()),
            "A connection with nothing unfinished and nothing to answer is closed without an error. \
             `Monitor` with `more` is never idle: it lasts as long as the client reads it."
                .into(),
        ],
        vec![
            "write".into(),
            format!("{} s", t.write.as_secs()),
            "A reply or a `Monitor` event the client does not take within this is not sent: the \
             connection is closed."
                .into(),
        ],
    ];
    format!(
        "## Limits\n\nThe socket is open to every local user, so what one caller may hold in the \
         daemon is bounded. Past a limit the caller gets `{BUS_NAME}.LimitExceeded` with the limit's \
         name and its figure (`{{\"limit\": \"message-size\", \"maximum\": {MAX_MESSAGE}, \
         \"message\": …}}`) and the connection is closed; a refused connection gets the same error \
         and is closed at once. The daemon logs each.\n\n{}\n",
        table(&["limit", "figure", "what"], &rows)
    )
}
