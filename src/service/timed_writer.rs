//! The writer's side of timed changes (see [`super::timed`] for the rules): starting them with
//! their edit, restoring those due as one commit, and dropping those whose key someone changed.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::edit::Edited;
use super::index::ConfigIndex;
use super::timed::{Pending, Target, TimedEdit, micros};
use super::{Edit, Origin, ServiceError, Writer, diff};
use crate::model::Touched;

/// The reason restores give `Backend.StateChanged`.
pub const TIMED_REASON: &str = "timed";

fn now() -> u64 {
    micros(SystemTime::now())
}

impl Writer {
    /// How long the loop may wait for a job: until the next deadline, at most `cap`.
    pub(super) fn until_next_timer(&self, cap: Duration) -> Duration {
        match self.timers.next() {
            Some(d) => Duration::from_micros(d.saturating_sub(now())).min(cap),
            None => cap,
        }
    }

    /// Runs an edit that starts or ends timed changes. The pending list is saved before the
    /// commit (a crash between the two leaves a timer whose key does not have the value it set,
    /// which the start drops), and put back when the edit is refused.
    pub(super) fn change_with_timers(
        &mut self,
        edit: Edit,
        origin: Origin,
        mut t: TimedEdit,
    ) -> Result<u64, ServiceError> {
        let ix = self.published_index();
        // An explicit change of keys with nothing pending is a plain change (no file written);
        // so is a timed one to the value the key has, with nothing pending: nothing to put back.
        // A backend that is not there: the edit refuses the change and says so.
        t.disarm.retain(|target| self.timers.get(target).is_some());
        t.arm.retain(|a| {
            let pending = self.timers.get(&(a.farm.clone(), a.backend.clone(), a.key));
            ix.backend(&a.farm, &a.backend)
                .is_some_and(|(_, b)| pending.is_some() || a.key.value(b) != a.set)
        });
        if t.is_empty() {
            return self.change(edit, origin);
        }
        let before = self.timers.clone();
        let started = SystemTime::now();
        for target in &t.disarm {
            self.timers.remove(target);
        }
        for a in t.arm {
            let Some((_, b)) = ix.backend(&a.farm, &a.backend) else {
                continue;
            };
            let target = (a.farm.clone(), a.backend.clone(), a.key);
            // A timed change over a pending one restores what was there before the first.
            let restore = match self.timers.remove(&target) {
                Some(p) => p.restore,
                None => a.key.value(b),
            };
            self.timers.insert(Pending {
                farm: a.farm,
                backend: a.backend,
                key: a.key,
                restore,
                set: a.set,
                deadline: micros(started + a.duration),
            });
        }
        if let Err(e) = self.save_timers() {
            self.timers = before;
            self.publish_timers();
            return Err(ServiceError::State(e));
        }
        let done = self.change(edit, origin);
        if done.is_err() {
            self.timers = before;
            if let Err(e) = self.save_timers() {
                tracing::warn!("cannot save the timed changes: {e}");
            }
        }
        done
    }

    /// Restores every timed change whose time is up, in one commit.
    pub(super) fn fire_due_timers(&mut self) {
        match self.timers.next() {
            Some(d) if d <= now() => {}
            _ => return,
        }
        let due = self.timers.take_due(now());
        if let Err(e) = self.restore(&due) {
            // Not tried again: a restore the kernel or the files refuse would refuse again.
            tracing::error!("cannot restore {} timed change(s): {e}", due.len());
        }
    }

    /// Ends one pending timed change now, restoring its value.
    pub(super) fn cancel_timer(&mut self, target: &Target) -> Result<u64, ServiceError> {
        let p = self.timers.remove(target).ok_or_else(|| {
            ServiceError::NotFound(format!(
                "backend {:?} of farm {:?} has no timed change of {}",
                target.1,
                target.0,
                target.2.word()
            ))
        })?;
        let done = self.restore(std::slice::from_ref(&p));
        if done.is_err() {
            self.timers.insert(p);
            if let Err(e) = self.save_timers() {
                tracing::warn!("cannot save the timed changes: {e}");
            }
        }
        done
    }

