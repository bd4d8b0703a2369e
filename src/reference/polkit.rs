//! docs/polkit.md: the actions with their descriptions and defaults, the details every check
//! passes, and the example rules file.

use super::markdown::{block, code, codes, table};
use super::sources::{POLKIT_EXAMPLE, actions};
use super::{GENERATED, details_text};
use crate::polkit::DETAILS;
use crate::service::operation::OPERATIONS;

/// What each detail holds.
pub const MEANINGS: &[(&str, &str)] = &[
    ("farm", "The farm's name."),
    ("backend", "The backend's name."),
    ("policy", "The policy's name."),
    (
        "verb",
        "The operation, in kebab-case (`set-backend-state`). Passed by every check.",
    ),
    (
        "keys",
        "The canonical keys an update sets or resets, sorted, joined with commas (`persist-ttl,scheduler`).",
    ),
    ("state", "The state asked for: `up`, `down`, `off` or `drain`."),
    ("mode", "`merge` or `replace`."),
];

pub fn render() -> String {
    let mut out = format!("# polkit\n\n{GENERATED}\n");
    out.push_str(
        "Every change, and every read that reveals clients (sessions, policy counters), asks polkit \
         whether the caller may: over D-Bus the caller's bus name, over varlink the calling process \
         (the kernel's credentials of the connection). Root is always allowed. The check passes \
         details, so rules can delegate narrowly: one farm, one verb, one state. A caller that allows \
         interactive authentication (the D-Bus flag `ALLOW_INTERACTIVE_AUTHORIZATION`, varlink's \
         `allowInteractiveAuthentication`) may be asked for a password by its agent. \
         `Manager.GetPermissions` and varlink's `GetPermissions` tell a caller `yes`, `no` or `auth` for \
         each action, without details.\n\n",
    );
    let rows: Vec<Vec<String>> = actions()
        .iter()
        .map(|a| {
            let guarded: Vec<&str> = OPERATIONS
                .iter()
                .filter(|s| s.action == Some(a.id.as_str()))
                .map(|s| s.name)
                .collect();
            vec![
                code(&a.id),
                a.description.clone(),
                a.defaults.iter().map(|d| code(d)).collect::<Vec<_>>().join(" / "),
                if a.implies.is_empty() {
                    "".into()
                } else {
                    codes(&a.implies)
                },
                codes(&guarded),
            ]
        })
        .collect();
    out.push_str(&format!(
        "## Actions\n\n{}\nDefaults are polkit's `allow_any` / `allow_inactive` / `allow_active`: \
         `auth_admin_keep` asks for an administrator's password and remembers it for a few minutes. \
         An action that implies another grants it too.\n\n",
        table(
            &["action", "description", "defaults", "implies", "operations"],
            &rows
        )
    ));
    let rows: Vec<Vec<String>> = DETAILS
        .iter()
        .map(|d| {
            let passed: Vec<&str> = OPERATIONS
                .iter()
                .filter(|s| s.action.is_some() && (*d == "verb" || s.details.contains(d)))
                .map(|s| s.name)
                .collect();
            let meaning = MEANINGS.iter().find(|(n, _)| n == d).map(|(_, m)| *m);
            vec![code(d), meaning.unwrap_or_default().into(), codes(&passed)]
        })
        .collect();
    out.push_str(&format!(
        "## Details\n\nRules read them with `action.lookup(\"farm\")`. A detail without a value is not \
         passed.\n\n{}\n",
        table(&["detail", "value", "passed by"], &rows)
    ));
    let checks: Vec<Vec<String>> = OPERATIONS
        .iter()
        .filter(|s| s.action.is_some())
        .map(|s| vec![code(s.name), details_text(s)])
        .collect();
    out.push_str(&format!(
        "Each operation's check:\n\n{}\n",
        table(&["operation", "details"], &checks)
    ));
    out.push_str(&format!(
        "## Example rules file\n\n`polkit/50-nftlbd-delegate.rules.example`, installed as \
         `/etc/polkit-1/rules.d/50-nftlbd-delegate.rules`:\n\n{}",
        block("js", POLKIT_EXAMPLE)
    ));
    out
}
