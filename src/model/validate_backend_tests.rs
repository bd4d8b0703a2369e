use serde_json::json;

use super::super::super::config::{Config, Session};
use super::super::super::values::KeyField;
use super::super::{FieldError, validate};
use super::*;

/// xorshift64: deterministic cases.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }

    fn pick<T: Clone>(&mut self, of: &[T]) -> T {
        of[self.below(of.len())].clone()
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A valid farm: its mode, family and addresses, backends and static sessions drawn from `r`.
fn valid_farm(r: &mut Rng) -> Farm {
    let mode = r.pick(&["snat", "dnat", "dsr", "stlsdnat"]);
    let layer2 = matches!(mode, "dsr" | "stlsdnat");
    let family = if layer2 {
        r.pick(&["ipv4", "ipv6"])
    } else {
        r.pick(&["ipv4", "ipv6", "dual"])
    };
    let vips: Vec<&str> = match family {
        "ipv4" => vec!["192.0.2.1"],
        "ipv6" => vec!["2001:db8::1"],
        _ => vec!["192.0.2.1", "2001:db8::1"],
    };
    // Sometimes heavy, so that one more backend can pass the farm's total weight.
    let heavy = r.below(4) == 0;
    let n = if heavy { 104 } else { r.below(8) };
    let backends: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            let v6 = family == "ipv6" || (family == "dual" && r.below(2) == 0);
            let addr = if v6 {
                format!("2001:db8:1::{}", i + 1)
            } else {
                format!("10.0.{}.{}", i / 200, i % 200 + 1)
            };
            let weight = if heavy { 10_000 } else { r.below(5) + 1 };
            json!({"name": format!("b{i}"), "ip-addr": addr, "weight": weight,
                   "priority": r.below(3) + 1})
        })
        .collect();
    let mut farm = json!({"name": "web", "mode": mode, "family": family,
        "virtual-addresses": vips, "backends": backends});
    if n > 0 && r.below(2) == 0 {
        let client = if family == "ipv6" {
            "2001:db8:9::"
        } else {
            "198.51.100."
        };
        let sessions: Vec<serde_json::Value> = (0..r.below(4) + 1)
            .map(|i| json!({"client": format!("{client}{}", i + 1), "backend": format!("b{}", r.below(n))}))
            .collect();
        farm["persistence"] = json!(["srcip"]);
        farm["sessions"] = json!(sessions);
    }
    let config: Config = serde_json::from_value(json!({ "farms": [farm] })).unwrap();
    validate(&config).unwrap_or_else(|e| panic!("the farm before the change is valid: {e}"));
    config.farms.into_iter().next().unwrap()
}

/// A backend with values drawn from valid and invalid ones.
fn random_backend(r: &mut Rng, name: String) -> Backend {
    let addrs = [
        "10.0.9.1",
        "10.0.9.2",
        "2001:db8:9::1",
        "224.0.0.1",
        "0.0.0.0",
        "ff02::1",
        "::",
    ];
    let mut b = Backend::new(&name, ip(r.pick(&addrs[..4])));
    if r.below(6) == 0 {
        b.ip_addr = ip(r.pick(&addrs));
    }
    b.port = r.pick(&[None, None, Some(80), Some(0)]);
    b.weight = r.pick(&[1, 2, 3, 10_000, 0, 10_001]);
    b.priority = r.pick(&[1, 1, 2, 0]);
    b.source_addr = r
        .pick(&[
            None,
            None,
            Some("10.9.9.9"),
            Some("2001:db8:8::1"),
            Some("255.255.255.255"),
        ])
        .map(ip);
    b
}

fn random_name(r: &mut Rng, farm: &Farm, serial: usize) -> String {
    match r.below(6) {
        0 if !farm.backends.is_empty() => farm.backends[r.below(farm.backends.len())].name.clone(),
        1 => r.pick(&["bad name", "", "-x"]).to_string(),
        _ => format!("n{serial}"),
    }
}

