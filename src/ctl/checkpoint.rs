//! `nftlbctl checkpoint ...` and `nftlbctl apply FILE --confirm SECONDS`: checkpoints over D-Bus,
//! and an import kept only when the operator confirms it in time (as NetworkManager's
//! `nmcli --ask` confirmation of a change that could cut the operator off).

use std::io::BufRead;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use zbus::zvariant::OwnedObjectPath;

use super::client::{Client, MANAGER, ROOT};
use super::{CtlError, usage};
use crate::schema::{CHECKPOINT, checkpoint_path};
use crate::service::checkpoint::{ALLOW_OVERLAPPING, DELETE_NEW_FARMS};

/// A checkpoint named by its number or its object path.
fn path_of(word: &str) -> Result<String, CtlError> {
    if let Ok(id) = word.parse::<u32>() {
        return Ok(checkpoint_path(id));
    }
    if word.starts_with(&format!("{ROOT}/checkpoint/")) {
        return Ok(word.to_string());
    }
    Err(usage(&format!("{word:?} is no checkpoint number")))
}

fn id_of(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

async fn farm_paths(c: &Client, names: &[String]) -> Result<Vec<OwnedObjectPath>, CtlError> {
    let mut out = Vec::with_capacity(names.len());
    for n in names {
        out.push(c.farm_path(n).await?);
    }
    Ok(out)
}

/// `checkpoint create [--timeout S] [--delete-new-farms] [--allow-overlapping] [FARM...]`,
/// `confirm ID`, `rollback ID`, `list`.
pub async fn run(c: &mut Client, words: &[String], json: bool) -> Result<(), CtlError> {
    let sub = words.first().map(String::as_str).unwrap_or("list");
    let id_arg = || -> Result<String, CtlError> {
        path_of(
            words
                .get(1)
                .ok_or_else(|| usage(&format!("checkpoint {sub} needs a checkpoint number")))?,
        )
    };
    match sub {
        "create" => {
            let (mut timeout, mut flags, mut farms) = (0u32, 0u32, Vec::new());
            let mut rest = words[1..].iter();
            while let Some(w) = rest.next() {
                match w.as_str() {
                    "--timeout" => {
                        timeout = rest
                            .next()
                            .and_then(|s| s.parse().ok())
                            .ok_or_else(|| usage("--timeout needs seconds"))?;
                    }
                    "--delete-new-farms" => flags |= DELETE_NEW_FARMS,
                    "--allow-overlapping" => flags |= ALLOW_OVERLAPPING,
                    _ => farms.push(w.clone()),
                }
            }
            let farms = farm_paths(c, &farms).await?;
            let path: OwnedObjectPath = c
                .change(ROOT, MANAGER, "CheckpointCreate", &(farms, timeout, flags))
                .await?;
            println!("{}", if json { path.as_str() } else { id_of(path.as_str()) });
            Ok(())
        }
        "confirm" => {
            let path = OwnedObjectPath::try_from(id_arg()?)?;
            c.change::<_, ()>(ROOT, MANAGER, "CheckpointDestroy", &(path,))
                .await
        }
        "rollback" => {
            let path = OwnedObjectPath::try_from(id_arg()?)?;
            let results = rollback(c, path).await?;
            print_results(&results, json);
            Ok(())
        }
        "list" => list(c, json).await,
        other => Err(usage(&format!("unknown checkpoint command {other:?}"))),
    }
}

async fn rollback(
    c: &mut Client,
    path: OwnedObjectPath,
) -> Result<std::collections::HashMap<String, u32>, CtlError> {
    c.change(ROOT, MANAGER, "CheckpointRollback", &(path,)).await
}

fn print_results(results: &std::collections::HashMap<String, u32>, json: bool) {
    let mut sorted: Vec<(&String, &u32)> = results.iter().collect();
    sorted.sort();
    if json {
        println!("{}", serde_json::json!(results));
        return;
    }
    for (farm, code) in sorted {
        let what = match *code {
            0 => "restored",
            1 => "refused: invalid",
            2 => "refused by the kernel",
            3 => "refused: the state could not be saved",
            _ => "refused",
        };
        println!("{farm}\t{code}\t{what}");
    }
}

async fn list(c: &Client, json: bool) -> Result<(), CtlError> {
    let paths: Vec<OwnedObjectPath> = c.property(ROOT, MANAGER, "Checkpoints").await?;
    let mut rows = Vec::new();
    for p in &paths {
        let farms: Vec<OwnedObjectPath> = c.property(p.as_str(), CHECKPOINT, "Farms").await?;
        let farms: Vec<String> = farms
            .iter()
            .filter_map(|f| f.as_str().rsplit('/').next())
            .filter_map(crate::model::bus_path_unescape)
            .collect();
        let created: u64 = c.property(p.as_str(), CHECKPOINT, "Created").await?;
        let timeout: u32 = c.property(p.as_str(), CHECKPOINT, "RollbackTimeout").await?;
        let deadline: u64 = c.property(p.as_str(), CHECKPOINT, "Deadline").await?;
        rows.push((id_of(p.as_str()).to_string(), farms, created, timeout, deadline));
    }
    if json {
        let list: Vec<serde_json::Value> = rows
            .iter()
            .map(|(id, farms, created, timeout, deadline)| {
                serde_json::json!({"id": id.parse::<u32>().unwrap_or(0), "farms": farms,
                    "created": created, "rollback-timeout": timeout, "deadline": deadline})
            })
            .collect();
        println!("{}", serde_json::Value::from(list));
        return Ok(());
    }
    println!("ID\tFARMS\tCREATED\tTIMEOUT\tDEADLINE");
    for (id, farms, created, timeout, deadline) in rows {
        let deadline = if deadline == 0 {
            "never".to_string()
        } else {
            deadline.to_string()
        };
        println!("{id}\t{}\t{created}\t{timeout}\t{deadline}", farms.join(","));
    }
    Ok(())
}

/// `apply FILE --confirm SECONDS`: merges FILE in under a checkpoint of every farm (farms it
/// creates are deleted by a rollback), then keeps it only if the operator answers `y` within
/// SECONDS, or another `nftlbctl checkpoint confirm` confirms it; otherwise rolls back.
pub async fn apply(c: &mut Client, text: String, seconds: u32, json: bool) -> Result<(), CtlError> {
    let none: Vec<OwnedObjectPath> = Vec::new();
    let path: OwnedObjectPath = c
        .change(
            ROOT,
            MANAGER,
            "CheckpointCreate",
            &(none, seconds, DELETE_NEW_FARMS),
        )
        .await?;
    if let Err(e) = c
        .change::<_, ()>(ROOT, MANAGER, "ImportConfig", &(text, "merge"))
        .await
    {
        // Nothing was imported: the checkpoint has nothing to keep.
        let _ = c
            .change::<_, ()>(ROOT, MANAGER, "CheckpointDestroy", &(path.clone(),))
            .await;
        return Err(e);
    }
    let id = id_of(path.as_str()).to_string();
    eprint!(
        "applied under checkpoint {id}; keep it? [y/N] (rolled back in {seconds} s, or confirm \
         with nftlbctl checkpoint confirm {id}) "
    );
    let (tx, rx) = mpsc::channel();
    // The read blocks until a line comes; the thread ends with the process if none does.
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
        let _ = tx.send(line);
    });
    let until = Instant::now() + Duration::from_secs(u64::from(seconds));
    loop {
        match rx.recv_timeout(Duration::from_millis(250)) {
            Ok(line) => {
                eprintln!();
                if matches!(line.trim(), "y" | "Y" | "yes") {
                    c.change::<_, ()>(ROOT, MANAGER, "CheckpointDestroy", &(path,))
                        .await?;
                    eprintln!("confirmed: the changes stay");
                    return Ok(());
                }
                return roll_back_now(c, path, json, "not confirmed").await;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return roll_back_now(c, path, json, "no terminal to confirm on").await;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        let left: Vec<OwnedObjectPath> = c.property(ROOT, MANAGER, "Checkpoints").await?;
        if !left.contains(&path) {
            eprintln!();
            if Instant::now() >= until {
                return Err(CtlError::Failed(format!(
                    "not confirmed within {seconds} s: checkpoint {id} rolled back"
                )));
            }
            eprintln!("checkpoint {id} was confirmed (or rolled back) elsewhere");
            return Ok(());
        }
        if Instant::now() >= until + Duration::from_secs(2) {
            // The daemon rolls back at the deadline; should it not have, this does.
            eprintln!();
            return roll_back_now(c, path, json, "not confirmed in time").await;
        }
    }
}

async fn roll_back_now(c: &mut Client, path: OwnedObjectPath, json: bool, why: &str) -> Result<(), CtlError> {
    let results = rollback(c, path).await?;
    print_results(&results, json);
    Err(CtlError::Failed(format!("{why}: rolled back")))
}
