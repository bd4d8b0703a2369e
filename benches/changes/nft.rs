//! `nft` as an operator runs it, in the bench's own network namespace: one process per command,
//! its start and exit included in the time.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::error::{BenchError, Result};
use crate::farm;

/// Runs `nft ARGS`, checks its exit status and returns how long it took.
pub fn run(args: &[&str]) -> Result<Duration> {
    let command = format!("nft {}", args.join(" "));
    let t = Instant::now();
    let out = Command::new("nft")
        .args(args)
        .output()
        .map_err(BenchError::io(command.clone()))?;
    let took = t.elapsed();
    if !out.status.success() {
        return Err(BenchError::Command {
            command,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(took)
}

/// The hand-written ruleset and the one-element change of one farm size, as files for `nft -f`.
pub struct Files {
    pub ruleset: PathBuf,
    pub add_one: PathBuf,
}

impl Files {
    pub fn write(dir: &Path, n: usize) -> Result<Self> {
        let ruleset = dir.join(format!("ruleset-{n}.nft"));
        let add_one = dir.join(format!("add-one-{n}.nft"));
        let write = |p: &Path, text: String| {
            std::fs::write(p, text).map_err(BenchError::io(format!("write {}", p.display())))
        };
        write(&ruleset, farm::ruleset(n))?;
        write(
            &add_one,
            format!(
                "add element ip {} {} {}\n",
                farm::TABLE,
                farm::map(),
                farm::extra_element(n)
            ),
        )?;
        Ok(Self { ruleset, add_one })
    }
}

/// Replaces the whole ruleset with the hand-written one; times the `nft -f`.
pub fn load(files: &Files) -> Result<Duration> {
    run(&["flush", "ruleset"])?;
    run(&["-f", path(&files.ruleset)?])
}

pub fn add_element(n: usize) -> Result<Duration> {
    run(&[
        "add",
        "element",
        "ip",
        farm::TABLE,
        &farm::map(),
        &farm::extra_element(n),
    ])
}

pub fn add_element_file(files: &Files) -> Result<Duration> {
    run(&["-f", path(&files.add_one)?])
}

pub fn delete_element(n: usize) -> Result<Duration> {
    run(&[
        "delete",
        "element",
        "ip",
        farm::TABLE,
        &farm::map(),
        &farm::extra_key(n),
    ])
}

fn path(p: &Path) -> Result<&str> {
    p.to_str().ok_or_else(|| BenchError::Io {
        what: format!("{}", p.display()),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not UTF-8"),
    })
}
