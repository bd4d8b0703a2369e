//! `nftlbctl varlink METHOD [PARAMETERS]`: one raw varlink call to the daemon's socket, for
//! scripts (as `varlinkctl call` does where it exists). The reply's parameters are printed as
//! JSON; an error goes to stderr with its name, and sets the exit status.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;

use serde_json::{Value, json};

use super::CtlError;

pub fn call(
    socket: &str,
    method: &str,
    parameters: Option<&str>,
    more: bool,
    ask: bool,
) -> Result<(), CtlError> {
    let mut params: Value = match parameters {
        Some(p) => {
            serde_json::from_str(p).map_err(|e| CtlError::Invalid(format!("parameters are not JSON: {e}")))?
        }
        None => json!({}),
    };
    // At a terminal, polkit may ask for a password here (the agent lives as long as the call).
    let agent = if ask && method.starts_with("org.nftlbd1.") {
        super::agent::Agent::start()
    } else {
        None
    };
    if agent.is_some()
        && let Some(p) = params.as_object_mut()
    {
        p.entry("allowInteractiveAuthentication")
            .or_insert(Value::Bool(true));
    }
    let mut stream = UnixStream::connect(socket).map_err(|e| CtlError::Failed(format!("{socket}: {e}")))?;
    if !more && agent.is_none() {
        // A daemon that never answers must not hang a script.
        let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(30)));
    }
    let mut msg = serde_json::to_vec(&json!({ "method": method, "parameters": params, "more": more }))
        .map_err(|e| CtlError::Failed(e.to_string()))?;
    msg.push(0);
    stream
        .write_all(&msg)
        .map_err(|e| CtlError::Failed(format!("{socket}: {e}")))?;
    let mut rd = BufReader::new(stream);
    loop {
        let mut buf = Vec::new();
        let n = rd
            .read_until(0, &mut buf)
            .map_err(|e| CtlError::Failed(format!("{socket}: {e}")))?;
        if n == 0 || buf.pop() != Some(0) {
            return Err(CtlError::Failed(format!("{socket}: the connection closed")));
        }
        let reply: Value = serde_json::from_slice(&buf)
            .map_err(|e| CtlError::Failed(format!("{socket}: not a varlink reply: {e}")))?;
        if let Some(name) = reply.get("error").and_then(Value::as_str) {
            let short = name.rsplit('.').next().unwrap_or(name);
            let p = reply.get("parameters").cloned().unwrap_or(Value::Null);
            // The D-Bus error names carry the same meaning (and exit statuses).
            let dbus_name = match short {
                "InvalidArgument" | "NotFound" | "Exists" | "NotAuthorized" | "Kernel" | "Unsupported"
                    if name.starts_with("org.nftlbd1.") =>
                {
                    format!("org.nftlbd1.Error.{short}")
                }
                _ => name.to_string(),
            };
            return Err(CtlError::Refused {
                name: dbus_name,
                message: format!("{name}: {p}"),
            });
        }
        let p = reply.get("parameters").cloned().unwrap_or(json!({}));
        println!("{p}");
        let _ = std::io::stdout().flush();
        if reply.get("continues").and_then(Value::as_bool) != Some(true) {
            return Ok(());
        }
    }
}