    /// Puts back the values of `due` (taken out of the queue) in one commit, then saves the list.
    fn restore(&mut self, due: &[Pending]) -> Result<u64, ServiceError> {
        let ix = self.published_index();
        let mut new = (*ix.config).clone();
        let mut touched = Vec::new();
        for p in due {
            let Some((i, j)) = ix.names().backend_position(&p.farm, &p.backend) else {
                continue;
            };
            let Some(b) = new.farms.get_mut(i).and_then(|f| f.backends.get_mut(j)) else {
                continue;
            };
            if p.key.value(b) != p.set {
                continue;
            }
            if !p.key.set(b, &p.restore) {
                tracing::warn!(farm = %p.farm, backend = %p.backend, "cannot restore {} to {}", p.key.word(), p.restore);
                continue;
            }
            if !touched.contains(&(i, j)) {
                touched.push((i, j));
            }
        }
        // Saved by the commit before it is published (so a reader who sees the restore sees the
        // list without it), or below when nothing is committed.
        self.timers_unsaved = true;
        let done = if touched.is_empty() {
            Ok(self.shared.generation.load(std::sync::atomic::Ordering::SeqCst))
        } else {
            let edited = Edited {
                config: new,
                touched: Touched::backends(touched),
            };
            self.commit(
                edited,
                Origin {
                    reason: TIMED_REASON.into(),
                },
            )
        };
        if self.timers_unsaved
            && let Err(e) = self.save_timers()
        {
            tracing::warn!("cannot save the timed changes: {e}");
        }
        done
    }

    /// After a commit: drops the timed changes of the farms it touched whose backend is gone
    /// or whose key no longer has the value the timed change set (a later change wins).
    pub(super) fn follow_timers(&mut self, diff: &diff::Diff, ix: &ConfigIndex) {
        if self.timers_unsaved
            && let Err(e) = self.save_timers()
        {
            tracing::warn!("cannot save the timed changes: {e}");
        }
        if self.timers.is_empty() {
            return;
        }
        let mut stale = Vec::new();
        for f in &diff.farms {
            stale.extend(
                self.timers
                    .of_farm(&f.name)
                    .filter(|p| overtaken(p, ix))
                    .map(Pending::target),
            );
        }
        self.drop_timers(stale);
    }

    /// At start: drops every timed change overtaken while the daemon was stopped.
    pub(super) fn follow_timers_all(&mut self) {
        let ix = self.published_index();
        let stale = self
            .timers
            .list()
            .into_iter()
            .filter(|p| overtaken(p, &ix))
            .map(|p| p.target())
            .collect();
        self.drop_timers(stale);
        self.publish_timers();
    }

    fn drop_timers(&mut self, stale: Vec<Target>) {
        if stale.is_empty() {
            return;
        }
        for t in &stale {
            self.timers.remove(t);
            tracing::info!(farm = %t.0, backend = %t.1, key = t.2.word(), "timed change dropped: changed since, or gone");
        }
        if let Err(e) = self.save_timers() {
            tracing::warn!("cannot save the timed changes: {e}");
        }
    }

    fn save_timers(&mut self) -> Result<(), String> {
        self.timers_unsaved = false;
        let saved = self
            .timers
            .save(&self.options.state_dir)
            .map_err(|e| e.to_string());
        self.publish_timers();
        saved
    }

    fn publish_timers(&self) {
        let list = Arc::new(self.timers.list());
        match self.shared.timed.write() {
            Ok(mut t) => *t = list,
            Err(p) => *p.into_inner() = list,
        }
    }
}

/// Whether someone changed the key since (or removed the backend).
fn overtaken(p: &Pending, ix: &ConfigIndex) -> bool {
    match ix.backend(&p.farm, &p.backend) {
        Some((_, b)) => p.key.value(b) != p.set,
        None => true,
    }
}
