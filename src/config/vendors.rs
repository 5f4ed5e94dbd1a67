//! The sections of [`Settings`](super::Settings) for the services outside: Mavera, Customer.io and
//! Segment (their addresses, keys, signing secrets and limits) and the write-back sinks; each with its
//! defaults.

use std::time::Duration;

use super::{parse::check_url, SettingsError};
use crate::secret::Secret;

pub const DEFAULT_MAVERA_BASE_URL: &str = "https://app.mavera.io/api/v1";
pub const CIO_US_BASE_URL: &str = "https://api.customer.io/v1";
pub const CIO_EU_BASE_URL: &str = "https://api-eu.customer.io/v1";

/// The Mavera API: where, with which key, and how hard it may be asked.
#[derive(Debug, Clone)]
pub struct MaveraSettings {
    /// `MAVERA_API_KEY`: without it `dev` runs dry and `serve` refuses to start.
    pub api_key: Option<Secret>,
    /// `MAVERA_BASE_URL` (default `https://app.mavera.io/api/v1`).
    pub base_url: String,
    /// `MAVERA_REQUESTS_PER_MINUTE` (default 60, the Starter plan).
    pub requests_per_minute: u32,
    /// `MAVERA_RATE_WINDOW_SECS` (default 60): the window Mavera counts requests in.
    pub rate_window: Duration,
    /// `MAVERA_DAILY_BUDGET`: at most this many Mavera calls per UTC day, all triggers together. Unset: no cap.
    pub daily_budget: Option<u64>,
    /// `MAVERA_MAX_CONCURRENT_CHATS` (default 10, Mavera's cap on `/mave/chat`).
    pub max_concurrent_chats: usize,
    /// `MAVERA_TIMEOUT_SECS` (default 180: a Mave answer can take 30–90 s).
    pub timeout: Duration,
}

impl Default for MaveraSettings {
    fn default() -> Self {
        Self {
            api_key: None,
            base_url: DEFAULT_MAVERA_BASE_URL.to_string(),
            requests_per_minute: 60,
            rate_window: Duration::from_secs(60),
            daily_budget: None,
            max_concurrent_chats: 10,
            timeout: Duration::from_secs(180),
        }
    }
}

/// Customer.io: the reporting webhooks it signs and the App API that looks customers up.
#[derive(Debug, Clone)]
pub struct CustomerIoSettings {
    /// `CIO_WEBHOOK_SECRET`: the reporting-webhook signing key(s), comma-separated.
    pub webhook_secrets: Vec<Secret>,
    /// `CIO_TIMESTAMP_TOLERANCE_SECS` (default 300; 0 turns the replay check off).
    pub timestamp_tolerance: Duration,
    /// `CIO_APP_KEY`: App API key for attribute look-ups.
    pub app_key: Option<Secret>,
    /// `CIO_APP_BASE_URL`, else derived from `CIO_REGION` (`us` → api.customer.io, `eu` → api-eu.customer.io).
    pub app_base_url: String,
    /// `CIO_ATTRIBUTES_CACHE_TTL_SECS` (default 600).
    pub cache_ttl: Duration,
    /// `CIO_REQUESTS_PER_SECOND` (default 10, Customer.io's documented App API limit).
    pub requests_per_second: u32,
}

impl Default for CustomerIoSettings {
    fn default() -> Self {
        Self {
            webhook_secrets: Vec::new(),
            timestamp_tolerance: Duration::from_secs(300),
            app_key: None,
            app_base_url: CIO_US_BASE_URL.to_string(),
            cache_ttl: Duration::from_secs(600),
            requests_per_second: 10,
        }
    }
}

/// Segment's webhooks: the secrets they are signed with and how large a batch may be.
#[derive(Debug, Clone)]
pub struct SegmentSettings {
    /// `SEGMENT_SHARED_SECRET`: one or more comma-separated secrets (`new,old` while rotating).
    pub secrets: Vec<Secret>,
    /// `SEGMENT_MAX_BODY_BYTES` (default 8 MiB): larger `/segment` bodies get 413. Segment's Actions batches
    /// hold up to 4,000 events (1,000 by default): 4,000 typical events are about 3 MiB and 1,000 events
    /// carrying every common field about 1.6 MiB, so 8 MiB takes the largest documented batch of events
    /// twice that size. Segment never splits or retries a batch refused with 413.
    pub max_body_bytes: usize,
}

impl Default for SegmentSettings {
    fn default() -> Self {
        Self {
            secrets: Vec::new(),
            max_body_bytes: 8 * 1024 * 1024,
        }
    }
}

pub const CIO_TRACK_US_BASE_URL: &str = "https://track.customer.io/api/v1";
pub const CIO_TRACK_EU_BASE_URL: &str = "https://track-eu.customer.io/api/v1";
pub const SEGMENT_API_BASE_URL: &str = "https://api.segment.io/v1";

/// Credentials and addresses of the write-back sinks.
#[derive(Debug, Clone)]
pub struct WriteBackSettings {
    /// `CIO_TRACK_BASE_URL` (default from `CIO_REGION`: `https://track.customer.io/api/v1`, or
    /// `https://track-eu.customer.io/api/v1` for `eu`).
    pub cio_track_base_url: String,
    /// `CIO_SITE_ID`: the Track API's Basic-auth user name (Workspace Settings → API Credentials).
    pub cio_site_id: Option<Secret>,
    /// `CIO_TRACK_API_KEY`: the Track API's Basic-auth password.
    pub cio_track_api_key: Option<Secret>,
    /// `SEGMENT_API_BASE_URL` (default `https://api.segment.io/v1`).
    pub segment_api_base_url: String,
    /// `SEGMENT_WRITE_KEY`: the write key of the Segment source the `segment` sink writes to.
    pub segment_write_key: Option<Secret>,
}

impl Default for WriteBackSettings {
    fn default() -> Self {
        Self {
            cio_track_base_url: CIO_TRACK_US_BASE_URL.to_string(),
            cio_site_id: None,
            cio_track_api_key: None,
            segment_api_base_url: SEGMENT_API_BASE_URL.to_string(),
            segment_write_key: None,
        }
    }
}

impl WriteBackSettings {
    pub(super) fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let mut w = Self::default();
        if get("CIO_REGION").is_some_and(|r| r.eq_ignore_ascii_case("eu")) {
            w.cio_track_base_url = CIO_TRACK_EU_BASE_URL.to_string();
        }
        if let Some(v) = get("CIO_TRACK_BASE_URL") {
            w.cio_track_base_url = check_url("CIO_TRACK_BASE_URL", &v)?;
        }
        w.cio_site_id = get("CIO_SITE_ID").map(Secret::new);
        w.cio_track_api_key = get("CIO_TRACK_API_KEY").map(Secret::new);
        if let Some(v) = get("SEGMENT_API_BASE_URL") {
            w.segment_api_base_url = check_url("SEGMENT_API_BASE_URL", &v)?;
        }
        w.segment_write_key = get("SEGMENT_WRITE_KEY").map(Secret::new);
        Ok(w)
    }
}
