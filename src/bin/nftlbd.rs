//! The nftlbd command: `apply`/`check` one-shot modes and `run`, the daemon: reconcile the kernel
//! with the saved state, serve `org.nftlbd1` on the system bus, repair foreign changes, keep the
//! tables when it exits.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use nftlbd::engine::{EngineError, KernelEngine, check_supported};
use nftlbd::model::{self, Config};
use nftlbd::netlink::KernelFeatures;
use nftlbd::service::{Options, Service};
use nftlbd::state::{self, DEFAULT_STATE_DIR};

const USAGE: &str = "usage: nftlbd [--state-dir DIR] COMMAND
  apply FILE.json   validate FILE, make the kernel match it in one transaction, save it as the state
  check FILE.json   validate FILE only (same errors as apply)
  run               reconcile the kernel with the saved state, serve org.nftlbd1 on the system bus,
                    repair foreign changes until SIGTERM (SIGHUP re-reads the state file and the
                    farm files); tables stay in place when it exits, and SIGTERM ends it at any
                    step of its start
    --no-bus        run without D-Bus
    --bus ADDRESS   serve on this bus instead of the system bus
    --bus-timeout SECONDS
                    give up starting when the bus has not answered within SECONDS (default 30)
    --varlink PATH  serve varlink at PATH (default /run/nftlbd/org.nftlbd1, or the socket systemd
                    passes)
    --no-varlink    run without varlink
    --farms-dir DIR read farm files DIR/*.json at start and at each reload (default
                    /etc/nftlbd/farms.d)
    --no-checks     run no health checks of its own: backends' health is then set only through
                    SetBackendHealth (an outside checker)";

/// Exit codes: invalid input (as sysexits' EX_DATAERR), unsupported, kernel or system failure.
const EXIT_INVALID: u8 = 65;
const EXIT_UNSUPPORTED: u8 = 69;
const EXIT_FAILURE: u8 = 1;

struct Args {
    state_dir: PathBuf,
    command: String,
    file: Option<PathBuf>,
    /// `None`: no D-Bus; `Some(None)`: the system bus; `Some(Some(a))`: the bus at `a`.
    bus: Option<Option<String>>,
    /// `None`: no varlink; `Some((path, asked))`: the socket, and whether it was asked for (then
    /// failing to serve it is fatal; the default one is only warned about).
    varlink: Option<(PathBuf, bool)>,
    /// Whether the daemon runs the farms' health checks itself.
    checks: bool,
    /// How long joining the bus may take.
    bus_timeout: Duration,
    /// Where the farm files are.
    farms_dir: PathBuf,
}

fn parse_args() -> Result<Args, String> {
    let mut state_dir = PathBuf::from(DEFAULT_STATE_DIR);
    let mut bus = Some(None);
    let mut varlink = Some((PathBuf::from(nftlbd::varlink::DEFAULT_SOCKET), false));
    let mut checks = true;
    let mut bus_timeout = BUS_TIMEOUT;
    let mut farms_dir = PathBuf::from(nftlbd::farms_dir::DEFAULT_FARMS_DIR);
    let mut rest = Vec::new();
    let mut it = std::env::args_os().skip(1);
    while let Some(a) = it.next() {
        if a == "--state-dir" {
            state_dir = it.next().ok_or("--state-dir needs a directory")?.into();
        } else if a == "--no-bus" {
            bus = None;
        } else if a == "--bus" {
            let addr = it
                .next()
                .and_then(|a| a.into_string().ok())
                .ok_or("--bus needs an address")?;
            bus = Some(Some(addr));
        } else if a == "--bus-timeout" {
            let secs = it
                .next()
                .and_then(|a| a.into_string().ok())
                .and_then(|a| a.parse::<f64>().ok())
                .filter(|s| s.is_finite() && *s > 0.0 && *s <= 3600.0)
                .ok_or("--bus-timeout needs a number of seconds (at most 3600)")?;
            bus_timeout = Duration::from_secs_f64(secs);
        } else if a == "--no-varlink" {
            varlink = None;
        } else if a == "--farms-dir" {
            farms_dir = it.next().ok_or("--farms-dir needs a directory")?.into();
        } else if a == "--no-checks" {
            checks = false;
        } else if a == "--varlink" {
            let path = it.next().ok_or("--varlink needs a socket path")?;
            varlink = Some((PathBuf::from(path), true));
        } else if a == "-h" || a == "--help" {
            return Err(String::new());
        } else {
            rest.push(a);
        }
    }
    let command = rest
        .first()
        .and_then(|c| c.to_str())
        .ok_or("no command given")?
        .to_string();
    let file = rest.get(1).map(PathBuf::from);
    let want_file = matches!(command.as_str(), "apply" | "check");
    if want_file != file.is_some() || rest.len() > 2 {
        return Err(format!("wrong arguments for {command:?}"));
    }
    Ok(Args {
        state_dir,
        command,
        file,
        bus,
        varlink,
        checks,
        bus_timeout,
        farms_dir,
    })
}

/// What a command can fail with: the engine (exit codes by kind) or the state directory.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    State(#[from] state::StateError),
    /// The daemon could not start or serve (bus, runtime, signals).
    #[error("{0}")]
    Daemon(String),
}

impl From<nftlbd::netlink::Error> for CliError {
    fn from(e: nftlbd::netlink::Error) -> Self {
        CliError::Engine(e.into())
    }
}

impl From<model::Invalid> for CliError {
    fn from(e: model::Invalid) -> Self {
        CliError::Engine(e.into())
    }
}

fn fail(e: &CliError) -> ExitCode {
    let e = match e {
        CliError::Engine(e) => e,
        CliError::State(s) => {
            eprintln!("nftlbd: {s}");
            return ExitCode::from(EXIT_FAILURE);
        }
        CliError::Daemon(d) => {
            eprintln!("nftlbd: {d}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    match e {
        EngineError::Invalid(i) => {
            for fe in &i.0 {
                eprintln!("nftlbd: invalid: {fe}");
            }
            ExitCode::from(EXIT_INVALID)
        }
        EngineError::Unsupported { .. } => {
            eprintln!("nftlbd: unsupported: {e}");
            ExitCode::from(EXIT_UNSUPPORTED)
        }
        _ => {
            eprintln!("nftlbd: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn read_config(path: &PathBuf) -> Result<Config, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| model::Invalid::one(path.display().to_string(), e.to_string()))?;
    Ok(model::parse_config(&text)?)
}

fn check(args: &Args) -> Result<(), CliError> {
    let config = read_config(args.file.as_ref().expect("checked by parse_args"))?;
    // Kernel features matter only for a few keys; without privileges assume none is missing.
    let features = nftlbd::netlink::Connection::new()
        .and_then(|mut c| c.probe())
        .unwrap_or(KernelFeatures {
            table_owner: true,
            table_persist: true,
            queue: true,
            flowtable: true,
        });
    check_supported(&config, &features)?;
    println!(
        "valid: {} farm(s), {} backend(s)",
        config.farms.len(),
        config.farms.iter().map(|f| f.backends.len()).sum::<usize>()
    );
    Ok(())
}

fn apply(args: &Args) -> Result<(), CliError> {
    let config = read_config(args.file.as_ref().expect("checked by parse_args"))?;
    let _lock = state::lock(&args.state_dir)?;
    let mut engine = KernelEngine::open()?;
    // The saved ids and slots, journal included, so a farm kept keeps them; damage refuses
    // before the kernel is touched.
    let recovery = state::recover(&args.state_dir)?;
    if let Some(t) = &recovery.torn {
        eprintln!("nftlbd: warning: {t}");
    }
    let mut journal = state::Journal::open(&args.state_dir, &recovery, state::Limits::default());
    let alloc = recovery.state.map(|s| s.allocation).unwrap_or_default();
    let outcome = engine.reconcile(config, alloc)?;
    // One snapshot of what the kernel now has; the journal's records are in the past.
    journal.compact(engine.config(), engine.allocation())?;
    if std::env::var_os("NFTLBD_VERBOSE").is_some() {
        for c in &outcome.changes {
            println!("  {c}");
        }
    }
    match outcome.generation {
        Some(g) => println!(
            "applied: {} message(s) in one transaction, generation {g}",
            outcome.messages
        ),
        None => println!("applied: the kernel already matched, nothing changed"),
    }
    Ok(())
}

/// glibc's allocator settings for a long-running daemon whose large changes (a farm of 60,000
/// backends parsed, rendered, diffed, answered) free several times what stays live.
///
/// - Two arenas, not eight per core: each thread that allocates gets an arena of its own, and the
///   free space one arena keeps after a large request serves no other. Measured with a farm of
///   60,000 backends: 120 MiB resident after the load with the default arenas, 88 MiB with two;
///   343 MiB after one `GetFarm` of it (the reply is built on a runtime thread), 92 MiB with two.
/// - A fixed mmap threshold: by default glibc raises it each time a large mapped block is freed
///   (up to 32 MiB), so after the first large request the buffers of the next ones come from the
///   heap, where they are freed between live objects and stay resident. Fixed, a buffer over
///   128 KiB is mapped on its own and unmapped when freed.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt takes no pointers and only changes the allocator's parameters; it is called
    // before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

fn run(args: &Args) -> Result<(), CliError> {
    tune_allocator();
    nftlbd::logging::init();
    let how = nftlbd::privileges::keep_only_net_admin().map_err(|e| CliError::Daemon(e.to_string()))?;
    tracing::info!("{how}");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        // Blocking work is short (user lookups for exec checks, conntrack reads, the start-up
        // reconciliation): 32 threads at most, well inside the unit's TasksMax (tokio's default
        // of 512 would be the whole of it).
        .max_blocking_threads(32)
        .enable_all()
        .build()
        .map_err(|e| CliError::Daemon(format!("cannot start the runtime: {e}")))?;
    let done = rt.block_on(serve(args));
    // A start stopped by a signal may leave its kernel step running on a blocking thread: the
    // process does not wait for it. That step is one atomic transaction and the state files
    // are replaced by rename, so leaving now is as safe as SIGKILL, which the daemon survives.
    rt.shutdown_timeout(Duration::from_millis(100));
    done
}

/// How long joining the bus may take by default (its steps together), and leaving it.
const BUS_TIMEOUT: Duration = Duration::from_secs(30);
const BUS_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Starts the daemon (kernel, bus, varlink) and serves until SIGTERM; a stop signal at any step
/// of the start ends it cleanly too.
async fn serve(args: &Args) -> Result<(), CliError> {
    let mut signals = nftlbd::signals::Signals::catch()
        .map_err(|e| CliError::Daemon(format!("cannot catch signals: {e}")))?;
    let options = Options {
        state_dir: args.state_dir.clone(),
        watch: true,
        farms_dir: Some(args.farms_dir.clone()),
    };
    let start = tokio::task::spawn_blocking(move || Service::start(options));
    let Some(started) = signals
        .unless_stopped("reconciling the kernel with the saved state", start)
        .await
    else {
        return Ok(());
    };
    let service = started
        .map_err(|e| CliError::Daemon(format!("the service stopped while starting: {e}")))?
        .map_err(CliError::Daemon)?;
    let bus = match &args.bus {
        Some(address) => {
            let joined = signals
                .unless_stopped(
                    "joining the bus",
                    nftlbd::dbus::serve(service.clone(), address.as_deref(), args.bus_timeout),
                )
                .await;
            match joined {
                None => return Ok(()),
                Some(Ok(conn)) => Some(conn),
                Some(Err(e)) => {
                    return Err(CliError::Daemon(format!(
                        "D-Bus: {e} (use --no-bus to run without it)"
                    )));
                }
            }
        }
        None => None,
    };
    if let Some((path, asked)) = &args.varlink {
        match nftlbd::varlink::listen(path) {
            Ok(l) => {
                tokio::spawn(nftlbd::varlink::serve(service.clone(), l));
            }
            Err(e) if *asked => {
                return Err(CliError::Daemon(format!(
                    "varlink at {}: {e} (use --no-varlink to run without it)",
                    path.display()
                )));
            }
            Err(e) => tracing::warn!("no varlink at {}: {e}", path.display()),
        }
    }
    // Started before READY: a backend's health is being checked once the daemon says so.
    let checks = args
        .checks
        .then(|| nftlbd::service::checks::spawn(service.clone()));
    println!("READY");
    let status = |s: &Service| {
        format!(
            "STATUS={} farm(s), generation {}{}",
            s.config().farms.len(),
            s.generation(),
            if args.bus.is_some() {
                ", serving org.nftlbd1"
            } else {
                ""
            }
        )
    };
    nftlbd::notify::notify(&format!("READY=1\n{}", status(&service)));
    let mut events = service.subscribe();
    loop {
        tokio::select! {
            asked = signals.next() => {
                let nftlbd::signals::Asked::Stop(sig) = asked else {
                    reload(&service, &status).await;
                    continue;
                };
                tracing::info!("{sig}: stopping");
                break;
            }
            _ = events.recv() => nftlbd::notify::notify(&status(&service)),
        }
    }
    nftlbd::notify::notify("STOPPING=1");
    if let Some(checks) = checks {
        checks.abort();
    }
    tracing::info!("stopping; the tables stay in place");
    if let Some(conn) = bus {
        nftlbd::dbus::stop(conn, BUS_STOP_TIMEOUT).await;
    }
    Ok(())
}

/// SIGHUP: re-reads the state file and the farm files, telling systemd (refused files are
/// logged by the service).
async fn reload(service: &Service, status: &impl Fn(&Service) -> String) {
    nftlbd::notify::notify("RELOADING=1");
    if let Err(e) = service.reload().await {
        tracing::error!("reload: {e}");
    }
    nftlbd::notify::notify(&format!("READY=1\n{}", status(service)));
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("nftlbd: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let r = match args.command.as_str() {
        "check" => check(&args),
        "apply" => apply(&args),
        "run" => run(&args),
        other => {
            eprintln!("nftlbd: unknown command {other:?}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}
