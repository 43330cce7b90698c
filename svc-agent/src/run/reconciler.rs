//! The agent's control loop body: keeps the maps equal to the newest
//! objects. Events (an update, the resync timer) only record what is
//! wanted; [`Reconciler::reconcile`] does the work once it is due, and its
//! error policy turns each failure into a metric label and a retry.
use std::{
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use tokio::time::Instant as TokioInstant;

use super::{AgentStatus, RunError, Settings, health_check::HealthCheckServers, sync::sync};
use crate::{
    dataplane::Tables,
    k8s::source::Update,
    metrics::AppliedSync,
    model::{Changed, Translator},
};

/// Longest wait between two attempts of a failing sync.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// When to try again: at once after a change, later and later while the
/// same update keeps failing.
#[derive(Debug)]
struct Retry {
    backoff: Duration,
    at: TokioInstant,
}

impl Retry {
    fn new() -> Self {
        Self {
            backoff: FIRST_BACKOFF,
            at: TokioInstant::now(),
        }
    }

    /// A failure: the next attempt waits the current backoff, which then
    /// doubles up to [`MAX_BACKOFF`]. Returns the wait.
    fn failed(&mut self) -> Duration {
        let wait = self.backoff;
        self.at = TokioInstant::now() + wait;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        wait
    }
}

pub(super) struct Reconciler {
    translator: Translator,
    /// The update to program next.
    pending: Option<Update>,
    /// The last update programmed, for the periodic resync.
    programmed: Option<Update>,
    /// Whether `pending` is a resync (a read-back and repair).
    resyncing: bool,
    /// Whether the last sync wrote every Service (if not, the next one
    /// applies everything again, not only the change).
    converged: bool,
    retry: Retry,
    started: Instant,
}

impl Reconciler {
    pub fn new(started: Instant) -> Self {
        Self {
            translator: Translator::default(),
            pending: None,
            programmed: None,
            resyncing: false,
            converged: true,
            retry: Retry::new(),
            started,
        }
    }

    /// The source has an update: it is programmed next, at once, with
    /// any not yet programmed before it.
    pub fn changed(&mut self, update: Update) {
        match &mut self.pending {
            Some(pending) => pending.merge(update),
            None => self.pending = Some(update),
        }
        self.resyncing = false;
        self.retry = Retry::new();
    }

    /// The resync timer: when nothing else waits, the last objects are
    /// programmed again against the maps read back from the kernel (not
    /// against what this agent remembers writing). Returns whether a
    /// resync was queued.
    pub fn resync(&mut self, tables: &mut Tables) -> bool {
        if self.pending.is_some() {
            return false;
        }
        let Some(last) = &self.programmed else {
            return false;
        };
        tables.forget_held();
        self.pending = Some(Update {
            changed: Changed::Everything,
            ..last.clone()
        });
        self.resyncing = true;
        true
    }

    /// When the pending update is due, if there is one.
    pub fn due_at(&self) -> Option<TokioInstant> {
        self.pending.as_ref().map(|_| self.retry.at)
    }

    /// Programs the pending update, if it is due.
    pub async fn reconcile(
        &mut self,
        tables: &mut Tables,
        settings: &Settings,
        status: &Arc<AgentStatus>,
        health_check_servers: &mut HealthCheckServers,
    ) {
        if self.due_at().is_none_or(|at| TokioInstant::now() < at) {
            return;
        }
        let Some(update) = self.pending.take() else {
            return;
        };
        let apply_started = Instant::now();
        let synced = match sync(
            tables,
            &mut self.translator,
            &update,
            !self.converged,
            settings,
            &status.metrics,
        ) {
            Ok(synced) => synced,
            Err(error) => return self.error_policy(error, update, status),
        };
        // A Service left out because it cannot be written keeps the maps
        // behind: the node is not healthy until it fits or goes. One left
        // out by rule (an address clash) is not.
        status.metrics.left_out(&synced.left_out);
        self.converged = synced.converged();
        if self.converged {
            status.converged();
        } else {
            status.behind();
        }
        let report = synced.report;
        if std::mem::take(&mut self.resyncing) {
            let repaired = report.frontends_written + report.frontends_removed;
            if repaired > 0 {
                tracing::warn!(
                    written = report.frontends_written,
                    removed = report.frontends_removed,
                    "resync: the maps differed from what this agent wrote; repaired"
                );
            }
            status.metrics.resynced(repaired);
            self.programmed = Some(update);
            return;
        }
        status.metrics.applied(&AppliedSync {
            took: apply_started.elapsed(),
            since_change: update.seen_at.elapsed(),
            changes: update.changes,
            frontends: synced.frontends,
            backends: synced.backends,
            no_local_endpoints: synced.no_local_endpoints,
        });
        tracing::info!(
            frontends = synced.frontends,
            written = report.frontends_written,
            removed = report.frontends_removed,
            left_out = synced.left_out.len(),
            took_us = apply_started.elapsed().as_micros() as u64,
            since_event_us = update.seen_at.elapsed().as_micros() as u64,
            "synced"
        );
        health_check_servers.set_addresses(synced.health_check_addresses);
        health_check_servers.update(synced.health_checks).await;
        self.programmed = Some(update);
        if !status.synced.swap(true, Ordering::AcqRel) {
            let took = self.started.elapsed();
            status.metrics.initial_sync(took);
            tracing::info!(
                took_ms = took.as_millis() as u64,
                "initial sync in the maps"
            );
        }
    }

    /// A failed sync: counted by kind, and the same update tried again
    /// after a backoff (unless a newer one comes first).
    fn error_policy(&mut self, error: RunError, update: Update, status: &AgentStatus) {
        status.metrics.error(error.kind());
        let wait = self.retry.failed();
        tracing::error!(%error, retry_in_ms = wait.as_millis() as u64, "sync failed; retrying");
        self.pending = Some(update);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_failing_sync_waits_twice_as_long_each_time_up_to_the_cap() {
        let mut retry = Retry::new();
        assert!(
            retry.at <= TokioInstant::now(),
            "a first attempt waits for nothing"
        );
        let waits: Vec<u64> = (0..8).map(|_| retry.failed().as_millis() as u64).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(retry.at, TokioInstant::now() + MAX_BACKOFF);
    }
}
