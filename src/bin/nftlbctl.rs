//! nftlbctl: manage nftlbd's farms from the command line (a client of org.nftlbd1 on the system
//! bus; see `nftlbctl --help`).

use std::process::ExitCode;

use nftlbd::ctl::{self, CtlError};
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

fn main() -> ExitCode {
    // Die quietly when the reader goes away (`nftlbctl list | head`), as other commands do.
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    // SAFETY: the default disposition runs no handler code in this process, so nothing can run
    // in signal context; the previous disposition comes back as a plain struct. No other thread
    // exists yet to be affected halfway.
    let _ = unsafe { sigaction(Signal::SIGPIPE, &default) };
    let args = match ctl::parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => return fail(&e),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => return fail(&CtlError::Failed(format!("cannot start: {e}"))),
    };
    match runtime.block_on(ctl::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(e: &CtlError) -> ExitCode {
    match e {
        CtlError::Usage(m) if m.is_empty() => {
            println!("{}", ctl::USAGE);
            return ExitCode::SUCCESS;
        }
        CtlError::Usage(m) => eprintln!("nftlbctl: {m}\n{}", ctl::USAGE),
        other => eprintln!("nftlbctl: {other}"),
    }
    e.exit_code()
}
