//! Running an operation: authorize it from the operation table, then run it in the writer's
//! turn (changes) or read what it asks for. The front ends call [`Service::execute`] and nothing
//! else that changes anything.

use super::authority::{Caller, refusal};
use super::checkpoint_writer::{Answer, Request};
use super::operation::{Operation, Output};
use super::{Origin, Service, ServiceError, ops, timed};
use crate::polkit::{self, Details};

impl Service {
    /// Authorizes `op` for `caller`, then runs it.
    pub async fn execute(&self, caller: &Caller, op: Operation) -> Result<Output, ServiceError> {
        self.authorize(caller, &op).await?;
        if let Operation::GetPermissions = op {
            return self.permissions(caller).await;
        }
        self.run(op).await
    }

    /// Refuses unless the authority says yes to the operation's action and details.
    pub async fn authorize(&self, caller: &Caller, op: &Operation) -> Result<(), ServiceError> {
        for (action, details) in op.authorizations() {
            let answer = self
                .authority
                .check(caller, action, &details)
                .await
                .map_err(ServiceError::NotAuthorized)?;
            if let Some(message) = refusal(caller, action, answer) {
                return Err(ServiceError::NotAuthorized(message));
            }
        }
        Ok(())
    }

    /// The answer for each action, without details (the general answer) and without asking.
    async fn permissions(&self, caller: &Caller) -> Result<Output, ServiceError> {
        let quiet = Caller {
            interactive: false,
            ..caller.clone()
        };
        let mut out = Vec::new();
        for action in polkit::ALL {
            let answer = self
                .authority
                .check(&quiet, action, &Details::default())
                .await
                .map_err(ServiceError::NotAuthorized)?;
            out.push((*action, answer));
        }
        Ok(Output::Permissions(out))
    }

