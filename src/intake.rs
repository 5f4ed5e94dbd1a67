//! The pipeline both endpoints share: verified events → dedupe → triggers → jobs.

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

use arc_swap::ArcSwap;
use serde::Serialize;

use crate::{
    dedupe::{DedupeMemory, Sighting},
    jobs::{events::RequestMeta, Delivery, JobKind, Jobs, NewJob, StoreError},
    metrics::{Metrics, UnusableLabel},
    sources::{Event, Refusal, Source, Unusable},
    triggers::{ActionKind, Decision, Stage, TriggerTable},
};

/// The answer to a sender: how many events came in, how many were re-deliveries, how many jobs started, and
/// how many were not usable events (kept with their reason on the console's events page, never run).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub received: usize,
    pub duplicates: usize,
    pub triggered: usize,
    pub refused: usize,
}

/// Running totals, for logs and `/healthz`.
#[derive(Debug, Default, Serialize)]
pub struct Counters {
    pub received: AtomicU64,
    pub duplicates: AtomicU64,
    pub ignored: AtomicU64,
    pub triggered: AtomicU64,
    pub rejected: AtomicU64,
    /// Parts of genuine requests that were not usable events (refused batch elements, unprocessable bodies).
    pub refused: AtomicU64,
}

pub struct Intake {
    pub dedupe: DedupeMemory,
    pub table: Arc<ArcSwap<TriggerTable>>,
    pub jobs: Jobs,
    pub counters: Counters,
    /// Pending jobs, as last counted by the backlog monitor.
    pub backlog: AtomicU64,
    pub max_backlog: u64,
    pub metrics: Arc<Metrics>,
    /// Events that match no trigger are listed in the console too (`EVENT_LOG=all`).
    pub log_ignored: bool,
}

/// A recorded delivery, as its log line and metrics read it.
struct Recorded {
    event_id: String,
    name: String,
    jobs: Vec<(String, JobKind)>,
}

/// Why the intake could not take a request.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("backlog of {pending} pending jobs is over the bound of {bound}")]
    Backlog { pending: u64, bound: u64 },
}

