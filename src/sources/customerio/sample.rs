//! Sample Customer.io reporting webhooks: what `mavera-triggers send` posts and the console's test form shows.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

/// The body the console's test form shows for Customer.io.
pub const CONSOLE_SAMPLE: &str = r#"{
  "metric": "unsubscribed",
  "event_id": "01CONSOLETEST0000000000000",
  "object_type": "customer",
  "timestamp": 1764072000,
  "data": {
    "customer_id": "cust_test_1",
    "email_address": "test@example.com",
    "identifiers": { "id": "cust_test_1", "email": "test@example.com" }
  }
}"#;

/// A sample Customer.io reporting webhook for a metric, in the current envelope.
pub fn sample(metric: &str) -> Value {
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
