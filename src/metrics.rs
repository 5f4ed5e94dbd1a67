//! Prometheus metrics: every name lives here. One registry per app (no globals), served at `GET /metrics`.
//! Labels carry sources, reasons, triggers, actions, endpoints and status codes — never payloads or secrets.

use std::sync::atomic::AtomicU64;

use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabel {
    pub source: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UnusableLabel {
    pub source: String,
    /// `refused` (a bad element of a Segment batch) or `unprocessable` (a Customer.io body that is no event).
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabel {
    pub trigger: String,
    pub action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabel {
    pub endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointStatusLabel {
    pub endpoint: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HoldLabel {
    pub trigger: String,
    pub guard: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TableLabel {
    pub table: String,
}

fn latency_histogram() -> Histogram {
    // 5 ms … ~80 s: Mave answers take 30–90 s, attribute look-ups milliseconds.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.005, 2.0, 15,
    ))
}

/// Recent health of one upstream service, for `/readyz`: consecutive failures and the last success.
#[derive(Debug, Default)]
pub struct UpstreamHealth {
    pub consecutive_failures: std::sync::atomic::AtomicU32,
    pub last_success_ms: AtomicU64,
    /// When the current run of failures began (0: the last call succeeded), for the `upstream_down` alert.
    pub failing_since_ms: AtomicU64,
}

/// After this many failures in a row a service is reported as `open` (failing) in `/readyz`.
pub const FAILURES_TO_OPEN: u32 = 5;

impl UpstreamHealth {
    pub fn state(&self) -> &'static str {
        if self
            .consecutive_failures
            .load(std::sync::atomic::Ordering::Relaxed)
            >= FAILURES_TO_OPEN
        {
            "open"
        } else {
            "closed"
        }
    }
}

pub struct Metrics {
    registry: Registry,
    pub mavera_health: UpstreamHealth,
    pub customerio_health: UpstreamHealth,
    /// When Mavera last answered 402 (credits exhausted) with no success since; 0 otherwise.
    pub credits_exhausted_ms: AtomicU64,
    /// When a cost budget (a trigger's or `MAVERA_DAILY_BUDGET`) last held a job back; 0: never.
    pub budget_hold_ms: AtomicU64,
    pub webhooks_received: Family<SourceLabel, Counter>,
    pub webhooks_rejected: Family<RejectLabel, Counter>,
    pub webhooks_duplicates: Family<SourceLabel, Counter>,
    pub webhooks_ignored: Family<SourceLabel, Counter>,
    pub webhooks_unusable: Family<UnusableLabel, Counter>,
    pub webhooks_loop_guarded: Family<SourceLabel, Counter>,
    pub jobs_enqueued: Family<JobLabel, Counter>,
    pub jobs_succeeded: Family<JobLabel, Counter>,
    pub jobs_retried: Family<JobLabel, Counter>,
    pub jobs_dead: Family<JobLabel, Counter>,
    pub jobs_held: Family<HoldLabel, Counter>,
    pub queue_depth: Gauge,
    pub oldest_pending_age_seconds: Gauge,
    pub upstream_latency_seconds: Family<EndpointLabel, Histogram, fn() -> Histogram>,
    pub upstream_responses: Family<EndpointStatusLabel, Counter>,
    pub mavera_credits_used: Counter<f64, AtomicU64>,
    /// Attempts that began again because the last one never ended (the process was killed, or lost its
    /// lease): what a hard stop costs. A research job counted here asked Mave again.
    pub jobs_rerun_after_interruption: Family<JobLabel, Counter>,
    /// Jobs still running when `SHUTDOWN_GRACE` ran out, put back in the queue unfinished.
    pub jobs_released_at_shutdown: Counter,
    pub store_size_bytes: Gauge,
    /// The store's transactions on its write path (SQLite's writer thread; Postgres records none).
    pub store_commits: CommitMetrics,
    pub store_rows_pruned: Family<TableLabel, Counter>,
    /// Unix seconds of the oldest row kept, per table (`events`, `jobs`); 0 when the table is empty.
    pub store_oldest_row_timestamp_seconds: Family<TableLabel, Gauge>,
    pub auth_failures: Counter,
    pub auth_lockouts: Counter,
}

/// What a store's writer reports of each transaction: how long it took (fsync included) and how many events it
/// wrote. Cheap to clone (shared counters), so the writer thread holds its own copy.
#[derive(Clone, Debug)]
pub struct CommitMetrics {
    pub seconds: Histogram,
    pub rows: Counter,
}

impl Default for CommitMetrics {
    fn default() -> Self {
        Self {
            // 50 µs … ~200 ms.
            seconds: Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.00005, 2.0, 13,
            )),
            rows: Counter::default(),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("mavera_triggers");
        let m = Self {
            webhooks_received: Family::default(),
            webhooks_rejected: Family::default(),
            webhooks_duplicates: Family::default(),
            webhooks_ignored: Family::default(),
            webhooks_unusable: Family::default(),
            webhooks_loop_guarded: Family::default(),
            jobs_enqueued: Family::default(),
            jobs_succeeded: Family::default(),
            jobs_retried: Family::default(),
            jobs_dead: Family::default(),
            jobs_held: Family::default(),
            queue_depth: Gauge::default(),
            oldest_pending_age_seconds: Gauge::default(),
            upstream_latency_seconds: Family::new_with_constructor(latency_histogram),
            upstream_responses: Family::default(),
            mavera_credits_used: Counter::default(),
            jobs_rerun_after_interruption: Family::default(),
            jobs_released_at_shutdown: Counter::default(),
            store_size_bytes: Gauge::default(),
            store_commits: CommitMetrics::default(),
            store_rows_pruned: Family::default(),
            store_oldest_row_timestamp_seconds: Family::default(),
            auth_failures: Counter::default(),
            auth_lockouts: Counter::default(),
            registry: Registry::default(),
            mavera_health: UpstreamHealth::default(),
            customerio_health: UpstreamHealth::default(),
            credits_exhausted_ms: AtomicU64::new(0),
            budget_hold_ms: AtomicU64::new(0),
        };
        registry.register(
            "webhooks_received",
            "Events received in accepted webhooks, by source",
            m.webhooks_received.clone(),
        );
        registry.register(
            "webhooks_rejected",
            "Webhook requests refused, by source and reason",
            m.webhooks_rejected.clone(),
        );
        registry.register(
            "webhooks_duplicates",
            "Re-delivered events dropped, by source",
            m.webhooks_duplicates.clone(),
        );
        registry.register(
            "webhooks_ignored",
            "Events no trigger matched, by source",
            m.webhooks_ignored.clone(),
        );
        registry.register(
            "webhooks_unusable",
            "Parts of genuine webhooks that are not usable events, acknowledged and kept with their reason, by source and status (refused, unprocessable)",
            m.webhooks_unusable.clone(),
        );
        registry.register(
            "webhooks_loop_guarded",
            "Events this server wrote back to Segment and Segment sent here again: never triggered on",
            m.webhooks_loop_guarded.clone(),
        );
        registry.register(
            "jobs_enqueued",
            "Jobs recorded, by trigger and action",
            m.jobs_enqueued.clone(),
        );
        registry.register(
            "jobs_succeeded",
            "Jobs done, by trigger and action",
            m.jobs_succeeded.clone(),
        );
        registry.register(
            "jobs_retried",
            "Failed attempts scheduled for retry, by trigger and action",
            m.jobs_retried.clone(),
        );
        registry.register(
            "jobs_dead",
            "Jobs dead-lettered, by trigger and action",
            m.jobs_dead.clone(),
        );
        registry.register(
            "jobs_held",
            "Jobs held back by a cost guard, by trigger and guard",
            m.jobs_held.clone(),
        );
        registry.register("queue_depth", "Pending jobs", m.queue_depth.clone());
        registry.register(
            "oldest_pending_age_seconds",
            "Age of the oldest pending job",
            m.oldest_pending_age_seconds.clone(),
        );
        registry.register(
            "upstream_latency_seconds",
            "Latency of calls to Mavera and Customer.io, by endpoint",
            m.upstream_latency_seconds.clone(),
        );
        registry.register(
            "upstream_responses",
            "Answers from Mavera and Customer.io, by endpoint and status (or timeout/connect)",
            m.upstream_responses.clone(),
        );
        registry.register(
            "mavera_credits_used",
            "Mavera credits reported by answers (usage.credits_used, credits_charged)",
            m.mavera_credits_used.clone(),
        );
        registry.register(
            "jobs_rerun_after_interruption",
            "Attempts begun again because the previous one never ended (a hard kill or a lost lease), by trigger and action",
            m.jobs_rerun_after_interruption.clone(),
        );
        registry.register(
            "jobs_released_at_shutdown",
            "Jobs still running when SHUTDOWN_GRACE ran out, put back in the queue",
            m.jobs_released_at_shutdown.clone(),
        );
        registry.register(
            "store_size_bytes",
            "Bytes the store takes on disk (SQLite: file and write-ahead log; Postgres: the database)",
            m.store_size_bytes.clone(),
        );
        registry.register(
            "store_commit_seconds",
            "Transactions of the store's writer (SQLite): group commits of acknowledged events with the workers' bookkeeping and the event log, fsync included",
            m.store_commits.seconds.clone(),
        );
        registry.register(
            "store_commit_rows",
            "Events written by those transactions (acknowledged and logged); per commit: its rate over that of store_commit_seconds_count",
            m.store_commits.rows.clone(),
        );
        registry.register(
            "store_rows_pruned",
            "Rows deleted by retention (RETENTION_EVENTS, RETENTION_JOBS), by table",
            m.store_rows_pruned.clone(),
        );
        registry.register(
            "store_oldest_row_timestamp_seconds",
            "When the oldest row kept was written (Unix seconds; 0: none), by table",
            m.store_oldest_row_timestamp_seconds.clone(),
        );
        registry.register(
            "auth_failures",
            "Wrong admin tokens presented to the console or the admin API",
            m.auth_failures.clone(),
        );
        registry.register(
            "auth_lockouts",
            "Clients locked out after too many wrong admin tokens",
            m.auth_lockouts.clone(),
        );
        Self { registry, ..m }
    }
}

impl Metrics {
    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }

    pub fn job(&self, trigger: &str, action: &str) -> JobLabel {
        JobLabel {
            trigger: trigger.to_string(),
            action: action.to_string(),
        }
    }

    pub fn table(table: &str) -> TableLabel {
        TableLabel {
            table: table.to_string(),
        }
    }

    pub fn source(source: impl ToString) -> SourceLabel {
        SourceLabel {
            source: source.to_string(),
        }
    }

    /// Records one upstream call: latency, answer, and the service's recent health.
    pub fn upstream(&self, endpoint: &str, status: &str, seconds: f64) {
        use std::sync::atomic::Ordering;
        let mavera = endpoint.starts_with("mavera");
        let health = if mavera {
            &self.mavera_health
        } else {
            &self.customerio_health
        };
        let code = status.parse::<u16>().ok();
        let failed = code.is_none_or(|code| code == 429 || code == 408 || code >= 500);
        let now = crate::clock::now_ms();
        if failed {
            if health.consecutive_failures.fetch_add(1, Ordering::Relaxed) == 0 {
                health.failing_since_ms.store(now, Ordering::Relaxed);
            }
        } else {
            health.consecutive_failures.store(0, Ordering::Relaxed);
            health.failing_since_ms.store(0, Ordering::Relaxed);
            health.last_success_ms.store(now, Ordering::Relaxed);
        }
        if mavera {
            match code {
                Some(402) => self.credits_exhausted_ms.store(now, Ordering::Relaxed),
                Some(200..=299) => self.credits_exhausted_ms.store(0, Ordering::Relaxed),
                _ => {}
            }
        }
        self.upstream_latency_seconds
            .get_or_create(&EndpointLabel {
                endpoint: endpoint.to_string(),
            })
            .observe(seconds);
        self.upstream_responses
            .get_or_create(&EndpointStatusLabel {
                endpoint: endpoint.to_string(),
                status: status.to_string(),
            })
            .inc();
    }
}
