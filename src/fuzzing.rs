//! Entry points for coverage-guided fuzzing (`fuzz/`, run with `tools/fuzz.sh`) and for the
//! replay of its corpus on the stable toolchain (`tests/fuzz_corpus.rs`): both call these, so a
//! crash the fuzzer found stays fixed. Each takes arbitrary bytes, as an untrusted peer could
//! send them, and panics only on a defect: never on input that is merely invalid.
//!
//! Covered: the canonical JSON and its validation ([`config_json`]); the D-Bus `a{sv}`
//! translation ([`dbus_settings`]); varlink framing and call decoding ([`varlink_stream`]);
//! the nf_tables decoders fed with kernel messages ([`netlink_datagram`]). A request that
//! translates into an operation goes on through the service's pure change functions and
//! validation ([`apply`]), as the daemon would run it before touching the kernel.

use std::sync::{Arc, OnceLock};

use serde_json::Value;

use crate::model::{
    Config, parse_backend_value, parse_config, parse_farm_value, parse_policy_value, validate,
};
use crate::service::index::ConfigIndex;
use crate::service::{Operation, ServiceError, ops, ops_health};

pub use crate::dbus::fuzzing::settings as dbus_settings;
pub use crate::netlink::fuzzing::decode_datagram as netlink_datagram;
pub use crate::varlink::fuzzing::stream as varlink_stream;

/// The configuration changes are applied to: a farm `web` with backends `a` and `b`, and a
/// policy `bl` (names the fuzzer finds in the seeds).
const BASE: &str = r#"{"farms": [{"name": "web", "virtual-addresses": ["192.0.2.10"], "virtual-ports": "80",
  "persistence": ["srcip"], "backends": [{"name": "a", "ip-addr": "10.0.0.1"},
  {"name": "b", "ip-addr": "10.0.0.2", "weight": 2}]}],
  "policies": [{"name": "bl", "type": "blacklist", "elements": ["192.0.2.0/24"]}]}"#;

fn base() -> Option<&'static Arc<Config>> {
    static BASE_CONFIG: OnceLock<Option<Arc<Config>>> = OnceLock::new();
    BASE_CONFIG
        .get_or_init(|| parse_config(BASE).ok().map(Arc::new))
        .as_ref()
}

/// A canonical JSON document, as `nftlbd check`/`apply`, `ImportConfig` and the state file read
/// it; and the same text as one farm, backend or policy, as `CreateFarm` and `AddBackend` read
/// them. A configuration that parses must also survive being written out and read back (what
/// `ExportConfig` gives must import). How many of the four readings accepted it.
pub fn config_json(data: &[u8]) -> usize {
    let Ok(text) = std::str::from_utf8(data) else {
        return 0;
    };
    let mut accepted = 0;
    if let Ok(config) = parse_config(text) {
        accepted += 1;
        let out = serde_json::to_string(&config).unwrap_or_else(|e| panic!("cannot write {config:?}: {e}"));
        match parse_config(&out) {
            Ok(back) => assert_eq!(
                back, config,
                "the written configuration reads back differently: {out}"
            ),
            Err(e) => panic!("the written configuration does not read back: {e}\n{out}"),
        }
    }
    let Ok(value) = serde_json::from_str::<Value>(text) else {
        return accepted;
    };
    if let Ok(farm) = parse_farm_value(&value, "farms[x]") {
        accepted += 1;
        let _ = apply(Operation::CreateFarm { farm: Box::new(farm) });
    }
    if let Value::Object(obj) = &value
        && parse_backend_value(value.clone(), "farms[web].backends[x]").is_ok()
    {
        accepted += 1;
        let _ = apply(Operation::AddBackend {
            farm: "web".into(),
            backend: obj.clone(),
        });
    }
    if let Ok(policy) = parse_policy_value(value, "policies[x]") {
        accepted += 1;
        let _ = apply(Operation::CreatePolicy {
            policy: Box::new(policy),
        });
    }
    accepted
}

/// Runs what `op` changes against [`BASE`] and validates the result, as the service does before
/// the engine sees it. Reads and kernel-only operations (sessions, reload) are not changes of the
/// configuration: `Ok(None)`.
pub fn apply(op: Operation) -> Result<Option<Config>, ServiceError> {
    let Some(base) = base() else {
        return Ok(None);
    };
    let ix = ConfigIndex::build(base.clone());
    let new = match op {
        Operation::CreateFarm { farm } => ops::create_farm(*farm)(base)?,
        Operation::UpdateFarm { farm, patch } => ops::update_farm(farm, patch)(&ix)?.config,
        Operation::RenameFarm { farm, new_name } => ops::rename_farm(farm, new_name)(&ix)?.config,
        Operation::DeleteFarm { farm } => ops::delete_farm(farm)(base)?,
        Operation::AddBackend { farm, backend } => ops::add_backend(farm, backend)(&ix)?.config,
        Operation::UpdateBackend {
            farm, backend, patch, ..
        } => {
            ops_health::refuse_health_keys(&farm, &backend, &patch)?;
            ops::update_backend(farm, backend, patch)(&ix)?.config
        }
        Operation::SetBackendState {
            farm, backend, state, ..
        } => ops::set_backend_state(farm, backend, state)(&ix)?.config,
        Operation::SetBackendHealth {
            farm,
            backend,
            health,
            reason,
        } => ops_health::set_backend_health(farm, backend, health, reason)(&ix)?.config,
        Operation::RemoveBackend { farm, backend } => ops::remove_backend(farm, backend)(&ix)?.config,
        Operation::SetBackends { changes } => ops::set_backends(changes)(&ix)?.config,
        Operation::AddSession {
            farm,
            client,
            backend,
        } => ops::add_session(farm, client, backend)(base)?,
        Operation::CreatePolicy { policy } => ops::create_policy(*policy)(base)?,
        Operation::DeletePolicy { policy } => ops::delete_policy(policy)(base)?,
        Operation::EditPolicyElements { policy, edit } => ops::edit_policy_elements(policy, edit)(base)?,
        Operation::ImportConfig { config, mode } => ops::import(*config, mode)(base)?,
        _ => return Ok(None),
    };
    validate(&new)?;
    Ok(Some(new))
}
