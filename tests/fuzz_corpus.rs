//! Replays every committed fuzz corpus file (`fuzz/corpus/<target>/`) through the entry point its
//! fuzz target calls, on the stable toolchain: a crash the fuzzer once found stays fixed without
//! nightly or libFuzzer. No root needed: the netlink target decodes recorded kernel datagrams.

use std::path::PathBuf;

/// Every input of `target`, with its file name; the corpus is never empty.
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let path = e.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            (path.file_name().unwrap().to_string_lossy().into_owned(), bytes)
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} holds no inputs", dir.display());
    files
}

/// Runs `f` on every input of `target` (a panic names the file) and counts the inputs `f`
/// accepted: at least one must be, or the corpus no longer reaches the code it is for.
fn replay(target: &str, f: impl Fn(&[u8]) -> bool) {
    let mut accepted = 0;
    for (name, bytes) in corpus(target) {
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&bytes)))
            .unwrap_or_else(|_| panic!("fuzz/corpus/{target}/{name} panics"));
        accepted += usize::from(ok);
    }
    assert!(accepted > 0, "no input of fuzz/corpus/{target} is accepted");
}

#[test]
fn config_json_corpus() {
    replay("config_json", |d| nftlbd::fuzzing::config_json(d) > 0);
}

#[test]
fn dbus_settings_corpus() {
    replay("dbus_settings", nftlbd::fuzzing::dbus_settings);
}

#[test]
fn varlink_stream_corpus() {
    replay("varlink_stream", |d| nftlbd::fuzzing::varlink_stream(d) > 0);
}

#[test]
fn netlink_datagram_corpus() {
    replay("netlink_datagram", |d| nftlbd::fuzzing::netlink_datagram(d) > 0);
}
