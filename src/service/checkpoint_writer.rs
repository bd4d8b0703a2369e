//! Checkpoints in the writer's turn: created from the committed configuration, saved before the
//! reply, and rolled back as one commit (one kernel transaction, one journal record), on demand
//! or when the deadline passes (checked after every job and at least every 100 ms when idle).

use std::sync::Arc;

use tokio::sync::oneshot;

use super::checkpoint::{self, Checkpoint, DESTROY_ALL, Info};
use super::{Job, Origin, Service, ServiceError, Writer, edit};

/// What a client asks of the checkpoints.
#[derive(Debug)]
pub enum Request {
    Create {
        farms: Vec<String>,
        rollback_timeout: u32,
        flags: u32,
    },
    Rollback(u32),
    Destroy(u32),
    Adjust {
        id: u32,
        add_timeout: u32,
    },
}

#[derive(Debug)]
pub enum Answer {
    Created(u32),
    /// (farm, result code) for every farm the rollback touched.
    RolledBack(Vec<(String, u32)>),
    Done,
}

/// The reason backends' state transitions of a rollback carry.
pub const ROLLBACK_REASON: &str = "checkpoint-rollback";

impl Service {
    /// Runs a checkpoint request in the writer's turn.
    pub async fn checkpoint(&self, request: Request) -> Result<Answer, ServiceError> {
        let (reply, rx) = oneshot::channel();
        self.jobs
            .send(Job::Checkpoint(request, reply))
            .map_err(|_| ServiceError::Stopped)?;
        rx.await.map_err(|_| ServiceError::Stopped)?
    }

    /// The checkpoints now.
    pub fn checkpoints(&self) -> Arc<Vec<Info>> {
        self.shared.checkpoints.borrow().clone()
    }

    /// Wakes whenever the checkpoints change (created, adjusted, destroyed, rolled back).
    pub fn watch_checkpoints(&self) -> tokio::sync::watch::Receiver<Arc<Vec<Info>>> {
        self.shared.checkpoints.subscribe()
    }
}

fn no_checkpoint(id: u32) -> ServiceError {
    ServiceError::NotFound(format!("no checkpoint {id}"))
}

impl Writer {
    pub(super) fn checkpoint(&mut self, request: Request) -> Result<Answer, ServiceError> {
        let before = self.checkpoints.clone();
        let now = checkpoint::now_ms();
        let answer = match request {
            Request::Create {
                farms,
                rollback_timeout,
                flags,
            } => {
                let id = self.checkpoints.next_id.max(1);
                let new = checkpoint::create(&self.published(), id, &farms, rollback_timeout, flags, now)?;
                if flags & DESTROY_ALL != 0 {
                    self.checkpoints.checkpoints.clear();
                } else if new.flags & checkpoint::ALLOW_OVERLAPPING == 0
                    && let Some(e) = checkpoint::overlap_refusal(&new, &self.checkpoints.checkpoints)
                {
                    return Err(e);
                }
                self.checkpoints.next_id = id + 1;
                self.checkpoints.checkpoints.push(new);
                Answer::Created(id)
            }
            Request::Destroy(id) => {
                let i = self.position(id)?;
                self.checkpoints.checkpoints.remove(i);
                Answer::Done
            }
            Request::Adjust { id, add_timeout } => {
                let i = self.position(id)?;
                self.checkpoints.checkpoints[i].arm(add_timeout, now);
                Answer::Done
            }
            Request::Rollback(id) => {
                let i = self.position(id)?;
                return Ok(Answer::RolledBack(self.roll_back(i)));
            }
        };
        self.save_checkpoints(before)?;
        Ok(answer)
    }

    fn position(&self, id: u32) -> Result<usize, ServiceError> {
        self.checkpoints
            .checkpoints
            .iter()
            .position(|c| c.id == id)
            .ok_or_else(|| no_checkpoint(id))
    }

    /// Saves the checkpoints and publishes them; when they cannot be saved, they are put back
    /// as `before`, so memory and disk agree.
    fn save_checkpoints(&mut self, before: checkpoint::Saved) -> Result<(), ServiceError> {
        if let Err(e) = checkpoint::save(&self.options.state_dir, &self.checkpoints) {
            self.checkpoints = before;
            return Err(ServiceError::State(e.to_string()));
        }
        self.publish_checkpoints();
        Ok(())
    }

    fn publish_checkpoints(&self) {
        let infos: Vec<Info> = self
            .checkpoints
            .checkpoints
            .iter()
            .map(Checkpoint::info)
            .collect();
        self.shared.checkpoints.send_replace(Arc::new(infos));
    }

    /// Rolls checkpoint `i` back in one commit. Done, the checkpoint is gone. Refused, it stays,
    /// disarmed (a refusal at the deadline would otherwise be retried every turn), for the
    /// operator to fix the cause and roll back again, or destroy it.
    fn roll_back(&mut self, i: usize) -> Vec<(String, u32)> {
        let c = self.checkpoints.checkpoints[i].clone();
        let (config, farms) = c.restore(&self.published());
        let origin = Origin {
            reason: ROLLBACK_REASON.into(),
        };
        // The checkpoint leaves its file before the rollback is committed: saved after, a failed
        // save would leave it armed on disk, and a restart would restore the same farms again over
        // every change made since. A save that fails refuses the rollback, changing nothing.
        let before = self.checkpoints.clone();
        self.checkpoints.checkpoints.remove(i);
        let committed = self
            .save_checkpoints(before.clone())
            .and_then(|()| crate::model::validate(&config).map_err(ServiceError::from))
            .and_then(|()| self.commit(edit::Edited::from(config), origin));
        let code = match committed {
            Ok(generation) => {
                tracing::info!(checkpoint = c.id, generation, "checkpoint rolled back");
                checkpoint::RESTORED
            }
            Err(e) => {
                tracing::error!(checkpoint = c.id, "checkpoint rollback refused: {e}");
                self.checkpoints = before;
                self.checkpoints.checkpoints[i].arm(0, 0);
                if let Err(e) = checkpoint::save(&self.options.state_dir, &self.checkpoints) {
                    // Armed on disk still: a restart tries this rollback once more.
                    tracing::error!(checkpoint = c.id, "cannot save the checkpoints: {e}");
                }
                self.publish_checkpoints();
                checkpoint::refusal_code(&e)
            }
        };
        farms.into_iter().map(|f| (f, code)).collect()
    }

    /// Rolls back every checkpoint whose deadline has passed.
    pub(super) fn expire_checkpoints(&mut self) {
        let now = checkpoint::now_ms();
        while let Some(i) = self.checkpoints.checkpoints.iter().position(|c| c.expired(now)) {
            let id = self.checkpoints.checkpoints[i].id;
            tracing::warn!(checkpoint = id, "checkpoint not confirmed in time: rolling back");
            self.roll_back(i);
        }
    }
}
