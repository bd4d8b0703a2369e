//! The journal, `journal.jsonl`: records appended and fsynced one per committed change, read
//! back over the snapshot at start, and emptied when a snapshot takes them in.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::records::{self, Bad, Change};
use super::{JOURNAL_FILE, State, StateError, io_err, snapshot};
use crate::engine::Allocation;
use crate::model::{self, Config};

/// When the journal is compacted into a new snapshot: replay time and disk use stay bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub bytes: u64,
    pub records: usize,
}

pub const MAX_BYTES: u64 = 8 << 20;
pub const MAX_RECORDS: usize = 10_000;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            bytes: MAX_BYTES,
            records: MAX_RECORDS,
        }
    }
}

/// A last record dropped at start: it was cut short, so its change was never acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Torn {
    pub path: PathBuf,
    pub line: usize,
    pub reason: String,
    /// Records replayed over the snapshot before it.
    pub recovered: usize,
}

impl fmt::Display for Torn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: line {}: {}: dropped the last record, a change that was never acknowledged; \
             {} record(s) recovered",
            self.path.display(),
            self.line,
            self.reason,
            self.recovered
        )
    }
}

/// What start-up found in the state directory.
#[derive(Debug)]
pub struct Recovery {
    /// The snapshot with the journal replayed; `None` when there is neither.
    pub state: Option<State>,
    /// Records applied over the snapshot.
    pub replayed: usize,
    pub torn: Option<Torn>,
    /// Intact records in the journal (replayed or already in the snapshot).
    records: usize,
    /// The length of those records; the journal continues there.
    good: u64,
    /// The journal's length on disk.
    on_disk: u64,
}

/// Reads the snapshot and replays the journal's records above its sequence number, in order.
pub fn recover(dir: &Path) -> Result<Recovery, StateError> {
    let path = dir.join(JOURNAL_FILE);
    let mut state = snapshot::load(dir)?;
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io_err(&path)(e)),
    };
    let mut r = Recovery {
        state: None,
        replayed: 0,
        torn: None,
        records: 0,
        good: 0,
        on_disk: bytes.len() as u64,
    };
    let base = state.as_ref().map_or(0, |s| s.sequence);
    let mut last: Option<u64> = None;
    let mut start = 0;
    let mut line = 0;
    while start < bytes.len() {
        line += 1;
        let end = bytes[start..].iter().position(|b| *b == b'\n').map(|i| start + i);
        let text = &bytes[start..end.unwrap_or(bytes.len())];
        let refuse = |reason: String, recovered: usize| StateError::Journal {
            path: path.clone(),
            line,
            reason,
            recovered,
        };
        let decoded = match (std::str::from_utf8(text), end) {
            (_, None) => Err(Bad::Damaged("incomplete record (no end of line)".into())),
            (Err(_), _) => Err(Bad::Damaged("damaged record (not UTF-8)".into())),
            (Ok(t), Some(_)) => records::decode(t),
        };
        let (seq, change) = match decoded {
            Ok(d) => d,
            Err(Bad::Damaged(reason)) => {
                // Only the last record can be cut short by a crash: what follows the damage
                // must be nothing, or what a file system leaves after a lost write (zeros).
                let rest = end.map_or(&[][..], |e| &bytes[e..]);
                if rest.iter().all(|b| matches!(b, b'\n' | 0)) {
                    r.torn = Some(Torn {
                        path: path.clone(),
                        line,
                        reason,
                        recovered: r.replayed,
                    });
                    break;
                }
                return Err(refuse(format!("{reason}, followed by more records"), r.replayed));
            }
            Err(bad @ Bad::Unreadable(_)) => return Err(refuse(bad.to_string(), r.replayed)),
        };
        if let Some(prev) = last
            && seq != prev + 1
        {
            return Err(refuse(format!("record {seq} follows record {prev}"), r.replayed));
        }
        last = Some(seq);
        if seq > base {
            if r.replayed == 0 && seq != base + 1 {
                return Err(refuse(
                    format!("record {seq} follows the snapshot's record {base}: records are missing"),
                    0,
                ));
            }
            let s = state.get_or_insert_with(|| State::new(Config::default(), Allocation::default()));
            change
                .apply(s)
                .map_err(|e| refuse(format!("record {seq} does not apply: {e}"), r.replayed))?;
            s.sequence = seq;
            r.replayed += 1;
        }
        r.records += 1;
        start = end.map_or(bytes.len(), |e| e + 1);
        r.good = start as u64;
    }
    if r.replayed > 0
        && let Some(s) = &state
    {
        model::validate(&s.config).map_err(|source| StateError::Invalid {
            path: path.clone(),
            source,
        })?;
    }
    r.state = state;
    Ok(r)
}

