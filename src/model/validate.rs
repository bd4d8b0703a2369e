//! Whole-document validation. Every problem is reported with the field it is in (as a path such as
//! `farms[web].backends[b1].ip-addr`) and the reason; nothing is applied unless the document is valid.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;

use super::config::{Config, Farm, Policy};
use super::names::validate_name;
use super::ports::PortRange;
use super::session_client::KeyValue;
use super::values::*;

/// One refused field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

/// All the problems found in a document (never empty).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Invalid(pub Vec<FieldError>);

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl Invalid {
    pub fn one(field: impl Into<String>, reason: impl Into<String>) -> Invalid {
        Invalid(vec![FieldError {
            field: field.into(),
            reason: reason.into(),
        }])
    }
}

/// Upper bounds that come from the datapath layout (see `engine::layout`).
pub const MAX_FARMS: usize = 65_535;
pub const MAX_BACKENDS_PER_FARM: usize = 65_535;
/// Sum of the weights of one farm: the size of its scheduling slot range.
pub const MAX_FARM_WEIGHT: u64 = 1 << 20;
pub const MAX_WEIGHT: u32 = 10_000;
/// A dynamic set timeout in seconds must fit the kernel's millisecond u64 and stay sane.
pub const MAX_TTL: u32 = 365 * 24 * 3600;

/// Parses and validates a canonical JSON document.
pub fn parse_config(json: &str) -> Result<Config, Invalid> {
    let config = parse_document(json)?;
    validate(&config)?;
    Ok(config)
}

/// Parses a canonical JSON document without validating it: its shape only (a farm file whose
/// farms attach policies of another file is validated once the files are put together).
pub fn parse_document(json: &str) -> Result<Config, Invalid> {
    let de = &mut serde_json::Deserializer::from_str(json);
    serde_path_to_error::deserialize(de).map_err(|e| {
        if let Some(named) = typed_value_error(&e, json) {
            return named;
        }
        let path = e.path().to_string();
        let field = if path == "." { "document".to_string() } else { path };
        Invalid::one(field, e.into_inner().to_string())
    })
}

/// Typed values (a farm's `virtual-ports`, a session's `client`, a policy's elements) are parsed
/// as the document is read, but reported as validation reports them: under the farm's or
/// policy's name (`farms[web].virtual-ports`, `policies[bl].elements[2]`) and without a position
/// in the text. `None` for any other error, or when the object has no name to give.
fn typed_value_error(e: &serde_path_to_error::Error<serde_json::Error>, json: &str) -> Option<Invalid> {
    use serde_path_to_error::Segment;
    let segments: Vec<&Segment> = e.path().iter().collect();
    let (list, index, rest) = match segments[..] {
        [
            Segment::Map { key: list },
            Segment::Seq { index },
            Segment::Map { key: field },
        ] if list == "farms" && field == "virtual-ports" => (list, *index, field.clone()),
        [
            Segment::Map { key: list },
            Segment::Seq { index },
            Segment::Map { key: sessions },
            Segment::Seq { index: i },
            Segment::Map { key: field },
        ] if list == "farms" && sessions == "sessions" && field == "client" => {
            (list, *index, format!("sessions[{i}].client"))
        }
        [
            Segment::Map { key: list },
            Segment::Seq { index },
            Segment::Map { key: elements },
            Segment::Seq { index: i },
        ] if list == "policies" && elements == "elements" => (list, *index, format!("elements[{i}]")),
        _ => return None,
    };
    // Only on an error, so reading the text a second time costs nothing on the normal path.
    let doc: serde_json::Value = serde_json::from_str(json).ok()?;
    let name = doc[list.as_str()][index]["name"].as_str()?;
    let inner = e.inner();
    let text = inner.to_string();
    let position = format!(" at line {} column {}", inner.line(), inner.column());
    let reason = text.strip_suffix(&position).unwrap_or(&text);
    Some(Invalid::one(format!("{list}[{name}].{rest}"), reason))
}

