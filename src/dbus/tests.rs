//! The D-Bus front end without a bus daemon: the object tree served on one end of a
//! peer-to-peer connection (a socket pair), a client on the other, the service on the in-memory
//! engine. The caller is the peer process, as the socket's credentials say.

use std::collections::HashMap;

use zbus::message::Type;
use zbus::zvariant::{OwnedObjectPath, OwnedValue, Value};
use zbus::{Connection, Message, MessageStream};

use super::{ROOT, backend_path, farm_path, policy_path};
use crate::polkit::{self, Details};
use crate::testkit::{Fixture, is_this_process, within};

const MANAGER: &str = "org.nftlbd1.Manager";
const FARM: &str = "org.nftlbd1.Farm";
const BACKEND: &str = "org.nftlbd1.Backend";
const POLICY: &str = "org.nftlbd1.Policy";
const PROPERTIES: &str = "org.freedesktop.DBus.Properties";
const OBJECT_MANAGER: &str = "org.freedesktop.DBus.ObjectManager";

type Managed = HashMap<OwnedObjectPath, HashMap<String, HashMap<String, OwnedValue>>>;

/// A service whose objects are served to `client` over a socket pair.
struct Peer {
    fx: Fixture,
    client: Connection,
    /// Every message the client receives from the start (signals among them).
    incoming: MessageStream,
    _server: Connection,
}

impl Peer {
    async fn start() -> Peer {
        let fx = Fixture::start("dbus");
        let (ours, theirs) = tokio::net::UnixStream::pair().expect("a socket pair");
        let server = zbus::connection::Builder::unix_stream(ours)
            .server(zbus::Guid::generate())
            .expect("a server guid")
            .p2p()
            .build();
        let client = zbus::connection::Builder::unix_stream(theirs).p2p().build();
        let (server, client) = within("the handshake", async { tokio::try_join!(server, client) })
            .await
            .expect("both ends authenticate");
        let incoming = MessageStream::from(&client);
        within("publishing", super::publish(&server, fx.service.clone()))
            .await
            .expect("the objects are served");
        let mut p = Peer {
            fx,
            client,
            incoming,
            _server: server,
        };
        // Publishing announces the objects of the configuration the service started with.
        let mut shown = Vec::new();
        while shown.len() < 4 {
            let s = p.next_signal().await;
            assert_eq!(s.member, "InterfacesAdded", "{s:?}");
            shown.push(s.object());
        }
        assert_eq!(
            shown,
            [
                farm_path("web").to_string(),
                backend_path("web", "a").to_string(),
                backend_path("web", "b").to_string(),
                policy_path("bad").to_string(),
            ]
        );
        p
    }

    async fn next_signal(&mut self) -> Signal {
        use futures_lite::StreamExt;
        loop {
            let msg = within("a signal", self.incoming.next())
                .await
                .expect("the connection stays open")
                .expect("a message");
            if msg.message_type() == Type::Signal {
                return Signal::of(&msg);
            }
        }
    }

    async fn call<B>(
        &self,
        path: &OwnedObjectPath,
        iface: &str,
        member: &str,
        body: &B,
    ) -> zbus::Result<Message>
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
    {
        within(
            member,
            self.client
                .call_method(None::<&str>, path.as_str(), Some(iface), member, body),
        )
        .await
    }

    async fn set(
        &self,
        path: &OwnedObjectPath,
        iface: &str,
        prop: &str,
        value: Value<'_>,
    ) -> zbus::Result<Message> {
        self.call(path, PROPERTIES, "Set", &(iface, prop, value)).await
    }

    async fn get(&self, path: &OwnedObjectPath, iface: &str, prop: &str) -> OwnedValue {
        let reply = self
            .call(path, PROPERTIES, "Get", &(iface, prop))
            .await
            .unwrap_or_else(|e| panic!("Get {prop}: {e}"));
        reply.body().deserialize().expect("a variant")
    }

    async fn managed(&self) -> Managed {
        let reply = self
            .call(&root(), OBJECT_MANAGER, "GetManagedObjects", &())
            .await
            .expect("GetManagedObjects answers");
        reply.body().deserialize().expect("a{oa{sa{sv}}}")
    }

