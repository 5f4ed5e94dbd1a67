//! The Mavera API: `POST /personas` and `POST /mave/chat`, Bearer auth, typed errors, client-side limits.
//!
//! Without a key (`dev` mode) the client runs dry: each request is printed in full, nothing is sent, and the
//! answer is a clearly marked placeholder.

use std::{
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{retry_after, UpstreamError};
use crate::{
    config::Secret,
    metrics::Metrics,
    ratelimit::SharedLimits,
    ratelimit::{ChatPlaces, LiveLimits, MaveraLimits, RequestWindow, RATE_BUCKET},
};

const SERVICE: &str = "Mavera";

#[derive(Clone)]
pub struct MaveraClient {
    http: reqwest::Client,
    base_url: String,
    /// `None`: dry run.
    key: Option<Secret>,
    chat_timeout: Duration,
    timeout: Duration,
    limits: Arc<MaveraLimits>,
    metrics: Arc<Metrics>,
}

/// Mavera's error body: `{"error":{"message","type","code","param"}}`.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Debug, Deserialize)]
struct ErrorDetail {
    message: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    code: Option<String>,
}

/// A created (or updated) persona, as far as we use it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Persona {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub credits_charged: Option<f64>,
}

/// `GET /personas`: `{object: "list", data: [...]}`.
#[derive(Debug, Deserialize)]
struct PersonaList {
    #[serde(default)]
    data: Vec<ListedPersona>,
}

#[derive(Debug, Deserialize)]
struct ListedPersona {
    id: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    is_custom: Option<bool>,
    /// Unix seconds on persona objects (PROTOCOLS.md §4.1).
    #[serde(default)]
    created_at: Option<i64>,
}

/// One source Mave cites.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Citation {
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub domain: Option<String>,
}

/// Mave's answer: the research brief.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Brief {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub thread_id: Option<String>,
    #[serde(default)]
    pub content: String,
    #[serde(default)]
    pub sources: Vec<Citation>,
    #[serde(default)]
    pub usage: Option<Usage>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Usage {
    #[serde(default)]
    pub credits_used: Option<f64>,
}

impl MaveraClient {
    pub fn new(
        http: reqwest::Client,
        base_url: &str,
        key: Option<Secret>,
        settings: &crate::config::Settings,
        metrics: Arc<Metrics>,
        shared: Option<Arc<dyn SharedLimits>>,
        live: Arc<LiveLimits>,
    ) -> Self {
        let limits = MaveraLimits {
            requests: RequestWindow::new(
                shared.clone(),
                RATE_BUCKET,
                live.mavera_per_window.load(Ordering::Relaxed),
                settings.mavera.rate_window,
                live.clock.clone(),
            ),
            chats: ChatPlaces::new(shared, live.mavera_chats.load(Ordering::Relaxed)),
            live,
        };
        Self {
            metrics,
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
            key,
            chat_timeout: settings.mavera.timeout,
            timeout: settings.jobs.http_timeout,
            limits: Arc::new(limits),
        }
    }

    pub fn is_dry_run(&self) -> bool {
        self.key.is_none()
    }

    /// `POST /personas`.
    pub async fn create_persona(&self, body: &Value) -> Result<Persona, UpstreamError> {
        if self.key.is_none() {
            self.print_dry_run("POST", "/personas", body);
            return Ok(Persona {
                id: "dry-run".into(),
                name: body["name"].as_str().map(str::to_string),
                credits_charged: None,
            });
        }
        self.send(
            "/personas",
            self.http.post(self.url("/personas")).json(body),
            self.timeout,
        )
        .await
    }

    /// `PATCH /personas/{id}`: the persona this server created earlier for the same (trigger, user).
    pub async fn update_persona(&self, id: &str, body: &Value) -> Result<Persona, UpstreamError> {
        let path = format!(
            "/personas/{}",
            percent_encoding::utf8_percent_encode(id, super::PATH_SEGMENT)
        );
        if self.key.is_none() {
            self.print_dry_run("PATCH", &path, body);
            return Ok(Persona {
                id: id.to_string(),
                name: body["name"].as_str().map(str::to_string),
                credits_charged: None,
            });
        }
        self.send(
            "/personas/{id}",
            self.http.patch(self.url(&path)).json(body),
            self.timeout,
        )
        .await
    }

