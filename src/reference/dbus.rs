//! docs/dbus.md: the objects, and every method, property and signal of the interface files with
//! its doc string, the operation behind it and the action that guards it.

use super::markdown::{code, table};
use super::sources::{Interface, Member, Property, interfaces};
use super::{GENERATED, action_text, offered_by_dbus, setter, short_doc};
use crate::schema::{self, BACKEND, BUS_NAME, FARM, MANAGER, POLICY, ROOT};

pub fn render() -> String {
    let mut out = format!("# D-Bus API\n\n{GENERATED}\n");
    out.push_str(&format!(
        "The daemon owns {} on the system bus. Calls, property reads and property sets are the \
         [operations](operations.md); values are the [canonical JSON](json.md)'s, one property per \
         key.\n\n",
        code(BUS_NAME)
    ));
    out.push_str(&objects());
    out.push_str(CONVENTIONS);
    out.push_str(LIMITS);
    for iface in interfaces() {
        out.push_str(&interface(&iface));
    }
    out
}

fn objects() -> String {
    let rows = vec![
        vec![
            code(ROOT),
            format!("{}, `org.freedesktop.DBus.ObjectManager`", code(MANAGER)),
            "The load balancer; `GetManagedObjects` returns every object below with its properties.".into(),
        ],
        vec![
            code(&schema::farm_path("FARM")),
            code(FARM),
            "One per farm.".into(),
        ],
        vec![
            code(&schema::backend_path("FARM", "BACKEND")),
            code(BACKEND),
            "One per backend of a farm.".into(),
        ],
        vec![
            code(&schema::policy_path("POLICY")),
            code(POLICY),
            "One per policy.".into(),
        ],
    ];
    format!(
        "## Objects\n\n{}\nNames in paths are escaped as systemd's `sd_bus_path_encode` does: every byte \
         outside `[A-Za-z0-9]` becomes `_` and two lowercase hex digits, so farm `web-1` is {} and its \
         backend `a.1` is {}. Objects appear and disappear with the configuration, announced by the \
         ObjectManager's `InterfacesAdded` and `InterfacesRemoved`.\n\n",
        table(&["object path", "interfaces", "what"], &rows),
        code(&schema::farm_path("web-1")),
        code(&schema::backend_path("web-1", "a.1")),
    )
}

const CONVENTIONS: &str = "## Conventions\n\n\
- Settings dictionaries (`a{sv}`) use the property names, the CamelCase form of the canonical JSON \
keys (`virtual-ports` is `VirtualPorts`), with the property's type. Unknown names and values are \
errors, never ignored.\n\
- Every change is validated whole and committed as one kernel transaction, then saved; on any error \
nothing changes: kernel, state file and objects stay as they were. Errors are listed in \
[errors.md](errors.md).\n\
- Every change, and every read that reveals clients, checks a polkit action for the caller's bus name \
([polkit.md](polkit.md)). A caller that sets the `ALLOW_INTERACTIVE_AUTHORIZATION` message flag may be \
asked to authenticate by its polkit agent.\n\
- After every committed change, whoever made it: `PropertiesChanged` for each property whose value \
changed (except those marked below as not signalled), `Backend.StateChanged` for each backend state \
transition, and `InterfacesAdded`/`InterfacesRemoved` for objects that come or go. \
`Manager.Generation` changes with every commit.\n\n";

/// What bounds callers over D-Bus: the bus daemon, before anything reaches nftlbd.
const LIMITS: &str = "## Limits\n\n\
Callers never reach the daemon directly: the system bus (`dbus-daemon`) stands between them and \
enforces its own limits, with these defaults (`/usr/share/dbus-1/system.conf`): a message is at most \
32 MiB (`max_message_size`), a user holds at most 256 connections (`max_connections_per_user`), a \
connection at most 128 calls awaiting a reply (`max_replies_per_connection`) and 127 MiB of messages \
queued (`max_incoming_bytes`, `max_outgoing_bytes`); past these the bus refuses the caller with \
`org.freedesktop.DBus.Error.LimitsExceeded`. A whole configuration of 60,000 backends is about 8 MiB \
and fits. The daemon reads at most 64 messages ahead of the calls it is serving (zbus's queue); \
beyond that it stops reading and messages wait in the bus, counted against the bus's limits, not \
in the daemon. The calls it is serving each hold their message until answered, so their number is \
bounded only by the bus's per-connection limits; the unit's `MemoryMax=` is the last bound.\n\n";

fn interface(iface: &Interface) -> String {
    let mut out = format!("## {}\n\n{}\n\n", iface.name, iface.doc);
    if !iface.methods.is_empty() {
        out.push_str("### Methods\n\n");
        for m in &iface.methods {
            out.push_str(&method(iface, m));
        }
    }
    if !iface.properties.is_empty() {
        let rows: Vec<Vec<String>> = iface.properties.iter().map(|p| property(iface, p)).collect();
        out.push_str(&format!(
            "### Properties\n\n{}\n",
            table(
                &[
                    "property",
                    "type",
                    "access",
                    "signalled",
                    "setting it",
                    "description"
                ],
                &rows
            )
        ));
    }
    if !iface.signals.is_empty() {
        out.push_str("### Signals\n\n");
        for s in &iface.signals {
            out.push_str(&format!("#### {}\n\n{}\n\n", code(&signature(s)), s.doc));
        }
    }
    out
}

/// `Name(s in1, a{sv} in2) → (o out)`; for signals, every argument is sent.
fn signature(m: &Member) -> String {
    let list = |out: bool| -> String {
        m.args
            .iter()
            .filter(|a| a.out == out)
            .map(|a| format!("{} {}", a.sig, a.name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let replies = list(true);
    if replies.is_empty() {
        format!("{}({})", m.name, list(false))
    } else {
        format!("{}({}) → ({replies})", m.name, list(false))
    }
}

fn method(iface: &Interface, m: &Member) -> String {
    let entry = format!("{}.{}", iface.short(), m.name);
    let ops: Vec<String> = offered_by_dbus(&entry)
        .iter()
        .map(|s| match s.action {
            Some(a) => format!("Operation {}, polkit action {}.", code(s.name), code(a)),
            None => format!("Operation {}, open to anyone.", code(s.name)),
        })
        .collect();
    format!(
        "#### {}\n\n{}\n\n{}\n\n",
        code(&signature(m)),
        m.doc,
        ops.join(" ")
    )
}

fn property(iface: &Interface, p: &Property) -> Vec<String> {
    let setter = setter(iface.short(), p);
    let doc = short_doc(iface.short(), p);
    let signalled = match p.emits.as_deref() {
        None | Some("true") => "yes",
        Some("const") => "constant",
        Some("invalidates") => "invalidated",
        Some(_) => "no: read it when needed",
    };
    vec![
        code(&p.name),
        code(&p.sig),
        p.access.clone(),
        signalled.into(),
        setter
            .map(|s| format!("{}, action {}", code(s.name), action_text(s)))
            .unwrap_or_default(),
        doc,
    ]
}