    /// The signals received until the manager announces `generation`, that announcement
    /// excluded: everything the objects say about the changes up to it, in order.
    async fn signals_until(&mut self, generation: u64) -> Vec<Signal> {
        let mut out = Vec::new();
        loop {
            let s = self.next_signal().await;
            if s.path == ROOT && s.member == "PropertiesChanged" {
                let (iface, changed) = s.changed();
                let announced = changed
                    .get("Generation")
                    .map(|g| u64::try_from(g).expect("a u64"));
                if iface == MANAGER && announced == Some(generation) {
                    return out;
                }
            }
            out.push(s);
        }
    }
}

/// A signal, as much of it as the tests look at.
#[derive(Debug)]
struct Signal {
    path: String,
    member: String,
    msg: Message,
}

impl Signal {
    fn of(msg: &Message) -> Signal {
        let hdr = msg.header();
        Signal {
            path: hdr.path().map(|p| p.to_string()).unwrap_or_default(),
            member: hdr.member().map(|m| m.to_string()).unwrap_or_default(),
            msg: msg.clone(),
        }
    }

    /// The object `InterfacesAdded` or `InterfacesRemoved` is about.
    fn object(&self) -> String {
        let body = self.msg.body();
        let path = match self.member.as_str() {
            "InterfacesAdded" => body
                .deserialize::<(OwnedObjectPath, HashMap<String, HashMap<String, OwnedValue>>)>()
                .map(|(p, _)| p),
            "InterfacesRemoved" => body
                .deserialize::<(OwnedObjectPath, Vec<String>)>()
                .map(|(p, _)| p),
            other => panic!("{other} names no object"),
        };
        path.expect("the ObjectManager's signal body").to_string()
    }

    /// `PropertiesChanged`'s interface and changed properties.
    fn changed(&self) -> (String, HashMap<String, OwnedValue>) {
        let (iface, changed, _): (String, HashMap<String, OwnedValue>, Vec<String>) =
            self.msg.body().deserialize().expect("PropertiesChanged's body");
        (iface, changed)
    }
}

fn root() -> OwnedObjectPath {
    OwnedObjectPath::try_from(ROOT).expect("the root path")
}

fn error_name(r: zbus::Result<Message>) -> String {
    match r {
        Err(zbus::Error::MethodError(name, _, _)) => name.to_string(),
        other => panic!("wanted an error reply, got {other:?}"),
    }
}

fn error_text(r: zbus::Result<Message>) -> (String, String) {
    match r {
        Err(zbus::Error::MethodError(name, text, _)) => (name.to_string(), text.unwrap_or_default()),
        other => panic!("wanted an error reply, got {other:?}"),
    }
}

fn owned(v: Value<'_>) -> OwnedValue {
    OwnedValue::try_from(v).expect("an owned value")
}

/// The objects that carry one of nftlbd's interfaces (the nodes between them carry none).
fn paths(m: &Managed) -> Vec<String> {
    let mut p: Vec<String> = m
        .iter()
        .filter(|(_, ifaces)| ifaces.keys().any(|i| i.starts_with("org.nftlbd1.")))
        .map(|(k, _)| k.to_string())
        .collect();
    p.sort_unstable();
    p
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort_unstable();
    v
}

