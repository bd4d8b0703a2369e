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
