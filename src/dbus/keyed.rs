//! What farm and backend objects share: properties that are a table of canonical keys, read from
//! the committed configuration and set through the service's operations. The objects implement
//! [`Keyed`]; `keyed_interface!` writes their `zbus` interface.

use std::collections::HashMap;
use std::fmt::Write;

use zbus::message::Header;
use zbus::object_server::DispatchResult;
use zbus::zvariant::{OwnedValue, Value};
use zbus::{Connection, fdo};

use super::auth;
use super::error::{Error, to_fdo};
use super::props::{self, Prop};
use super::{Arg, Method, Signal, owned};
use crate::engine::Traffic;
use crate::service::{Caller, Operation, Output, Service};

pub trait Keyed: Send + Sync + 'static {
    const IFACE: &'static str;
    /// Writable keys.
    const TABLE: &'static [Prop];
    const READ_ONLY: &'static [Arg];
    const METHODS: &'static [Method];
    const SIGNALS: &'static [Signal];

    fn service(&self) -> &Service;
    /// A property's value now (`None` when the object's farm or backend is gone).
    fn value(&self, name: &str) -> Option<Value<'static>>;
    /// `farm "web"`, for errors.
    fn what(&self) -> String;
    /// The farm, and the backend, whose traffic `Packets`, `Bytes` and `NewConnections` count.
    fn counted(&self) -> (String, Option<String>);
    /// The operation that sets `prop`'s key (`None`: back to its default).
    fn set_op(&self, prop: &'static Prop, json: Option<serde_json::Value>) -> Operation;
}

fn is_property<K: Keyed>(name: &str) -> bool {
    props::find(K::TABLE, name).is_some() || K::READ_ONLY.iter().any(|(n, _)| *n == name)
}

/// Counters: read from the kernel when asked (they change with every packet, so they never emit
/// `PropertiesChanged`). Anyone may read them: totals reveal no client (per-client data, sessions
/// and policy counters, needs `org.nftlbd1.info`).
const TRAFFIC: [&str; 3] = ["Packets", "Bytes", "NewConnections"];

async fn traffic<K: Keyed>(k: &K) -> fdo::Result<Traffic> {
    let (farm, backend) = k.counted();
    let op = Operation::GetTraffic { farm, backend };
    match k.service().execute(&Caller::nobody(), op).await {
        Ok(Output::Traffic(t)) => Ok(t),
        Ok(other) => Err(to_fdo(auth::unexpected(other))),
        Err(e) => Err(to_fdo(e.into())),
    }
}

pub async fn get<K: Keyed>(k: &K, name: &str) -> Option<fdo::Result<OwnedValue>> {
    if !is_property::<K>(name) {
        return None;
    }
    if let Some(i) = TRAFFIC.iter().position(|n| *n == name) {
        let t = traffic(k).await;
        let pick = |t: Traffic| [t.packets, t.bytes, t.new_connections][i];
        return Some(t.and_then(|t| owned(Value::from(pick(t)))));
    }
    Some(
        k.value(name)
            .ok_or_else(|| fdo::Error::UnknownObject(format!("{} is gone", k.what())))
            .and_then(owned),
    )
}

/// Every property; the counters only for a caller's `GetAll` (not in `InterfacesAdded` or
/// `GetManagedObjects`, where reading thousands of counters would only slow the answer).
pub async fn get_all<K: Keyed>(k: &K, caller: bool) -> fdo::Result<HashMap<String, OwnedValue>> {
    let mut out = HashMap::new();
    let names = K::TABLE
        .iter()
        .map(|p| p.name)
        .chain(K::READ_ONLY.iter().map(|(n, _)| *n));
    for n in names {
        if let Some(v) = k.value(n) {
            out.insert(n.to_string(), owned(v)?);
        }
    }
    if caller && let Ok(t) = traffic(k).await {
        for (name, n) in TRAFFIC.iter().zip([t.packets, t.bytes, t.new_connections]) {
            out.insert(name.to_string(), owned(Value::from(n))?);
        }
    }
    Ok(out)
}

/// Setting a property: one operation (authorized and committed by the service). Announced by the
/// service's event, not here.
pub fn set<'call, K: Keyed>(
    k: &'call K,
    name: &'call str,
    value: &'call Value<'_>,
    connection: &'call Connection,
    header: Option<&'call Header<'_>>,
) -> DispatchResult<'call> {
    let fail = |e: Error| method_error(to_fdo(e));
    let Some(prop) = props::find(K::TABLE, name) else {
        if is_property::<K>(name) {
            return DispatchResult::Async(Box::pin(async move {
                Err(zbus::Error::FDO(Box::new(fdo::Error::PropertyReadOnly(format!(
                    "{name} is read-only"
                )))))
            }));
        }
        return DispatchResult::NotFound;
    };
    DispatchResult::Async(Box::pin(async move {
        let hdr = header.ok_or_else(|| fail(Error::NotAuthorized("no caller".into())))?;
        let json = props::to_json(prop, value)
            .map_err(|e| fail(Error::InvalidArgument(format!("{}: {e}", k.what()))))?;
        auth::execute(k.service(), connection, hdr, k.set_op(prop, json))
            .await
            .map_err(fail)?;
        Ok(())
    }))
}