#[tokio::test]
async fn a_created_farm_shows_its_objects() {
    let mut p = Peer::start().await;
    let before = p.managed().await;
    assert_eq!(
        paths(&before),
        sorted(vec![
            farm_path("web").to_string(),
            backend_path("web", "a").to_string(),
            backend_path("web", "b").to_string(),
            policy_path("bad").to_string(),
        ])
    );

    let backend: HashMap<&str, Value<'_>> =
        HashMap::from([("Name", Value::from("x")), ("IpAddr", Value::from("10.0.1.1"))]);
    let settings: HashMap<&str, Value<'_>> = HashMap::from([
        ("VirtualAddresses", Value::from(vec!["192.0.2.20"])),
        ("VirtualPorts", Value::from("443")),
        ("Backends", Value::from(vec![backend])),
    ]);
    let reply = p
        .call(&root(), MANAGER, "CreateFarm", &("api", settings))
        .await
        .expect("CreateFarm succeeds");
    let path: OwnedObjectPath = reply.body().deserialize().expect("an object path");
    assert_eq!(path, farm_path("api"));
    let asked = p.fx.gate.take();
    assert_eq!(asked.len(), 1, "{asked:?}");
    let want = Details {
        farm: "api".into(),
        verb: "create-farm".into(),
        ..Details::default()
    };
    assert_eq!(
        (asked[0].action.as_str(), &asked[0].details),
        (polkit::FARM_MANAGE, &want)
    );
    assert!(is_this_process(&asked[0]), "{:?}", asked[0]);
    assert_eq!(p.fx.control.transactions(), 2);

    let signals = p.signals_until(2).await;
    let added: Vec<String> = signals
        .iter()
        .filter(|s| s.member == "InterfacesAdded")
        .map(Signal::object)
        .collect();
    let api = farm_path("api").to_string();
    let x = backend_path("api", "x").to_string();
    assert_eq!(added, [api.clone(), x.clone()]);

    let after = p.managed().await;
    let mut want_paths = paths(&before);
    want_paths.extend([api, x]);
    assert_eq!(paths(&after), sorted(want_paths));
    let farm = &after[&farm_path("api")][FARM];
    assert_eq!(farm["Name"], owned(Value::from("api")));
    assert_eq!(farm["VirtualAddresses"], owned(Value::from(vec!["192.0.2.20"])));
    assert_eq!(farm["VirtualPorts"], owned(Value::from("443")));
    assert_eq!(
        farm["Backends"],
        owned(Value::from(vec![backend_path("api", "x")]))
    );
    let b = &after[&backend_path("api", "x")][BACKEND];
    assert_eq!(b["IpAddr"], owned(Value::from("10.0.1.1")));
    assert_eq!(b["State"], owned(Value::from("up")));
}

#[tokio::test]
async fn a_backend_property_set_signals_once() {
    let mut p = Peer::start().await;
    let a = backend_path("web", "a");
    let b = backend_path("web", "b");
    p.set(&a, BACKEND, "State", Value::from("drain"))
        .await
        .expect("State is set");
    // A second change, so that anything the first one emitted late would show before its end.
    p.set(&b, BACKEND, "Weight", Value::from(3u32))
        .await
        .expect("Weight is set");
    let asked = p.fx.gate.take();
    let questions: Vec<(&str, &Details)> = asked.iter().map(|q| (q.action.as_str(), &q.details)).collect();
    let state = Details {
        farm: "web".into(),
        backend: "a".into(),
        state: "drain".into(),
        verb: "set-backend-state".into(),
        ..Details::default()
    };
    let weight = Details {
        farm: "web".into(),
        backend: "b".into(),
        keys: "weight".into(),
        verb: "update-backend".into(),
        ..Details::default()
    };
    assert_eq!(
        questions,
        [
            (polkit::BACKEND_SET_STATE, &state),
            (polkit::BACKEND_MANAGE, &weight)
        ]
    );
    assert!(asked.iter().all(is_this_process), "{asked:?}");
    assert_eq!(p.fx.control.transactions(), 3, "one transaction each");

    let signals = p.signals_until(3).await;
    let on = |path: &OwnedObjectPath, member: &str| -> Vec<&Signal> {
        signals
            .iter()
            .filter(|s| s.path == path.as_str() && s.member == member)
            .collect()
    };
    let changed_a = on(&a, "PropertiesChanged");
    assert_eq!(changed_a.len(), 1, "{signals:?}");
    let want: HashMap<String, OwnedValue> = HashMap::from([
        ("State".to_string(), owned(Value::from("drain"))),
        ("Active".to_string(), owned(Value::from(false))),
    ]);
    assert_eq!(changed_a[0].changed(), (BACKEND.to_string(), want));
    let state_a = on(&a, "StateChanged");
    assert_eq!(state_a.len(), 1, "{signals:?}");
    let args: (String, String, String) = state_a[0].msg.body().deserialize().expect("(sss)");
    assert_eq!(args, ("up".into(), "drain".into(), "api".into()));

    let changed_b = on(&b, "PropertiesChanged");
    assert_eq!(changed_b.len(), 1, "{signals:?}");
    // The weight the scheduler uses follows (no check scales it here).
    let want = HashMap::from([
        ("Weight".to_string(), owned(Value::from(3u32))),
        ("EffectiveWeight".to_string(), owned(Value::from(3u32))),
    ]);
    assert_eq!(changed_b[0].changed(), (BACKEND.to_string(), want));
    assert!(on(&b, "StateChanged").is_empty(), "{signals:?}");

    assert_eq!(p.get(&a, BACKEND, "State").await, owned(Value::from("drain")));
    assert_eq!(p.get(&b, BACKEND, "Weight").await, owned(Value::from(3u32)));
}