    /// Runs an operation that was authorized.
    async fn run(&self, op: Operation) -> Result<Output, ServiceError> {
        let o = Origin::api;
        let generation = match op {
            Operation::GetConfig => {
                return Ok(Output::Config {
                    config: self.config(),
                    generation: self.generation(),
                });
            }
            Operation::ListFarms => {
                let names = self.config().farms.iter().map(|f| f.name.clone()).collect();
                return Ok(Output::Names(names));
            }
            Operation::GetFarm { farm } => {
                let index = self.index();
                let f = index.farm(&farm).ok_or_else(|| no_farm(&farm))?;
                return Ok(Output::Farm(Box::new(f.clone())));
            }
            Operation::GetPolicy { policy } => {
                let config = self.config();
                let p = config
                    .policies
                    .iter()
                    .find(|p| p.name == policy)
                    .ok_or_else(|| no_policy(&policy))?;
                return Ok(Output::Policy(Box::new(p.clone())));
            }
            Operation::GetTraffic { farm, backend } => {
                let t = self.query(move |e| e.traffic(&farm, backend.as_deref())).await?;
                return Ok(Output::Traffic(t));
            }
            Operation::GetFarmCounters { farm } => {
                let (farm, backends) = self.query(move |e| e.farm_traffic(&farm)).await?;
                return Ok(Output::FarmCounters { farm, backends });
            }
            Operation::GetFarmConnections { farm } => {
                let config = self.config();
                let f = config.farm(&farm).ok_or_else(|| no_farm(&farm))?;
                let mut counts = super::conntrack::established(self, &farm).await;
                let backends = f
                    .backends
                    .iter()
                    .map(|b| (b.name.clone(), counts.remove(&b.name).unwrap_or(0)))
                    .collect();
                return Ok(Output::Connections(backends));
            }
            Operation::ListSessions { farm } => {
                return Ok(Output::Sessions(self.query(move |e| e.sessions(&farm)).await?));
            }
            Operation::GetPolicyCounters { policy } => {
                let c = self.query(move |e| e.policy_counters(&policy)).await?;
                return Ok(Output::PolicyCounters(c));
            }
            // Answered with the caller, in `execute`.
            Operation::GetPermissions => return Ok(Output::Permissions(Vec::new())),
            Operation::CreateFarm { farm } => self.change(o(), ops::create_farm(*farm)).await?,
            Operation::UpdateFarm { farm, patch } => {
                self.change_indexed(o(), ops::update_farm(farm, patch)).await?
            }
            Operation::RenameFarm { farm, new_name } => {
                super::files::refuse_rename(&self.origins(), &farm)?;
                self.change_indexed(o(), ops::rename_farm(farm, new_name)).await?
            }
            Operation::DeleteFarm { farm } => self.change(o(), ops::delete_farm(farm)).await?,
            Operation::AddBackend { farm, backend } => {
                self.change_indexed(o(), ops::add_backend(farm, backend)).await?
            }
            Operation::UpdateBackend {
                farm,
                backend,
                patch,
                for_secs,
            } => {
                super::ops_health::refuse_health_keys(&farm, &backend, &patch)?;
                let t = timed::update_edit(&farm, &backend, &patch, for_secs)?;
                self.change_timed(o(), t, ops::update_backend(farm, backend, patch))
                    .await?
            }
            Operation::SetBackendState {
                farm,
                backend,
                state,
                for_secs,
            } => {
                let t = timed::state_edit(&farm, &backend, &state, for_secs)?;
                self.change_timed(o(), t, ops::set_backend_state(farm, backend, state))
                    .await?
            }
            Operation::ListTimedChanges => return Ok(Output::TimedChanges(self.timed_changes())),
            Operation::CancelTimedChange { farm, backend, key } => {
                self.cancel_timed(timed::target(farm, backend, &key)?).await?
            }
            Operation::SetBackendHealth {
                farm,
                backend,
                health,
                reason,
            } => {
                let change = super::ops_health::set_backend_health(farm, backend, health, reason);
                self.change_indexed(o(), change).await?
            }
            Operation::RemoveBackend { farm, backend } => {
                self.change_indexed(o(), ops::remove_backend(farm, backend))
                    .await?
            }
            Operation::SetBackends { changes } => {
                let t = timed::batch_edit(&changes);
                self.change_timed(o(), t, ops::set_backends(changes)).await?
            }
            Operation::AddSession {
                farm,
                client,
                backend,
            } => self.change(o(), ops::add_session(farm, client, backend)).await?,
            Operation::DeleteSession { farm, client } => {
                self.operate(o(), move |e| e.delete_session(&farm, &client).map(|_| ()))
                    .await?
            }
            Operation::FlushSessions { farm } => {
                self.operate(o(), move |e| e.flush_sessions(&farm).map(|_| ()))
                    .await?
            }
            Operation::CreatePolicy { policy } => self.change(o(), ops::create_policy(*policy)).await?,
            Operation::DeletePolicy { policy } => self.change(o(), ops::delete_policy(policy)).await?,
            Operation::EditPolicyElements { policy, edit } => {
                self.change(o(), ops::edit_policy_elements(policy, edit)).await?
            }
            Operation::ImportConfig { config, mode } => self.change(o(), ops::import(*config, mode)).await?,
            Operation::RuntimeToPersistent { farm } => self.persist(farm).await?,
            Operation::Reload => {
                let r = self.reload_report().await?;
                return Ok(Output::Reloaded {
                    generation: r.generation,
                    refused: r.refused,
                });
            }
            Operation::CheckpointCreate {
                farms,
                rollback_timeout,
                flags,
            } => {
                let request = Request::Create {
                    farms,
                    rollback_timeout,
                    flags,
                };
                return match self.checkpoint(request).await? {
                    Answer::Created(id) => Ok(Output::Checkpoint(id)),
                    other => Err(unexpected(other)),
                };
            }
            Operation::CheckpointRollback { checkpoint } => {
                return match self.checkpoint(Request::Rollback(checkpoint)).await? {
                    Answer::RolledBack(results) => Ok(Output::RolledBack(results)),
                    other => Err(unexpected(other)),
                };
            }
            Operation::CheckpointDestroy { checkpoint } => {
                self.checkpoint(Request::Destroy(checkpoint)).await?;
                self.generation()
            }
            Operation::CheckpointAdjustRollbackTimeout {
                checkpoint,
                add_timeout,
            } => {
                let request = Request::Adjust {
                    id: checkpoint,
                    add_timeout,
                };
                self.checkpoint(request).await?;
                self.generation()
            }
            Operation::ListCheckpoints => return Ok(Output::Checkpoints(self.checkpoints())),
        };
        Ok(Output::Done { generation })
    }
}

/// An answer of another shape than the request promises: a defect, said as such.
fn unexpected(answer: Answer) -> ServiceError {
    ServiceError::Kernel(format!("internal error: unexpected answer {answer:?}"))
}

fn no_farm(name: &str) -> ServiceError {
    ServiceError::NotFound(format!("no farm is named {name:?}"))
}

fn no_policy(name: &str) -> ServiceError {
    ServiceError::NotFound(format!("no policy is named {name:?}"))
}
