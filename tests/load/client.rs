//! A load client's connection: D-Bus (zbus on the system bus) or varlink (the socket), each call
//! bounded in time; an error reply is an error.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use serde_json::{Value, json};
use zbus::zvariant::Value as V;

use super::plan::Edit;

/// The longest a change or a read may take before it counts as lost.
const CALL_LIMIT: Duration = Duration::from_secs(10);
const SOCKET: &str = "/run/nftlbd/org.nftlbd1";
const DEST: &str = "org.nftlbd1";
const ROOT: &str = "/org/nftlbd1";

pub trait Transport {
    fn apply(&mut self, edit: &Edit) -> Result<(), String>;
    /// The whole configuration and its generation.
    fn read_config(&mut self) -> Result<(Value, u64), String>;
    /// A small read: the generation property (D-Bus), the farm list (varlink).
    fn read_small(&mut self) -> Result<(), String>;
    /// Calls that found the object of an acknowledged change not yet exported (D-Bus).
    fn late_objects(&self) -> usize {
        0
    }
}

pub fn connect(dbus: bool) -> Result<Box<dyn Transport>, String> {
    Ok(if dbus {
        Box::new(Dbus::connect()?)
    } else {
        Box::new(Varlink::connect()?)
    })
}

pub struct Varlink(UnixStream);

impl Varlink {
    pub fn connect() -> Result<Varlink, String> {
        let s = UnixStream::connect(SOCKET).map_err(|e| format!("connect: {e}"))?;
        s.set_read_timeout(Some(CALL_LIMIT)).map_err(|e| e.to_string())?;
        s.set_write_timeout(Some(CALL_LIMIT)).map_err(|e| e.to_string())?;
        Ok(Varlink(s))
    }

    fn call(&mut self, method: &str, params: Value) -> Result<Value, String> {
        let mut bytes = json!({"method": format!("org.nftlbd1.{method}"), "parameters": params})
            .to_string()
            .into_bytes();
        bytes.push(0);
        self.0.write_all(&bytes).map_err(|e| format!("send: {e}"))?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        // One call at a time on this connection, so the reply is all that comes.
        while buf.last() != Some(&0) {
            let n = self.0.read(&mut chunk).map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("the daemon closed the connection".into());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        buf.pop();
        let reply: Value = serde_json::from_slice(&buf).map_err(|e| format!("reply: {e}"))?;
        match reply.get("error") {
            Some(e) => Err(format!("{e}: {}", reply["parameters"])),
            None => Ok(reply["parameters"].clone()),
        }
    }
}

impl Transport for Varlink {
    fn apply(&mut self, edit: &Edit) -> Result<(), String> {
        let (method, params) = match edit {
            Edit::CreateFarm(f) => ("CreateFarm", json!({ "farm": f })),
            Edit::DeleteFarm(name) => ("DeleteFarm", json!({ "name": name })),
            Edit::AddBackend { farm, backend } => ("AddBackend", json!({"farm": farm, "backend": backend})),
            Edit::RemoveBackend { farm, backend } => {
                ("RemoveBackend", json!({"farm": farm, "backend": backend}))
            }
            Edit::SetState { farm, backend, state } => (
                "SetBackendState",
                json!({"farm": farm, "backend": backend, "state": state}),
            ),
            Edit::SetWeight {
                farm,
                backend,
                weight,
            } => (
                "UpdateBackend",
                json!({"farm": farm, "backend": backend, "changes": {"weight": weight}}),
            ),
            Edit::SetBackends(changes) => {
                let changes: Vec<Value> = changes
                    .iter()
                    .map(|(f, b, s)| json!({"farm": f, "backend": b, "state": s}))
                    .collect();
                ("SetBackends", json!({ "changes": changes }))
            }
        };
        self.call(method, params).map(|_| ())
    }

    fn read_config(&mut self) -> Result<(Value, u64), String> {
        let reply = self.call("GetConfig", json!({}))?;
        let generation = reply["generation"]
            .as_u64()
            .ok_or_else(|| format!("no generation in {reply}"))?;
        Ok((reply["config"].clone(), generation))
    }

    fn read_small(&mut self) -> Result<(), String> {
        self.call("ListFarms", json!({})).map(|_| ())
    }
}

/// How long a D-Bus object of an acknowledged change may take to appear: the daemon exports
/// objects from its event stream, after the change's reply has gone (see `Dbus::call`).
const OBJECT_LATE_LIMIT: Duration = Duration::from_secs(1);

pub struct Dbus {
    rt: tokio::runtime::Runtime,
    conn: zbus::Connection,
    late: usize,
}

/// A settings dictionary (`a{sv}`).
type Settings = HashMap<&'static str, V<'static>>;

fn backend_settings(b: &Value) -> (String, Settings) {
    let mut s = Settings::new();
    s.insert(
        "IpAddr",
        V::from(b["ip-addr"].as_str().unwrap_or_default().to_string()),
    );
    if let Some(w) = b["weight"].as_u64() {
        s.insert("Weight", V::U32(w as u32));
    }
    (b["name"].as_str().unwrap_or_default().to_string(), s)
}

impl Dbus {
    fn connect() -> Result<Dbus, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let conn = rt
            .block_on(async { tokio::time::timeout(CALL_LIMIT, zbus::Connection::system()).await })
            .map_err(|_| "no connection to the system bus in time".to_string())?
            .map_err(|e| e.to_string())?;
        Ok(Dbus { rt, conn, late: 0 })
    }