/// Parses one farm given as canonical JSON (a D-Bus or varlink request builds it), with errors
/// under `at` (e.g. `farms[web]`). Read through a reference: a farm of 60,000 backends is about
/// 40 MiB as a `Value`, and a copy of it held while the farm is built left the heap fragmented. Only the shape is checked here; the farm's values and its
/// place among the others are validated when it is applied.
pub fn parse_farm_value(value: &serde_json::Value, at: &str) -> Result<super::config::Farm, Invalid> {
    // Backends are named in errors, as validation names them, rather than numbered.
    let names: Vec<Option<String>> = value
        .get("backends")
        .and_then(|b| b.as_array())
        .map(|l| {
            l.iter()
                .map(|b| b.get("name").and_then(|n| n.as_str()).map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    serde_path_to_error::deserialize(value).map_err(|e| {
        let mut path = e.path().to_string();
        if let Some(rest) = path.strip_prefix("backends[")
            && let Some((i, tail)) = rest.split_once(']')
            && let Some(Some(name)) = i.parse::<usize>().ok().and_then(|i| names.get(i))
        {
            path = format!("backends[{name}]{tail}");
        }
        let field = if path == "." {
            at.to_string()
        } else {
            format!("{at}.{path}")
        };
        Invalid::one(field, e.into_inner().to_string())
    })
}

/// Parses one policy given as canonical JSON, with errors under `at` (e.g. `policies[bad]`).
pub fn parse_policy_value(value: serde_json::Value, at: &str) -> Result<super::config::Policy, Invalid> {
    parse_value(value, at)
}

/// Parses one backend given as canonical JSON, with errors under `at`
/// (`farms[web].backends[b1]`). Only the shape: its values are validated with its farm.
pub fn parse_backend_value(value: serde_json::Value, at: &str) -> Result<super::config::Backend, Invalid> {
    parse_value(value, at)
}

fn parse_value<T: serde::de::DeserializeOwned>(value: serde_json::Value, at: &str) -> Result<T, Invalid> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." {
            at.to_string()
        } else {
            format!("{at}.{path}")
        };
        Invalid::one(field, e.into_inner().to_string())
    })
}

#[path = "validate_backend.rs"]
mod backend;

pub use backend::validate_backend_change;

struct Checker {
    errors: Vec<FieldError>,
}

impl Checker {
    fn err(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.errors.push(FieldError {
            field: field.into(),
            reason: reason.into(),
        });
    }
}

fn family_allows(family: FarmFamily, ip: &IpAddr) -> bool {
    matches!(
        (family, ip),
        (FarmFamily::Dual, _) | (FarmFamily::Ipv4, IpAddr::V4(_)) | (FarmFamily::Ipv6, IpAddr::V6(_))
    )
}

fn family_name(ip: &IpAddr) -> &'static str {
    if ip.is_ipv4() { "IPv4" } else { "IPv6" }
}

/// An address that can be a service or backend address: not unspecified, multicast or broadcast.
fn unicast_problem(ip: &IpAddr) -> Option<&'static str> {
    if ip.is_unspecified() {
        return Some("the unspecified address cannot be used");
    }
    if ip.is_multicast() {
        return Some("a multicast address cannot be used");
    }
    if let IpAddr::V4(v4) = ip
        && v4.is_broadcast()
    {
        return Some("the broadcast address cannot be used");
    }
    None
}

fn check_keys(c: &mut Checker, field: &str, keys: &[KeyField]) {
    let mut seen = HashSet::new();
    for k in keys {
        if !seen.insert(*k) {
            c.err(field, format!("{} is listed twice", k.as_str()));
        }
    }
}

fn check_ttl(c: &mut Checker, field: &str, v: u32) {
    if v > MAX_TTL {
        c.err(field, format!("{v} is more than a year ({MAX_TTL} seconds)"));
    }
}

fn check_log_prefix(c: &mut Checker, field: &str, p: &Option<String>) {
    if let Some(p) = p {
        if p.len() > 127 {
            c.err(
                field,
                format!("is {} bytes long; the kernel takes at most 127", p.len()),
            );
        }
        if p.chars().any(|ch| ch.is_control() || ch == '"') {
            c.err(field, "may not contain control characters or '\"'");
        }
    }
}