/// A setter's error as zbus passes it on with its name: `Properties.Set` converts the
/// `zbus::Error` it gets back into an `fdo::Error` by the error's name, which only a
/// `MethodError` carries (any other becomes `org.freedesktop.zbus.Error`, and the caller could not
/// tell AccessDenied from InvalidArgs but by reading the text).
fn method_error(e: fdo::Error) -> zbus::Error {
    use zbus::DBusError;
    let name = e.name().to_owned();
    let description = e.description().map(str::to_string);
    // The message is only carried along; Set's reply is built from the name and description.
    match zbus::Message::method_call(super::ROOT, "Set").and_then(|b| b.build(&())) {
        Ok(m) => zbus::Error::MethodError(name.into(), description, m),
        Err(_) => zbus::Error::FDO(Box::new(e)),
    }
}

pub fn introspect<K: Keyed>(w: &mut dyn Write, level: usize) {
    let props = K::TABLE.iter().map(|p| (p.name, p.sig, true));
    let ro = K::READ_ONLY.iter().map(|(n, s)| (*n, *s, false));
    super::introspect(w, level, K::IFACE, props.chain(ro), K::METHODS, K::SIGNALS);
}

/// The `zbus` interface of a [`Keyed`] object whose methods are `async fn name(&self, &Connection,
/// &Message) -> Result<T, Error>`.
macro_rules! keyed_interface {
    ($t:ty, { $($method:literal => $f:ident),* $(,)? }) => {
        #[zbus::export::async_trait::async_trait]
        impl zbus::object_server::Interface for $t {
            fn name() -> zbus::names::InterfaceName<'static> {
                zbus::names::InterfaceName::from_static_str_unchecked(<$t as $crate::dbus::keyed::Keyed>::IFACE)
            }

            async fn get(
                &self,
                property_name: &str,
                _server: &zbus::ObjectServer,
                _connection: &zbus::Connection,
                _header: Option<&zbus::message::Header<'_>>,
                _emitter: &zbus::object_server::SignalEmitter<'_>,
            ) -> Option<zbus::fdo::Result<zbus::zvariant::OwnedValue>> {
                $crate::dbus::keyed::get(self, property_name).await
            }

            async fn get_all(
                &self,
                _server: &zbus::ObjectServer,
                _connection: &zbus::Connection,
                header: Option<&zbus::message::Header<'_>>,
                _emitter: &zbus::object_server::SignalEmitter<'_>,
            ) -> zbus::fdo::Result<std::collections::HashMap<String, zbus::zvariant::OwnedValue>> {
                $crate::dbus::keyed::get_all(self, header.is_some()).await
            }

            fn set<'call>(
                &'call self,
                property_name: &'call str,
                value: &'call zbus::zvariant::Value<'_>,
                _server: &'call zbus::ObjectServer,
                connection: &'call zbus::Connection,
                header: Option<&'call zbus::message::Header<'_>>,
                _emitter: &'call zbus::object_server::SignalEmitter<'_>,
            ) -> zbus::object_server::DispatchResult<'call> {
                $crate::dbus::keyed::set(self, property_name, value, connection, header)
            }

            async fn set_mut(
                &mut self,
                _property_name: &str,
                _value: &zbus::zvariant::Value<'_>,
                _server: &zbus::ObjectServer,
                _connection: &zbus::Connection,
                _header: Option<&zbus::message::Header<'_>>,
                _emitter: &zbus::object_server::SignalEmitter<'_>,
            ) -> Option<zbus::fdo::Result<()>> {
                None
            }

            fn call<'call>(
                &'call self,
                _server: &'call zbus::ObjectServer,
                connection: &'call zbus::Connection,
                msg: &'call zbus::Message,
                name: zbus::names::MemberName<'call>,
            ) -> zbus::object_server::DispatchResult<'call> {
                match name.as_str() {
                    $($method => zbus::object_server::DispatchResult::new_async(connection, msg, self.$f(connection, msg)),)*
                    _ => zbus::object_server::DispatchResult::NotFound,
                }
            }

            fn call_mut<'call>(
                &'call mut self,
                _server: &'call zbus::ObjectServer,
                _connection: &'call zbus::Connection,
                _msg: &'call zbus::Message,
                _name: zbus::names::MemberName<'call>,
            ) -> zbus::object_server::DispatchResult<'call> {
                zbus::object_server::DispatchResult::NotFound
            }

            fn introspect_to_writer(&self, writer: &mut dyn std::fmt::Write, level: usize) {
                $crate::dbus::keyed::introspect::<$t>(writer, level)
            }
        }
    };
}

pub(crate) use keyed_interface;
