//! Validation of `health-check` objects: every refused key named under the object's path
//! (`farms[web].health-check.timeout`, `farms[web].backends[b].health-check.path`).

use tokio_rustls::rustls::pki_types::ServerName;

use super::health::{COMMON_KEYS, CheckType, HealthCheck, HealthCheckOverride, effective, to_map, type_keys};
use super::pattern::Pattern;
use super::seconds::Seconds;
use super::validate::FieldError;

/// Counts above this are surely mistakes: a hundred intervals to notice a change.
pub const MAX_RISE_FALL: u32 = 100;

/// The problems of a farm's check, `at` being its path (`farms[web].health-check`).
pub fn validate_health_check(check: &HealthCheck, at: &str) -> Vec<FieldError> {
    let mut errors = Errors { at, list: Vec::new() };
    foreign_keys(&mut errors, check);
    times(&mut errors, check);
    counts_and_source(&mut errors, check);
    match check.kind {
        CheckType::Tcp => {}
        CheckType::Http | CheckType::Https => http(&mut errors, check),
        CheckType::Udp => {
            if check.send.is_none() {
                errors.add("send", "required for a udp check (the datagram sent)".into());
            }
            pattern(&mut errors, "expect", check.expect.as_deref());
        }
        CheckType::Dns => match check.query_name.as_deref() {
            None => errors.add("query-name", "required for a dns check".into()),
            Some(name) => {
                if let Err(reason) = dns_name(name) {
                    errors.add("query-name", reason);
                }
            }
        },
        CheckType::Exec => exec(&mut errors, check),
        CheckType::Agent => {
            if check.agent_port == Some(0) {
                errors.add("agent-port", "0 is not a port".into());
            }
        }
    }
    errors.list
}

/// A backend's check, merged over its farm's (`farm_check`), with the problems of the result named
/// under the backend's path (`farms[web].backends[b].health-check`). `Ok(None)`: not checked.
pub fn validate_backend_health_check(
    farm_check: Option<&HealthCheck>,
    backend_check: Option<&HealthCheckOverride>,
    at: &str,
) -> Result<Option<HealthCheck>, Vec<FieldError>> {
    let merged = effective(farm_check, backend_check).map_err(|e| {
        let field = if e.key.is_empty() {
            at.to_string()
        } else {
            format!("{at}.{}", e.key)
        };
        vec![FieldError {
            field,
            reason: e.reason,
        }]
    })?;
    let Some(check) = merged else {
        return Ok(None);
    };
    // Only the backend's own keys are its to answer for; a problem of the farm's check is
    // reported once, under the farm.
    if backend_check.is_none() {
        return Ok(Some(check));
    }
    let errors = validate_health_check(&check, at);
    if errors.is_empty() {
        Ok(Some(check))
    } else {
        Err(errors)
    }
}

struct Errors<'a> {
    at: &'a str,
    list: Vec<FieldError>,
}

impl Errors<'_> {
    fn add(&mut self, key: &str, reason: String) {
        self.list.push(FieldError {
            field: format!("{}.{key}", self.at),
            reason,
        });
    }
}

fn foreign_keys(errors: &mut Errors, check: &HealthCheck) {
    let own = type_keys(check.kind);
    for key in to_map(check).keys() {
        let key = key.as_str();
        if key != "type" && !COMMON_KEYS.contains(&key) && !own.contains(&key) {
            errors.add(key, format!("not a key of {} check", with_article(check.kind)));
        }
    }
}

fn times(errors: &mut Errors, check: &HealthCheck) {
    let intervals = [
        ("interval", Some(check.interval)),
        ("fast-interval", check.fast_interval),
        ("down-interval", check.down_interval),
    ];
    for (key, value) in intervals {
        if value == Some(Seconds::ZERO) {
            errors.add(key, "must be more than 0".into());
        }
    }
    if check.timeout == Seconds::ZERO {
        errors.add("timeout", "must be more than 0".into());
    }
    // A check runs once at a time: one that could outlast the wait would delay the next.
    for (key, value) in intervals {
        if let Some(value) = value.filter(|v| *v > Seconds::ZERO && check.timeout >= *v) {
            errors.add(
                "timeout",
                format!("{} is not below the {key} ({value})", check.timeout),
            );
        }
    }
    if let Some(jitter) = check.jitter.filter(|j| *j > check.interval) {
        errors.add(
            "jitter",
            format!("{jitter} is more than the interval ({})", check.interval),
        );
    }
}

