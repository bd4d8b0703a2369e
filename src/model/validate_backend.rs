//! The rules about one backend in its farm, used by the whole-farm check and by the check of a
//! single backend's change (which must refuse exactly what the whole-farm check refuses, in
//! O(the backend) rather than O(the farm)).

use std::net::IpAddr;

use super::super::config::{Backend, Farm};
use super::super::health_validate::validate_backend_health_check;
use super::super::names::validate_name;
use super::super::values::{FarmFamily, Mode};
use super::{
    Checker, Invalid, MAX_BACKENDS_PER_FARM, MAX_FARM_WEIGHT, MAX_WEIGHT, family_allows, family_name,
    unicast_problem,
};

/// A farm's backends are `{at}.backends`; `at` is `farms[NAME]`.
pub(super) fn check_count(c: &mut Checker, at: &str, count: usize) {
    if count > MAX_BACKENDS_PER_FARM {
        c.err(
            format!("{at}.backends"),
            format!("{count} backends; at most {MAX_BACKENDS_PER_FARM} per farm"),
        );
    }
}

pub(super) fn check_total_weight(c: &mut Checker, at: &str, total: u64) {
    if total > MAX_FARM_WEIGHT {
        c.err(
            format!("{at}.backends"),
            format!("the weights add up to {total}; at most {MAX_FARM_WEIGHT} per farm"),
        );
    }
}

/// `sat` is the session's path, `farms[NAME].sessions[I]`.
pub(super) fn missing_session_backend(c: &mut Checker, sat: &str, backend: &str) {
    c.err(
        format!("{sat}.backend"),
        format!("no backend of this farm is named {backend:?}"),
    );
}

/// A layer-2 farm speaks the family of its first virtual address.
pub(super) fn check_layer2_backend(c: &mut Checker, at: &str, first: &IpAddr, b: &Backend) {
    if b.ip_addr.is_ipv6() != first.is_ipv6() {
        c.err(
            format!("{at}.backends[{}].ip-addr", b.name),
            format!(
                "{} is {} but the farm's address {first} is {}: a layer-2 farm speaks one family",
                b.ip_addr,
                family_name(&b.ip_addr),
                family_name(first)
            ),
        );
    }
}

/// The backend's own keys in its farm; `duplicate`: another backend before it has its name.
pub(super) fn check_backend(c: &mut Checker, at: &str, f: &Farm, b: &Backend, duplicate: bool) {
    // Formatted only for an error: a farm may have tens of thousands of backends.
    let bat = |key: &str| format!("{at}.backends[{}].{key}", b.name);
    if let Err(e) = validate_name(&b.name) {
        c.err(bat("name"), e.to_string());
    }
    if duplicate {
        c.err(bat("name"), "another backend of this farm has this name");
    }
    if !family_allows(f.family, &b.ip_addr) {
        c.err(
            bat("ip-addr"),
            format!(
                "{} is an {} address but the farm serves only {}",
                b.ip_addr,
                family_name(&b.ip_addr),
                if f.family == FarmFamily::Ipv4 {
                    "IPv4"
                } else {
                    "IPv6"
                }
            ),
        );
    }
    if let Some(p) = unicast_problem(&b.ip_addr) {
        c.err(bat("ip-addr"), format!("{}: {p}", b.ip_addr));
    }
    if b.port == Some(0) {
        c.err(bat("port"), "must be 1-65535");
    }
    if b.weight == 0 || b.weight > MAX_WEIGHT {
        c.err(bat("weight"), format!("{} is not 1-{MAX_WEIGHT}", b.weight));
    }
    if b.priority == 0 {
        c.err(bat("priority"), "must be at least 1");
    }
    if let Some(w) = b.health_weight.filter(|w| *w > 100) {
        c.err(bat("health-weight"), format!("{w} is not 0-100"));
    }
    if let Some(r) = b.health_ramp.filter(|r| *r == 0 || *r > 100) {
        c.err(bat("health-ramp"), format!("{r} is not 1-100"));
    }
    check_health(c, f, b);
    if let Some(src) = &b.source_addr {
        if f.mode == Mode::Dnat {
            c.err(
                bat("source-addr"),
                "is used only by modes snat and local (mode dnat does no source NAT)",
            );
        }
        if src.is_ipv4() != b.ip_addr.is_ipv4() {
            c.err(
                bat("source-addr"),
                format!(
                    "{src} is not of the backend's family ({})",
                    family_name(&b.ip_addr)
                ),
            );
        }
        if let Some(p) = unicast_problem(src) {
            c.err(bat("source-addr"), format!("{src}: {p}"));
        }
    }
}