fn check_farm(c: &mut Checker, f: &Farm, policies: &HashSet<&str>) {
    let at = format!("farms[{}]", f.name);
    if f.virtual_addresses.is_empty() && !matches!(f.state, FarmState::Off) {
        c.err(
            format!("{at}.virtual-addresses"),
            "at least one virtual address is required",
        );
    }
    let mut vips = HashSet::new();
    for (i, ip) in f.virtual_addresses.iter().enumerate() {
        let field = format!("{at}.virtual-addresses[{i}]");
        if !family_allows(f.family, ip) {
            c.err(
                &field,
                format!(
                    "{ip} is an {} address but the farm's family is {}",
                    family_name(ip),
                    serde_json::to_string(&f.family)
                        .unwrap_or_default()
                        .trim_matches('"')
                ),
            );
        }
        if let Some(p) = unicast_problem(ip) {
            c.err(&field, format!("{ip}: {p}"));
        }
        if !vips.insert(ip) {
            c.err(&field, format!("{ip} is listed twice"));
        }
    }
    match f.mode {
        Mode::Dnat if f.source_addr.is_some() => c.err(
            format!("{at}.source-addr"),
            "is used only by modes snat and local (mode dnat does no source NAT)",
        ),
        _ => {}
    }
    if let Some(src) = &f.source_addr {
        if f.family == FarmFamily::Dual {
            c.err(
                format!("{at}.source-addr"),
                "a dual farm has no single source address; set source-addr on its backends",
            );
        } else if !family_allows(f.family, src) {
            c.err(
                format!("{at}.source-addr"),
                format!("{src} is not of the farm's family"),
            );
        }
        if let Some(p) = unicast_problem(src) {
            c.err(format!("{at}.source-addr"), format!("{src}: {p}"));
        }
    }
    let layer2 = matches!(f.mode, Mode::Dsr | Mode::Stlsdnat);
    for point in &f.log {
        match (layer2, point) {
            (true, LogPoint::Input | LogPoint::Forward) => c.err(
                format!("{at}.log"),
                "layer-2 modes log what they send out (output); input and forward are NAT modes' logs",
            ),
            (false, LogPoint::Output) => c.err(
                format!("{at}.log"),
                "output is the log of layer-2 modes (dsr, stlsdnat); NAT modes log input and forward",
            ),
            _ => {}
        }
    }
    if layer2 {
        check_layer2_family(c, &at, f);
    }
    match f.scheduler {
        Scheduler::Hash => check_keys(c, &format!("{at}.sched-param"), &f.sched_param),
        _ if !f.sched_param.is_empty() => c.err(
            format!("{at}.sched-param"),
            "is the hash input of scheduler hash; this farm's scheduler does not use it",
        ),
        _ => {}
    }
    check_keys(c, &format!("{at}.persistence"), &f.persistence);
    if f.persist_ttl == 0 {
        c.err(format!("{at}.persist-ttl"), "must be at least 1 second");
    }
    check_ttl(c, &format!("{at}.persist-ttl"), f.persist_ttl);
    check_ttl(c, &format!("{at}.limits-ttl"), f.limits_ttl);
    let helper_ok = matches!(
        (f.helper, f.protocol),
        (Helper::None, _)
            | (Helper::Ftp | Helper::Pptp, Protocol::Tcp)
            | (Helper::Tftp | Helper::Snmp, Protocol::Udp)
            | (Helper::Sip, Protocol::Tcp | Protocol::Udp | Protocol::All)
    );
    if !helper_ok {
        let h = serde_json::to_string(&f.helper).unwrap_or_default();
        let p = serde_json::to_string(&f.protocol).unwrap_or_default();
        c.err(
            format!("{at}.helper"),
            format!(
                "helper {} does not work with protocol {} (ftp, pptp: tcp; tftp, snmp: udp; sip: tcp, udp, all)",
                h.trim_matches('"'),
                p.trim_matches('"')
            ),
        );
    }
    check_log_prefix(c, &format!("{at}.log-prefix"), &f.log_prefix);
    if f.priority == 0 {
        c.err(format!("{at}.priority"), "must be at least 1");
    }
    // Backends come and go, so a quorum above today's count is fine; past what a farm can
    // hold it can never be met.
    if f.quorum as usize > MAX_BACKENDS_PER_FARM {
        c.err(
            format!("{at}.quorum"),
            format!(
                "{} is past {MAX_BACKENDS_PER_FARM} (the most backends a farm can have)",
                f.quorum
            ),
        );
    }
    if f.queue < -1 || f.queue > 65535 {
        c.err(
            format!("{at}.queue"),
            format!("{} is not -1 (off) or a queue number 0-65535", f.queue),
        );
    }
    for p in &f.policies {
        if !policies.contains(p.as_str()) {
            c.err(format!("{at}.policies"), format!("no policy is named {p:?}"));
        }
    }
    if let Some(iface) = f.iface.iter().chain(f.oface.iter()).find(|i| !valid_ifname(i)) {
        c.err(
            format!("{at}.iface"),
            format!("{iface:?} is not an interface name"),
        );
    }

    if let Some(check) = &f.health_check {
        c.errors.extend(super::health_validate::validate_health_check(
            check,
            &format!("{at}.health-check"),
        ));
    }
    // Backends.
    backend::check_count(c, &at, f.backends.len());
    let mut names = HashSet::new();
    let mut total_weight = 0u64;
    for b in &f.backends {
        let duplicate = !names.insert(b.name.as_str());
        backend::check_backend(c, &at, f, b, duplicate);
        total_weight += u64::from(b.weight);
    }
    backend::check_total_weight(c, &at, total_weight);
    // Static sessions.
    let mut clients = HashSet::new();
    for (i, s) in f.sessions.iter().enumerate() {
        let sat = format!("{at}.sessions[{i}]");
        if f.persistence.is_empty() {
            c.err(&sat, "static sessions need the farm's persistence to be set");
            continue;
        }
        if let Some(why) = s.client.mismatch(&f.persistence) {
            c.err(format!("{sat}.client"), why);
        } else {
            for v in s.client.values() {
                if let KeyValue::Ip(ip) = v
                    && !family_allows(f.family, ip)
                {
                    c.err(
                        format!("{sat}.client"),
                        format!("{ip} is not of the farm's family"),
                    );
                }
            }
            if !clients.insert(&s.client) {
                c.err(format!("{sat}.client"), "another static session has this client");
            }
        }
        if !names.contains(s.backend.as_str()) {
            backend::missing_session_backend(c, &sat, &s.backend);
        }
    }
}