    /// A custom persona named exactly `name` created at or after `since_unix` (`GET /personas`, searched by
    /// name): how a create that was in flight when the process died is found instead of sent twice.
    pub async fn find_persona(
        &self,
        name: &str,
        since_unix: i64,
    ) -> Result<Option<Persona>, UpstreamError> {
        if self.key.is_none() {
            return Ok(None);
        }
        let list: PersonaList = self
            .send(
                "/personas?search",
                self.http
                    .get(self.url("/personas"))
                    .query(&[("search", name), ("limit", "100")]),
                self.timeout,
            )
            .await?;
        Ok(list
            .data
            .into_iter()
            .find(|p| {
                p.name.as_deref() == Some(name)
                    && p.is_custom != Some(false)
                    && p.created_at.is_none_or(|c| c >= since_unix)
            })
            .map(|p| Persona {
                id: p.id,
                name: p.name,
                credits_charged: None,
            }))
    }

    /// `POST /mave/chat`, at most `MAVERA_MAX_CONCURRENT_CHATS` at once.
    pub async fn chat(&self, message: &str) -> Result<Brief, UpstreamError> {
        let body = json!({ "message": message });
        if self.key.is_none() {
            self.print_dry_run("POST", "/mave/chat", &body);
            return Ok(Brief {
                id: None,
                thread_id: None,
                content: "(dry run: no MAVERA_API_KEY, so Mave was not asked)".into(),
                sources: Vec::new(),
                usage: None,
            });
        }
        let _slot = self.limits.chat().await.map_err(limiter_down)?;
        self.send(
            "/mave/chat",
            self.http.post(self.url("/mave/chat")).json(&body),
            self.chat_timeout,
        )
        .await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    fn print_dry_run(&self, method: &str, path: &str, body: &Value) {
        let pretty = serde_json::to_string_pretty(body).unwrap_or_default();
        tracing::info!(
            target: "mavera_triggers::dry_run",
            "DRY RUN (no MAVERA_API_KEY): would send\n{method} {}\nAuthorization: Bearer <MAVERA_API_KEY>\nContent-Type: application/json\n\n{pretty}",
            self.url(path)
        );
    }

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        endpoint: &str,
        request: reqwest::RequestBuilder,
        timeout: Duration,
    ) -> Result<T, UpstreamError> {
        let key = self.key.as_ref().expect("checked by the caller");
        self.limits.request().await.map_err(limiter_down)?;
        let request = request.bearer_auth(key.expose()).timeout(timeout);
        let response = super::send_counted(
            &self.metrics,
            (SERVICE, "mavera"),
            (&self.base_url, endpoint),
            request,
        )
        .await?;
        let shown = || super::shown_url(&self.base_url, endpoint);
        let status = response.status();
        if status.is_success() {
            return response
                .json::<T>()
                .await
                .map_err(|e| UpstreamError::from_reqwest(SERVICE, shown(), e));
        }
        let wait = retry_after(response.headers());
        let text = response.text().await.unwrap_or_default();
        let text = super::redacted_detail(&text, self.key.as_ref());
        let detail = match serde_json::from_str::<ErrorBody>(&text) {
            Ok(ErrorBody { error }) => format!(
                "{} ({}{})",
                error.message.unwrap_or_else(|| "no message".into()),
                error.kind.unwrap_or_else(|| "error".into()),
                error.code.map(|c| format!("/{c}")).unwrap_or_default()
            ),
            Err(_) => text,
        };
        Err(UpstreamError::Status {
            service: SERVICE,
            status: status.as_u16(),
            detail,
            retry_after: wait,
        })
    }
}

/// The shared limiter's store did not answer: like a connection error, the job retries later.
fn limiter_down(e: crate::ratelimit::SharedLimitsDown) -> UpstreamError {
    super::limiter_down(SERVICE, e)
}
