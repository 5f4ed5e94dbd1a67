//! Settings read from a map: defaults, errors that name the variable and the fix.

use super::*;
use std::collections::HashMap;
use std::time::Duration;

fn load(pairs: &[(&str, &str)]) -> Result<Settings, SettingsError> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Settings::from_lookup(Mode::Serve, |k| map.get(k).cloned())
}

/// Asserts that `pairs` are refused with an error naming `var` and saying `shown` (the value or the fix).
fn refuses(pairs: &[(&str, &str)], var: &str, shown: &str) {
    let err = load(pairs).unwrap_err().to_string();
    assert!(err.contains(var) && err.contains(shown), "{err}");
}

#[test]
fn access_settings_take_the_admin_token_networks_and_durations_and_name_a_bad_one() {
    let s = load(&[
        ("TRUSTED_PROXIES", "127.0.0.1, 10.0.0.0/8"),
        ("SESSION_TTL", "30m"),
    ])
    .unwrap();
    assert_eq!(s.access.trusted_proxies.len(), 2);
    assert_eq!(s.access.session_ttl, Duration::from_secs(1800));
    assert!(s.access.admin_token.is_none());
    let s = load(&[("ADMIN_TOKEN", "a-long-admin-token")]).unwrap();
    let token = s
        .access
        .admin_token
        .expect("ADMIN_TOKEN is read into the access section");
    assert!(token.expose() == "a-long-admin-token");
    refuses(
        &[("TRUSTED_PROXIES", "10.0.0.0/8, nope")],
        "TRUSTED_PROXIES",
        "nope",
    );
    refuses(&[("AUTH_LOCKOUT", "soon")], "AUTH_LOCKOUT", "12h");
}

#[test]
fn rotating_secrets_are_split_on_commas() {
    let s = load(&[("SEGMENT_SHARED_SECRET", "new, old")]).unwrap();
    assert_eq!(s.segment.secrets.len(), 2);
    assert_eq!(s.segment.secrets[1].expose(), "old");
}

#[test]
fn the_eu_region_picks_the_eu_host_unless_a_base_url_is_set() {
    let s = load(&[("CIO_REGION", "eu")]).unwrap();
    assert_eq!(s.customerio.app_base_url, CIO_EU_BASE_URL);
    let s = load(&[
        ("CIO_REGION", "eu"),
        ("CIO_APP_BASE_URL", "http://x.test/v1/"),
    ])
    .unwrap();
    assert_eq!(s.customerio.app_base_url, "http://x.test/v1");
}

#[test]
fn a_bad_value_names_the_variable_and_the_fix() {
    refuses(&[("WEBHOOK_PORT", "eighty")], "WEBHOOK_PORT", "port number");
    refuses(
        &[("MAVERA_REQUESTS_PER_MINUTE", "0")],
        "MAVERA_REQUESTS_PER_MINUTE",
        "above 0",
    );
}

#[test]
fn an_enumerated_setting_takes_its_names_in_any_case_and_lists_them_when_wrong() {
    let s = load(&[
        ("LOG_FORMAT", "JSON"),
        ("SQLITE_SYNCHRONOUS", "Normal"),
        ("EVENT_LOG", "triggered"),
        ("CIO_REGION", "EU"),
    ])
    .unwrap();
    assert!(s.server.log_json && !s.store.sqlite_synchronous_full && !s.store.log_ignored_events);
    assert_eq!(s.customerio.app_base_url, CIO_EU_BASE_URL);
    for (var, value, fix) in [
        ("LOG_FORMAT", "xml", "`pretty` (default) or `json`"),
        ("EVENT_LOG", "some", "`all` (default"),
        ("SQLITE_SYNCHRONOUS", "off", "`normal`"),
        ("CIO_REGION", "mars", "use `us` or `eu`"),
    ] {
        refuses(&[(var, value)], var, fix);
    }
}

#[test]
fn grace_and_retention_take_humantime_durations_and_retention_can_be_off() {
    let s = load(&[]).unwrap();
    assert_eq!(s.server.shutdown_grace, Duration::from_secs(120));
    assert_eq!(
        s.store.retention_events,
        Some(Duration::from_secs(30 * 86_400))
    );
    assert_eq!(
        s.store.retention_jobs,
        Some(Duration::from_secs(90 * 86_400))
    );
    assert_eq!(s.store.prune_interval, Duration::from_secs(600));
    let s = load(&[
        ("SHUTDOWN_GRACE", "3s"),
        ("RETENTION_EVENTS", "12h"),
        ("RETENTION_JOBS", "off"),
        ("PRUNE_INTERVAL", "1m"),
    ])
    .unwrap();
    assert_eq!(s.server.shutdown_grace, Duration::from_secs(3));
    assert_eq!(
        s.store.retention_events,
        Some(Duration::from_secs(12 * 3600))
    );
    assert_eq!(s.store.retention_jobs, None);
    assert_eq!(s.store.prune_interval, Duration::from_secs(60));
    refuses(
        &[("RETENTION_EVENTS", "a month")],
        "RETENTION_EVENTS",
        "30d",
    );
}