fn valid_ifname(s: &str) -> bool {
    !s.is_empty() && s.len() < 16 && !s.contains(['/', ' ', '\0']) && s != "." && s != ".."
}

fn check_policy(c: &mut Checker, p: &Policy) {
    let at = format!("policies[{}]", p.name);
    check_log_prefix(c, &format!("{at}.log-prefix"), &p.log_prefix);
    let want_v4 = p.family == PolicyFamily::Ipv4;
    for (i, e) in p.elements.iter().enumerate() {
        if e.is_ipv4() != want_v4 {
            c.err(
                format!("{at}.elements[{i}]"),
                format!("{} is not of the policy's family", e.bounds().0),
            );
        }
    }
}

/// Which farms claim which services (protocol, address, port range): two farms may not claim the
/// same one. Kept by the engine for the committed configuration so that a change is checked
/// against it in O(change).
#[derive(Debug, Clone, Default)]
pub struct ServiceIndex {
    claims: HashMap<(u8, IpAddr), Vec<(String, PortRange)>>,
}

/// A farm's claims; an empty port list claims every port.
fn farm_claims(f: &Farm) -> Vec<(u8, IpAddr, PortRange)> {
    let mut ports = f.virtual_ports.as_slice().to_vec();
    if ports.is_empty() {
        ports.push(PortRange {
            first: 1,
            last: 65535,
        });
    }
    let mut out = Vec::new();
    for proto in f.protocol.numbers() {
        for vip in &f.virtual_addresses {
            out.extend(ports.iter().map(|r| (*proto, *vip, *r)));
        }
    }
    out
}

impl ServiceIndex {
    pub fn of(config: &Config) -> ServiceIndex {
        let mut i = ServiceIndex::default();
        for f in &config.farms {
            i.insert(f);
        }
        i
    }

    pub fn insert(&mut self, f: &Farm) {
        for (proto, vip, r) in farm_claims(f) {
            self.claims
                .entry((proto, vip))
                .or_default()
                .push((f.name.clone(), r));
        }
    }

    pub fn remove(&mut self, f: &Farm) {
        for proto in f.protocol.numbers() {
            for vip in &f.virtual_addresses {
                if let Some(v) = self.claims.get_mut(&(*proto, *vip)) {
                    v.retain(|(n, _)| *n != f.name);
                    if v.is_empty() {
                        self.claims.remove(&(*proto, *vip));
                    }
                }
            }
        }
    }

    /// The farms that claim some port of this protocol and address.
    pub fn farms_on(&self, proto: u8, vip: &IpAddr) -> impl Iterator<Item = &str> {
        self.claims
            .get(&(proto, *vip))
            .into_iter()
            .flatten()
            .map(|(n, _)| n.as_str())
    }

