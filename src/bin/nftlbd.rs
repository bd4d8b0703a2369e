//! The nftlbd command: `apply`/`check` one-shot modes and `run`, the daemon (without its D-Bus front
//! end yet): reconcile the kernel with the saved state, repair foreign changes, keep the tables when
//! it exits.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use nftlbd::engine::{Engine, EngineError, check_supported};
use nftlbd::model::{self, Config};
use nftlbd::netlink::{KernelFeatures, Monitor};
use nftlbd::state::{self, DEFAULT_STATE_DIR, State};

const USAGE: &str = "usage: nftlbd [--state-dir DIR] COMMAND
  apply FILE.json   validate FILE, make the kernel match it in one transaction, save it as the state
  check FILE.json   validate FILE only (same errors as apply)
  run               reconcile the kernel with the saved state, repair foreign changes until SIGTERM
                    (SIGHUP re-reads the state file); tables stay in place when it exits";

/// Exit codes: invalid input (as sysexits' EX_DATAERR), unsupported, kernel or system failure.
const EXIT_INVALID: u8 = 65;
const EXIT_UNSUPPORTED: u8 = 69;
const EXIT_FAILURE: u8 = 1;

struct Args {
    state_dir: PathBuf,
    command: String,
    file: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut state_dir = PathBuf::from(DEFAULT_STATE_DIR);
    let mut rest = Vec::new();
    let mut it = std::env::args_os().skip(1);
    while let Some(a) = it.next() {
        if a == "--state-dir" {
            state_dir = it.next().ok_or("--state-dir needs a directory")?.into();
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
    })
}

/// What a command can fail with: the engine (exit codes by kind) or the state directory.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    State(#[from] state::StateError),
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

fn save(args: &Args, engine: &Engine) -> Result<(), CliError> {
    let st = State::new(engine.config().clone(), engine.allocation().clone());
    Ok(state::save(&args.state_dir, &st)?)
}

fn saved_state(args: &Args) -> Result<Option<State>, CliError> {
    Ok(state::load(&args.state_dir)?)
}

fn apply(args: &Args) -> Result<(), CliError> {
    let config = read_config(args.file.as_ref().expect("checked by parse_args"))?;
    let _lock = state::lock(&args.state_dir)?;
    let mut engine = Engine::open()?;
    let alloc = saved_state(args)?.map(|s| s.allocation).unwrap_or_default();
    let outcome = engine.reconcile(config, alloc)?;
    save(args, &engine)?;
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

static SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    SIGNAL.store(sig, Ordering::SeqCst);
}

fn install_signals() {
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        // SAFETY: the handler only stores into an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
}

fn run(args: &Args) -> Result<(), CliError> {
    install_signals();
    let _lock = state::lock(&args.state_dir)?;
    let mut engine = Engine::open()?;
    let reconcile = |engine: &mut Engine| -> Result<(), CliError> {
        let st = saved_state(args)?;
        let (config, alloc) = st.map(|s| (s.config, s.allocation)).unwrap_or_default();
        let o = engine.reconcile(config, alloc)?;
        save(args, engine)?;
        match o.generation {
            Some(g) => eprintln!("nftlbd: reconciled: {} message(s), generation {g}", o.messages),
            None => eprintln!("nftlbd: the kernel matches the saved state"),
        }
        Ok(())
    };
    reconcile(&mut engine)?;
    let mut monitor = Monitor::new()?;
    // Layer-2 farms follow the host: links, addresses, routes and neighbours.
    let mut host = nftlbd::netlink::rtnl::RouteSocket::subscribe()?;
    println!("READY");
    loop {
        match SIGNAL.swap(0, Ordering::SeqCst) {
            libc::SIGTERM | libc::SIGINT => {
                eprintln!("nftlbd: stopping; the tables stay in place");
                return Ok(());
            }
            libc::SIGHUP => reconcile(&mut engine)?,
            _ => {}
        }
        // Someone else changed our tables (possible when the kernel cannot lock them to us):
        // put them back as they should be.
        let mut foreign = false;
        while let Some(ev) = monitor.next(Some(Duration::from_millis(200)))? {
            foreign |= ev.origin != engine.portid()
                && ev
                    .change
                    .table()
                    .is_some_and(|(_, t)| t == nftlbd::engine::layout::TABLE);
        }
        if foreign {
            eprintln!("nftlbd: our tables were changed by another process; repairing");
            reconcile(&mut engine)?;
        }
        let mut host_changed = false;
        while host.changed(Duration::from_millis(10))? {
            host_changed = true;
        }
        if host_changed {
            let o = engine.refresh_l2()?;
            if o.generation.is_some() {
                eprintln!(
                    "nftlbd: the host's interfaces or neighbours changed; layer-2 farms follow ({} messages)",
                    o.messages
                );
            }
        }
    }
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
