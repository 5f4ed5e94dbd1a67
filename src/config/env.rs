//! Reading the settings from the environment: every variable, its parser, and the error that names the fix.

use std::{path::PathBuf, time::Duration};

use super::{
    parse::{check_url, choice, duration, parse_num, positive},
    AccessSettings, Mode, Settings, SettingsError, WriteBackSettings, CIO_EU_BASE_URL,
    CIO_US_BASE_URL,
};
use crate::secret::{secret_list, Secret};

impl Settings {
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
            s.cio_app_base_url = choice(
                "CIO_REGION",
                region,
                &[("us", CIO_US_BASE_URL), ("eu", CIO_EU_BASE_URL)],
                "use `us` or `eu` (the region of your Customer.io workspace)",
            )?
            .to_string();
        }
        if let Some(v) = get("CIO_APP_BASE_URL") {
            s.cio_app_base_url = check_url("CIO_APP_BASE_URL", &v)?;
        }
        // A whole number of `unit`s (seconds or milliseconds), or `default` when unset.
        let count = |var: &'static str,
                     default: Duration,
                     unit: fn(u64) -> Duration,
                     what: &str|
         -> Result<Duration, SettingsError> {
            get(var).map_or(Ok(default), |v| Ok(unit(parse_num(var, &v, what)?)))
        };
        let secs = |var, default| count(var, default, Duration::from_secs, "a number of seconds");
        let millis = |var, default| {
            count(
                var,
                default,
                Duration::from_millis,
                "a number of milliseconds",
            )
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
        // The settings that pick one of two behaviours by name.
        for (var, field, choices, fix) in [
            (
                "SQLITE_SYNCHRONOUS",
                &mut s.sqlite_synchronous_full,
                &[("full", true), ("normal", false)][..],
                "use `full` (default) or `normal`",
            ),
            (
                "EVENT_LOG",
                &mut s.log_ignored_events,
                &[("all", true), ("triggered", false)],
                "use `all` (default: every event is listed in the console) or `triggered`",
            ),
            (
                "LOG_FORMAT",
                &mut s.log_json,
                &[("json", true), ("pretty", false), ("text", false)],
                "use `pretty` (default) or `json`",
            ),
        ] {
            if let Some(v) = get(var) {
                *field = choice(var, v, choices, fix)?;
            }
        }
        Ok(s)
    }
}