    /// Another farm's claim overlapping `r`, ignoring farms for which `ignore` is true.
    fn conflict(
        &self,
        proto: u8,
        vip: IpAddr,
        r: PortRange,
        ignore: impl Fn(&str) -> bool,
    ) -> Option<(&str, PortRange)> {
        self.claims.get(&(proto, vip))?.iter().find_map(|(n, o)| {
            (!ignore(n) && o.first <= r.last && r.first <= o.last).then_some((n.as_str(), *o))
        })
    }
}

/// Checks every rule that spans more than one field or object.
pub fn validate(config: &Config) -> Result<(), Invalid> {
    let all: BTreeSet<String> = config.farms.iter().map(|f| f.name.clone()).collect();
    validate_changes(config, &all, &ServiceIndex::default())
}

/// Validates `config` knowing that only the farms in `changed` differ from a configuration that
/// was valid and whose services `committed` indexes: per-farm checks run for those farms only,
/// and their services are checked against the index. Names and policies are checked whole (a
/// hash pass; policy lists are short).
pub fn validate_changes(
    config: &Config,
    changed: &BTreeSet<String>,
    committed: &ServiceIndex,
) -> Result<(), Invalid> {
    let mut c = Checker { errors: Vec::new() };
    if config.farms.len() > MAX_FARMS {
        c.err(
            "farms",
            format!("{} farms; at most {MAX_FARMS}", config.farms.len()),
        );
    }
    let mut policy_names = HashSet::new();
    for p in &config.policies {
        if let Err(e) = validate_name(&p.name) {
            c.err(format!("policies[{}].name", p.name), e.to_string());
        }
        if !policy_names.insert(p.name.as_str()) {
            c.err(
                format!("policies[{}].name", p.name),
                "another policy has this name",
            );
        }
        check_policy(&mut c, p);
    }
    let mut farm_names = HashSet::with_capacity(config.farms.len());
    for f in &config.farms {
        if !farm_names.insert(f.name.as_str()) {
            c.err(format!("farms[{}].name", f.name), "another farm has this name");
        }
    }
    // Claims of the changed farms checked so far.
    let mut local = ServiceIndex::default();
    for f in config.farms.iter().filter(|f| changed.contains(&f.name)) {
        if let Err(e) = validate_name(&f.name) {
            c.err(format!("farms[{}].name", f.name), e.to_string());
        }
        check_farm(&mut c, f, &policy_names);
        for (proto, vip, r) in farm_claims(f) {
            let clash = committed
                .conflict(proto, vip, r, |n| changed.contains(n))
                .or_else(|| local.conflict(proto, vip, r, |n| n == f.name));
            if let Some((other, o)) = clash {
                c.err(
                    format!("farms[{}].virtual-ports", f.name),
                    format!(
                        "{vip} ports {}-{} overlap farm {other:?} ({}-{}) for the same protocol",
                        r.first, r.last, o.first, o.last
                    ),
                );
            }
        }
        local.insert(f);
    }
    if c.errors.is_empty() {
        Ok(())
    } else {
        Err(Invalid(c.errors))
    }
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;

/// A layer-2 farm rewrites one family's headers: its addresses and backends are all IPv4 or all
/// IPv6. Its persistence key (VIP and fields, each padded to 32-bit words) must leave a register
/// for the remembered backend: 48 bytes.
fn check_layer2_family(c: &mut Checker, at: &str, f: &Farm) {
    let Some(first) = f.virtual_addresses.first() else {
        return;
    };
    let fam = |ip: &IpAddr| if ip.is_ipv6() { "IPv6" } else { "IPv4" };
    if let Some(other) = f
        .virtual_addresses
        .iter()
        .find(|a| a.is_ipv6() != first.is_ipv6())
    {
        c.err(
            format!("{at}.virtual-addresses"),
            format!(
                "{other} is {} but {first} is {}: a layer-2 farm speaks one family",
                fam(other),
                fam(first)
            ),
        );
    }
    for b in &f.backends {
        backend::check_layer2_backend(c, at, first, b);
    }
    let addr = if first.is_ipv6() { 16 } else { 4 };
    let len: usize = addr
        + f.persistence
            .iter()
            .map(|k| match k {
                KeyField::Srcip | KeyField::Dstip => addr,
                KeyField::Srcport | KeyField::Dstport => 4,
                KeyField::Srcmac | KeyField::Dstmac => 8,
            })
            .sum::<usize>();
    if len > 48 {
        c.err(
            format!("{at}.persistence"),
            format!(
                "this key takes {len} bytes with the farm's {} address; a layer-2 farm's key holds at most 48 (leave out a port or MAC)",
                fam(first)
            ),
        );
    }
}
