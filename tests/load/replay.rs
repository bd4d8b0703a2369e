//! The acknowledged edits applied again, one after the other, to a fresh service on the
//! in-memory engine (the daemon's own operations, without kernel or bus): what the daemon's
//! configuration must equal.

use std::sync::Arc;

use nftlbd::engine::MemoryEngine;
use nftlbd::model::parse_farm_value;
use nftlbd::polkit::{Answer, Details};
use nftlbd::service::authority::Rule;
use nftlbd::service::{BackendUpdate, Caller, Operation, Options, Output, Patch, Service};
use serde_json::{Map, Value};

use super::plan::Edit;

fn operation(edit: &Edit) -> Operation {
    match edit.clone() {
        Edit::CreateFarm(f) => Operation::CreateFarm {
            farm: Box::new(parse_farm_value(&f, "farm").expect("a farm the daemon took")),
        },
        Edit::DeleteFarm(farm) => Operation::DeleteFarm { farm },
        Edit::AddBackend { farm, backend } => Operation::AddBackend {
            farm,
            backend: match backend {
                Value::Object(o) => o,
                other => panic!("a backend is an object: {other}"),
            },
        },
        Edit::RemoveBackend { farm, backend } => Operation::RemoveBackend { farm, backend },
        Edit::SetState { farm, backend, state } => Operation::SetBackendState {
            farm,
            backend,
            state,
            for_secs: None,
        },
        Edit::SetWeight {
            farm,
            backend,
            weight,
        } => {
            let mut set = Map::new();
            set.insert("weight".into(), weight.into());
            Operation::UpdateBackend {
                farm,
                backend,
                patch: Patch {
                    set,
                    removed: Vec::new(),
                },
                for_secs: None,
            }
        }
        Edit::SetBackends(changes) => Operation::SetBackends {
            changes: changes
                .into_iter()
                .map(|(farm, backend, state)| BackendUpdate {
                    farm,
                    backend,
                    state: Some(state),
                    weight: None,
                    priority: None,
                })
                .collect(),
        },
    }
}

/// Each client's edits in its own order, the clients one after the other: their objects are
/// disjoint, so only the order of farms in the list depends on how the clients interleaved.
pub fn replay(clients: &[&[Edit]]) -> Value {
    let dir = std::env::temp_dir().join(format!("nftlbd-load-replay-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a directory for the replay's state");
    let options = Options {
        state_dir: dir.clone(),
        watch: false,
        farms_dir: None,
    };
    let service = Service::start_with(Box::new(MemoryEngine::new()), options)
        .expect("the replay's service starts")
        .with_authority(Arc::new(Rule(|_: &Caller, _: &str, _: &Details| Answer::Yes)));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let config = rt.block_on(async {
        let caller = Caller::nobody();
        for (n, edits) in clients.iter().enumerate() {
            for edit in edits.iter() {
                let out = service.execute(&caller, operation(edit)).await;
                assert!(
                    matches!(out, Ok(Output::Done { .. })),
                    "replay of client {n}'s {edit:?}: {out:?}"
                );
            }
        }
        match service.execute(&caller, Operation::GetConfig).await {
            Ok(Output::Config { config, .. }) => {
                serde_json::to_value(&*config).expect("the configuration as JSON")
            }
            other => panic!("the replay's GetConfig: {other:?}"),
        }
    });
    let _ = std::fs::remove_dir_all(&dir);
    config
}
