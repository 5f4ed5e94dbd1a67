//! What the write-back sinks (`customerio`, `segment`) share: who the outcome is about, the fields of the
//! outcome they carry, and where they send it.

use serde_json::{json, Map, Value};

use crate::{config::Secret, jobs::Job, sources::Source};

/// The person an outcome is about, as the event named them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Person {
    /// The sender's id for the person: Segment `userId`, Customer.io `identifiers.id` / `customer_id`.
    pub id: Option<String>,
    /// Segment's `anonymousId`, when there is no `userId`.
    pub anonymous_id: Option<String>,
    /// An email address (never a phone number or a channel).
    pub email: Option<String>,
    /// Customer.io's own id.
    pub cio_id: Option<String>,
}

fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.trim().is_empty() && s != "unknown" => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl Person {
    /// Reads the person from the job's event context.
    pub fn of(job: &Job) -> Self {
        let ctx = &job.new.context;
        match job.new.source {
            Source::Segment => {
                let payload = ctx.get("payload");
                Person {
                    id: text(payload.and_then(|p| p.get("userId"))),
                    anonymous_id: text(payload.and_then(|p| p.get("anonymousId"))),
                    email: text(ctx.get("traits").and_then(|t| t.get("email")))
                        .filter(|e| e.contains('@')),
                    cio_id: None,
                }
            }
            Source::CustomerIo => Person {
                id: text(ctx.get("customer_id")),
                anonymous_id: None,
                email: text(ctx.get("email")).filter(|e| e.contains('@')),
                cio_id: text(ctx.get("cio_id")),
            },
        }
    }

    /// The Track API's identifier: the id, else the email, else `cio_` and the cio_id.
    pub fn cio_identifier(&self) -> Option<String> {
        self.id
            .clone()
            .or_else(|| self.email.clone())
            .or_else(|| self.cio_id.as_ref().map(|c| format!("cio_{c}")))
    }
}

/// The fields of an outcome a write-back carries (a brief's or a persona's), with the trigger and job.
pub fn outcome_fields(delivery: &Value) -> Map<String, Value> {
    let o = &delivery["outcome"];
    let mut fields = Map::new();
    for key in [
        "title",
        "summary",
        "brief",
        "sources",
        "persona_id",
        "persona_type",
        "credits_used",
    ] {
        if let Some(v) = o.get(key).filter(|v| !v.is_null()) {
            fields.insert(key.into(), v.clone());
        }
    }
    fields.insert("trigger".into(), delivery["trigger"].clone());
    fields.insert("job_id".into(), delivery["job_id"].clone());
    fields
}

/// The addresses and credentials of the write-back APIs.
#[derive(Debug, Clone, Default)]
pub struct WriteBack {
    pub cio_track_base_url: String,
    /// `(CIO_SITE_ID, CIO_TRACK_API_KEY)`; `None` prints instead of sending (dev only: `serve` refuses).
    pub cio_track: Option<(Secret, Secret)>,
    pub segment_base_url: String,
    pub segment_write_key: Option<Secret>,
}

impl WriteBack {
    pub fn from_settings(s: &crate::config::WriteBackSettings) -> Self {
        Self {
            cio_track_base_url: s.cio_track_base_url.clone(),
            cio_track: s.cio_site_id.clone().zip(s.cio_track_api_key.clone()),
            segment_base_url: s.segment_api_base_url.clone(),
            segment_write_key: s.segment_write_key.clone(),
        }
    }
}

/// One write-back delivery, as either sink takes it.
pub struct Request<'a> {
    pub person: &'a Person,
    /// Fixed for the delivery's retries: the vendors drop a second copy by it.
    pub delivery_id: &'a str,
    /// Customer.io `attributes` or Segment `traits`, rendered.
    pub profile: &'a Map<String, Value>,
    pub event: Option<&'a str>,
    /// Extra event data or track properties, rendered.
    pub data: &'a Map<String, Value>,
    /// The outcome with where it came from (see `sinks::deliveries`).
    pub delivery: &'a Value,
}

/// How a request that is not sent (no credentials, dev) reads in the log, and what the job records.
pub fn dry_run(sink: &str, missing: &str, requests: &[(String, Value)]) -> Value {
    for (line, body) in requests {
        tracing::info!(
            "DRY RUN (no {missing}): the {sink} sink would send\n{line}\n{}",
            serde_json::to_string_pretty(body).unwrap_or_default()
        );
    }
    json!({ "sink": sink, "dry_run": true, "requests": requests.len() })
}
