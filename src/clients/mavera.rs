//! The Mavera API: `POST /personas` and `POST /mave/chat`, Bearer auth, typed errors, client-side limits.
//!
//! Without a key (`dev` mode) the client runs dry: each request is printed in full, nothing is sent, and the
//! answer is a clearly marked placeholder.

use std::{sync::Arc, time::Duration};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use super::{retry_after, UpstreamError};
use crate::{config::Secret, ratelimit::SlidingWindow};

const SERVICE: &str = "Mavera";

#[derive(Clone)]
pub struct MaveraClient {
    http: reqwest::Client,
    base_url: String,
    /// `None`: dry run.
    key: Option<Secret>,
    chat_timeout: Duration,
    timeout: Duration,
    requests: Arc<SlidingWindow>,
    chat_slots: Arc<Semaphore>,
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
    ) -> Self {
        Self {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
            key,
            chat_timeout: settings.mavera_timeout,
            timeout: settings.http_timeout,
            requests: Arc::new(SlidingWindow::per_minute(
                settings.mavera_requests_per_minute,
            )),
            chat_slots: Arc::new(Semaphore::new(settings.mavera_max_concurrent_chats)),
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
            self.http.post(self.url("/personas")).json(body),
            self.timeout,
        )
        .await
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
        let _slot = self
            .chat_slots
            .acquire()
            .await
            .expect("the chat semaphore is never closed");
        self.send(
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
        request: reqwest::RequestBuilder,
        timeout: Duration,
    ) -> Result<T, UpstreamError> {
        let key = self.key.as_ref().expect("checked by the caller");
        self.requests.acquire().await;
        let response = request
            .bearer_auth(key.expose())
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| UpstreamError::from_reqwest(SERVICE, e))?;
        let status = response.status();
        if status.is_success() {
            return response
                .json::<T>()
                .await
                .map_err(|e| UpstreamError::from_reqwest(SERVICE, e));
        }
        let wait = retry_after(response.headers());
        let text = response.text().await.unwrap_or_default();
        let detail = match serde_json::from_str::<ErrorBody>(&text) {
            Ok(ErrorBody { error }) => format!(
                "{} ({}{})",
                error.message.unwrap_or_else(|| "no message".into()),
                error.kind.unwrap_or_else(|| "error".into()),
                error.code.map(|c| format!("/{c}")).unwrap_or_default()
            ),
            Err(_) => text.chars().take(200).collect(),
        };
        Err(UpstreamError::Status {
            service: SERVICE,
            status: status.as_u16(),
            detail,
            retry_after: wait,
        })
    }
}
