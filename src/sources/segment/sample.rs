//! Sample Segment events: what `mavera-triggers send` posts and the console's test form starts with.

use std::time::SystemTime;

use serde_json::{json, Value};

/// The body the console's test form starts with.
pub const CONSOLE_SAMPLE: &str = r#"{
  "type": "track",
  "event": "trial_started",
  "userId": "usr_test_1",
  "messageId": "console-test-1",
  "timestamp": "2026-11-25T12:00:00.000Z",
  "properties": { "plan": "pro", "source": "google_ads" }
}"#;

/// A sample Segment event: a track call with the properties the shipped triggers read, or another type.
pub fn sample(name: &str) -> Value {
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
