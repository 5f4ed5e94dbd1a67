//! The sections of [`Settings`](super::Settings) that are the server's own: how it listens, what a webhook
//! may be, the store, the jobs and the console's and admin API's doors; each with its defaults.

use std::{net::IpAddr, time::Duration};

use super::{
    parse::{duration, positive},
    Mode, SettingsError,
};
use crate::secret::Secret;

pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/mavera-triggers.db";

/// How the process listens, answers and stops.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// `BIND_ADDR`: the interface to listen on. `serve` defaults to 0.0.0.0, `dev` to 127.0.0.1.
    pub bind_addr: IpAddr,
    /// `WEBHOOK_PORT` (default 8080; 0 picks a free port).
    pub port: u16,
    /// `MAX_CONNECTIONS` (default 1024): open client connections; more wait to be accepted.
    pub max_connections: usize,
    /// `MAX_HEADER_BYTES` (default 16384): larger request headers get 431.
    pub max_header_bytes: usize,
    /// `REQUEST_TIMEOUT_SECS` (default 10): a request not fully received and answered by then gets 408.
    pub request_timeout: Duration,
    /// `SHUTDOWN_GRACE` (default `120s`): on SIGTERM, how long jobs in flight may run to their end (a Mave
    /// answer takes 30–90 s) before the rest are put back in the queue. A container platform's stop timeout
    /// must be longer, or the process is killed first and research in flight is asked again.
    pub shutdown_grace: Duration,
    /// `LOG_FORMAT` (`pretty` default, or `json`).
    pub log_json: bool,
}

impl ServerSettings {
    pub fn defaults(mode: Mode) -> Self {
        Self {
            bind_addr: match mode {
                Mode::Serve => IpAddr::from([0, 0, 0, 0]),
                Mode::Dev => IpAddr::from([127, 0, 0, 1]),
            },
            port: 8080,
            max_connections: 1024,
            max_header_bytes: 16 * 1024,
            request_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(120),
            log_json: false,
        }
    }
}

/// What a webhook may be, and what gets in: body and JSON bounds, the re-delivery memory, the backlog.
/// (The Segment body bound is in [`SegmentSettings`](super::SegmentSettings).)
#[derive(Debug, Clone)]
pub struct IntakeSettings {
    /// `MAX_BODY_BYTES` (default 1 MiB): larger Customer.io (and any non-Segment) bodies get 413. One
    /// reporting webhook is one event of a few KiB.
    pub max_body_bytes: usize,
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
    /// `DEDUPE_TTL_SECS` (default 86400: Segment keeps 24 h of messageIds).
    pub dedupe_ttl: Duration,
    /// `DEDUPE_CAPACITY` (default 1,000,000 ids): the oldest are forgotten first past it.
    pub dedupe_capacity: usize,
    /// `MAX_BACKLOG` (default 100000 pending jobs): past it new webhooks get 503 + Retry-After.
    pub max_backlog: u64,
}

impl Default for IntakeSettings {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            max_body_bytes_in_flight: 64 * 1024 * 1024,
            max_json_depth: 32,
            max_array_items: 10_000,
            max_batch_events: 4000,
            dedupe_ttl: Duration::from_secs(24 * 3600),
            dedupe_capacity: 1_000_000,
            max_backlog: 100_000,
        }
    }
}

/// The durable store: where it is, how it commits, what the event log keeps and for how long.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// `DATABASE_URL` (default `sqlite://data/mavera-triggers.db`): the durable store.
    pub database_url: String,
    /// `DB_MAX_CONNECTIONS` (default 10): the Postgres pool size of each replica.
    pub max_connections: u32,
    /// `DB_STATEMENT_TIMEOUT_MS` (default 5000): Postgres cancels a statement that runs longer.
    pub statement_timeout: Duration,
    /// `SQLITE_SYNCHRONOUS` (`full` default: a commit survives power loss; `normal`: survives a killed process).
    pub sqlite_synchronous_full: bool,
    /// `EVENT_LOG` (`all` default: the console lists every event; `triggered`: only those that matched a
    /// trigger are stored, for the least disk and CPU per ignored event).
    pub log_ignored_events: bool,
    /// `EVENT_LOG_MAX_PER_SEC` (default 10000): at most this many events that matched no trigger are logged
    /// per second; the rest are counted on the console's overview ("not listed") instead.
    pub event_log_max_per_sec: u64,
    /// `RETENTION_EVENTS` (default `30d`, `off` keeps them): events, with their raw payloads and headers,
    /// are deleted this long after they arrived. Payloads carry personal data (emails, traits).
    pub retention_events: Option<Duration>,
    /// `RETENTION_JOBS` (default `90d`, `off` keeps them): finished, dead and held jobs (outcomes, briefs,
    /// sink deliveries) are deleted this long after their last change.
    pub retention_jobs: Option<Duration>,
    /// `PRUNE_INTERVAL` (default `10m`): how often retention runs.
    pub prune_interval: Duration,
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            database_url: DEFAULT_DATABASE_URL.to_string(),
            max_connections: 10,
            statement_timeout: Duration::from_millis(5000),
            sqlite_synchronous_full: true,
            log_ignored_events: true,
            event_log_max_per_sec: 10_000,
            retention_events: Some(Duration::from_secs(30 * 86_400)),
            retention_jobs: Some(Duration::from_secs(90 * 86_400)),
            prune_interval: Duration::from_secs(600),
        }
    }
}