    /// One call. The daemon answers a change before its D-Bus objects follow it, so a call on
    /// an object this client made (and saw acknowledged) may find it missing for a moment: that
    /// call never reached the service (zbus's object server refused it), so it is sent again,
    /// within a bound, and counted as late.
    fn call<B>(&mut self, path: &str, iface: &str, method: &str, body: &B) -> Result<zbus::Message, String>
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
    {
        let began = std::time::Instant::now();
        let mut late = false;
        loop {
            match self.call_once(path, iface, method, body) {
                Err(e)
                    if e.contains("org.freedesktop.DBus.Error.UnknownObject")
                        && began.elapsed() < OBJECT_LATE_LIMIT =>
                {
                    late = true;
                    std::thread::sleep(Duration::from_millis(2));
                }
                other => {
                    self.late += usize::from(late);
                    return other;
                }
            }
        }
    }

    fn call_once<B>(&self, path: &str, iface: &str, method: &str, body: &B) -> Result<zbus::Message, String>
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
    {
        self.rt
            .block_on(async {
                tokio::time::timeout(
                    CALL_LIMIT,
                    self.conn.call_method(Some(DEST), path, Some(iface), method, body),
                )
                .await
            })
            .map_err(|_| format!("{method}: no answer within {CALL_LIMIT:?}"))?
            .map_err(|e| format!("{method}: {e}"))
    }
}

impl Transport for Dbus {
    fn apply(&mut self, edit: &Edit) -> Result<(), String> {
        let farm_path = |f: &str| format!("{ROOT}/farm/{f}");
        let backend_path = |f: &str, b: &str| format!("{ROOT}/farm/{f}/backend/{b}");
        match edit {
            Edit::CreateFarm(f) => {
                let mut s = Settings::new();
                let vips: Vec<String> = f["virtual-addresses"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|a| a.as_str().map(str::to_string))
                    .collect();
                s.insert("VirtualAddresses", V::from(vips));
                let ports = f["virtual-ports"].as_str().unwrap_or_default().to_string();
                s.insert("VirtualPorts", V::from(ports));
                if let Some(sched) = f["scheduler"].as_str() {
                    s.insert("Scheduler", V::from(sched.to_string()));
                }
                let backends: Vec<Settings> = f["backends"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|b| {
                        let (name, mut s) = backend_settings(b);
                        s.insert("Name", V::from(name));
                        s
                    })
                    .collect();
                s.insert("Backends", V::from(backends));
                let name = f["name"].as_str().unwrap_or_default();
                self.call(ROOT, "org.nftlbd1.Manager", "CreateFarm", &(name, s))?;
            }
            Edit::DeleteFarm(name) => {
                self.call(ROOT, "org.nftlbd1.Manager", "DeleteFarm", &(name,))?;
            }
            Edit::AddBackend { farm, backend } => {
                let (name, s) = backend_settings(backend);
                self.call(&farm_path(farm), "org.nftlbd1.Farm", "AddBackend", &(name, s))?;
            }
            Edit::RemoveBackend { farm, backend } => {
                self.call(&farm_path(farm), "org.nftlbd1.Farm", "RemoveBackend", &(backend,))?;
            }
            Edit::SetState { farm, backend, state } => {
                self.call(
                    &backend_path(farm, backend),
                    "org.nftlbd1.Backend",
                    "SetState",
                    &(state,),
                )?;
            }
            Edit::SetWeight {
                farm,
                backend,
                weight,
            } => {
                self.call(
                    &backend_path(farm, backend),
                    "org.freedesktop.DBus.Properties",
                    "Set",
                    &("org.nftlbd1.Backend", "Weight", V::U32(*weight)),
                )?;
            }
            Edit::SetBackends(changes) => {
                let changes: Vec<(String, String, Settings)> = changes
                    .iter()
                    .map(|(f, b, state)| {
                        let mut s = Settings::new();
                        s.insert("State", V::from(state.clone()));
                        (f.clone(), b.clone(), s)
                    })
                    .collect();
                self.call(ROOT, "org.nftlbd1.Manager", "SetBackends", &(changes,))?;
            }
        }
        Ok(())
    }

    fn read_config(&mut self) -> Result<(Value, u64), String> {
        let reply = self.call(ROOT, "org.nftlbd1.Manager", "ExportConfig", &())?;
        let text: String = reply.body().deserialize().map_err(|e| e.to_string())?;
        let config = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        // The generation is a separate read over D-Bus: not paired with the text.
        Ok((config, 0))
    }

    fn read_small(&mut self) -> Result<(), String> {
        self.call(
            ROOT,
            "org.freedesktop.DBus.Properties",
            "Get",
            &("org.nftlbd1.Manager", "Generation"),
        )
        .map(|_| ())
    }

    fn late_objects(&self) -> usize {
        self.late
    }
}
