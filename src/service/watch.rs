//! The writer's look at the kernel and the host between requests: changes others made to our
//! tables are repaired, layer-2 farms follow the host's links and neighbours.

use crate::netlink::Monitor;

use super::Writer;

impl Writer {
    /// Puts back what others changed in our tables; lets layer-2 farms follow the host.
    pub(super) fn watch(&mut self) {
        if self.tables_may_have_changed() {
            tracing::warn!("our tables may have been changed by another process; repairing");
            let (config, alloc) = (self.engine.config().clone(), self.engine.allocation().clone());
            if let Err(e) = self.engine.reconcile(config, alloc) {
                tracing::error!("repair failed: {e}; trying again");
                // The damage is still there: the next look repairs again.
                if let Some(m) = &self.monitor {
                    m.flag_missed();
                }
            }
        }
        let host_changed = match self.host.as_mut().map(|h| h.drain()) {
            Some(Ok(changed)) => changed,
            // Notifications were lost (or could not be read): look at the host again.
            Some(Err(e)) => {
                tracing::warn!("route socket: {e}");
                true
            }
            None => false,
        };
        if host_changed {
            match self.engine.refresh_l2() {
                Ok(o) if o.generation.is_some() => tracing::info!(
                    "the host's interfaces or neighbours changed; layer-2 farms follow ({} messages)",
                    o.messages
                ),
                Ok(_) => {}
                Err(e) => tracing::error!("layer-2 refresh failed: {e}"),
            }
        }
    }

    /// Whether someone else touched our tables since the last look, as far as the monitor can
    /// tell. Only what is queued now is read, without waiting: the kernel queues a
    /// transaction's events before its commit returns, and the job queue's wait paces the looks.
    ///
    /// An error of the feed (ENOBUFS: events were dropped because they came faster than they
    /// were read) means anything may have changed unheard, so it counts as a foreign change.
    /// The feed is emptied first, so that the repair's read of the kernel is newer than any
    /// event left behind, and opened again when it cannot be emptied.
    fn tables_may_have_changed(&mut self) -> bool {
        let (Some(m), Some(ours)) = (self.monitor.as_mut(), self.engine.portid()) else {
            return false;
        };
        match m.foreign_change(ours, crate::engine::layout::TABLE) {
            Ok(foreign) => foreign,
            Err(e) => {
                tracing::warn!("monitor: {e}; changes may have gone unheard");
                match m.discard_queued() {
                    Ok(dropped) => tracing::info!("monitor: {dropped} queued event(s) dropped"),
                    Err(e) => {
                        tracing::warn!("monitor: {e}; opening it again");
                        self.reopen_monitor();
                    }
                }
                true
            }
        }
    }

    /// Replaces a monitor whose socket keeps failing; the engine's large commits then leave the
    /// new one's group. On failure the old one is kept, and its next error brings us back here.
    fn reopen_monitor(&mut self) {
        match Monitor::new().and_then(|m| Ok((m.quiet()?, m))) {
            Ok((quiet, monitor)) => {
                self.engine.quiet(quiet);
                self.monitor = Some(monitor);
            }
            Err(e) => tracing::error!("cannot open the nf_tables monitor again: {e}"),
        }
    }
}