/// How jobs run: how many at once, how long a claim holds, how failures are retried, and how long the
/// calls they make may take.
#[derive(Debug, Clone)]
pub struct JobSettings {
    /// `WORKERS` (default 16): jobs run at once.
    pub workers: usize,
    /// `JOB_LEASE_SECS` (default 60): a claimed job is held this long, renewed while it runs; a worker that
    /// dies stops renewing and the job is taken over once the lease ends.
    pub lease: Duration,
    /// `RETRY_BASE_MS` (default 1000): first retry delay before jitter.
    pub retry_base: Duration,
    /// `RETRY_MAX_MS` (default 300000): the longest delay between two attempts.
    pub retry_max: Duration,
    /// `RETRY_MAX_ATTEMPTS` (default 10): then the job is dead-lettered.
    pub retry_max_attempts: u32,
    /// `RETRY_MAX_AGE_SECS` (default 86400): a job still failing this long after its event arrived is
    /// dead-lettered whatever its attempt count.
    pub retry_max_age: Duration,
    /// `HTTP_TIMEOUT_SECS` for everything that is not a Mave chat (default 30).
    pub http_timeout: Duration,
}

impl Default for JobSettings {
    fn default() -> Self {
        Self {
            workers: 16,
            lease: Duration::from_secs(60),
            retry_base: Duration::from_millis(1000),
            retry_max: Duration::from_millis(300_000),
            retry_max_attempts: 10,
            retry_max_age: Duration::from_secs(24 * 3600),
            http_timeout: Duration::from_secs(30),
        }
    }
}

/// Settings of the console's and the admin API's doors.
#[derive(Debug, Clone)]
pub struct AccessSettings {
    /// `ADMIN_TOKEN`: turns on the admin routes (`/admin/...`), which need `Authorization: Bearer <token>`.
    /// Unset: the admin routes are off (404), not open.
    pub admin_token: Option<Secret>,
    /// `TRUSTED_PROXIES` (default none): addresses or networks (`127.0.0.1, 10.0.0.0/8`) whose
    /// `X-Forwarded-For` names the client. From any other peer the header is ignored.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// `SESSION_TTL` (default `12h`): a console session ends this long after its last use.
    pub session_ttl: Duration,
    /// `AUTH_MAX_FAILURES` (default 10): wrong tokens from one client in a minute before it is locked out.
    pub auth_max_failures: u32,
    /// `AUTH_LOCKOUT` (default `1m`): the first lockout; each one after it lasts twice as long, up to 1 h.
    pub auth_lockout: Duration,
}

impl Default for AccessSettings {
    fn default() -> Self {
        Self {
            admin_token: None,
            trusted_proxies: Vec::new(),
            session_ttl: Duration::from_secs(12 * 3600),
            auth_max_failures: 10,
            auth_lockout: Duration::from_secs(60),
        }
    }
}

impl AccessSettings {
    pub(super) fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let mut a = Self {
            admin_token: get("ADMIN_TOKEN").map(Secret::new),
            ..Self::default()
        };
        if let Some(v) = get("TRUSTED_PROXIES") {
            a.trusted_proxies = parse_trusted(&v).map_err(|why| SettingsError {
                var: "TRUSTED_PROXIES",
                value: v.clone(),
                fix: format!("{why}; use addresses or networks such as `127.0.0.1, 10.0.0.0/8`"),
            })?;
        }
        a.session_ttl = duration("SESSION_TTL", get("SESSION_TTL"), a.session_ttl)?;
        a.auth_lockout = duration("AUTH_LOCKOUT", get("AUTH_LOCKOUT"), a.auth_lockout)?;
        if let Some(v) = get("AUTH_MAX_FAILURES") {
            a.auth_max_failures = positive("AUTH_MAX_FAILURES", &v)?;
        }
        Ok(a)
    }
}

/// Parses `TRUSTED_PROXIES`: addresses or networks, comma-separated.
pub fn parse_trusted(value: &str) -> Result<Vec<ipnet::IpNet>, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|item| {
            item.parse::<ipnet::IpNet>()
                .or_else(|_| item.parse::<IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| format!("`{item}` is not an address or a network"))
        })
        .collect()
}
