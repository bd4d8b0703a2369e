//! docs/operations.md: the operation table, the one both transports translate into.

use super::markdown::{code, codes, table};
use super::sources::{Interface, interfaces};
use super::{GENERATED, action_text, details_text};
use crate::service::operation::{OPERATIONS, Spec};

pub fn render() -> String {
    let ifaces = interfaces();
    let mut out = format!("# Operations\n\n{GENERATED}\n");
    out.push_str(
        "Every read and change a client can ask for, whichever transport it uses. D-Bus and varlink \
         only translate a call into one of these operations; what it does, and which polkit action and \
         details guard it, is the same on both. A change is validated whole and committed as one kernel \
         transaction, then saved; on any error nothing changes. D-Bus members are written without the \
         `org.nftlbd1.` prefix of their interface; varlink methods are those of interface `org.nftlbd1`.\n\n\
         The `verb` detail is the operation's name in kebab-case. Reads without an action are open to \
         anyone: they reveal no client.\n\n",
    );
    let headers = [
        "operation",
        "action",
        "polkit details",
        "D-Bus",
        "varlink",
        "what it does",
    ];
    for (title, changes) in [("Reads", false), ("Changes", true)] {
        let rows: Vec<Vec<String>> = OPERATIONS
            .iter()
            .filter(|s| s.changes == changes)
            .map(|s| row(s, &ifaces))
            .collect();
        out.push_str(&format!("## {title}\n\n{}\n", table(&headers, &rows)));
    }
    out.push_str(
        "The varlink method `Monitor` is no operation: it reports committed changes (see \
         [varlink.md](varlink.md)), and anyone may call it.\n",
    );
    out
}

fn row(s: &Spec, ifaces: &[Interface]) -> Vec<String> {
    let dbus: Vec<String> = s.dbus.iter().map(|e| dbus_entry(e, ifaces)).collect();
    vec![
        code(s.name),
        action_text(s),
        details_text(s),
        dbus.join(", "),
        codes(&s.varlink_methods()),
        s.summary.to_string(),
    ]
}

/// How D-Bus offers an operation: a method call, a property read, or a property set.
pub fn dbus_entry(entry: &str, ifaces: &[Interface]) -> String {
    let (iface, member) = entry.split_once('.').unwrap_or(("", entry));
    match member.strip_suffix('=') {
        Some("*") => format!("setting a writable `{iface}` property"),
        Some(prop) => format!("setting `{iface}.{prop}`"),
        None => {
            let is_method = ifaces
                .iter()
                .filter(|i| i.short() == iface)
                .any(|i| i.methods.iter().any(|m| m.name == member));
            if is_method {
                format!("`{entry}()`")
            } else {
                format!("`{entry}` (property)")
            }
        }
    }
}
