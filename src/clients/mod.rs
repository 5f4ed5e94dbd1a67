//! HTTP clients for the remote APIs, all sharing one `reqwest::Client` built at start-up.

pub mod customerio;
pub mod mavera;

use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};

/// Everything but RFC 3986's unreserved characters is escaped, so an id is always one path segment:
/// `/`, `?`, `#`, `%` and spaces cannot change the URL's path or query.
pub const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The one HTTP client: rustls, connection pooling, a connect timeout and our User-Agent. Per-request
/// timeouts are set by each call (a Mave chat may take 90 s; an attribute look-up should not).
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent(concat!("mavera-triggers/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(90))
        .build()
        .expect("the TLS backend (rustls) is compiled in")
}

/// A failed call to a remote API, classified for the retry policy.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("{service} answered {status}: {detail}")]
    Status {
        service: &'static str,
        status: u16,
        detail: String,
        retry_after: Option<Duration>,
    },
    #[error("{service} did not answer in time")]
    Timeout { service: &'static str },
    #[error("cannot reach {service}: {detail}")]
    Connect {
        service: &'static str,
        detail: String,
    },
    #[error("{service}'s answer could not be read: {detail}")]
    Decode {
        service: &'static str,
        detail: String,
    },
}

impl UpstreamError {
    /// 408, 429, 5xx, timeouts and connection errors are worth another try; other 4xx are final. An
    /// answer that cannot be read (most often cut off in transit) is retried too: a persona create is then
    /// looked up by name before it is sent again, and a brief that was paid for is better asked twice than lost.
    pub fn is_transient(&self) -> bool {
        match self {
            UpstreamError::Status { status, .. } => {
                crate::jobs::retry::is_retryable_status(*status)
            }
            UpstreamError::Timeout { .. }
            | UpstreamError::Connect { .. }
            | UpstreamError::Decode { .. } => true,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            UpstreamError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    pub(crate) fn from_reqwest(service: &'static str, e: reqwest::Error) -> Self {
        if e.is_timeout() {
            UpstreamError::Timeout { service }
        } else if e.is_decode() {
            // reqwest's message is only "error decoding response body": the cause says what was wrong.
            let cause = std::error::Error::source(&e)
                .map(|c| format!(": {c}"))
                .unwrap_or_default();
            UpstreamError::Decode {
                service,
                detail: format!("{e}{cause}"),
            }
        } else {
            // Without the URL: a query string may carry an email address.
            UpstreamError::Connect {
                service,
                detail: e.without_url().to_string(),
            }
        }
    }
}

/// An upstream error body, cut to 300 characters, with our own key taken out: a server that echoes the
/// `Authorization` header it received must not put the key into our logs or job records.
pub fn redacted_detail(text: &str, key: Option<&crate::config::Secret>) -> String {
    // Redact first, then cut: a cut through the key would leave a fragment no replace could find.
    let text = match key.map(|k| k.expose()).filter(|k| !k.is_empty()) {
        Some(key) => text.replace(key, "<redacted>"),
        None => text.to_string(),
    };
    text.chars().take(300).collect()
}

/// The status label of an attempt for metrics: the HTTP status, or `timeout` / `connect`.
pub fn outcome_label(result: &Result<reqwest::Response, reqwest::Error>) -> String {
    match result {
        Ok(r) => r.status().as_u16().to_string(),
        Err(e) if e.is_timeout() => "timeout".into(),
        Err(_) => "connect".into(),
    }
}

/// `Retry-After` in seconds or as an HTTP date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

/// A shared (Postgres) rate limiter that cannot answer: the call is not made, and the job retries.
pub(crate) fn limiter_down(service: &'static str, e: crate::jobs::StoreError) -> UpstreamError {
    UpstreamError::Connect {
        service,
        detail: format!("the shared rate limiter is unavailable: {e}"),
    }
}