fn counts_and_source(errors: &mut Errors, check: &HealthCheck) {
    for (key, value) in [("rise", check.rise), ("fall", check.fall)] {
        if value == 0 || value > MAX_RISE_FALL {
            errors.add(
                key,
                format!("{value} is not a count of checks (1-{MAX_RISE_FALL})"),
            );
        }
    }
    if check.port == Some(0) {
        errors.add("port", "0 is not a port".into());
    }
    if check.mark == Some(0) {
        errors.add("mark", "0 is no mark: leave the key out".into());
    }
    if let Some(iface) = &check.iface {
        let bad = iface.is_empty()
            || iface.len() > 15
            || iface == "."
            || iface == ".."
            || iface
                .bytes()
                .any(|b| b == b'/' || b == b':' || !b.is_ascii_graphic());
        if bad {
            errors.add("iface", format!("{iface:?} is not an interface name"));
        }
    }
}

fn with_article(kind: CheckType) -> String {
    let word = kind.as_str();
    let article = if matches!(
        kind,
        CheckType::Http | CheckType::Https | CheckType::Exec | CheckType::Agent
    ) {
        "an"
    } else {
        "a"
    };
    format!("{article} {word}")
}

/// RFC 9110's token characters, which header names and methods are made of.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Headers nftlbd writes itself: a second one would make the request ambiguous.
const OWN_HEADERS: &[&str] = &["host", "connection", "content-length", "transfer-encoding"];

fn http(errors: &mut Errors, check: &HealthCheck) {
    let method = &check.method;
    if method.is_empty() || method.len() > 20 || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        errors.add("method", format!("{method:?} is not an HTTP method"));
    }
    match check.path.as_deref() {
        None => errors.add("path", format!("required for an {} check", check.kind.as_str())),
        Some(path) => {
            if !path.starts_with('/') || !path.bytes().all(|b| b.is_ascii_graphic()) {
                errors.add(
                    "path",
                    format!("{path:?} is not a request path (it starts with / and has no spaces)"),
                );
            }
        }
    }
    if let Some(host) = &check.host {
        if host.is_empty() || !host.bytes().all(|b| b.is_ascii_graphic()) {
            errors.add("host", format!("{host:?} is not a host name"));
        } else if check.kind == CheckType::Https {
            let name = check.server_name().unwrap_or(host);
            if ServerName::try_from(name).is_err() {
                errors.add(
                    "host",
                    format!("{name:?} is not a TLS server name (a DNS name or an address)"),
                );
            }
        }
    }
    for (name, value) in &check.headers {
        if name.is_empty() || !name.bytes().all(is_tchar) {
            errors.add("headers", format!("{name:?} is not a header name"));
        } else if OWN_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            errors.add(
                "headers",
                format!("{name} is written by nftlbd (use `host` for Host)"),
            );
        }
        if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            errors.add("headers", format!("the value of {name} has a line break"));
        }
    }
    pattern(errors, "expect-body", check.expect_body.as_deref());
    if check.expect_body_absent && check.expect_body.is_none() {
        errors.add(
            "expect-body-absent",
            "needs expect-body (the pattern that must be absent)".into(),
        );
    }
}

fn pattern(errors: &mut Errors, key: &str, source: Option<&str>) {
    if let Some(Err(e)) = source.map(Pattern::new) {
        errors.add(key, format!("bad pattern: {e}"));
    }
}

/// A name a DNS query can carry: labels of 1-63 letters, digits, `-` or `_`, 253 bytes at most.
fn dns_name(name: &str) -> Result<(), String> {
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.is_empty() {
        // The root: a query for `.` is a fine probe of a resolver.
        return if name == "." {
            Ok(())
        } else {
            Err("\"\" is not a DNS name".into())
        };
    }
    if trimmed.len() > 253 {
        return Err(format!("{name:?} is longer than 253 bytes"));
    }
    for label in trimmed.split('.') {
        let ok = (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return Err(format!("{name:?} is not a DNS name (label {label:?})"));
        }
    }
    Ok(())
}

fn exec(errors: &mut Errors, check: &HealthCheck) {
    match check.command.first() {
        None => errors.add(
            "command",
            "required for an exec check (program and arguments)".into(),
        ),
        Some(program) if !program.starts_with('/') => errors.add(
            "command",
            format!("{program:?} is not an absolute path (no search path is used)"),
        ),
        Some(_) => {}
    }
    if check.command.iter().any(|a| a.contains('\0')) {
        errors.add("command", "an argument holds a NUL byte".into());
    }
    if let Some(user) = &check.user {
        let valid = !user.is_empty()
            && user.len() <= 32
            && user
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
            && !user.starts_with('-');
        if !valid {
            errors.add("user", format!("{user:?} is not a user name"));
        } else if user == "root" {
            errors.add("user", "checks run as an unprivileged user, not root".into());
        }
    }
}
