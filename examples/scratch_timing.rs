use nftlbd::model::parse_config;
use nftlbd::service::ops;
use serde_json::{Value, json};
use std::time::Instant;
fn main() {
    let n = 10_000;
    let b: Vec<Value> = (0..n).map(|i| json!({"name": format!("b{i}"), "ip-addr": format!("10.{}.{}.{}", 64 + i / 65536, (i / 256) % 256, i % 256)})).collect();
    let doc = json!({"farms": [{"name": "big", "virtual-addresses": ["192.0.2.1"], "virtual-ports": "80,443", "backends": b}]});
    let c = parse_config(&doc.to_string()).unwrap();
    let ix = nftlbd::service::index::ConfigIndex::build(std::sync::Arc::new(c.clone()));
    for _ in 0..3 {
        let t = Instant::now();
        let c2 = ops::set_backend_state("big".into(), "b5".into(), "drain".into())(&ix).unwrap();
        println!("op: {:?}", t.elapsed());
        let t = Instant::now();
        nftlbd::model::validate(&c2).unwrap();
        println!("validate: {:?}", t.elapsed());
        let t = Instant::now();
        let eq = c2 == c;
        println!("eq: {:?} {eq}", t.elapsed());
        let t = Instant::now();
        let s = nftlbd::state::State::new(c2.clone(), Default::default());
        nftlbd::state::save(std::path::Path::new("/tmp/scratch"), &s).unwrap();
        println!("save: {:?}", t.elapsed());
    }
}
