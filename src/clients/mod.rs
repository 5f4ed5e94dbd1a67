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
    #[error("{service}{} did not answer in time", at(.url))]
    Timeout {
        service: &'static str,
        /// Where the call went (`shown_url`), when it was sent.
        url: Option<String>,
    },
    #[error("cannot reach {service}{}: {detail}", at(.url))]
    Connect {
        service: &'static str,
        /// Where the call went (`shown_url`), when it was sent.
        url: Option<String>,
        /// The cause chain: refused, DNS, TLS, reset.
        detail: String,
    },
    #[error("{service}'s answer could not be read: {detail}")]
    Decode {
        service: &'static str,
        detail: String,
    },
}

/// 408, 429 and 5xx are worth another try; every other 4xx (400, 401, 402 credits exhausted, 403, 404) is final.
pub fn is_retryable_status(status: u16) -> bool {
    status == 408 || status == 429 || (500..=599).contains(&status)
}

impl UpstreamError {
    /// 408, 429, 5xx, timeouts and connection errors are worth another try; other 4xx are final. An
    /// answer that cannot be read (most often cut off in transit) is retried too: a persona create is then
    /// looked up by name before it is sent again, and a brief that was paid for is better asked twice than lost.
    pub fn is_transient(&self) -> bool {
        match self {
            UpstreamError::Status { status, .. } => is_retryable_status(*status),
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

    /// Classifies a failed call to `url` (already made safe to show by `shown_url`).
    pub(crate) fn from_reqwest(service: &'static str, url: String, e: reqwest::Error) -> Self {
        if e.is_timeout() {
            UpstreamError::Timeout {
                service,
                url: Some(url),
            }
        } else if e.is_decode() {
            // reqwest's message is only "error decoding response body": the causes say what was wrong.
            UpstreamError::Decode {
                service,
                detail: format!("{url}: {}", cause_chain(&e.without_url())),
            }
        } else {
            // reqwest's own message carries the full URL, whose query may hold an email address: `url` is
            // the safe form, and the causes say why (refused, DNS, TLS).
            UpstreamError::Connect {
                service,
                url: Some(url),
                detail: cause_chain(&e.without_url()),
            }
        }
    }
}

fn at(url: &Option<String>) -> String {
    url.as_ref().map(|u| format!(" at {u}")).unwrap_or_default()
}

/// A URL as an error may show it: scheme, host, port and base path, then `path` (a template such as
/// `/customers/{id}/attributes`, so no customer id); never user info or a query, which may hold secrets or
/// personal data. An empty `path` shows the origin alone plus `/…` (a Slack webhook's path is its secret).
pub fn shown_url(base: &str, path: &str) -> String {
    let Ok(url) = reqwest::Url::parse(base) else {
        return "an invalid URL".into();
    };
    let origin = url.origin().ascii_serialization();
    if path.is_empty() {
        return format!("{origin}/…");
    }
    let path = path.split('?').next().unwrap_or_default();
    format!("{origin}{}{path}", url.path().trim_end_matches('/'))
}

/// An error and its causes, `outer: inner: innermost`, each message once: reqwest's "error sending request"
/// alone hides whether the connection was refused, the name did not resolve or TLS failed.
pub fn cause_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(error);
    while let Some(e) = next {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
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
/// Sends one request, counts it in the upstream metrics as `<metric>:<endpoint>`, and turns a transport
/// failure into an [`UpstreamError`] naming the endpoint, never the full URL.
pub(crate) async fn send_counted(
    metrics: &crate::metrics::Metrics,
    (service, metric): (&'static str, &str),
    (base_url, endpoint): (&str, &str),
    request: reqwest::RequestBuilder,
) -> Result<reqwest::Response, UpstreamError> {
    let started = std::time::Instant::now();
    let result = request.send().await;
    metrics.upstream(
        &format!("{metric}:{endpoint}"),
        &outcome_label(&result),
        started.elapsed().as_secs_f64(),
    );
    result.map_err(|e| UpstreamError::from_reqwest(service, shown_url(base_url, endpoint), e))
}

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
pub(crate) fn limiter_down(
    service: &'static str,
    e: crate::ratelimit::SharedLimitsDown,
) -> UpstreamError {
    UpstreamError::Connect {
        service,
        url: None,
        detail: format!("the shared rate limiter is unavailable: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    #[test]
    fn only_timeouts_rate_limits_and_server_errors_are_retried() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(is_retryable_status(s), "{s}");
        }
        for s in [400, 401, 402, 403, 404, 409, 422] {
            assert!(!is_retryable_status(s), "{s}");
        }
    }

    use super::*;
    use crate::config::{Mode, Secret, Settings};
    use crate::metrics::Metrics;
    use crate::ratelimit::LiveLimits;

    /// A port on 127.0.0.1 that nothing listens on (bound, then closed).
    fn closed_port() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    }

    fn settings() -> Settings {
        let mut s = Settings::defaults(Mode::Serve);
        s.jobs.http_timeout = Duration::from_secs(5);
        s
    }

    #[tokio::test]
    async fn a_refused_mavera_call_names_the_url_and_the_cause_but_not_the_query_or_credentials() {
        let port = closed_port();
        let client = mavera::MaveraClient::new(
            http_client(),
            &format!("http://user:hunter2@127.0.0.1:{port}/api/v1"),
            Some(Secret::new("mvra_live_key")),
            &settings(),
            Arc::new(Metrics::default()),
            None,
            Arc::new(LiveLimits::new(60, 10, 10)),
        );
        let error = client
            .find_persona("Trial: jane@acme.example", 0)
            .await
            .unwrap_err();
        let shown = error.to_string();
        assert!(
            shown.starts_with(&format!(
                "cannot reach Mavera at http://127.0.0.1:{port}/api/v1/personas: "
            )),
            "{shown}"
        );
        assert!(shown.contains("Connection refused"), "{shown}");
        for hidden in ["jane", "search", "hunter2", "user:", "mvra_live_key"] {
            assert!(!shown.contains(hidden), "{hidden} in {shown}");
        }
        assert!(error.is_transient());
    }

    #[tokio::test]
    async fn a_refused_customerio_look_up_names_the_endpoint_not_the_customer() {
        let port = closed_port();
        let client = customerio::CustomerIoClient::new(
            http_client(),
            &format!("http://127.0.0.1:{port}/v1"),
            Some(Secret::new("cio-app-key")),
            &settings(),
            Arc::new(Metrics::default()),
            None,
            Arc::new(LiveLimits::new(60, 10, 10)),
        );
        let shown = client
            .attributes("jane@acme.example", "email")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            shown.starts_with(&format!(
                "cannot reach Customer.io at http://127.0.0.1:{port}/v1/customers/{{id}}/attributes: "
            )),
            "{shown}"
        );
        assert!(shown.contains("Connection refused"), "{shown}");
        assert!(
            !shown.contains("jane") && !shown.contains("id_type"),
            "{shown}"
        );
    }

    /// A TCP server on 127.0.0.1 that writes `greeting` to each connection and then says nothing more.
    async fn mute_server(greeting: &'static [u8]) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((mut socket, _)) = listener.accept().await {
                use tokio::io::AsyncWriteExt;
                let _ = socket.write_all(greeting).await;
                held.push(socket);
            }
        });
        port
    }

    #[tokio::test]
    async fn a_tls_failure_names_the_origin_only_and_says_tls() {
        let port = mute_server(b"not tls\r\n").await;
        let url = format!("https://127.0.0.1:{port}/services/T0/B0/secret");
        let error = http_client().get(&url).send().await.unwrap_err();
        let shown = UpstreamError::from_reqwest("Slack", shown_url(&url, ""), error).to_string();
        assert!(
            shown.starts_with(&format!(
                "cannot reach Slack at https://127.0.0.1:{port}/…: "
            )),
            "{shown}"
        );
        assert!(!shown.contains("secret"), "{shown}");
        assert!(
            shown.contains("InvalidContentType") || shown.contains("corrupt"),
            "{shown}"
        );
    }

    #[tokio::test]
    async fn a_timeout_names_the_url() {
        let port = mute_server(b"").await;
        let error = http_client()
            .get(format!("http://127.0.0.1:{port}/mave/chat"))
            .timeout(Duration::from_millis(200))
            .send()
            .await
            .unwrap_err();
        let base = format!("http://127.0.0.1:{port}");
        let shown = UpstreamError::from_reqwest("Mavera", shown_url(&base, "/mave/chat"), error);
        assert_eq!(
            shown.to_string(),
            format!("Mavera at http://127.0.0.1:{port}/mave/chat did not answer in time")
        );
    }

    #[test]
    fn a_shown_url_drops_user_info_and_query() {
        assert_eq!(
            shown_url("https://u:p@app.mavera.io/api/v1/?k=v", "/personas?search"),
            "https://app.mavera.io/api/v1/personas"
        );
        assert_eq!(
            shown_url("https://hooks.slack.com/services/T0/B0/XYZ", ""),
            "https://hooks.slack.com/…"
        );
        assert_eq!(shown_url("not a url", "/x"), "an invalid URL");
    }
}
