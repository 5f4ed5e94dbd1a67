//! The settings of the write-back sinks and of the console's and admin API's doors.

use std::{net::IpAddr, time::Duration};

use super::{
    parse::{check_url, duration, positive},
    SettingsError,
};
use crate::secret::Secret;

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
    pub(super) fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
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
