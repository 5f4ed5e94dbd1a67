//! `send`: fires a sample (or a file's) Segment event or Customer.io metric at a running server.

use std::{
    process::ExitCode,
    time::{SystemTime, UNIX_EPOCH},
};

use serde_json::{json, Value};

use crate::{
    config::Settings,
    sources::{customerio, signature::sign_sha1, Source},
};

use super::SendArgs;

/// A sample Segment event: a track call with the properties the shipped triggers read, or another type.
pub fn segment_sample(name: &str) -> Value {
    let message_id = format!("send-{}", uuid::Uuid::new_v4());
    let timestamp = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
    let context = json!({ "library": { "name": "mavera-triggers send" }, "traits": { "email": "jane@acme.example" } });
    let properties = match name {
        "trial_started" => json!({ "plan": "pro", "source": "google_ads" }),
        "plan_upgraded" => json!({ "previous_plan": "starter", "new_plan": "pro" }),
        "feature_milestone" => json!({ "milestone": "100 reports", "feature_name": "Dashboards" }),
        "churn_signal" => {
            json!({ "ltv": 420, "signal_type": "downgrade_intent", "tenure_days": 97 })
        }
        _ => json!({}),
    };
    let mut event = match name {
        "identify" => {
            json!({ "type": "identify", "traits": { "plan": "pro", "email": "jane@acme.example" } })
        }
        "page" | "screen" => {
            json!({ "type": name, "name": "Pricing", "properties": { "path": "/pricing" } })
        }
        "group" => json!({ "type": "group", "groupId": "acme", "traits": { "name": "Acme" } }),
        "alias" => json!({ "type": "alias", "previousId": "anon-1" }),
        _ => json!({ "type": "track", "event": name, "properties": properties }),
    };
    let obj = event.as_object_mut().expect("object");
    obj.insert("messageId".into(), json!(message_id));
    obj.insert("userId".into(), json!("usr_k8m2n"));
    obj.insert("timestamp".into(), json!(timestamp));
    obj.insert("context".into(), context);
    event
}

/// A sample Customer.io reporting webhook for a metric, in the current envelope.
pub fn customerio_sample(metric: &str) -> Value {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let object_type = match metric {
        "subscribed" | "unsubscribed" | "cio_subscription_preferences_changed" => "customer",
        _ => "email",
    };
    let mut data = json!({
        "customer_id": "42",
        "email_address": "jane@acme.example",
        "identifiers": { "id": "42", "email": "jane@acme.example", "cio_id": "d9c106000001" }
    });
    if object_type == "email" {
        let d = data.as_object_mut().expect("object");
        d.insert("delivery_id".into(), json!("RPILAgABcRhIBqSp7kiPekGBIeVh"));
        d.insert("action_id".into(), json!(36));
        d.insert("campaign_id".into(), json!(6));
        d.insert("recipient".into(), json!("jane@acme.example"));
        d.insert(
            "subject".into(),
            json!("Did you get that thing I sent you?"),
        );
    }
    json!({
        "event_id": uuid::Uuid::new_v4().simple().to_string().to_uppercase()[..26].to_string(),
        "object_type": object_type,
        "metric": metric,
        "timestamp": now,
        "data": data,
    })
}

pub(super) async fn send(settings: &Settings, args: SendArgs) -> ExitCode {
    let path = std::path::Path::new(&args.event);
    if !path.exists() && (args.event.contains('/') || args.event.ends_with(".json")) {
        eprintln!(
            "error: no such file: {}. `send` posts a JSON file that exists, or a sample by name (such as \
             trial_started: no `/`, no `.json`).",
            args.event
        );
        return ExitCode::from(2);
    }
    let body = if path.is_file() {
        match std::fs::read(&args.event) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("error: cannot read {}: {e}", args.event);
                return ExitCode::from(2);
            }
        }
    } else {
        let sample = match args.source {
            Source::Segment => segment_sample(&args.event),
            Source::CustomerIo => customerio_sample(&args.event),
        };
        serde_json::to_vec(&sample).expect("JSON")
    };
    let url = args
        .url
        .unwrap_or_else(|| format!("http://127.0.0.1:{}/{}", settings.port, args.source));
    let mut headers: Vec<(&str, String)> = vec![("content-type", "application/json".into())];
    let signed = match args.source {
        Source::Segment => settings.segment_secrets.first().map(|secret| {
            headers.push(("x-signature", sign_sha1(secret, &body)));
            "X-Signature (HMAC-SHA1, SEGMENT_SHARED_SECRET)"
        }),
        Source::CustomerIo => settings.cio_webhook_secrets.first().map(|secret| {
            let ts = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            headers.push((customerio::TIMESTAMP_HEADER, ts.to_string()));
            headers.push((
                customerio::SIGNATURE_HEADER,
                customerio::sign(secret, ts, &body),
            ));
            "X-CIO-Signature v0 (HMAC-SHA256, CIO_WEBHOOK_SECRET)"
        }),
    };
    let mut request = reqwest::Client::new().post(&url);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    println!("→ POST {url}");
    println!(
        "  signed: {}",
        signed.unwrap_or("no (the secret is not set; only `dev` accepts this)")
    );
    println!("{}", String::from_utf8_lossy(&body));
    match request.body(body).send().await {
        Ok(response) => {
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            println!("← {status}\n{text}");
            if status.is_success() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!(
                "error: cannot reach {url}: {}. Is the server running (`mavera-triggers dev`)?",
                crate::clients::cause_chain(&e.without_url())
            );
            ExitCode::FAILURE
        }
    }
}
