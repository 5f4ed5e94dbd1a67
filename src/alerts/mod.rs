//! Alerts: telling someone when work stops. Each condition is checked on a timer; it is sent once when it
//! starts (`firing`), again at most once per `repeat` while it lasts, and once when it clears (`recovered`).
//!
//! Deliveries go straight to the `[alerts]` sinks, not through the job store: the store may be the thing
//! that is failing.

use std::{
    collections::HashMap,
    sync::{atomic::Ordering, Arc},
    time::{Duration, UNIX_EPOCH},
};

use arc_swap::ArcSwap;
use serde::Serialize;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::{
    jobs::{now_ms, JobStore},
    metrics::{Metrics, UpstreamHealth},
    triggers::{AlertSettings, TriggerTable},
};

mod deliver;
#[cfg(test)]
mod tests;

pub use deliver::deliver;

/// How often the conditions are checked.
pub const CHECK_EVERY: Duration = Duration::from_secs(15);

/// A budget hold this recent keeps `budget_spent` firing.
const BUDGET_HOLD_RECENT: Duration = Duration::from_secs(15 * 60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// Mavera answered 402: the account's credits are spent; nothing more is researched until topped up.
    CreditsExhausted,
    /// A trigger's budget or `MAVERA_DAILY_BUDGET` holds jobs back.
    BudgetSpent,
    /// Jobs were dead-lettered and wait for an operator.
    DeadLetters,
    /// The oldest pending job is older than `backlog_age`: the queue does not drain.
    BacklogStale,
    /// Mavera or Customer.io has failed without a success for `upstream_down`.
    UpstreamDown,
    /// The store does not take writes: new webhooks are refused with 503.
    StoreUnwritable,
}

impl AlertKind {
    /// Every kind, in the order the conditions are checked.
    pub const ALL: [AlertKind; 6] = [
        AlertKind::CreditsExhausted,
        AlertKind::BudgetSpent,
        AlertKind::DeadLetters,
        AlertKind::BacklogStale,
        AlertKind::UpstreamDown,
        AlertKind::StoreUnwritable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::CreditsExhausted => "credits_exhausted",
            AlertKind::BudgetSpent => "budget_spent",
            AlertKind::DeadLetters => "dead_letters",
            AlertKind::BacklogStale => "backlog_stale",
            AlertKind::UpstreamDown => "upstream_down",
            AlertKind::StoreUnwritable => "store_unwritable",
        }
    }
}

/// A condition that holds now: what to say about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub message: String,
    pub details: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    Firing,
    Recovered,
}

/// One alert to deliver.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub kind: AlertKind,
    pub state: AlertState,
    pub message: String,
    pub details: Value,
    pub at_ms: u64,
}

impl Notice {
    /// `{"type": "alert", "alert", "state", "message", "at", "details"}`.
    pub fn delivery(&self) -> Value {
        let at = UNIX_EPOCH + Duration::from_millis(self.at_ms);
        json!({
            "type": "alert",
            "alert": self.kind,
            "state": self.state,
            "message": self.message,
            "at": humantime::format_rfc3339_seconds(at).to_string(),
            "details": self.details,
        })
    }
}

/// Which conditions are firing and when each was last sent. Pure: the clock comes in with each step.
#[derive(Debug, Default)]
pub struct Alerter {
    firing: HashMap<AlertKind, u64>,
}

impl Alerter {
    /// Given what each condition says at `now_ms` (`None`: it does not hold), the notices to send.
    pub fn step(
        &mut self,
        now_ms: u64,
        repeat: Duration,
        conditions: Vec<(AlertKind, Option<Condition>)>,
    ) -> Vec<Notice> {
        let mut notices = Vec::new();
        for (kind, condition) in conditions {
            match (condition, self.firing.get(&kind).copied()) {
                (Some(c), last) => {
                    let due = last.is_none_or(|sent| {
                        now_ms.saturating_sub(sent) >= repeat.as_millis() as u64
                    });
                    if due {
                        self.firing.insert(kind, now_ms);
                        notices.push(Notice {
                            kind,
                            state: AlertState::Firing,
                            message: c.message,
                            details: c.details,
                            at_ms: now_ms,
                        });
                    }
                }
                (None, Some(_)) => {
                    self.firing.remove(&kind);
                    notices.push(Notice {
                        kind,
                        state: AlertState::Recovered,
                        message: format!("{} cleared", kind.as_str()),
                        details: json!({}),
                        at_ms: now_ms,
                    });
                }
                (None, None) => {}
            }
        }
        notices
    }
}

/// What the checks read, gathered at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub now_ms: u64,
    /// The store's last write attempt failed: the error.
    pub store_error: Option<String>,
    /// Dead jobs now, and the count that is known (at start, or after the last recovery).
    pub dead: Option<u64>,
    pub oldest_pending_ms: Option<u64>,
    pub credits_exhausted_ms: u64,
    pub budget_hold_ms: u64,
    /// (service, failing since) for each upstream with failures since its last success.
    pub failing: Vec<(&'static str, u64)>,
}