fn sorted(mut e: Vec<FieldError>) -> Vec<FieldError> {
    e.sort_by(|a, b| (&a.field, &a.reason).cmp(&(&b.field, &b.reason)));
    e
}

fn errors(r: Result<(), Invalid>) -> Vec<FieldError> {
    r.err().map(|e| e.0).unwrap_or_default()
}

#[test]
fn a_backend_change_is_refused_exactly_as_the_whole_farm_check_refuses_it() {
    let mut r = Rng(0x2545_f491_4f6c_dd1d);
    let (mut refused, mut accepted) = (0, 0);
    for serial in 0..4_000 {
        let mut farm = valid_farm(&mut r);
        let weight_before: u64 = farm.backends.iter().map(|b| u64::from(b.weight)).sum();
        let n = farm.backends.len();
        let mut appended = false;
        let (old, new) = match r.below(3) {
            0 if n > 0 => (Some(farm.backends.remove(r.below(n))), None),
            1 if n > 0 => {
                let i = r.below(n);
                let old = farm.backends[i].clone();
                let name = if r.below(3) == 0 {
                    random_name(&mut r, &farm, serial)
                } else {
                    old.name.clone()
                };
                let new = random_backend(&mut r, name);
                farm.backends[i] = new.clone();
                (Some(old), Some(new))
            }
            _ => {
                let name = random_name(&mut r, &farm, serial);
                let new = random_backend(&mut r, name);
                appended = r.below(2) == 0;
                let at = if appended { n } else { r.below(n + 1) };
                farm.backends.insert(at, new.clone());
                (None, Some(new))
            }
        };
        let named = |name: &str| farm.backends.iter().filter(|b| b.name == name).count();
        let got = errors(validate_backend_change(
            &farm,
            old.as_ref(),
            new.as_ref(),
            named,
            weight_before,
        ));
        let whole = errors(validate(&Config {
            farms: vec![farm.clone()].into(),
            policies: Default::default(),
        }));
        if appended {
            assert_eq!(got, whole, "{old:?} -> {new:?} in {farm:?}");
        }
        assert_eq!(
            sorted(got),
            sorted(whole.clone()),
            "{old:?} -> {new:?} in {farm:?}"
        );
        if whole.is_empty() {
            accepted += 1;
        } else {
            refused += 1;
        }
    }
    // Both outcomes must be common, or the comparison proved little.
    assert!(
        refused > 2_000 && accepted > 800,
        "{refused} refused, {accepted} accepted"
    );
}

#[test]
fn the_rules_that_span_the_farm_are_checked_for_the_change() {
    let mut farm = Farm::new("web");
    farm.virtual_addresses = vec![ip("192.0.2.1")];
    farm.persistence = vec![KeyField::Srcip];
    let mut a = Backend::new("a", ip("10.0.0.1"));
    a.weight = MAX_WEIGHT;
    farm.backends = vec![a.clone(); 104].into();
    farm.sessions = vec![Session {
        client: "198.51.100.1".parse().unwrap(),
        backend: "a".into(),
    }];
    let one = |_: &str| 1;
    let weight = 104 * u64::from(MAX_WEIGHT);
    let e = validate_backend_change(&farm, None, Some(&a), one, weight).unwrap_err();
    assert_eq!(
        e.0,
        [FieldError {
            field: "farms[web].backends".into(),
            reason: "the weights add up to 1050000; at most 1048576 per farm".into(),
        }]
    );
    let e = validate_backend_change(&farm, Some(&a), None, |_| 0, weight).unwrap_err();
    assert_eq!(
        e.0,
        [FieldError {
            field: "farms[web].sessions[0].backend".into(),
            reason: "no backend of this farm is named \"a\"".into(),
        }]
    );
    farm.backends = vec![Backend::new("x", ip("10.0.0.1")); MAX_BACKENDS_PER_FARM + 1].into();
    let e = validate_backend_change(&farm, None, farm.backends.last(), one, 0).unwrap_err();
    assert_eq!(
        e.0,
        [FieldError {
            field: "farms[web].backends".into(),
            reason: "65536 backends; at most 65535 per farm".into(),
        }]
    );
}
