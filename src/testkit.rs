//! What the front ends' tests share: a service on the in-memory engine in a temporary state
//! directory, an authority whose answer a test switches and which records every question, and
//! bounded waits. No kernel, bus daemon or privileges are needed.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use crate::engine::{Allocation, MemoryControl, MemoryEngine};
use crate::model::{Config, parse_config};
use crate::polkit::{Answer, Details, Subject};
use crate::service::authority::Rule;
use crate::service::{Caller, Options, Service};
use crate::state::{self, State};

/// The longest any single wait of a test may take.
pub const WAIT: Duration = Duration::from_secs(5);

/// `f`, or a panic naming `what` once [`WAIT`] has passed.
pub async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: no answer within {WAIT:?}"),
    }
}

/// Where temporary directories go: shared memory where there is one, since the service fsyncs
/// its state file on every change and a busy disk can take seconds per fsync.
fn scratch() -> PathBuf {
    let shm = Path::new("/dev/shm");
    let writable = nix::unistd::access(
        shm,
        nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
    )
    .is_ok();
    if shm.is_dir() && writable {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// A fresh directory, removed at the end of the test.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(what: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let dir = scratch().join(format!("nftlbd-{what}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Farm `web` (persistence by client address, a static session on `b`) and policy `bad`.
pub fn config() -> Config {
    parse_config(
        &json!({
            "farms": [{
                "name": "web", "virtual-addresses": ["192.0.2.10"], "virtual-ports": "80",
                "persistence": ["srcip"], "persist-ttl": 60,
                "sessions": [{"client": "198.51.100.7", "backend": "b"}],
                "backends": [{"name": "a", "ip-addr": "10.0.0.1"}, {"name": "b", "ip-addr": "10.0.0.2"}]
            }],
            "policies": [{"name": "bad", "elements": ["10.8.0.2"]}]
        })
        .to_string(),
    )
    .expect("the test configuration is valid")
}

/// One question the authority was asked.
#[derive(Debug, Clone)]
pub struct Asked {
    pub subject: Subject,
    pub uid: u32,
    pub action: String,
    pub details: Details,
}

/// The authority's answer (switchable while the service runs) and what it was asked.
#[derive(Clone, Default)]
pub struct Gate {
    refuse: Arc<AtomicBool>,
    asked: Arc<Mutex<Vec<Asked>>>,
}

impl Gate {
    pub fn allow(&self) {
        self.refuse.store(false, Ordering::SeqCst);
    }

    pub fn refuse(&self) {
        self.refuse.store(true, Ordering::SeqCst);
    }

    /// The questions asked since the last call, in order.
    pub fn take(&self) -> Vec<Asked> {
        std::mem::take(&mut *self.asked.lock().expect("the gate's lock"))
    }
}

/// A running service on the in-memory engine, started on [`config`] (one transaction,
/// generation 1), deciding through a [`Gate`] that allows until told otherwise.
pub struct Fixture {
    pub service: Service,
    pub control: MemoryControl,
    pub gate: Gate,
    /// The state directory; the last field, so it goes after the service that locks it.
    pub dir: TempDir,
}

impl Fixture {
    pub fn start(what: &str) -> Fixture {
        let dir = TempDir::new(what);
        let mut alloc = Allocation::default();
        alloc.update(&config()).expect("ids for the test configuration");
        state::save(dir.path(), &State::new(config(), alloc)).expect("a saved state");
        let engine = MemoryEngine::new();
        let control = engine.control();
        let options = Options {
            state_dir: dir.path().to_path_buf(),
            watch: false,
            farms_dir: None,
        };
        let gate = Gate::default();
        let g = gate.clone();
        let rule = Rule(move |caller: &Caller, action: &str, details: &Details| {
            g.asked.lock().expect("the gate's lock").push(Asked {
                subject: caller.subject.clone(),
                uid: caller.uid,
                action: action.to_string(),
                details: details.clone(),
            });
            if g.refuse.load(Ordering::SeqCst) {
                Answer::No
            } else {
                Answer::Yes
            }
        });
        let service = Service::start_with(Box::new(engine), options)
            .expect("the service starts")
            .with_authority(Arc::new(rule));
        Fixture {
            service,
            control,
            gate,
            dir,
        }
    }

    /// The configuration the state file holds now.
    pub fn saved(&self) -> Config {
        state::load(self.dir.path())
            .expect("a readable state file")
            .expect("a state file")
            .config
    }
}

/// Whether the question was about this very process, as the kernel tells a socket's peer.
pub fn is_this_process(asked: &Asked) -> bool {
    let me = nix::unistd::geteuid().as_raw();
    asked.uid == me
        && matches!(asked.subject, Subject::Process { pid, uid } if pid == std::process::id() && uid == me)
}
