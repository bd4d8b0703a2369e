//! What the examples (and the service bench) share: the weighted farm they load (weights 1, 2,
//! 3, … so slots ≈ 2 × backends, as in the changes bench) and a plain varlink call. Each user
//! takes a part, hence the `dead_code` allowances.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;

use serde_json::{Value, json};

/// One varlink call and its reply's parameters; a reply with an error fails the run.
#[allow(dead_code)]
pub fn call(s: &mut BufReader<UnixStream>, method: &str, params: Value) -> Value {
    let mut msg =
        serde_json::to_vec(&json!({"method": format!("org.nftlbd1.{method}"), "parameters": params}))
            .expect("encode");
    msg.push(0);
    s.get_mut().write_all(&msg).expect("send");
    let mut buf = Vec::new();
    s.read_until(0, &mut buf).expect("reply");
    buf.pop();
    let reply: Value = serde_json::from_slice(&buf).expect("json reply");
    assert!(reply.get("error").is_none(), "{method}: {reply}");
    reply["parameters"].clone()
}

/// A weighted farm of `n` backends, as canonical JSON.
#[allow(dead_code)]
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
