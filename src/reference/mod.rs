//! The API reference in `docs/`, rendered from what the daemon is built from: the operation
//! table, the key tables, the polkit actions and details, and the interface files themselves.
//! A test renders it and compares it with the committed pages, so the reference cannot drift
//! from the code; `NFTLBD_WRITE_DOCS=1 cargo test --lib reference` writes them anew.

mod dbus;
mod errors;
mod farm_files;
mod health;
mod index;
mod json;
mod markdown;
mod operations;
mod polkit;
mod sources;
#[cfg(test)]
mod tests;
mod varlink;

use crate::service::operation::{OPERATIONS, Spec};
use sources::Property;

/// Every page: its file name under `docs/` and its Markdown.
pub fn render() -> Vec<(&'static str, String)> {
    vec![
        ("README.md", index::render()),
        ("operations.md", operations::render()),
        ("dbus.md", dbus::render()),
        ("varlink.md", varlink::render()),
        ("json.md", json::render()),
        ("polkit.md", polkit::render()),
        ("errors.md", errors::render()),
        ("health.md", health::render()),
        ("farm-files.md", farm_files::render()),
    ]
}

/// The line every page starts with after its title.
const GENERATED: &str = "Generated from the code (`NFTLBD_WRITE_DOCS=1 cargo test --lib reference`); \
a test fails when this page and the code disagree, so edit the code, not the page.\n";

/// The operations D-Bus offers as `entry` (`Farm.Update`, `Backend.State=`, `Farm.Packets`).
fn offered_by_dbus(entry: &str) -> Vec<&'static Spec> {
    OPERATIONS.iter().filter(|s| s.dbus.contains(&entry)).collect()
}

/// An action as the pages write it: the action, or that anyone may.
fn action_text(spec: &Spec) -> String {
    spec.action
        .map(markdown::code)
        .unwrap_or_else(|| "none: anyone may".into())
}

/// The details a check passes: `verb` with its value, then the others.
fn details_text(spec: &Spec) -> String {
    if spec.action.is_none() {
        return "none".into();
    }
    let mut parts = vec![format!("`verb`=`{}`", spec.verb())];
    parts.extend(spec.details.iter().map(|d| markdown::code(d)));
    parts.join(", ")
}

/// The operation a property set is, for property `p` of interface `short` (`Farm`).
fn setter(short: &str, p: &Property) -> Option<&'static Spec> {
    if !p.access.contains("write") {
        return None;
    }
    offered_by_dbus(&format!("{short}.{}=", p.name))
        .into_iter()
        .chain(offered_by_dbus(&format!("{short}.*=")))
        .next()
}

/// A property's doc string without the sentence every writable key repeats (the pages say
/// which operation and action a set is beside it).
fn short_doc(short: &str, p: &Property) -> String {
    let Some(action) = setter(short, p).and_then(|s| s.action) else {
        return p.doc.clone();
    };
    let same =
        format!(" Writable: setting it is one transaction (action {action}) and emits PropertiesChanged.");
    p.doc.strip_suffix(&same).unwrap_or(&p.doc).to_string()
}
