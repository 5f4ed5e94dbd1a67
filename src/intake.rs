//! The pipeline both endpoints share: verified events → dedupe → triggers → jobs.

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

use arc_swap::ArcSwap;
use serde::Serialize;

use crate::{
    dedupe::DedupeMemory,
    jobs::{Jobs, NewJob, StoreError},
    sources::{Event, Source},
    triggers::TriggerTable,
};

/// The answer to a sender: how many events came in, how many were re-deliveries, how many jobs started.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub received: usize,
    pub duplicates: usize,
    pub triggered: usize,
}

/// Running totals, for logs and `/healthz`.
#[derive(Debug, Default, Serialize)]
pub struct Counters {
    pub received: AtomicU64,
    pub duplicates: AtomicU64,
    pub ignored: AtomicU64,
    pub triggered: AtomicU64,
    pub rejected: AtomicU64,
}

pub struct Intake {
    pub dedupe: DedupeMemory,
    pub table: Arc<ArcSwap<TriggerTable>>,
    pub jobs: Jobs,
    pub counters: Counters,
}

impl Intake {
    /// Remembers each event, and enqueues a job for every trigger it matches. Jobs are handed over together;
    /// if the store refuses them, the events are forgotten again so that the sender's retry is not taken for
    /// a duplicate.
    pub async fn accept(&self, source: Source, events: Vec<Event>) -> Result<Summary, StoreError> {
        let table = self.table.load_full();
        let mut summary = Summary {
            received: events.len(),
            ..Summary::default()
        };
        let mut remembered = Vec::new();
        let mut jobs = Vec::new();
        for event in events {
            let key = event.dedupe_key();
            if !self.dedupe.first_sighting(&key) {
                summary.duplicates += 1;
                tracing::info!(source = %source, event_id = %event.id, event = %event.name, "duplicate: already received, ignored");
                continue;
            }
            remembered.push(key);
            let before = jobs.len();
            for trigger in table.matching(&event) {
                if !trigger.decides_in_job() {
                    let decided = table
                        .prepare(trigger, event.context.clone())
                        .and_then(|ctx| table.condition_holds(trigger, &ctx));
                    match decided {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::info!(source = %source, event_id = %event.id, trigger = %trigger.name, "condition not met: no job");
                            continue;
                        }
                        Err(e) => {
                            tracing::warn!(source = %source, event_id = %event.id, error = %e, "condition could not be evaluated: no job");
                            continue;
                        }
                    }
                }
                jobs.push(NewJob {
                    trigger: trigger.name.clone(),
                    action: trigger.action.kind().to_string(),
                    source,
                    event_id: event.id.clone(),
                    user_id: event.user_id.clone(),
                    context: event.context.clone(),
                });
            }
            if jobs.len() == before {
                self.counters.ignored.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(source = %source, event_id = %event.id, event = %event.name, "no trigger matches: acknowledged and ignored");
            } else {
                tracing::info!(source = %source, event_id = %event.id, event = %event.name, jobs = jobs.len() - before, "triggered");
            }
        }
        summary.triggered = jobs.len();
        if !jobs.is_empty() {
            if let Err(e) = self.jobs.submit(jobs).await {
                for key in &remembered {
                    self.dedupe.forget(key);
                }
                return Err(e);
            }
        }
        self.counters
            .received
            .fetch_add(summary.received as u64, Ordering::Relaxed);
        self.counters
            .duplicates
            .fetch_add(summary.duplicates as u64, Ordering::Relaxed);
        self.counters
            .triggered
            .fetch_add(summary.triggered as u64, Ordering::Relaxed);
        Ok(summary)
    }
}