#[tokio::test]
async fn a_refused_caller_changes_nothing() {
    let p = Peer::start().await;
    let before = p.managed().await;
    let config = p.fx.service.config();
    p.fx.gate.refuse();

    let settings: HashMap<&str, Value<'_>> =
        HashMap::from([("VirtualAddresses", Value::from(vec!["192.0.2.20"]))]);
    let r = p.call(&root(), MANAGER, "CreateFarm", &("api", settings)).await;
    assert_eq!(error_name(r), "org.nftlbd1.Error.NotAuthorized");
    let a = backend_path("web", "a");
    let r = p.call(&a, BACKEND, "SetState", &("drain",)).await;
    assert_eq!(error_name(r), "org.nftlbd1.Error.NotAuthorized");
    let r = p.set(&a, BACKEND, "Weight", Value::from(3u32)).await;
    assert_eq!(
        error_text(r),
        (
            "org.freedesktop.DBus.Error.AccessDenied".to_string(),
            "org.nftlbd1.backend.manage is not allowed for this caller".to_string()
        )
    );
    let r = p
        .set(&farm_path("web"), FARM, "Scheduler", Value::from("hash"))
        .await;
    assert_eq!(error_name(r), "org.freedesktop.DBus.Error.AccessDenied");

    let asked = p.fx.gate.take();
    let actions: Vec<(&str, &str)> = asked
        .iter()
        .map(|q| (q.action.as_str(), q.details.verb.as_str()))
        .collect();
    assert_eq!(
        actions,
        [
            (polkit::FARM_MANAGE, "create-farm"),
            (polkit::BACKEND_SET_STATE, "set-backend-state"),
            (polkit::BACKEND_MANAGE, "update-backend"),
            (polkit::FARM_MANAGE, "update-farm"),
        ]
    );
    assert!(asked.iter().all(is_this_process), "{asked:?}");
    assert_eq!(p.fx.control.transactions(), 1, "only the start committed");
    assert_eq!((p.fx.service.generation(), p.fx.service.config()), (1, config));
    assert_eq!(p.managed().await, before);
}

#[tokio::test]
async fn a_forged_sender_is_still_the_peer_process() {
    use futures_lite::StreamExt;
    let mut p = Peer::start().await;
    p.fx.gate.refuse();
    // On a peer-to-peer connection nobody vouches for the sender field: whatever the peer writes
    // there, it is asked about as the process it is.
    let msg = Message::method_call(backend_path("web", "a").as_str(), "SetState")
        .and_then(|m| m.interface(BACKEND))
        .and_then(|m| m.sender(":1.666"))
        .and_then(|m| m.build(&("drain",)))
        .expect("a call");
    let serial = msg.primary_header().serial_num();
    within("send", p.client.send(&msg)).await.expect("sent");
    let reply = loop {
        let m = within("the reply", p.incoming.next())
            .await
            .expect("the connection stays open")
            .expect("a message");
        if m.header().reply_serial() == Some(serial) {
            break m;
        }
    };
    assert_eq!(reply.message_type(), Type::Error);
    assert_eq!(
        reply.header().error_name().map(|n| n.to_string()),
        Some("org.nftlbd1.Error.NotAuthorized".to_string())
    );
    let asked = p.fx.gate.take();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert!(is_this_process(&asked[0]), "{:?}", asked[0]);
}

