//! docs/errors.md: every error, by its D-Bus and varlink names, and when it is raised.

use zbus::DBusError;

use super::GENERATED;
use super::markdown::{code, table};
use super::sources::varlink_errors;
use crate::dbus::Error;

/// Every error the service raises, with when it does.
pub fn errors() -> Vec<(Error, &'static str)> {
    let e = String::new;
    vec![
        (
            Error::InvalidArgument(e()),
            "A name, key, value or document is invalid, or the change would make the configuration \
             invalid. Every invalid field is named with the reason, all at once.",
        ),
        (
            Error::NotFound(e()),
            "No farm, backend, policy or session of that name.",
        ),
        (Error::Exists(e()), "The name is taken."),
        (
            Error::NotAuthorized(e()),
            "polkit refused, or could not be asked. See [polkit.md](polkit.md).",
        ),
        (
            Error::Kernel(e()),
            "The kernel refused the transaction or could not be reached, or the state file could not \
             be written (the kernel change is then undone).",
        ),
        (
            Error::Unsupported(e()),
            "This kernel lacks what a key needs (`queue`, `flow-offload`), or the farm's mode cannot \
             have it; names the key.",
        ),
        (
            Error::LimitExceeded(e()),
            "The caller went past a bound on what it may hold in the daemon: over D-Bus, calls in \
             flight (16 per sender, 256 in all, `src/dbus/limits.rs`), the call refused at once; over \
             varlink, the socket's limits ([varlink.md](varlink.md#limits)), the connection closed \
             after it. Retry when earlier calls are answered.",
        ),
    ]
}

/// The name after the last dot.
pub fn short(error: &Error) -> String {
    let name = error.name().to_string();
    name.rsplit('.').next().unwrap_or_default().to_string()
}

pub fn render() -> String {
    let varlink = varlink_errors();
    let rows: Vec<Vec<String>> = errors()
        .iter()
        .map(|(error, when)| {
            let short = short(error);
            let params = varlink
                .iter()
                .find(|(n, _)| *n == short)
                .map(|(_, p)| format!(" {}", code(p)))
                .unwrap_or_default();
            vec![
                short.clone(),
                code(&error.name().to_string()),
                format!(
                    "{}{params}",
                    code(&format!("{}.{short}", crate::schema::BUS_NAME))
                ),
                when.to_string(),
            ]
        })
        .collect();
    format!(
        "# Errors\n\n{GENERATED}\nEvery error leaves the configuration, the kernel and the state file as \
         they were: a change is applied whole or not at all. Messages name the field and the reason, as \
         `farms[web].backends[b].ip-addr: 2001:db8::5 is an IPv6 address but the farm serves only IPv4`.\n\n\
         {}\nOver varlink, `InvalidArgument` carries every invalid field as `{{field, reason}}` and \
         `Unsupported` the key and the reason; the others carry a message. D-Bus property setters may \
         only raise the standard errors: `org.freedesktop.DBus.Error.InvalidArgs` instead of \
         `InvalidArgument`, `NotFound` and `Exists`, `org.freedesktop.DBus.Error.AccessDenied` instead of \
         `NotAuthorized`, and `org.freedesktop.DBus.Error.Failed` instead of `Kernel` and `Unsupported`.\n\n\
         A property setter past the bound on calls in flight gets \
         `org.freedesktop.DBus.Error.LimitsExceeded` instead of `LimitExceeded`.\n",
        table(&["error", "D-Bus", "varlink (parameters)", "when"], &rows)
    )
}
