//! One call as a given user over either front end, with the error's name read back: `gdbus`
//! for D-Bus (busctl prints an error's message but not its name) and `nftlbctl varlink`. Every
//! call runs under `timeout`, so a call that hangs fails instead of stalling the test.
#![allow(dead_code)]

use std::process::Command;

/// Seconds a call may take before it counts as hung.
const LIMIT: &str = "20";

/// What one call gave.
#[derive(Debug)]
pub struct Outcome {
    /// The exit status (124: it hung and was killed).
    pub code: i32,
    /// The error's name (`org.nftlbd1.Error.NotAuthorized`), when the call failed with one.
    pub error: Option<String>,
    /// Everything it printed.
    pub text: String,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.code == 0
    }
}

/// `cmd` as `user` (root when `None`), limited in time.
fn run_as(user: Option<&str>, cmd: &[&str]) -> (i32, String) {
    let mut c = Command::new("timeout");
    c.arg(LIMIT);
    if let Some(u) = user {
        c.args([
            "setpriv",
            &format!("--reuid={u}"),
            &format!("--regid={u}"),
            "--init-groups",
            "--",
        ]);
    }
    let out = c.args(cmd).output().expect("run timeout");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// The error name that follows `marker` in `text`, up to the next ": ".
fn name_after(text: &str, marker: &str) -> Option<String> {
    let rest = &text[text.find(marker)? + marker.len()..];
    let end = rest.find(": ").unwrap_or(rest.len());
    Some(rest[..end].trim().to_string())
}

/// A D-Bus method call on `org.nftlbd1` as `user`: `method` is `interface.Member`, `args` are
/// GVariant text (`"'web'"`, `"{'Weight': <uint32 2>}"`). gdbus never sets the
/// allow-interactive-authorization flag, so polkit answers at once.
pub fn dbus(user: Option<&str>, path: &str, method: &str, args: &[String]) -> Outcome {
    let mut cmd = vec![
        "gdbus",
        "call",
        "--system",
        "--dest",
        "org.nftlbd1",
        "--object-path",
        path,
        "--method",
        method,
    ];
    cmd.extend(args.iter().map(String::as_str));
    let (code, text) = run_as(user, &cmd);
    // gdbus: "Error: GDBus.Error:org.nftlbd1.Error.NotAuthorized: message".
    let error = if code == 0 {
        None
    } else {
        name_after(&text, "GDBus.Error:")
    };
    Outcome { code, error, text }
}

/// Setting a property of an `org.nftlbd1` object as `user`; `value` is GVariant text.
pub fn dbus_set(user: Option<&str>, path: &str, iface: &str, name: &str, value: &str) -> Outcome {
    let args = [format!("'{iface}'"), format!("'{name}'"), format!("<{value}>")];
    dbus(user, path, "org.freedesktop.DBus.Properties.Set", &args)
}

/// A varlink call to `org.nftlbd1.METHOD` as `user`, with `nftlbctl varlink` (exit status 77 when
/// polkit refused).
pub fn varlink(user: Option<&str>, method: &str, params: &str) -> Outcome {
    let method = format!("org.nftlbd1.{method}");
    let (code, text) = run_as(user, &["nftlbctl", "varlink", &method, params]);
    // nftlbctl: "nftlbctl: org.nftlbd1.NotAuthorized: {parameters}".
    let error = if code == 0 {
        None
    } else {
        name_after(&text, "nftlbctl: ")
    };
    Outcome { code, error, text }
}
