//! The model: farms, backends and policies as data, and their validation. Pure: no I/O.
//!
//! `config` is the canonical JSON document (docs/json.md), `values` its enumerations and small value
//! types, `validate` the whole-document checks that run before anything reaches the kernel.

mod config;
mod effective_weight;
mod health;
#[cfg(test)]
mod health_tests;
mod health_validate;
mod list;
mod names;
mod pattern;
mod policy_element;
mod ports;
mod seconds;
mod session_client;
mod slow_start;
mod states;
mod status_ranges;
mod touched;
mod validate;
mod values;

pub use config::{Backend, Config, Farm, Policy, Session};
pub use effective_weight::{effective_weight, scaled};
pub use health::{
    ALL_TYPES, COMMON_KEYS, CheckType, Health, HealthCheck, HealthCheckOverride, HealthStart, KeyError,
    OnFailure, QueryType, Rcode, effective, is_checked, type_keys,
};
pub use health_validate::{validate_backend_health_check, validate_health_check};
pub use list::List;
pub use names::{NameError, bus_path_escape, bus_path_unescape, validate_name};
pub use pattern::{Pattern, PatternError};
pub use policy_element::{PolicyElement, PolicyElementError};
pub use ports::{PortError, PortRange, Ports};
pub use seconds::Seconds;
pub use session_client::{ClientError, KeyValue, SessionClient, parse_session_client};
pub use slow_start::Ramp;
#[cfg(test)]
pub use states::whole_farm_passes;
pub use states::{
    FarmRules, PriorityTiers, SORRY_TIER, effective_priority, effective_state, is_active, keeps_clients,
    quorum_met, takes_new_flows, uncounted, whole_farm_pass,
};
pub use status_ranges::StatusRanges;
pub use touched::Touched;
pub use validate::{
    FieldError, Invalid, MAX_BACKENDS_PER_FARM, MAX_FARM_WEIGHT, MAX_FARMS, ServiceIndex,
    parse_backend_value, parse_config, parse_document, parse_farm_value, parse_policy_value, validate,
    validate_backend_change, validate_changes,
};
pub use values::*;
