//! Settings from the environment (and `.env` when present), parsed and validated once at start-up.
//!
//! Every variable is listed, with its default, in `.env.example`. Secrets are held in [`Secret`], whose
//! `Debug` and `Display` print a short fingerprint, never the value.

mod env;
mod parse;
mod sections;
#[cfg(test)]
mod tests;

use std::{net::IpAddr, path::PathBuf, time::Duration};

pub use crate::secret::{secret_list, Secret};
pub use sections::{
    parse_trusted, AccessSettings, WriteBackSettings, CIO_TRACK_EU_BASE_URL, CIO_TRACK_US_BASE_URL,
    SEGMENT_API_BASE_URL,
};

/// How the server was started: `serve` is strict, `dev` is forgiving and loud about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Production: every enabled source needs its secret, Mavera needs a key.
    Serve,
    /// The newcomer's mode: loopback only, unsigned requests accepted for sources without a secret,
    /// and without `MAVERA_API_KEY` every Mavera request is printed instead of sent.
    Dev,
}

/// A setting that could not be read. The message names the variable and the fix.
#[derive(Debug, thiserror::Error)]
#[error("{var}={value:?} is not valid: {fix}")]
pub struct SettingsError {
    pub var: &'static str,
    pub value: String,
    pub fix: String,
}

/// `[limits]`: the same knobs as `MAVERA_REQUESTS_PER_MINUTE`, `MAVERA_MAX_CONCURRENT_CHATS` and
/// `CIO_REQUESTS_PER_SECOND`, for people who keep their settings in the file.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSpec {
    pub mavera_requests_per_minute: Option<u32>,
    pub mavera_max_concurrent_chats: Option<u32>,
    pub cio_requests_per_second: Option<u32>,
}

