//! Settings from the environment (and `.env` when present), parsed and validated once at start-up.
//!
//! Every variable is listed, with its default, in `.env.example`. Secrets are held in [`Secret`], whose
//! `Debug` and `Display` print a short fingerprint, never the value.

use std::{fmt, net::IpAddr, path::PathBuf, time::Duration};

use sha2::{Digest, Sha256};

/// How the server was started: `serve` is strict, `dev` is forgiving and loud about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Production: every enabled source needs its secret, Mavera needs a key.
    Serve,
    /// The newcomer's mode: loopback only, unsigned requests accepted for sources without a secret,
    /// and without `MAVERA_API_KEY` every Mavera request is printed instead of sent.
    Dev,
}

/// A secret value (API key, signing secret). Never printed: `Debug` shows a fingerprint.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for signing and `Authorization` headers only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `sha256:` and the first 8 hex digits of the value's SHA-256: enough to tell two secrets apart in
    /// `check-config` output, useless to an attacker.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::digest(self.0.as_bytes());
        format!("sha256:{}", &hex::encode(digest)[..8])
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({})", self.fingerprint())
    }
}

impl Secret {
    /// Constant-time comparison with a presented value (both sides hashed first, so length leaks nothing).
    pub fn matches(&self, presented: &str) -> bool {
        use subtle::ConstantTimeEq;
        let a = Sha256::digest(self.0.as_bytes());
        let b = Sha256::digest(presented.as_bytes());
        a.ct_eq(&b).into()
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.fingerprint())
    }
}

/// Parses `new,old` into several secrets so that a secret can be rotated without downtime.
pub fn secret_list(value: &str) -> Vec<Secret> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(Secret::new)
        .collect()
}

/// A setting that could not be read. The message names the variable and the fix.
#[derive(Debug, thiserror::Error)]
#[error("{var}={value:?} is not valid: {fix}")]
pub struct SettingsError {
    pub var: &'static str,
    pub value: String,
    pub fix: String,
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
    fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
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

/// Settings of the console's and the admin API's doors.
#[derive(Debug, Clone)]
pub struct AccessSettings {
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
            trusted_proxies: Vec::new(),
            session_ttl: Duration::from_secs(12 * 3600),
            auth_max_failures: 10,
            auth_lockout: Duration::from_secs(60),
        }
    }
}

