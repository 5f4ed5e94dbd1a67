//! Sending one alert to the `[alerts]` sinks: straight to each sink, a few tries each, never through the
//! job store (it may be the thing that is failing).

use std::time::Duration;

use serde_json::{json, Value};

use super::{AlertState, Notice};
use crate::{
    sinks::{self, SinkError},
    triggers::config::SinkSpec,
};

/// Sends one notice to every sink, each tried three times; a sink that still fails is logged.
pub async fn deliver(http: &reqwest::Client, sinks: &[SinkSpec], notice: &Notice) {
    let delivery = notice.delivery();
    for spec in sinks {
        let mut last = None;
        for attempt in 0..3u32 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            }
            match send(http, spec, notice, &delivery).await {
                Ok(()) => {
                    last = None;
                    break;
                }
                Err(SinkError::Final(e)) => {
                    last = Some(e);
                    break;
                }
                Err(e) => last = Some(e.to_string()),
            }
        }
        if let Some(error) = last {
            tracing::error!(alert = notice.kind.as_str(), error = %error, "an alert could not be delivered");
        }
    }
}

async fn send(
    http: &reqwest::Client,
    spec: &SinkSpec,
    notice: &Notice,
    delivery: &Value,
) -> Result<(), SinkError> {
    let env = |name: &str| std::env::var(name).ok();
    let expand = |s: &str| sinks::expand_env(s, &env).map_err(SinkError::Final);
    match spec {
        SinkSpec::Log => {
            match notice.state {
                AlertState::Firing => {
                    tracing::error!(alert = notice.kind.as_str(), details = %notice.details, "ALERT: {}", notice.message)
                }
                AlertState::Recovered => {
                    tracing::info!(
                        alert = notice.kind.as_str(),
                        "alert recovered: {}",
                        notice.message
                    )
                }
            }
            Ok(())
        }
        SinkSpec::File { path } => sinks::file::append(&expand(path)?, delivery)
            .await
            .map(drop),
        SinkSpec::Slack { webhook_url } => {
            let icon = match notice.state {
                AlertState::Firing => ":rotating_light:",
                AlertState::Recovered => ":white_check_mark:",
            };
            let text = format!(
                "{icon} *{}* {}: {}",
                notice.kind.as_str(),
                match notice.state {
                    AlertState::Firing => "firing",
                    AlertState::Recovered => "recovered",
                },
                notice.message
            );
            let request = http
                .post(expand(webhook_url)?)
                .json(&json!({ "text": text }));
            sinks::send("Slack", request).await.map(drop)
        }
        SinkSpec::Webhook { url, secret } => {
            let secret = secret.as_deref().map(expand).transpose()?;
            // A delivery id for the receiver's dedupe: the alert and the moment it was raised.
            let id = notice.at_ms ^ (notice.kind as u64) << 56;
            sinks::webhook::post(http, &expand(url)?, secret.as_deref(), id, delivery)
                .await
                .map(drop)
        }
        // Refused in `[alerts]` when the trigger file is loaded.
        SinkSpec::Customerio { .. } | SinkSpec::Segment { .. } => Err(SinkError::Final(format!(
            "a `{}` sink cannot carry alerts",
            spec.kind()
        ))),
    }
}
