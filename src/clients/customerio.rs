//! The Customer.io App API: `GET /customers/{id}/attributes`, cached, rate-limited, safely addressed.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use dashmap::DashMap;
use percent_encoding::utf8_percent_encode;
use serde_json::{json, Map, Value};
use tokio::time::Instant;

use super::{retry_after, UpstreamError, PATH_SEGMENT};
use crate::{
    config::Secret,
    metrics::Metrics,
    ratelimit::SharedLimits,
    ratelimit::{LiveLimits, RequestWindow, CIO_BUCKET},
};

const SERVICE: &str = "Customer.io";
/// The one App API call, as metrics and errors name it (the customer id is personal data).
const ENDPOINT: &str = "/customers/{id}/attributes";

/// A person's attributes, or why there are none.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    Found(Map<String, Value>),
    /// 404: the customer does not exist (deleted, or never identified).
    NotFound,
    /// The id cannot be sent as a path segment at all (`.` or `..`, which URL rules resolve away).
    Unaddressable,
}

type Slot = Arc<tokio::sync::Mutex<Option<(Instant, Lookup)>>>;

/// The cache's first sweep runs past this many people.
const SWEEP_FROM: usize = 10_000;

/// Look-ups, one slot per person: concurrent look-ups of one person wait for the first (one request, not
/// ten). Expired slots are swept out once the map has doubled since the last sweep (at least [`SWEEP_FROM`]
/// people), so each sweep's pass is paid for by as many new people as it kept: a look-up costs O(1) on
/// average however many people are cached, and memory stays within twice the people seen in one TTL. (It
/// used to sweep on every look-up once 10,000 people had been seen within one TTL, a pass over all of them
/// for each job: three quarters of the CPU while a backlog of `cio_churn_alert` jobs drained.)
struct AttributeCache {
    slots: DashMap<String, Slot>,
    ttl: Duration,
    /// Entries past which the next sweep runs; `usize::MAX` while one runs.
    sweep_at: AtomicUsize,
}

impl AttributeCache {
    fn new(ttl: Duration) -> Self {
        Self {
            slots: DashMap::new(),
            ttl,
            sweep_at: AtomicUsize::new(SWEEP_FROM),
        }
    }

    /// Whether a look-up made at `at` may still be answered from the cache.
    fn fresh(&self, at: Instant) -> bool {
        at.elapsed() < self.ttl
    }

    /// The slot of the person at `path`, made if new.
    fn slot(&self, path: &str) -> Slot {
        self.sweep();
        self.slots.entry(path.to_string()).or_default().clone()
    }

    fn sweep(&self) {
        let at = self.sweep_at.load(Ordering::Relaxed);
        if self.slots.len() <= at
            || self
                .sweep_at
                .compare_exchange(at, usize::MAX, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        self.slots.retain(|_, slot| match slot.try_lock() {
            Ok(guard) => guard.as_ref().is_some_and(|(at, _)| self.fresh(*at)),
            // A look-up holds it: keep.
            Err(_) => true,
        });
        let next = (2 * self.slots.len()).max(SWEEP_FROM);
        self.sweep_at.store(next, Ordering::Relaxed);
    }
}

#[derive(Clone)]
pub struct CustomerIoClient {
    http: reqwest::Client,
    base_url: String,
    key: Option<Secret>,
    timeout: Duration,
    requests: Arc<RequestWindow>,
    live: Arc<LiveLimits>,
    cache: Arc<AttributeCache>,
    metrics: Arc<Metrics>,
}

/// The sample profile used in `dev` without `CIO_APP_KEY`, so a newcomer sees the whole pipeline run.
pub fn dry_run_attributes() -> Map<String, Value> {
    let v = json!({
        "plan_type": "pro", "industry": "fintech", "usage_tier": "high", "mrr": "850",
        "tenure_days": "342", "last_active_at": "2026-11-20", "email": "jane@acme.example",
    });
    v.as_object().cloned().unwrap_or_default()
}

impl CustomerIoClient {
    pub fn new(
        http: reqwest::Client,
        base_url: &str,
        key: Option<Secret>,
        settings: &crate::config::Settings,
        metrics: Arc<Metrics>,
        shared: Option<Arc<dyn SharedLimits>>,
        live: Arc<LiveLimits>,
    ) -> Self {
        Self {
            metrics,
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
            key,
            timeout: settings.jobs.http_timeout,
            requests: Arc::new(RequestWindow::new(
                shared,
                CIO_BUCKET,
                live.cio_per_second.load(Ordering::Relaxed),
                Duration::from_secs(1),
                live.clock.clone(),
            )),
            live,
            cache: Arc::new(AttributeCache::new(settings.customerio.cache_ttl)),
        }
    }

