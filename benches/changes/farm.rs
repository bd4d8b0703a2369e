//! The weighted farm of every size, in both forms: nftlbd's canonical JSON, and the ruleset an
//! operator would write by hand for the same service (one map per farm from scheduling slot to
//! backend address, as nftlb and hand-written rulesets lay out a weighted farm: a backend of
//! weight w owns w slots, `numgen random mod <slots>` picks one).

use std::fmt::Write as _;

use serde_json::{Value, json};

pub const FARM: &str = "web";
const VIP: &str = "192.0.2.1";
/// The address of the backend the bench adds and removes (outside every farm's range).
pub const EXTRA_IP: &str = "10.200.0.1";
pub const EXTRA: &str = "extra";

pub fn name(i: usize) -> String {
    format!("b{i}")
}

pub fn ip(i: usize) -> String {
    format!("10.{}.{}.{}", 64 + i / 65536, (i / 256) % 256, i % 256)
}

/// Weights 1, 2, 3, 1, 2, 3, …: a weighted farm whose slots are about twice its backends.
pub fn weight(i: usize) -> u32 {
    1 + (i % 3) as u32
}

/// Another weight for backend `i`, for the weight changes.
pub fn other_weight(i: usize) -> u32 {
    weight(i) % 3 + 1
}

pub fn slots(n: usize) -> usize {
    (0..n).map(|i| weight(i) as usize).sum()
}

pub fn json(n: usize) -> Value {
    let backends: Vec<Value> = (0..n)
        .map(|i| json!({"name": name(i), "ip-addr": ip(i), "weight": weight(i)}))
        .collect();
    json!({"name": FARM, "virtual-addresses": [VIP], "virtual-ports": "80,443",
           "scheduler": "weight", "backends": backends})
}

pub const TABLE: &str = "lb";

pub fn map() -> String {
    format!("farm-{FARM}")
}

/// The hand-written ruleset of the same service: destination NAT through the farm's map and
/// masquerade, as nftlbd's default (snat) mode does.
pub fn ruleset(n: usize) -> String {
    let total = slots(n);
    let mut elements = String::with_capacity(total * 24);
    let mut slot = 0;
    for i in 0..n {
        for _ in 0..weight(i) {
            let sep = if slot == 0 { "" } else { ", " };
            let _ = write!(elements, "{sep}{slot} : {}", ip(i));
            slot += 1;
        }
    }
    format!(
        "table ip {TABLE} {{\n\
         \tmap {map} {{\n\
         \t\ttypeof numgen random mod 2 : ip daddr\n\
         \t\tsize 1048576\n\
         \t\telements = {{ {elements} }}\n\
         \t}}\n\
         \tchain prerouting {{\n\
         \t\ttype nat hook prerouting priority dstnat; policy accept;\n\
         \t\tip daddr {VIP} tcp dport {{ 80, 443 }} dnat to numgen random mod {total} map @{map}\n\
         \t}}\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\tct status dnat masquerade\n\
         \t}}\n\
         }}\n",
        map = map()
    )
}

/// The one element the nft side adds and deletes: the slot after the last one, to the extra
/// backend.
pub fn extra_element(n: usize) -> String {
    format!("{{ {} : {EXTRA_IP} }}", slots(n))
}

pub fn extra_key(n: usize) -> String {
    format!("{{ {} }}", slots(n))
}