/// A snapshot another thread is writing: it takes in the records up to `upto`, which are the
/// journal's first `at` bytes.
struct Compaction {
    upto: u64,
    at: u64,
    records: usize,
    thread: std::thread::JoinHandle<Result<(), StateError>>,
}

/// The journal being written: where the next record goes and when to compact.
pub struct Journal {
    dir: PathBuf,
    path: PathBuf,
    /// The length of the intact records; the next one is written there.
    len: u64,
    /// The file's length as last written (`None`: unknown after a failed write), longer than
    /// `len` when a torn record or a failed append is still there to cut.
    on_disk: Option<u64>,
    records: usize,
    last: u64,
    /// Whether the file's directory entry is known to be on disk.
    durable_entry: bool,
    limits: Limits,
    /// The file, open for appending (opening it per record cost a system call pair per change).
    file: Option<File>,
    compaction: Option<Compaction>,
}

impl Journal {
    /// The journal of `dir`, continuing after what `recovery` found there.
    pub fn open(dir: &Path, recovery: &Recovery, limits: Limits) -> Journal {
        Journal {
            dir: dir.to_path_buf(),
            path: dir.join(JOURNAL_FILE),
            len: recovery.good,
            on_disk: Some(recovery.on_disk),
            records: recovery.records,
            last: recovery.state.as_ref().map_or(0, |s| s.sequence),
            durable_entry: recovery.on_disk > 0,
            limits,
            file: None,
            compaction: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The sequence number of the last record written.
    pub fn last(&self) -> u64 {
        self.last
    }

    /// Records in the journal (intact ones).
    pub fn records(&self) -> usize {
        self.records
    }

    /// Whether the file holds anything, intact or not.
    pub fn is_empty(&self) -> bool {
        self.len == 0 && self.on_disk == Some(0)
    }

    /// Whether the journal is past its limits and no compaction is under way.
    pub fn needs_compaction(&self) -> bool {
        self.compaction.is_none() && (self.len >= self.limits.bytes || self.records >= self.limits.records)
    }

    /// Appends `change` as the next record and waits until it is on disk. On error the file is
    /// cut back to the records before it (or, if even that fails, the partial record is left
    /// to be dropped as torn at the next start).
    pub fn append(&mut self, change: &Change) -> Result<u64, StateError> {
        let seq = self.last + 1;
        let line = records::encode(seq, change).map_err(|e| StateError::Format {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        if let Err(e) = self.write(line.as_bytes()) {
            self.put_back();
            return Err(e);
        }
        self.len += line.len() as u64;
        self.records += 1;
        self.last = seq;
        Ok(seq)
    }

    fn write(&mut self, line: &[u8]) -> Result<(), StateError> {
        let f = match self.file.take() {
            Some(f) => f,
            None => OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&self.path)
                .map_err(io_err(&self.path))?,
        };
        let f = self.file.insert(f);
        if self.on_disk != Some(self.len) {
            f.set_len(self.len).map_err(io_err(&self.path))?;
        }
        self.on_disk = None;
        f.write_all_at(line, self.len).map_err(io_err(&self.path))?;
        self.on_disk = Some(self.len + line.len() as u64);
        f.sync_data().map_err(io_err(&self.path))?;
        if !self.durable_entry {
            File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(io_err(&self.dir))?;
            self.durable_entry = true;
        }
        Ok(())
    }

    /// Cuts off what a failed append left.
    fn put_back(&mut self) {
        if self.on_disk == Some(self.len) {
            return;
        }
        let cut = OpenOptions::new().write(true).open(&self.path).and_then(|f| {
            f.set_len(self.len)?;
            f.sync_data()
        });
        match cut {
            Ok(()) => self.on_disk = Some(self.len),
            Err(e) => tracing::error!(
                "{}: cannot cut back a record that was not saved: {e}; it is dropped at the next start",
                self.path.display()
            ),
        }
    }

    /// Writes a snapshot of `config` and `allocation` that includes every record so far, then
    /// empties the journal. A crash in between leaves records the snapshot already has, which
    /// replay skips.
    pub fn compact(&mut self, config: &Config, allocation: &Allocation) -> Result<(), StateError> {
        // One writer of the snapshot's temporary file at a time.
        if let Some(Err(e)) = self.finish_compaction(true) {
            tracing::warn!("{e}");
        }
        snapshot::save_parts(&self.dir, self.last, config, allocation)?;
        if self.is_empty() {
            return Ok(());
        }
        let f = OpenOptions::new()
            .write(true)
            .open(&self.path)
            .map_err(io_err(&self.path))?;
        f.set_len(0).map_err(io_err(&self.path))?;
        self.len = 0;
        self.records = 0;
        self.on_disk = Some(0);
        f.sync_data().map_err(io_err(&self.path))?;
        Ok(())
    }
}

impl Journal {
    /// Starts writing a snapshot of `config` and `allocation` (what the records so far make) on
    /// another thread, so that a change never waits for the whole configuration to be written
    /// (a second and more at 60,000 backends). Records go on being appended meanwhile; once the
    /// snapshot is on disk, [`Journal::finish_compaction`] drops the records it took in. Replay
    /// skips records a snapshot already has, so a crash at any point loses nothing.
    pub fn compact_in_background(&mut self, config: Config, allocation: Allocation) {
        if self.compaction.is_some() {
            return;
        }
        let (dir, upto) = (self.dir.clone(), self.last);
        let spawned = std::thread::Builder::new()
            .name("nftlbd-snapshot".into())
            .spawn(move || {
                lower_priority();
                snapshot::save_parts(&dir, upto, &config, &allocation)
            });
        match spawned {
            Ok(thread) => {
                self.compaction = Some(Compaction {
                    upto,
                    at: self.len,
                    records: self.records,
                    thread,
                })
            }
            Err(e) => tracing::warn!("cannot start writing a snapshot: {e}"),
        }
    }

    /// Whether a snapshot is being written.
    pub fn compacting(&self) -> bool {
        self.compaction.is_some()
    }

    /// Once the background snapshot is written (or at once, waiting for it, with `wait`), drops
    /// the records it took in from the journal. `None`: none was under way, or it is not done.
    pub fn finish_compaction(&mut self, wait: bool) -> Option<Result<(), StateError>> {
        if !wait && !self.compaction.as_ref()?.thread.is_finished() {
            return None;
        }
        let c = self.compaction.take()?;
        let saved = c.thread.join().unwrap_or_else(|_| {
            Err(StateError::Format {
                path: self.dir.join(super::STATE_FILE),
                reason: "the snapshot's thread panicked".into(),
            })
        });
        Some(saved.and_then(|()| self.drop_first(c.at, c.records)).map(|()| {
            tracing::debug!(
                "snapshot at record {} written; the journal keeps what came after",
                c.upto
            );
        }))
    }

    /// Drops the journal's first `at` bytes (`records` records): the records after them are
    /// copied into a new file that replaces the journal atomically.
    fn drop_first(&mut self, at: u64, records: usize) -> Result<(), StateError> {
        if at == 0 {
            return Ok(());
        }
        let err = io_err(&self.path);
        let mut rest = vec![0; (self.len - at) as usize];
        File::open(&self.path)
            .and_then(|f| f.read_exact_at(&mut rest, at))
            .map_err(io_err(&self.path))?;
        let tmp = self.dir.join(format!(".{JOURNAL_FILE}.tmp"));
        let written = (|| {
            let f = File::create(&tmp)?;
            f.write_all_at(&rest, 0)?;
            f.sync_all()
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(io_err(&tmp)(e));
        }
        fs::rename(&tmp, &self.path).map_err(err)?;
        // The open file is the replaced one now.
        self.file = None;
        self.len -= at;
        self.records -= records;
        self.on_disk = Some(self.len);
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(&self.dir))?;
        self.durable_entry = true;
        Ok(())
    }
}

/// The snapshot's thread yields the cores to the writer and the fronts: at 60,000 backends it
/// takes over a second of CPU, and on a two-core host it slowed the changes committed meanwhile.
/// Niceness 19, not SCHED_IDLE: a busy host still lets it finish, so the journal stays bounded.
fn lower_priority() {
    let tid = nix::unistd::gettid().as_raw();
    // SAFETY: setpriority takes plain integers and changes only the scheduling weight of the
    // calling thread (on Linux a PRIO_PROCESS id that is a thread id names that one thread).
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 19) };
    if rc != 0 {
        tracing::debug!(
            "cannot lower the snapshot thread's priority: {}",
            io::Error::last_os_error()
        );
    }
}