/// Everything the server reads from its environment.
#[derive(Debug, Clone)]
pub struct Settings {
    pub mode: Mode,
    /// `BIND_ADDR`: the interface to listen on. `serve` defaults to 0.0.0.0, `dev` to 127.0.0.1.
    pub bind_addr: IpAddr,
    /// `WEBHOOK_PORT` (default 8080; 0 picks a free port).
    pub port: u16,
    /// `MAVERA_TRIGGERS_CONFIG` (default `config/mavera-triggers.toml`).
    pub config_path: PathBuf,
    /// `MAVERA_API_KEY`: without it `dev` runs dry and `serve` refuses to start.
    pub mavera_api_key: Option<Secret>,
    /// `MAVERA_BASE_URL` (default `https://app.mavera.io/api/v1`).
    pub mavera_base_url: String,
    /// `SEGMENT_SHARED_SECRET`: one or more comma-separated secrets (`new,old` while rotating).
    pub segment_secrets: Vec<Secret>,
    /// `CIO_WEBHOOK_SECRET`: the reporting-webhook signing key(s), comma-separated.
    pub cio_webhook_secrets: Vec<Secret>,
    /// `CIO_APP_KEY`: App API key for attribute look-ups.
    pub cio_app_key: Option<Secret>,
    /// `CIO_APP_BASE_URL`, else derived from `CIO_REGION` (`us` → api.customer.io, `eu` → api-eu.customer.io).
    pub cio_app_base_url: String,
    /// `CIO_TIMESTAMP_TOLERANCE_SECS` (default 300; 0 turns the replay check off).
    pub cio_timestamp_tolerance: Duration,
    /// `CIO_ATTRIBUTES_CACHE_TTL_SECS` (default 600).
    pub cio_cache_ttl: Duration,
    /// `CIO_REQUESTS_PER_SECOND` (default 10, Customer.io's documented App API limit).
    pub cio_requests_per_second: u32,
    /// `MAVERA_REQUESTS_PER_MINUTE` (default 60, the Starter plan).
    pub mavera_requests_per_minute: u32,
    /// `MAVERA_RATE_WINDOW_SECS` (default 60): the window Mavera counts requests in.
    pub mavera_rate_window: Duration,
    /// `MAVERA_DAILY_BUDGET`: at most this many Mavera calls per UTC day, all triggers together. Unset: no cap.
    pub mavera_daily_budget: Option<u64>,
    /// `MAVERA_MAX_CONCURRENT_CHATS` (default 10, Mavera's cap on `/mave/chat`).
    pub mavera_max_concurrent_chats: usize,
    /// `MAVERA_TIMEOUT_SECS` (default 180: a Mave answer can take 30–90 s).
    pub mavera_timeout: Duration,
    /// `HTTP_TIMEOUT_SECS` for everything that is not a Mave chat (default 30).
    pub http_timeout: Duration,
    /// `DATABASE_URL` (default `sqlite://data/mavera-triggers.db`): the durable store.
    pub database_url: String,
    /// `DB_MAX_CONNECTIONS` (default 10): the Postgres pool size of each replica.
    pub db_max_connections: u32,
    /// `DB_STATEMENT_TIMEOUT_MS` (default 5000): Postgres cancels a statement that runs longer.
    pub db_statement_timeout: Duration,
    /// `SQLITE_SYNCHRONOUS` (`full` default: a commit survives power loss; `normal`: survives a killed process).
    pub sqlite_synchronous_full: bool,
    /// `EVENT_LOG` (`all` default: the console lists every event; `triggered`: only those that matched a
    /// trigger are stored, for the least disk and CPU per ignored event).
    pub log_ignored_events: bool,
    /// `EVENT_LOG_MAX_PER_SEC` (default 1000): at most this many events that matched no trigger are logged
    /// per second; the rest are counted on the console's overview ("not listed") instead.
    pub event_log_max_per_sec: u64,
    /// `JOB_LEASE_SECS` (default 60): a claimed job is held this long, renewed while it runs; a worker that
    /// dies stops renewing and the job is taken over once the lease ends.
    pub job_lease: Duration,
    /// `MAX_BACKLOG` (default 100000 pending jobs): past it new webhooks get 503 + Retry-After.
    pub max_backlog: u64,
    /// `MAX_BODY_BYTES` (default 1 MiB): larger Customer.io (and any non-Segment) bodies get 413. One
    /// reporting webhook is one event of a few KiB.
    pub max_body_bytes: usize,
    /// `SEGMENT_MAX_BODY_BYTES` (default 8 MiB): larger `/segment` bodies get 413. Segment's Actions batches
    /// hold up to 4,000 events (1,000 by default): 4,000 typical events are about 3 MiB and 1,000 events
    /// carrying every common field about 1.6 MiB, so 8 MiB takes the largest documented batch of events
    /// twice that size. Segment never splits or retries a batch refused with 413.
    pub segment_max_body_bytes: usize,
    /// `MAX_BODY_BYTES_IN_FLIGHT` (default 64 MiB): webhook body bytes being received at once, across all
    /// requests, before any signature is checked. A request that would go past it gets 503 + `Retry-After`
    /// (both senders retry a 503) instead of more memory.
    pub max_body_bytes_in_flight: usize,
    /// `MAX_JSON_DEPTH` (default 32): deeper JSON gets 400.
    pub max_json_depth: usize,
    /// `MAX_ARRAY_ITEMS` (default 10000): a longer JSON array gets 400.
    pub max_array_items: usize,
    /// `MAX_BATCH_EVENTS` (default 4000, Segment's largest batch): a bigger batch gets 400.
    pub max_batch_events: usize,
    /// `MAX_HEADER_BYTES` (default 16384): larger request headers get 431.
    pub max_header_bytes: usize,
    /// `REQUEST_TIMEOUT_SECS` (default 10): a request not fully received and answered by then gets 408.
    pub request_timeout: Duration,
    /// `MAX_CONNECTIONS` (default 1024): open client connections; more wait to be accepted.
    pub max_connections: usize,
    /// `DEDUPE_TTL_SECS` (default 86400: Segment keeps 24 h of messageIds).
    pub dedupe_ttl: Duration,
    /// `DEDUPE_CAPACITY` (default 1,000,000 ids): the oldest are forgotten first past it.
    pub dedupe_capacity: usize,
    /// `WORKERS` (default 16): jobs run at once.
    pub workers: usize,
    /// `RETRY_BASE_MS` (default 1000): first retry delay before jitter.
    pub retry_base: Duration,
    /// `RETRY_MAX_MS` (default 300000): the longest delay between two attempts.
    pub retry_max: Duration,
    /// `RETRY_MAX_ATTEMPTS` (default 10): then the job is dead-lettered.
    pub retry_max_attempts: u32,
    /// `ADMIN_TOKEN`: turns on the admin routes (`/admin/...`), which need `Authorization: Bearer <token>`.
    /// Unset: the admin routes are off (404), not open.
    pub admin_token: Option<Secret>,
    /// `RETRY_MAX_AGE_SECS` (default 86400): a job still failing this long after its event arrived is
    /// dead-lettered whatever its attempt count.
    pub retry_max_age: Duration,
    /// `LOG_FORMAT` (`pretty` default, or `json`).
    pub log_json: bool,
    /// `SHUTDOWN_GRACE` (default `120s`): on SIGTERM, how long jobs in flight may run to their end (a Mave
    /// answer takes 30–90 s) before the rest are put back in the queue. A container platform's stop timeout
    /// must be longer, or the process is killed first and research in flight is asked again.
    pub shutdown_grace: Duration,
    /// `RETENTION_EVENTS` (default `30d`, `off` keeps them): events, with their raw payloads and headers,
    /// are deleted this long after they arrived. Payloads carry personal data (emails, traits).
    pub retention_events: Option<Duration>,
    /// `RETENTION_JOBS` (default `90d`, `off` keeps them): finished, dead and held jobs (outcomes, briefs,
    /// sink deliveries) are deleted this long after their last change.
    pub retention_jobs: Option<Duration>,
    /// `PRUNE_INTERVAL` (default `10m`): how often retention runs.
    pub prune_interval: Duration,
    /// Who may use the console and the admin API, and how hard guessing is made.
    pub access: AccessSettings,
    /// Where the `customerio` and `segment` sinks write outcomes back.
    pub write_back: WriteBackSettings,
}

pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/mavera-triggers.db";
pub const DEFAULT_MAVERA_BASE_URL: &str = "https://app.mavera.io/api/v1";
pub const CIO_US_BASE_URL: &str = "https://api.customer.io/v1";
pub const CIO_EU_BASE_URL: &str = "https://api-eu.customer.io/v1";

impl Settings {
    /// Settings with every default and no secrets: the starting point of tests.
    pub fn defaults(mode: Mode) -> Self {
        Self {
            mode,
            bind_addr: match mode {
                Mode::Serve => IpAddr::from([0, 0, 0, 0]),
                Mode::Dev => IpAddr::from([127, 0, 0, 1]),
            },
            port: 8080,
            config_path: PathBuf::from("config/mavera-triggers.toml"),
            mavera_api_key: None,
            mavera_base_url: DEFAULT_MAVERA_BASE_URL.to_string(),
            segment_secrets: Vec::new(),
            cio_webhook_secrets: Vec::new(),
            cio_app_key: None,
            cio_app_base_url: CIO_US_BASE_URL.to_string(),
            cio_timestamp_tolerance: Duration::from_secs(300),
            cio_cache_ttl: Duration::from_secs(600),
            cio_requests_per_second: 10,
            mavera_requests_per_minute: 60,
            mavera_rate_window: Duration::from_secs(60),
            mavera_max_concurrent_chats: 10,
            mavera_daily_budget: None,
            mavera_timeout: Duration::from_secs(180),
            http_timeout: Duration::from_secs(30),
            database_url: DEFAULT_DATABASE_URL.to_string(),
            sqlite_synchronous_full: true,
            log_ignored_events: true,
            event_log_max_per_sec: 1000,
            db_max_connections: 10,
            db_statement_timeout: Duration::from_millis(5000),
            job_lease: Duration::from_secs(60),
            max_backlog: 100_000,
            max_body_bytes: 1024 * 1024,
            segment_max_body_bytes: 8 * 1024 * 1024,
            max_body_bytes_in_flight: 64 * 1024 * 1024,
            max_json_depth: 32,
            max_array_items: 10_000,
            max_batch_events: 4000,
            max_header_bytes: 16 * 1024,
            request_timeout: Duration::from_secs(10),
            max_connections: 1024,
            dedupe_ttl: Duration::from_secs(24 * 3600),
            dedupe_capacity: 1_000_000,
            workers: 16,
            retry_base: Duration::from_millis(1000),
            retry_max: Duration::from_millis(300_000),
            retry_max_attempts: 10,
            admin_token: None,
            retry_max_age: Duration::from_secs(24 * 3600),
            log_json: false,
            shutdown_grace: Duration::from_secs(120),
            retention_events: Some(Duration::from_secs(30 * 86_400)),
            retention_jobs: Some(Duration::from_secs(90 * 86_400)),
            prune_interval: Duration::from_secs(600),
            access: AccessSettings::default(),
            write_back: WriteBackSettings::default(),
        }
    }

    /// Takes the `[limits]` of the trigger file for each limit whose environment variable is unset (the
    /// default when the file does not set it either): at start, and again at each reload.
    pub fn apply_file_limits(&mut self, limits: &LimitsSpec, env: impl Fn(&str) -> Option<String>) {
        let unset = |k: &str| env(k).is_none_or(|v| v.trim().is_empty());
        let defaults = Settings::defaults(self.mode);
        if unset("MAVERA_REQUESTS_PER_MINUTE") {
            self.mavera_requests_per_minute = limits
                .mavera_requests_per_minute
                .filter(|n| *n > 0)
                .unwrap_or(defaults.mavera_requests_per_minute);
        }
        if unset("MAVERA_MAX_CONCURRENT_CHATS") {
            self.mavera_max_concurrent_chats = limits
                .mavera_max_concurrent_chats
                .filter(|n| *n > 0)
                .map_or(defaults.mavera_max_concurrent_chats, |n| n as usize);
        }
        if unset("CIO_REQUESTS_PER_SECOND") {
            self.cio_requests_per_second = limits
                .cio_requests_per_second
                .filter(|n| *n > 0)
                .unwrap_or(defaults.cio_requests_per_second);
        }
    }

    /// The client-side limits a reload may change: Mavera requests per window, Mavera chats at once,
    /// Customer.io requests per second.
    pub fn live_limits(&self) -> (u32, u32, u32) {
        (
            self.mavera_requests_per_minute,
            self.mavera_max_concurrent_chats as u32,
            self.cio_requests_per_second,
        )
    }

    /// True when Mavera requests are printed instead of sent (`dev` without `MAVERA_API_KEY`).
    pub fn mavera_dry_run(&self) -> bool {
        self.mode == Mode::Dev && self.mavera_api_key.is_none()
    }
}
