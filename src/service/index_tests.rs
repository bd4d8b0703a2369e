use super::*;
use crate::model::{BackendState, parse_config};

#[test]
fn finds_by_name() {
    let c = parse_config(
        &serde_json::json!({"farms": [
            {"name": "a", "virtual-addresses": ["192.0.2.1"], "backends": [
                {"name": "x", "ip-addr": "10.0.0.1", "state": "down"},
                {"name": "y", "ip-addr": "10.0.0.2", "priority": 2}]},
            {"name": "b", "virtual-addresses": ["192.0.2.2"]}]})
        .to_string(),
    )
    .unwrap();
    let ix = ConfigIndex::build(Arc::new(c));
    assert_eq!(ix.farm("b").map(|f| f.name.as_str()), Some("b"));
    let (f, b) = ix.backend("a", "y").unwrap();
    assert_eq!((f.name.as_str(), b.name.as_str()), ("a", "y"));
    assert!(ix.backend("a", "z").is_none() && ix.farm("c").is_none());
    assert_eq!(ix.effective_priority("a"), Some(2));
}

fn farm(name: &str, n: usize) -> Farm {
    let backends: Vec<serde_json::Value> = (0..n)
        .map(|i| serde_json::json!({"name": format!("b{i}"), "ip-addr": "10.0.0.1"}))
        .collect();
    let doc = serde_json::json!({"farms": [{"name": name, "virtual-addresses": ["192.0.2.1"],
        "backends": backends}]});
    parse_config(&doc.to_string()).unwrap().farms[0].clone()
}

/// What the kept index must agree with: the one built from the configuration.
fn agrees(names: &Names, c: &Config) {
    let whole = Names::build(c);
    for (i, f) in c.farms.iter().enumerate() {
        assert_eq!(names.farm_position(&f.name), Some(i));
        for (j, b) in f.backends.iter().enumerate() {
            assert_eq!(
                names.backend_position(&f.name, &b.name),
                Some((i, j)),
                "{}/{}",
                f.name,
                b.name
            );
        }
        let (kept, built) = (names.tiers(&f.name).unwrap(), whole.tiers(&f.name).unwrap());
        assert_eq!(
            (kept.effective(), kept.weight(), kept.quorum_met()),
            (built.effective(), built.weight(), built.quorum_met())
        );
    }
    assert_eq!(names.farms.len(), c.farms.len());
}

#[test]
fn kept_one_commit_at_a_time_it_agrees_with_a_rebuilt_one() {
    // xorshift64: deterministic cases.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut c = Config::default();
    c.farms.push(farm("f", 300));
    c.farms.push(farm("g", 5));
    let mut names = Names::build(&c);
    let states = [BackendState::Up, BackendState::Drain, BackendState::Down];
    let mut added = 0;
    let mut rebuilds = 0;
    for step in 0..1_500 {
        let mut new = c.clone();
        let fi = next(2) as usize;
        let f = &mut new.farms[fi];
        let n = f.backends.len() as u64;
        match next(7) {
            // The farm's quorum: a farm-level change the tiers are counted anew for.
            4 if step % 10 == 0 => f.quorum = next(n + 2) as u32,
            5 if n > 0 => {
                let i = next(n) as usize;
                f.backends[i].sorry = !f.backends[i].sorry;
            }
            0 if n > 1 => {
                f.backends.remove(next(n) as usize);
            }
            1 => {
                let mut b = f.backends[0].clone();
                b.name = format!("n{added}");
                added += 1;
                f.backends.push(b);
            }
            2 if n > 0 => {
                let i = next(n) as usize;
                f.backends[i].priority = next(3) as u32 + 1;
            }
            3 if step % 50 == 0 => {
                // A farm-level change: a farm removed and added back at the front.
                let g = new.farms.remove(1);
                new.farms.insert(0, g);
            }
            _ if n > 0 => {
                let i = next(n) as usize;
                f.backends[i].state = states[next(3) as usize];
            }
            _ => {}
        }
        let diff = Diff::between_known(&c, &new, "api", Some(&names));
        let before = crate::model::whole_farm_passes();
        names.follow(&c, &new, &diff);
        rebuilds += crate::model::whole_farm_passes() - before;
        c = new;
        agrees(&names, &c);
    }
    assert!(
        rebuilds < 200,
        "{rebuilds} whole-farm passes in 1,500 commits: most must be followed per backend"
    );
}

#[test]
fn many_removals_fold_into_a_rebuild() {
    let mut c = Config::default();
    c.farms.push(farm("f", REBUILD_AFTER + 50));
    let mut names = Names::build(&c);
    for _ in 0..REBUILD_AFTER + 10 {
        let mut new = c.clone();
        new.farms[0].backends.remove(1);
        let diff = Diff::between_known(&c, &new, "api", Some(&names));
        names.follow(&c, &new, &diff);
        c = new;
        assert!(names.farms.get("f").unwrap().removed.len() <= REBUILD_AFTER);
    }
    agrees(&names, &c);
}
