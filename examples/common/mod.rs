//! What the examples share: the weighted farm they load (weights 1, 2, 3, … so slots ≈ 2 ×
//! backends, as in the changes bench).

use serde_json::{Value, json};

/// A weighted farm of `n` backends, as canonical JSON.
pub fn weighted_farm(name: &str, n: usize) -> Value {
    let b: Vec<Value> = (0..n)
        .map(|i| {
            json!({"name": format!("b{i}"), "weight": 1 + i % 3,
                   "ip-addr": format!("10.{}.{}.{}", 64 + i / 65536, (i / 256) % 256, i % 256)})
        })
        .collect();
    json!({"name": name, "virtual-addresses": ["192.0.2.1"], "virtual-ports": "80,443",
           "scheduler": "weight", "backends": b})
}
