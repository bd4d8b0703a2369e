//! The snapshot alone, and the lock.

use super::*;
use crate::model;

#[test]
fn saves_and_loads_atomically() {
    let dir = std::env::temp_dir().join(format!("nftlbd-state-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    assert!(load(&dir).unwrap().is_none());
    let config = model::parse_config(
        r#"{"farms":[{"name":"web","virtual-addresses":["192.0.2.1"],
           "backends":[{"name":"a","ip-addr":"10.0.0.1"}]}]}"#,
    )
    .unwrap();
    let mut alloc = Allocation::default();
    alloc.update(&config).unwrap();
    let state = State::new(config, alloc);
    save(&dir, &state).unwrap();
    assert_eq!(load(&dir).unwrap(), Some(state));
    assert!(!dir.join(".state.json.tmp").exists());
    let held = lock(&dir).unwrap();
    assert!(matches!(lock(&dir), Err(StateError::Busy { .. })));
    drop(held);
    lock(&dir).unwrap();
    fs::write(dir.join(STATE_FILE), "{\"version\":1,").unwrap();
    assert!(matches!(load(&dir), Err(StateError::Format { .. })));
    fs::remove_dir_all(&dir).unwrap();
}

/// A snapshot written in the background while records go on being appended: once it is done,
/// the journal keeps exactly the records after it, and recovery gives the last state.
#[test]
fn a_background_snapshot_keeps_the_records_appended_meanwhile() {
    let dir = std::env::temp_dir().join(format!("nftlbd-state-bg-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let state = |n: usize| {
        let backends: Vec<String> = (0..n)
            .map(|i| format!(r#"{{"name":"b{i}","ip-addr":"10.0.0.{}"}}"#, i + 1))
            .collect();
        let config = model::parse_config(&format!(
            r#"{{"farms":[{{"name":"web","virtual-addresses":["192.0.2.1"],"backends":[{}]}}]}}"#,
            backends.join(",")
        ))
        .unwrap();
        let mut alloc = Allocation::default();
        alloc.update(&config).unwrap();
        (config, alloc)
    };
    let put = |(config, allocation): (model::Config, Allocation)| records::Change {
        ops: vec![records::Op::PutState {
            config: Box::new(config),
            allocation: Box::new(allocation),
        }],
        next_farm_id: None,
    };
    let recovery = recover(&dir).unwrap();
    let mut j = Journal::open(
        &dir,
        &recovery,
        Limits {
            bytes: u64::MAX,
            records: 3,
        },
    );
    for n in 1..=3 {
        j.append(&put(state(n))).unwrap();
    }
    assert!(j.needs_compaction());
    let (config, alloc) = state(3);
    j.compact_in_background(config, alloc);
    assert!(j.compacting() && !j.needs_compaction());
    // Appended while the snapshot may still be being written.
    for n in 4..=5 {
        j.append(&put(state(n))).unwrap();
    }
    assert!(matches!(j.finish_compaction(true), Some(Ok(()))));
    assert!(!j.compacting());
    let lines: Vec<u64> = fs::read_to_string(dir.join(JOURNAL_FILE))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(lines, vec![4, 5]);
    assert_eq!(j.records(), 2);
    let r = recover(&dir).unwrap();
    assert_eq!(r.replayed, 2);
    let s = r.state.unwrap();
    assert_eq!((s.sequence, (s.config, s.allocation)), (5, state(5)));
    // The journal goes on after the copy it now is.
    j.append(&put(state(6))).unwrap();
    let r = recover(&dir).unwrap();
    assert_eq!((r.replayed, r.state.unwrap().sequence), (3, 6));
    fs::remove_dir_all(&dir).unwrap();
}
