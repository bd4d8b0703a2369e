//! Many small farms, in both forms: nftlbd's canonical JSON document, and the ruleset an operator
//! would write by hand for the same services with one map per farm, as nftlb lays them out: a
//! dispatch verdict map on address and port to a chain per farm, whose rule picks a backend with
//! `numgen inc mod 2` through the farm's own (anonymous) map.

use std::fmt::Write as _;

use serde_json::{Value, json};

/// Backends per farm.
pub const BACKENDS: usize = 2;
/// Every farm's one virtual port.
const PORT: u16 = 80;
const TABLE: &str = "lb";

pub fn name(i: usize) -> String {
    format!("f{i}")
}

/// Farm `i`'s own virtual address, in the benchmarking range 198.18.0.0/15.
pub fn vip(i: usize) -> String {
    format!("198.{}.{}.{}", 18 + i / 65536, (i / 256) % 256, i % 256)
}

/// Backend `j` of farm `i`: every backend of every farm has an address of its own.
pub fn backend_ip(i: usize, j: usize) -> String {
    let k = i * BACKENDS + j;
    format!("10.{}.{}.{}", 64 + k / 65536, (k / 256) % 256, k % 256)
}

/// The whole configuration, as `ImportConfig` takes it.
pub fn document(farms: usize) -> Value {
    let farms: Vec<Value> = (0..farms)
        .map(|i| {
            let backends: Vec<Value> = (0..BACKENDS)
                .map(|j| json!({"name": format!("b{j}"), "ip-addr": backend_ip(i, j)}))
                .collect();
            json!({"name": name(i), "virtual-addresses": [vip(i)],
                   "virtual-ports": PORT.to_string(), "backends": backends})
        })
        .collect();
    json!({ "farms": farms })
}

/// The hand-written ruleset of the same services: round robin by destination NAT and masquerade,
/// as nftlbd's default (snat) mode does.
pub fn ruleset(farms: usize) -> String {
    let mut o = String::with_capacity(farms * 160);
    let _ = writeln!(o, "table ip {TABLE} {{");
    let _ = writeln!(o, "\tmap services {{");
    let _ = writeln!(o, "\t\ttype ipv4_addr . inet_service : verdict");
    if farms > 0 {
        let _ = write!(o, "\t\telements = {{ ");
        for i in 0..farms {
            let sep = if i == 0 { "" } else { ", " };
            let _ = write!(o, "{sep}{} . {PORT} : goto {}", vip(i), name(i));
        }
        let _ = writeln!(o, " }}");
    }
    let _ = writeln!(o, "\t}}");
    let _ = writeln!(o, "\tchain prerouting {{");
    let _ = writeln!(o, "\t\ttype nat hook prerouting priority dstnat; policy accept;");
    let _ = writeln!(o, "\t\tip daddr . tcp dport vmap @services");
    let _ = writeln!(o, "\t}}");
    for i in 0..farms {
        let targets: Vec<String> = (0..BACKENDS)
            .map(|j| format!("{j} : {}", backend_ip(i, j)))
            .collect();
        let _ = writeln!(
            o,
            "\tchain {} {{\n\t\tdnat to numgen inc mod {BACKENDS} map {{ {} }}\n\t}}",
            name(i),
            targets.join(", ")
        );
    }
    let _ = writeln!(o, "\tchain postrouting {{");
    let _ = writeln!(o, "\t\ttype nat hook postrouting priority srcnat; policy accept;");
    let _ = writeln!(o, "\t\tct status dnat masquerade");
    let _ = writeln!(o, "\t}}");
    let _ = writeln!(o, "}}");
    o
}