    pub fn is_dry_run(&self) -> bool {
        self.key.is_none()
    }

    /// The path and query for a person: `/customers/{id}/attributes[?id_type=…]`.
    pub fn path_for(id: &str, id_type: &str) -> Option<String> {
        if id == "." || id == ".." || id.is_empty() {
            return None;
        }
        let segment = utf8_percent_encode(id, PATH_SEGMENT);
        Some(match id_type {
            "id" => format!("/customers/{segment}/attributes"),
            other => format!("/customers/{segment}/attributes?id_type={other}"),
        })
    }

    /// A person's attributes, from the cache when a fresh answer is there.
    pub async fn attributes(&self, id: &str, id_type: &str) -> Result<Lookup, UpstreamError> {
        let Some(path) = Self::path_for(id, id_type) else {
            return Ok(Lookup::Unaddressable);
        };
        if self.key.is_none() {
            tracing::info!(
                target: "mavera_triggers::dry_run",
                "DRY RUN (no CIO_APP_KEY): would send GET {}{path}; using a sample pro-plan profile instead",
                self.base_url
            );
            return Ok(Lookup::Found(dry_run_attributes()));
        }
        let slot = self.cache.slot(&path);
        let mut cached = slot.lock().await;
        if let Some((at, lookup)) = cached.as_ref() {
            if self.cache.fresh(*at) {
                return Ok(lookup.clone());
            }
        }
        let lookup = self.fetch(&path).await?;
        *cached = Some((Instant::now(), lookup.clone()));
        Ok(lookup)
    }

    async fn fetch(&self, path: &str) -> Result<Lookup, UpstreamError> {
        let key = self.key.as_ref().expect("checked by the caller");
        self.requests
            .acquire(self.live.cio_per_second.load(Ordering::Relaxed))
            .await
            .map_err(|e| super::limiter_down(SERVICE, e))?;
        let request = self
            .http
            .get(format!("{}{path}", self.base_url))
            .bearer_auth(key.expose())
            .timeout(self.timeout);
        let response = super::send_counted(
            &self.metrics,
            (SERVICE, "customerio"),
            (&self.base_url, ENDPOINT),
            request,
        )
        .await?;
        let shown = || super::shown_url(&self.base_url, ENDPOINT);
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(Lookup::NotFound);
        }
        if !status.is_success() {
            let wait = retry_after(response.headers());
            let text = response.text().await.unwrap_or_default();
            return Err(UpstreamError::Status {
                service: SERVICE,
                status: status.as_u16(),
                detail: super::redacted_detail(&text, self.key.as_ref()),
                retry_after: wait,
            });
        }
        let body: Value = response
            .json()
            .await
            .map_err(|e| UpstreamError::from_reqwest(SERVICE, shown(), e))?;
        let attributes = body["customer"]["attributes"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        Ok(Lookup::Found(attributes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_always_one_encoded_path_segment() {
        assert_eq!(
            CustomerIoClient::path_for("a/b?c#d/../e f%", "id").unwrap(),
            "/customers/a%2Fb%3Fc%23d%2F..%2Fe%20f%25/attributes"
        );
        assert_eq!(
            CustomerIoClient::path_for("jane+x@acme.co", "email").unwrap(),
            "/customers/jane%2Bx%40acme.co/attributes?id_type=email"
        );
        assert_eq!(CustomerIoClient::path_for("..", "id"), None);
    }

    #[test]
    fn expired_people_are_swept_once_the_cache_has_doubled_not_at_every_look_up() {
        let ttl = Duration::from_millis(500);
        let cache = AttributeCache::new(ttl);
        let look_up = |from: usize, n: usize| {
            for i in from..from + n {
                let slot = cache.slot(&format!("/customers/{i}/attributes"));
                *slot.try_lock().unwrap() = Some((Instant::now(), Lookup::NotFound));
            }
        };
        // Past 10,000 people a sweep runs; all are fresh, so it keeps them and waits for twice as many.
        look_up(0, 12_000);
        assert_eq!(cache.slots.len(), 12_000);
        assert_eq!(cache.sweep_at.load(Ordering::Relaxed), 20_002);
        std::thread::sleep(ttl + Duration::from_millis(100));
        // All 12,000 have expired, but the next look-up does not pass over them.
        look_up(12_000, 1);
        assert_eq!(cache.slots.len(), 12_001);
        // Once the cache has doubled, one sweep takes the expired out and keeps the fresh.
        look_up(12_001, 9_000);
        assert_eq!(cache.slots.len(), 21_001 - 12_000);
        assert!(cache.slots.contains_key("/customers/21000/attributes"));
        assert!(!cache.slots.contains_key("/customers/0/attributes"));
    }
}
