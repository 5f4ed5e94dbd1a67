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
            s.server.bind_addr = v.parse().map_err(|_| SettingsError {
                var: "BIND_ADDR",
                value: v.clone(),
                fix: "use an IP address such as 0.0.0.0 or 127.0.0.1".into(),
            })?;
        }
        if let Some(v) = get("WEBHOOK_PORT") {
            s.server.port = parse_num("WEBHOOK_PORT", &v, "a port number such as 8080")?;
        }
        if let Some(v) = get("MAVERA_TRIGGERS_CONFIG") {
            s.config_path = PathBuf::from(v);
        }
        s.mavera.api_key = get("MAVERA_API_KEY").map(Secret::new);
        if let Some(v) = get("MAVERA_BASE_URL") {
            s.mavera.base_url = check_url("MAVERA_BASE_URL", &v)?;
        }
        s.segment.secrets = get("SEGMENT_SHARED_SECRET")
            .map(|v| secret_list(&v))
            .unwrap_or_default();
        s.customerio.webhook_secrets = get("CIO_WEBHOOK_SECRET")
            .map(|v| secret_list(&v))
            .unwrap_or_default();
        s.customerio.app_key = get("CIO_APP_KEY").map(Secret::new);
        s.access = AccessSettings::from_lookup(get)?;
        s.write_back = WriteBackSettings::from_lookup(get)?;
        if let Some(region) = get("CIO_REGION") {
            s.customerio.app_base_url = choice(
                "CIO_REGION",
                region,
                &[("us", CIO_US_BASE_URL), ("eu", CIO_EU_BASE_URL)],
                "use `us` or `eu` (the region of your Customer.io workspace)",
            )?
            .to_string();
        }
        if let Some(v) = get("CIO_APP_BASE_URL") {
            s.customerio.app_base_url = check_url("CIO_APP_BASE_URL", &v)?;
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
        s.server.shutdown_grace = duration(
            "SHUTDOWN_GRACE",
            get("SHUTDOWN_GRACE"),
            s.server.shutdown_grace,
        )?;
        s.store.retention_events = retention("RETENTION_EVENTS", s.store.retention_events)?;
        s.store.retention_jobs = retention("RETENTION_JOBS", s.store.retention_jobs)?;
        s.store.prune_interval = duration(
            "PRUNE_INTERVAL",
            get("PRUNE_INTERVAL"),
            s.store.prune_interval,
        )?;
        s.customerio.timestamp_tolerance = secs(
            "CIO_TIMESTAMP_TOLERANCE_SECS",
            s.customerio.timestamp_tolerance,
        )?;
        s.customerio.cache_ttl = secs("CIO_ATTRIBUTES_CACHE_TTL_SECS", s.customerio.cache_ttl)?;
        s.mavera.timeout = secs("MAVERA_TIMEOUT_SECS", s.mavera.timeout)?;
        s.mavera.rate_window = secs("MAVERA_RATE_WINDOW_SECS", s.mavera.rate_window)?;
        s.jobs.http_timeout = secs("HTTP_TIMEOUT_SECS", s.jobs.http_timeout)?;
        s.intake.dedupe_ttl = secs("DEDUPE_TTL_SECS", s.intake.dedupe_ttl)?;
        s.jobs.retry_base = millis("RETRY_BASE_MS", s.jobs.retry_base)?;
        s.jobs.retry_max = millis("RETRY_MAX_MS", s.jobs.retry_max)?;
        s.jobs.retry_max_age = secs("RETRY_MAX_AGE_SECS", s.jobs.retry_max_age)?;
        if let Some(v) = get("CIO_REQUESTS_PER_SECOND") {
            s.customerio.requests_per_second = positive("CIO_REQUESTS_PER_SECOND", &v)?;
        }
        if let Some(v) = get("MAVERA_REQUESTS_PER_MINUTE") {
            s.mavera.requests_per_minute = positive("MAVERA_REQUESTS_PER_MINUTE", &v)?;
        }
        if let Some(v) = get("MAVERA_DAILY_BUDGET") {
            s.mavera.daily_budget = Some(positive("MAVERA_DAILY_BUDGET", &v)?);
        }
        if let Some(v) = get("MAVERA_MAX_CONCURRENT_CHATS") {
            s.mavera.max_concurrent_chats =
                positive::<u32>("MAVERA_MAX_CONCURRENT_CHATS", &v)? as usize;
        }
        if let Some(v) = get("MAX_BODY_BYTES") {
            s.intake.max_body_bytes = positive::<u32>("MAX_BODY_BYTES", &v)? as usize;
        }
        for (var, field) in [
            ("SEGMENT_MAX_BODY_BYTES", &mut s.segment.max_body_bytes),
            (
                "MAX_BODY_BYTES_IN_FLIGHT",
                &mut s.intake.max_body_bytes_in_flight,
            ),
            ("MAX_JSON_DEPTH", &mut s.intake.max_json_depth),
            ("MAX_ARRAY_ITEMS", &mut s.intake.max_array_items),
            ("MAX_BATCH_EVENTS", &mut s.intake.max_batch_events),
            ("MAX_HEADER_BYTES", &mut s.server.max_header_bytes),
            ("MAX_CONNECTIONS", &mut s.server.max_connections),
        ] {
            if let Some(v) = get(var) {
                *field = positive::<u32>(var, &v)? as usize;
            }
        }
        let largest_body = s.segment.max_body_bytes.max(s.intake.max_body_bytes);
        if s.intake.max_body_bytes_in_flight < largest_body {
            return Err(SettingsError {
                var: "MAX_BODY_BYTES_IN_FLIGHT",
                value: s.intake.max_body_bytes_in_flight.to_string(),
                fix: format!("use at least {largest_body} (the larger of SEGMENT_MAX_BODY_BYTES and MAX_BODY_BYTES), or a body of the largest size would never be let in"),
            });
        }
        if let Some(v) = get("REQUEST_TIMEOUT_SECS") {
            s.server.request_timeout = Duration::from_secs(positive("REQUEST_TIMEOUT_SECS", &v)?);
        }
        if let Some(v) = get("DEDUPE_CAPACITY") {
            s.intake.dedupe_capacity = positive::<u32>("DEDUPE_CAPACITY", &v)? as usize;
        }
        if let Some(v) = get("WORKERS") {
            s.jobs.workers = positive::<u32>("WORKERS", &v)? as usize;
        }
        if let Some(v) = get("RETRY_MAX_ATTEMPTS") {
            s.jobs.retry_max_attempts = positive("RETRY_MAX_ATTEMPTS", &v)?;
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
            s.store.database_url = v;
        }
        if let Some(v) = get("EVENT_LOG_MAX_PER_SEC") {
            s.store.event_log_max_per_sec = positive("EVENT_LOG_MAX_PER_SEC", &v)?;
        }
        s.jobs.lease = secs("JOB_LEASE_SECS", s.jobs.lease)?;
        for (var, value) in [
            ("JOB_LEASE_SECS", s.jobs.lease),
            ("MAVERA_TIMEOUT_SECS", s.mavera.timeout),
            ("HTTP_TIMEOUT_SECS", s.jobs.http_timeout),
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
            s.store.max_connections = positive("DB_MAX_CONNECTIONS", &v)?;
        }
        s.store.statement_timeout = millis("DB_STATEMENT_TIMEOUT_MS", s.store.statement_timeout)?;
        if let Some(v) = get("MAX_BACKLOG") {
            s.intake.max_backlog = positive("MAX_BACKLOG", &v)?;
        }
        // The settings that pick one of two behaviours by name.
        for (var, field, choices, fix) in [
            (
                "SQLITE_SYNCHRONOUS",
                &mut s.store.sqlite_synchronous_full,
                &[("full", true), ("normal", false)][..],
                "use `full` (default) or `normal`",
            ),
            (
                "EVENT_LOG",
                &mut s.store.log_ignored_events,
                &[("all", true), ("triggered", false)],
                "use `all` (default: every event is listed in the console) or `triggered`",
            ),
            (
                "LOG_FORMAT",
                &mut s.server.log_json,
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