impl AccessSettings {
    fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let mut a = Self::default();
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

/// A humantime duration above zero (`90s`, `12h`, `30d`), or `default` when unset.
fn duration(
    var: &'static str,
    value: Option<String>,
    default: Duration,
) -> Result<Duration, SettingsError> {
    let Some(v) = value else {
        return Ok(default);
    };
    match humantime::parse_duration(&v) {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => Err(SettingsError {
            var,
            value: v,
            fix: "use a duration above zero such as `90s`, `15m`, `12h` or `30d`".into(),
        }),
    }
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

    /// Reads the process environment (after `.env`, which never overrides a variable already set).
    pub fn from_env(mode: Mode) -> Result<Self, SettingsError> {
        Self::from_lookup(mode, |k| std::env::var(k).ok())
    }

    /// Reads settings through `lookup`, so tests can supply a map instead of the process environment.
    pub fn from_lookup(
        mode: Mode,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, SettingsError> {
        let get = |k: &str| {
            lookup(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let mut s = Self::defaults(mode);
        if let Some(v) = get("BIND_ADDR") {
            s.bind_addr = v.parse().map_err(|_| SettingsError {
                var: "BIND_ADDR",
                value: v.clone(),
                fix: "use an IP address such as 0.0.0.0 or 127.0.0.1".into(),
            })?;
        }
        if let Some(v) = get("WEBHOOK_PORT") {
            s.port = parse_num("WEBHOOK_PORT", &v, "a port number such as 8080")?;
        }
        if let Some(v) = get("MAVERA_TRIGGERS_CONFIG") {
            s.config_path = PathBuf::from(v);
        }
        s.mavera_api_key = get("MAVERA_API_KEY").map(Secret::new);
        if let Some(v) = get("MAVERA_BASE_URL") {
            s.mavera_base_url = check_url("MAVERA_BASE_URL", &v)?;
        }
        s.segment_secrets = get("SEGMENT_SHARED_SECRET")
            .map(|v| secret_list(&v))
            .unwrap_or_default();
        s.cio_webhook_secrets = get("CIO_WEBHOOK_SECRET")
            .map(|v| secret_list(&v))
            .unwrap_or_default();
        s.cio_app_key = get("CIO_APP_KEY").map(Secret::new);
        s.admin_token = get("ADMIN_TOKEN").map(Secret::new);
        s.access = AccessSettings::from_lookup(get)?;
        s.write_back = WriteBackSettings::from_lookup(get)?;
        if let Some(region) = get("CIO_REGION") {
            s.cio_app_base_url = match region.to_ascii_lowercase().as_str() {
                "us" => CIO_US_BASE_URL.to_string(),
                "eu" => CIO_EU_BASE_URL.to_string(),
                _ => {
                    return Err(SettingsError {
                        var: "CIO_REGION",
                        value: region,
                        fix: "use `us` or `eu` (the region of your Customer.io workspace)".into(),
                    })
                }
            };
        }
        if let Some(v) = get("CIO_APP_BASE_URL") {
            s.cio_app_base_url = check_url("CIO_APP_BASE_URL", &v)?;
        }
        let secs = |var: &'static str, default: Duration| -> Result<Duration, SettingsError> {
            match get(var) {
                Some(v) => Ok(Duration::from_secs(parse_num(
                    var,
                    &v,
                    "a number of seconds",
                )?)),
                None => Ok(default),
            }
        };
        let millis = |var: &'static str, default: Duration| -> Result<Duration, SettingsError> {
            match get(var) {
                Some(v) => Ok(Duration::from_millis(parse_num(
                    var,
                    &v,
                    "a number of milliseconds",
                )?)),
                None => Ok(default),
            }
        };
        let retention = |var: &'static str,
                         default: Option<Duration>|
         -> Result<Option<Duration>, SettingsError> {
            match get(var) {
                Some(v) if v.eq_ignore_ascii_case("off") => Ok(None),
                Some(v) => duration(var, Some(v), Duration::ZERO).map(Some),
                None => Ok(default),
            }
        };
        s.shutdown_grace = duration("SHUTDOWN_GRACE", get("SHUTDOWN_GRACE"), s.shutdown_grace)?;
        s.retention_events = retention("RETENTION_EVENTS", s.retention_events)?;
        s.retention_jobs = retention("RETENTION_JOBS", s.retention_jobs)?;
        s.prune_interval = duration("PRUNE_INTERVAL", get("PRUNE_INTERVAL"), s.prune_interval)?;
        s.cio_timestamp_tolerance =
            secs("CIO_TIMESTAMP_TOLERANCE_SECS", s.cio_timestamp_tolerance)?;
        s.cio_cache_ttl = secs("CIO_ATTRIBUTES_CACHE_TTL_SECS", s.cio_cache_ttl)?;
        s.mavera_timeout = secs("MAVERA_TIMEOUT_SECS", s.mavera_timeout)?;
        s.mavera_rate_window = secs("MAVERA_RATE_WINDOW_SECS", s.mavera_rate_window)?;
        s.http_timeout = secs("HTTP_TIMEOUT_SECS", s.http_timeout)?;
        s.dedupe_ttl = secs("DEDUPE_TTL_SECS", s.dedupe_ttl)?;
        s.retry_base = millis("RETRY_BASE_MS", s.retry_base)?;
        s.retry_max = millis("RETRY_MAX_MS", s.retry_max)?;
        s.retry_max_age = secs("RETRY_MAX_AGE_SECS", s.retry_max_age)?;
        if let Some(v) = get("CIO_REQUESTS_PER_SECOND") {
            s.cio_requests_per_second = positive("CIO_REQUESTS_PER_SECOND", &v)?;
        }
        if let Some(v) = get("MAVERA_REQUESTS_PER_MINUTE") {
            s.mavera_requests_per_minute = positive("MAVERA_REQUESTS_PER_MINUTE", &v)?;
        }
        if let Some(v) = get("MAVERA_DAILY_BUDGET") {
            s.mavera_daily_budget = Some(positive("MAVERA_DAILY_BUDGET", &v)?);
        }
        if let Some(v) = get("MAVERA_MAX_CONCURRENT_CHATS") {
            s.mavera_max_concurrent_chats =
                positive::<u32>("MAVERA_MAX_CONCURRENT_CHATS", &v)? as usize;
        }
        if let Some(v) = get("MAX_BODY_BYTES") {
            s.max_body_bytes = positive::<u32>("MAX_BODY_BYTES", &v)? as usize;
        }
        for (var, field) in [
            ("SEGMENT_MAX_BODY_BYTES", &mut s.segment_max_body_bytes),
            ("MAX_BODY_BYTES_IN_FLIGHT", &mut s.max_body_bytes_in_flight),
            ("MAX_JSON_DEPTH", &mut s.max_json_depth),
            ("MAX_ARRAY_ITEMS", &mut s.max_array_items),
            ("MAX_BATCH_EVENTS", &mut s.max_batch_events),
            ("MAX_HEADER_BYTES", &mut s.max_header_bytes),
            ("MAX_CONNECTIONS", &mut s.max_connections),
        ] {
            if let Some(v) = get(var) {
                *field = positive::<u32>(var, &v)? as usize;
            }
        }
        let largest_body = s.segment_max_body_bytes.max(s.max_body_bytes);
        if s.max_body_bytes_in_flight < largest_body {
            return Err(SettingsError {
                var: "MAX_BODY_BYTES_IN_FLIGHT",
                value: s.max_body_bytes_in_flight.to_string(),
                fix: format!("use at least {largest_body} (the larger of SEGMENT_MAX_BODY_BYTES and MAX_BODY_BYTES), or a body of the largest size would never be let in"),
            });
        }
        if let Some(v) = get("REQUEST_TIMEOUT_SECS") {
            s.request_timeout = Duration::from_secs(positive("REQUEST_TIMEOUT_SECS", &v)?);
        }
        if let Some(v) = get("DEDUPE_CAPACITY") {
            s.dedupe_capacity = positive::<u32>("DEDUPE_CAPACITY", &v)? as usize;
        }
        if let Some(v) = get("WORKERS") {
            s.workers = positive::<u32>("WORKERS", &v)? as usize;
        }
        if let Some(v) = get("RETRY_MAX_ATTEMPTS") {
            s.retry_max_attempts = positive("RETRY_MAX_ATTEMPTS", &v)?;
        }
        if let Some(v) = get("DATABASE_URL") {
            if !(v.starts_with("sqlite:")
                || v.starts_with("postgres://")
                || v.starts_with("postgresql://"))
            {
                return Err(SettingsError {
                    var: "DATABASE_URL",
                    value: v,
                    fix: "use sqlite://path/to/file.db (the default is sqlite://data/mavera-triggers.db) or postgres://user:password@host:5432/db".into(),
                });
            }
            s.database_url = v;
        }
        if let Some(v) = get("SQLITE_SYNCHRONOUS") {
            s.sqlite_synchronous_full = match v.to_ascii_lowercase().as_str() {
                "full" => true,
                "normal" => false,
                _ => {
                    return Err(SettingsError {
                        var: "SQLITE_SYNCHRONOUS",
                        value: v,
                        fix: "use `full` (default) or `normal`".into(),
                    })
                }
            };
        }
        if let Some(v) = get("EVENT_LOG") {
            s.log_ignored_events = match v.to_ascii_lowercase().as_str() {
                "all" => true,
                "triggered" => false,
                _ => return Err(SettingsError {
                    var: "EVENT_LOG",
                    value: v,
                    fix: "use `all` (default: every event is listed in the console) or `triggered`"
                        .into(),
                }),
            };
        }
        if let Some(v) = get("EVENT_LOG_MAX_PER_SEC") {
            s.event_log_max_per_sec = positive("EVENT_LOG_MAX_PER_SEC", &v)?;
        }
        s.job_lease = secs("JOB_LEASE_SECS", s.job_lease)?;
        for (var, value) in [
            ("JOB_LEASE_SECS", s.job_lease),
            ("MAVERA_TIMEOUT_SECS", s.mavera_timeout),
            ("HTTP_TIMEOUT_SECS", s.http_timeout),
        ] {
            if value.is_zero() {
                return Err(SettingsError {
                    var,
                    value: "0".into(),
                    fix: "use a number of seconds above 0".into(),
                });
            }
        }
        if let Some(v) = get("DB_MAX_CONNECTIONS") {
            s.db_max_connections = positive("DB_MAX_CONNECTIONS", &v)?;
        }
        s.db_statement_timeout = millis("DB_STATEMENT_TIMEOUT_MS", s.db_statement_timeout)?;
        if let Some(v) = get("MAX_BACKLOG") {
            s.max_backlog = positive("MAX_BACKLOG", &v)?;
        }
        if let Some(v) = get("LOG_FORMAT") {
            s.log_json = match v.as_str() {
                "json" => true,
                "pretty" | "text" => false,
                _ => {
                    return Err(SettingsError {
                        var: "LOG_FORMAT",
                        value: v,
                        fix: "use `pretty` (default) or `json`".into(),
                    })
                }
            };
        }
        Ok(s)
    }

    /// Takes the `[limits]` of the trigger file for each limit whose environment variable is unset (the
    /// default when the file does not set it either): at start, and again at each reload.
    pub fn apply_file_limits(
        &mut self,
        limits: &crate::triggers::config::LimitsSpec,
        env: impl Fn(&str) -> Option<String>,
    ) {
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

fn parse_num<T: std::str::FromStr>(
    var: &'static str,
    value: &str,
    what: &str,
) -> Result<T, SettingsError> {
    value.parse().map_err(|_| SettingsError {
        var,
        value: value.to_string(),
        fix: format!("use {what}"),
    })
}

fn positive<T: std::str::FromStr + PartialOrd + Default>(
    var: &'static str,
    value: &str,
) -> Result<T, SettingsError> {
    let n: T = parse_num(var, value, "a whole number above 0")?;
    if n <= T::default() {
        return Err(SettingsError {
            var,
            value: value.to_string(),
            fix: "use a whole number above 0".into(),
        });
    }
    Ok(n)
}

fn check_url(var: &'static str, value: &str) -> Result<String, SettingsError> {
    match reqwest::Url::parse(value) {
        Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {
            Ok(value.trim_end_matches('/').to_string())
        }
        _ => Err(SettingsError {
            var,
            value: value.to_string(),
            fix: "use an absolute http(s) URL such as https://app.mavera.io/api/v1".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(pairs: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(Mode::Serve, |k| map.get(k).cloned())
    }

    #[test]
    fn access_settings_take_networks_and_durations_and_name_a_bad_one() {
        let s = load(&[
            ("TRUSTED_PROXIES", "127.0.0.1, 10.0.0.0/8"),
            ("SESSION_TTL", "30m"),
        ])
        .unwrap();
        assert_eq!(s.access.trusted_proxies.len(), 2);
        assert_eq!(s.access.session_ttl, Duration::from_secs(1800));
        let err = load(&[("TRUSTED_PROXIES", "10.0.0.0/8, nope")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("TRUSTED_PROXIES") && err.contains("nope"),
            "{err}"
        );
        let err = load(&[("AUTH_LOCKOUT", "soon")]).unwrap_err().to_string();
        assert!(err.contains("AUTH_LOCKOUT") && err.contains("12h"), "{err}");
    }

    #[test]
    fn a_secret_never_prints_its_value() {
        let s = Secret::new("super-secret-value");
        assert!(!format!("{s:?}").contains("super-secret-value"));
        assert!(!format!("{s}").contains("super-secret-value"));
        assert!(format!("{s:?}").contains("sha256:"));
    }

    #[test]
    fn rotating_secrets_are_split_on_commas() {
        let s = load(&[("SEGMENT_SHARED_SECRET", "new, old")]).unwrap();
        assert_eq!(s.segment_secrets.len(), 2);
        assert_eq!(s.segment_secrets[1].expose(), "old");
    }

    #[test]
    fn the_eu_region_picks_the_eu_host_unless_a_base_url_is_set() {
        let s = load(&[("CIO_REGION", "eu")]).unwrap();
        assert_eq!(s.cio_app_base_url, CIO_EU_BASE_URL);
        let s = load(&[
            ("CIO_REGION", "eu"),
            ("CIO_APP_BASE_URL", "http://x.test/v1/"),
        ])
        .unwrap();
        assert_eq!(s.cio_app_base_url, "http://x.test/v1");
    }

    #[test]
    fn a_bad_value_names_the_variable_and_the_fix() {
        let err = load(&[("WEBHOOK_PORT", "eighty")]).unwrap_err().to_string();
        assert!(err.contains("WEBHOOK_PORT"), "{err}");
        assert!(err.contains("port number"), "{err}");
        let err = load(&[("MAVERA_REQUESTS_PER_MINUTE", "0")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("above 0"), "{err}");
    }

    #[test]
    fn grace_and_retention_take_humantime_durations_and_retention_can_be_off() {
        let s = load(&[]).unwrap();
        assert_eq!(s.shutdown_grace, Duration::from_secs(120));
        assert_eq!(s.retention_events, Some(Duration::from_secs(30 * 86_400)));
        assert_eq!(s.retention_jobs, Some(Duration::from_secs(90 * 86_400)));
        assert_eq!(s.prune_interval, Duration::from_secs(600));
        let s = load(&[
            ("SHUTDOWN_GRACE", "3s"),
            ("RETENTION_EVENTS", "12h"),
            ("RETENTION_JOBS", "off"),
            ("PRUNE_INTERVAL", "1m"),
        ])
        .unwrap();
        assert_eq!(s.shutdown_grace, Duration::from_secs(3));
        assert_eq!(s.retention_events, Some(Duration::from_secs(12 * 3600)));
        assert_eq!(s.retention_jobs, None);
        assert_eq!(s.prune_interval, Duration::from_secs(60));
        let err = load(&[("RETENTION_EVENTS", "a month")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("RETENTION_EVENTS") && err.contains("30d"),
            "{err}"
        );
    }
}