/// Each condition's verdict on a snapshot, given the known dead-letter count.
pub fn conditions(
    s: &Snapshot,
    settings: &AlertSettings,
    dead_known: u64,
) -> Vec<(AlertKind, Option<Condition>)> {
    let ago = |ms: u64| {
        humantime::format_duration(Duration::from_secs(s.now_ms.saturating_sub(ms) / 1000))
            .to_string()
    };
    let credits = (s.credits_exhausted_ms != 0).then(|| Condition {
        message: "Mavera answered 402: the account's credits are spent; jobs are dead-lettered until it is topped up".into(),
        details: json!({ "since": ago(s.credits_exhausted_ms) }),
    });
    let budget = (s.budget_hold_ms != 0
        && s.now_ms.saturating_sub(s.budget_hold_ms) < BUDGET_HOLD_RECENT.as_millis() as u64)
        .then(|| Condition {
            message: "a cost budget holds jobs back (a trigger's budget or MAVERA_DAILY_BUDGET): they wait as `held` for an operator's replay".into(),
            details: json!({ "last_held": ago(s.budget_hold_ms) }),
        });
    let dead = s.dead.filter(|d| *d > dead_known).map(|d| Condition {
        message: format!(
            "{} new dead letter(s): jobs that gave up, waiting for an operator",
            d - dead_known
        ),
        details: json!({ "dead": d, "new": d - dead_known }),
    });
    let backlog = s
        .oldest_pending_ms
        .filter(|t| s.now_ms.saturating_sub(*t) >= settings.backlog_age.as_millis() as u64)
        .map(|t| Condition {
            message: format!(
                "the oldest pending job has waited {}: the backlog does not drain",
                ago(t)
            ),
            details: json!({ "oldest_pending_age": ago(t), "backlog_age": humantime::format_duration(settings.backlog_age).to_string() }),
        });
    let down: Vec<Value> = s
        .failing
        .iter()
        .filter(|(_, since)| {
            s.now_ms.saturating_sub(*since) >= settings.upstream_down.as_millis() as u64
        })
        .map(|(service, since)| json!({ "service": service, "failing_for": ago(*since) }))
        .collect();
    let upstream = (!down.is_empty()).then(|| Condition {
        message: format!(
            "{} failing with no success for {} or more",
            down.iter()
                .filter_map(|d| d["service"].as_str())
                .collect::<Vec<_>>()
                .join(" and "),
            humantime::format_duration(settings.upstream_down)
        ),
        details: json!({ "services": down }),
    });
    let store = s.store_error.as_ref().map(|e| Condition {
        message: "the store does not take writes: new webhooks are answered 503".into(),
        details: json!({ "error": e }),
    });
    vec![
        (AlertKind::CreditsExhausted, credits),
        (AlertKind::BudgetSpent, budget),
        (AlertKind::DeadLetters, dead),
        (AlertKind::BacklogStale, backlog),
        (AlertKind::UpstreamDown, upstream),
        (AlertKind::StoreUnwritable, store),
    ]
}

/// The alert loop's state: the conditions, their firing memory, and where to send.
pub struct Alerts {
    store: Arc<dyn JobStore>,
    metrics: Arc<Metrics>,
    table: Arc<ArcSwap<TriggerTable>>,
    http: reqwest::Client,
    alerter: Alerter,
    /// The dead-letter count an alert has already covered (or that was there at start).
    dead_known: Option<u64>,
}

impl Alerts {
    pub fn new(
        store: Arc<dyn JobStore>,
        metrics: Arc<Metrics>,
        table: Arc<ArcSwap<TriggerTable>>,
        http: reqwest::Client,
    ) -> Self {
        Self {
            store,
            metrics,
            table,
            http,
            alerter: Alerter::default(),
            dead_known: None,
        }
    }

    /// Reads the store and the metrics as of `now_ms`.
    pub async fn snapshot(&self, now_ms: u64) -> Snapshot {
        let store_error = self.store.ping(now_ms).await.err().map(|e| e.to_string());
        let counts = self.store.backlog().await.ok();
        let failing = |service, h: &UpstreamHealth| {
            let since = h.failing_since_ms.load(Ordering::Relaxed);
            (since != 0).then_some((service, since))
        };
        Snapshot {
            now_ms,
            store_error,
            dead: counts.map(|c| c.dead),
            oldest_pending_ms: counts.and_then(|c| c.oldest_pending_ms),
            credits_exhausted_ms: self.metrics.credits_exhausted_ms.load(Ordering::Relaxed),
            budget_hold_ms: self.metrics.budget_hold_ms.load(Ordering::Relaxed),
            failing: [
                failing("Mavera", &self.metrics.mavera_health),
                failing("Customer.io", &self.metrics.customerio_health),
            ]
            .into_iter()
            .flatten()
            .collect(),
        }
    }

    /// One check as of `now_ms`: the notices it sent (each to every `[alerts]` sink).
    pub async fn check(&mut self, now_ms: u64) -> Vec<Notice> {
        let snapshot = self.snapshot(now_ms).await;
        let known = *self.dead_known.get_or_insert(snapshot.dead.unwrap_or(0));
        let settings = self.table.load().alerts.clone();
        let notices = self.alerter.step(
            now_ms,
            settings.repeat,
            conditions(&snapshot, &settings, known),
        );
        if let Some(dead) = snapshot.dead {
            // Dead letters an operator replayed or retention pruned lower the bar; new ones after a
            // recovery are counted from here.
            if dead < known
                || notices
                    .iter()
                    .any(|n| n.kind == AlertKind::DeadLetters && n.state == AlertState::Recovered)
            {
                self.dead_known = Some(dead);
            }
        }
        for notice in &notices {
            deliver(&self.http, &settings.sinks, notice).await;
        }
        notices
    }
}

/// Checks every [`CHECK_EVERY`] until `shutdown`.
pub async fn run(mut alerts: Alerts, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(CHECK_EVERY) => {}
        }
        alerts.check(now_ms()).await;
    }
}
