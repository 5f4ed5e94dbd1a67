//! Where outcomes go: the log (the default, the brief in full), a file, Slack, any webhook, or back to the
//! person in Customer.io and Segment (`writeback`). Every sink but the log is a durable job of its own (a
//! `JobKind::Delivery`), retried like any job, so a Slack outage delays a brief but does not lose it.

pub mod customerio;
pub mod file;
pub mod log;
pub mod segment;
pub mod slack;
pub mod webhook;
pub mod writeback;

use serde_json::{json, Value};

use crate::{
    clients::UpstreamError,
    jobs::{Job, JobKind, NewJob},
    triggers::config::{SinkKind, SinkSpec},
};

pub use crate::triggers::config::{expand_env, settings_of};

/// The delivery jobs for one outcome: one per sink that is not the log. `rendered[i]` holds what the
/// templates of sink `i` rendered (write-backs), or why they could not be (the delivery then dead-letters
/// with that reason, and the outcome is kept). Each delivery gets an id of its own, fixed for its retries.
pub fn deliveries(
    job: &Job,
    sinks: &[SinkSpec],
    outcome: &Value,
    rendered: &[Result<Value, crate::triggers::RenderError>],
) -> Vec<NewJob> {
    sinks
        .iter()
        .zip(rendered)
        .filter(|(s, _)| !matches!(s, SinkSpec::Log))
        .map(|(spec, rendered)| {
            let mut context = serde_json::Map::new();
            context.insert("sink".into(), json!(spec));
            context.insert("delivery".into(), envelope(job, outcome));
            context.insert("delivery_id".into(), json!(ulid::Ulid::new().to_string()));
            if matches!(spec, SinkSpec::Customerio { .. } | SinkSpec::Segment { .. }) {
                context.insert("person".into(), json!(writeback::Person::of(job)));
                match rendered {
                    Ok(values) => context.insert("rendered".into(), values.clone()),
                    Err(why) => context.insert("render_error".into(), json!(why.to_string())),
                };
            }
            NewJob {
                trigger: job.new.trigger.clone(),
                action: JobKind::Delivery(SinkKind::from(spec)),
                source: job.new.source,
                event_id: job.new.event_id.clone(),
                user_id: job.new.user_id.clone(),
                context,
            }
        })
        .collect()
}

/// What every sink receives: the outcome with where it came from.
fn envelope(job: &Job, outcome: &Value) -> Value {
    json!({
        "type": if outcome["action"] == "research" { "brief" } else { "persona" },
        "trigger": job.new.trigger,
        "job_id": job.id,
        "source": job.new.source,
        "event_id": job.new.event_id,
        "event": job.new.context.get("event"),
        "user_id": job.new.user_id,
        "at": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        "outcome": outcome,
    })
}

/// A failed delivery: worth retrying, or final.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("{0}")]
    Final(String),
    #[error("{0}")]
    Transient(String),
}

/// One group of rendered values (`attributes`, `traits`, `data`) of a write-back delivery.
fn rendered_group(job: &Job, group: &str) -> serde_json::Map<String, Value> {
    job.new.context["rendered"][group]
        .as_object()
        .cloned()
        .unwrap_or_default()
}

/// Delivers one sink job.
pub async fn deliver(
    http: &reqwest::Client,
    write_back: &writeback::WriteBack,
    job: &Job,
) -> Result<Value, SinkError> {
    let spec: SinkSpec =
        serde_json::from_value(job.new.context.get("sink").cloned().unwrap_or_default())
            .map_err(|e| SinkError::Final(format!("unreadable sink settings: {e}")))?;
    let delivery = job.new.context.get("delivery").cloned().unwrap_or_default();
    let env = |name: &str| std::env::var(name).ok();
    let expand = |s: &str| expand_env(s, &env).map_err(SinkError::Final);
    match spec {
        SinkSpec::Log => Ok(json!({ "sink": "log" })),
        SinkSpec::File { path } => file::append(&expand(&path)?, &delivery).await,
        SinkSpec::Slack { webhook_url } => {
            slack::post(http, &expand(&webhook_url)?, job.id, &delivery).await
        }
        SinkSpec::Webhook { url, secret } => {
            let secret = secret.as_deref().map(expand).transpose()?;
            webhook::post(http, &expand(&url)?, secret.as_deref(), job.id, &delivery).await
        }
        SinkSpec::Customerio { ref event, .. } | SinkSpec::Segment { ref event, .. } => {
            if let Some(why) = job.new.context.get("render_error").and_then(Value::as_str) {
                return Err(SinkError::Final(why.to_string()));
            }
            let person: writeback::Person =
                serde_json::from_value(job.new.context.get("person").cloned().unwrap_or_default())
                    .unwrap_or_default();
            let delivery_id = job.new.context["delivery_id"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| format!("job-{}", job.id));
            let data = rendered_group(job, "data");
            if matches!(spec, SinkSpec::Customerio { .. }) {
                let attributes = rendered_group(job, "attributes");
                customerio::deliver(
                    http,
                    write_back,
                    writeback::Request {
                        person: &person,
                        delivery_id: &delivery_id,
                        profile: &attributes,
                        event: event.as_deref(),
                        data: &data,
                        delivery: &delivery,
                    },
                )
                .await
            } else {
                let traits = rendered_group(job, "traits");
                segment::deliver(
                    http,
                    write_back,
                    writeback::Request {
                        person: &person,
                        delivery_id: &delivery_id,
                        profile: &traits,
                        event: event.as_deref(),
                        data: &data,
                        delivery: &delivery,
                    },
                )
                .await
            }
        }
    }
}

/// Sends a prepared request and classifies the answer like any upstream call.
pub(crate) async fn send(
    service: &'static str,
    request: reqwest::RequestBuilder,
) -> Result<u16, SinkError> {
    let response = request
        .timeout(std::time::Duration::from_secs(30))
        .send()
        .await
        .map_err(|e| {
            // The origin only: a Slack or webhook URL's path and query are its credentials.
            let url = e
                .url()
                .map(|u| crate::clients::shown_url(u.as_str(), ""))
                .unwrap_or_default();
            UpstreamError::from_reqwest(service, url, e)
        })?;
    let status = response.status();
    if status.is_success() {
        return Ok(status.as_u16());
    }
    let retry_after = crate::clients::retry_after(response.headers());
    let text = response.text().await.unwrap_or_default();
    Err(UpstreamError::Status {
        service,
        status: status.as_u16(),
        detail: text.chars().take(200).collect(),
        retry_after,
    }
    .into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_references_are_expanded_and_missing_ones_named() {
        let env = |k: &str| (k == "HOOK").then(|| "https://h.example/x".to_string());
        assert_eq!(
            expand_env("${HOOK}/y", &env).unwrap(),
            "https://h.example/x/y"
        );
        assert_eq!(expand_env("plain", &env).unwrap(), "plain");
        assert!(expand_env("${NOPE}", &env).unwrap_err().contains("NOPE"));
        assert!(expand_env("${HOOK", &env).is_err());
    }
}