#[tokio::test]
async fn renaming_a_farm_moves_its_objects() {
    let mut p = Peer::start().await;
    p.call(&farm_path("web"), FARM, "Rename", &("www",))
        .await
        .expect("Rename succeeds");
    let asked = p.fx.gate.take();
    let want = Details {
        farm: "web".into(),
        verb: "rename-farm".into(),
        ..Details::default()
    };
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(
        (asked[0].action.as_str(), &asked[0].details),
        (polkit::FARM_MANAGE, &want)
    );

    let signals = p.signals_until(2).await;
    let members = |member: &str| -> Vec<String> {
        signals
            .iter()
            .filter(|s| s.member == member)
            .map(|s| s.object())
            .collect()
    };
    let old = [
        backend_path("web", "a").to_string(),
        backend_path("web", "b").to_string(),
        farm_path("web").to_string(),
    ];
    let new = [
        farm_path("www").to_string(),
        backend_path("www", "a").to_string(),
        backend_path("www", "b").to_string(),
    ];
    assert_eq!(members("InterfacesRemoved"), old);
    assert_eq!(members("InterfacesAdded"), new);

    let after = p.managed().await;
    let mut want_paths = new.to_vec();
    want_paths.push(policy_path("bad").to_string());
    assert_eq!(paths(&after), sorted(want_paths));
    assert_eq!(after[&farm_path("www")][FARM]["Name"], owned(Value::from("www")));
    assert_eq!(
        after[&backend_path("www", "a")][BACKEND]["Farm"],
        owned(Value::from(farm_path("www")))
    );
    let r = p.call(&farm_path("web"), FARM, "Delete", &()).await;
    assert_eq!(error_name(r), "org.freedesktop.DBus.Error.UnknownObject");
}

#[tokio::test]
async fn removing_policy_elements_is_all_or_nothing() {
    let mut p = Peer::start().await;
    let bad = policy_path("bad");
    assert_eq!(
        p.get(&bad, POLICY, "Origin").await,
        owned(Value::from("runtime")),
        "in the state, declared by no farm file"
    );
    let r = p
        .call(&bad, POLICY, "RemoveElements", &(vec!["10.8.0.2", "10.9.9.9"],))
        .await;
    assert_eq!(
        error_text(r),
        (
            "org.nftlbd1.Error.InvalidArgument".to_string(),
            "policies[bad].elements: \"10.9.9.9\" is not an element".to_string()
        )
    );
    assert_eq!(p.fx.control.transactions(), 1);
    assert_eq!(
        p.get(&bad, POLICY, "Elements").await,
        owned(Value::from(vec!["10.8.0.2"]))
    );

    p.call(&bad, POLICY, "RemoveElements", &(vec!["10.8.0.2", "10.8.0.2"],))
        .await
        .expect("the same element twice is removed once");
    assert_eq!(p.fx.control.transactions(), 2);
    let signals = p.signals_until(2).await;
    let changed: Vec<&Signal> = signals
        .iter()
        .filter(|s| s.path == bad.as_str() && s.member == "PropertiesChanged")
        .collect();
    assert_eq!(changed.len(), 1, "{signals:?}");
    let empty: Vec<String> = Vec::new();
    let want = HashMap::from([("Elements".to_string(), owned(Value::from(empty.clone())))]);
    assert_eq!(changed[0].changed(), (POLICY.to_string(), want));
    assert_eq!(p.get(&bad, POLICY, "Elements").await, owned(Value::from(empty)));
}

#[tokio::test]
async fn the_last_check_is_read_from_the_checker_s_map() {
    let p = Peer::start().await;
    let a = backend_path("web", "a");
    let b = backend_path("web", "b");
    let last = crate::health::LastCheck {
        at_us: 1_700_000_000_000_007,
        duration_us: 830,
        ok: false,
    };
    p.fx.service.observed().record([("web", "b")], last);
    assert_eq!(
        p.get(&b, BACKEND, "LastCheck").await,
        owned(Value::from(1_700_000_000_000_007u64))
    );
    assert_eq!(
        p.get(&b, BACKEND, "LastCheckDuration").await,
        owned(Value::from(830u64))
    );
    // Never checked: zeros.
    assert_eq!(p.get(&a, BACKEND, "LastCheck").await, owned(Value::from(0u64)));
    assert_eq!(
        p.get(&a, BACKEND, "LastCheckDuration").await,
        owned(Value::from(0u64))
    );
}