impl Intake {
    /// Remembers each event, and records a job for every trigger it matches. Events and jobs are written
    /// durably (one transaction) before this returns; if the store refuses them, the events are forgotten
    /// again so that the sender's retry is not taken for a duplicate. The `unusable` parts of the request
    /// are recorded in the same transaction, with their reason, and never run.
    pub async fn accept(
        &self,
        source: Source,
        events: Vec<Event>,
        unusable: Vec<Unusable>,
        meta: &(dyn Fn() -> RequestMeta + Sync),
    ) -> Result<Summary, IntakeError> {
        // Headers are masked and copied only for an event that is recorded or logged.
        let mut built: Option<RequestMeta> = None;
        let mut meta = || built.get_or_insert_with(meta).clone();
        let pending = self.backlog.load(Ordering::Relaxed);
        if pending > self.max_backlog {
            return Err(IntakeError::Backlog {
                pending,
                bound: self.max_backlog,
            });
        }
        let table = self.table.load_full();
        let mut summary = Summary {
            received: events.len() + unusable.len(),
            refused: unusable.len(),
            ..Summary::default()
        };
        let mut remembered = Vec::new();
        let mut deliveries = Vec::new();
        // Whom each delivery is about, for its log line.
        let mut whos = Vec::new();
        let mut ignored = Vec::new();
        for event in events {
            let key = event.dedupe_key();
            match self.dedupe.sight(&key) {
                Sighting::Seen => {
                    summary.duplicates += 1;
                    // Routine (senders retry): the request's `webhook accepted` line counts it.
                    tracing::debug!(source = %source, event_id = %event.id, event = %event.name, who = %event.who, "duplicate: already received, ignored");
                    continue;
                }
                // Its owner has not committed yet: the store's unique key decides, after our own commit.
                Sighting::InFlight => {}
                Sighting::New => remembered.push(key.clone()),
            }
            let mut jobs = Vec::new();
            let own = table.matching(&event).next().is_some() && event.is_own_write_back();
            if own {
                self.metrics
                    .webhooks_loop_guarded
                    .get_or_create(&Metrics::source(source))
                    .inc();
                tracing::info!(source = %source, event_id = %event.id, event = %event.name, "our own write-back, forwarded back by Segment: acknowledged, never triggered (loop guard)");
            }
            for trigger in table.matching(&event).filter(|_| !own) {
                // A trigger with no `vars` and no `when` acts on every event it matches: nothing to decide,
                // and no copy of the event's context to make for it.
                let decision = if trigger.is_unconditional() {
                    Ok(Decision::Run(Default::default()))
                } else {
                    table.decide(trigger, event.context().clone(), Stage::Intake)
                };
                match decision {
                    Ok(Decision::Run(_) | Decision::Deferred) => {}
                    Ok(Decision::Skip(_)) => {
                        tracing::info!(source = %source, event_id = %event.id, who = %event.who, trigger = %trigger.name, "condition not met: no job");
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(source = %source, event_id = %event.id, who = %event.who, error = %e, "condition could not be evaluated: no job");
                        continue;
                    }
                }
                jobs.push(NewJob {
                    trigger: trigger.name.clone(),
                    action: JobKind::Action(ActionKind::from(&trigger.action)),
                    source,
                    event_id: event.id.clone(),
                    user_id: event.user_id.clone(),
                    // The event's: the store rebuilds it from the event's raw JSON when the job is read.
                    context: Default::default(),
                });
            }
            let matched = !jobs.is_empty();
            if !matched {
                self.counters.ignored.fetch_add(1, Ordering::Relaxed);
                self.metrics
                    .webhooks_ignored
                    .get_or_create(&Metrics::source(source))
                    .inc();
                tracing::info!(source = %source, event_id = %event.id, event = %event.name, who = %event.who, "no trigger matches: acknowledged and ignored");
                if !(self.log_ignored && self.jobs.log_has_room()) {
                    continue;
                }
            }
            let delivery = Delivery {
                source,
                event_id: event.id,
                name: event.name,
                user_id: event.user_id,
                raw: event.raw,
                meta: meta(),
                jobs,
                refusal: None,
            };
            if matched {
                whos.push(event.who);
                deliveries.push(delivery);
            } else {
                ignored.push(delivery);
            }
        }
        for part in unusable {
            self.metrics
                .webhooks_unusable
                .get_or_create(&UnusableLabel {
                    source: source.to_string(),
                    status: match part.refusal {
                        Refusal::Refused(_) => "refused",
                        Refusal::Unprocessable(_) => "unprocessable",
                    }
                    .into(),
                })
                .inc();
            tracing::warn!(source = %source, event_id = %part.id, who = %part.who, reason = %part.refusal.reason(), "not a usable event: acknowledged and kept on the console's events page");
            deliveries.push(Delivery {
                source,
                event_id: part.id,
                name: part.name,
                user_id: part.user_id,
                raw: part.raw,
                meta: meta(),
                jobs: Vec::new(),
                refusal: Some(part.refusal),
            });
        }
        // The store is the truth: an event the memory forgot (a restart, the size cap) is still a duplicate there.
        // What the answer's log lines need, kept before the deliveries go to the store (a copy of the
        // whole deliveries, contexts and raw events, used to be made for it on every request).
        let recorded: Vec<Recorded> = deliveries
            .iter()
            .take(whos.len())
            .map(|d| Recorded {
                event_id: d.event_id.clone(),
                name: d.name.clone(),
                jobs: d
                    .jobs
                    .iter()
                    .map(|j| (j.trigger.clone(), j.action))
                    .collect(),
            })
            .collect();
        let fresh = match self.jobs.submit(deliveries).await {
            Ok(fresh) => fresh,
            Err(e) => {
                for key in &remembered {
                    self.dedupe.forget(key);
                }
                return Err(e.into());
            }
        };
        // Only now, with everything on disk, may a re-delivery be answered from memory.
        for key in &remembered {
            self.dedupe.commit(key);
        }
        self.jobs.log(ignored);
        // The unusable parts come last, and their answer is already counted.
        for ((delivery, new), who) in recorded.iter().zip(fresh).zip(whos) {
            if new {
                summary.triggered += delivery.jobs.len();
                for (trigger, action) in &delivery.jobs {
                    self.metrics
                        .jobs_enqueued
                        .get_or_create(&self.metrics.job(trigger, action.as_str()))
                        .inc();
                }
                tracing::info!(source = %source, event_id = %delivery.event_id, event = %delivery.name, who = %who, jobs = delivery.jobs.len(), "triggered: jobs recorded");
            } else {
                summary.duplicates += 1;
                tracing::debug!(source = %source, event_id = %delivery.event_id, event = %delivery.name, who = %who, "duplicate: already recorded, ignored");
            }
        }
        let label = Metrics::source(source);
        self.metrics
            .webhooks_received
            .get_or_create(&label)
            .inc_by(summary.received as u64);
        self.metrics
            .webhooks_duplicates
            .get_or_create(&label)
            .inc_by(summary.duplicates as u64);
        let c = &self.counters;
        for (counter, n) in [
            (&c.received, summary.received),
            (&c.duplicates, summary.duplicates),
            (&c.triggered, summary.triggered),
            (&c.refused, summary.refused),
        ] {
            counter.fetch_add(n as u64, Ordering::Relaxed);
        }
        Ok(summary)
    }
}