/// The backend's check (the farm's with its override) and the port it probes: the check's,
/// the backend's, the farm's first virtual port; a farm of every port needs one of them.
fn check_health(c: &mut Checker, f: &Farm, b: &Backend) {
    if f.health_check.is_none() && b.health_check.is_none() {
        return;
    }
    let at = format!("farms[{}].backends[{}].health-check", f.name, b.name);
    match validate_backend_health_check(f.health_check.as_ref(), b.health_check.as_ref(), &at) {
        Err(errors) => c.errors.extend(errors),
        Ok(None) => {}
        Ok(Some(check)) => {
            let farm_port = f.virtual_ports.as_slice().first().map(|r| r.first);
            if check.probe_port(b.port, farm_port).is_none() {
                c.err(
                    format!("{at}.port"),
                    "required: the backend has no port and the farm serves every port",
                );
            }
        }
    }
}

/// Validates one backend's change in `farm` (the farm after it): `old` is the backend as it was
/// (`None`: added), `new` as it is now (`None`: removed; another name: renamed). `named(n)` is how
/// many of the farm's backends are named `n` now, and `weight_before` the sum of the farm's weights
/// before the change.
///
/// When the farm was valid before the change, the errors are exactly those `validate` gives for
/// the farm after it (the same fields and reasons, in the same order for an appended backend):
/// the new backend's own keys, its name's uniqueness, its family in a layer-2 farm, the number of
/// backends, the total weight, and static sessions naming a backend that is gone. Costs
/// O(the farm's static sessions) plus the lookups, not O(backends).
pub fn validate_backend_change(
    farm: &Farm,
    old: Option<&Backend>,
    new: Option<&Backend>,
    named: impl Fn(&str) -> usize,
    weight_before: u64,
) -> Result<(), Invalid> {
    let mut c = Checker { errors: Vec::new() };
    let at = format!("farms[{}]", farm.name);
    // The whole-farm check's order: the layer-2 family, then the backends, then the sessions.
    if let Some(b) = new
        && matches!(farm.mode, Mode::Dsr | Mode::Stlsdnat)
        && let Some(first) = farm.virtual_addresses.first()
    {
        check_layer2_backend(&mut c, &at, first, b);
    }
    check_count(&mut c, &at, farm.backends.len());
    if let Some(b) = new {
        check_backend(&mut c, &at, farm, b, named(&b.name) > 1);
    }
    let weight = |b: Option<&Backend>| b.map_or(0, |b| u64::from(b.weight));
    check_total_weight(
        &mut c,
        &at,
        weight_before.saturating_sub(weight(old)) + weight(new),
    );
    if let Some(o) = old
        && !farm.persistence.is_empty()
        && named(&o.name) == 0
    {
        for (i, s) in farm.sessions.iter().enumerate() {
            if s.backend == o.name {
                missing_session_backend(&mut c, &format!("{at}.sessions[{i}]"), &o.name);
            }
        }
    }
    if c.errors.is_empty() {
        Ok(())
    } else {
        Err(Invalid(c.errors))
    }
}

#[cfg(test)]
#[path = "validate_backend_tests.rs"]
mod tests;
