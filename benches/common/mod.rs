//! What both benchmarks share: secrets, realistic event bodies, signatures.
#![allow(dead_code)]

use std::time::{SystemTime, UNIX_EPOCH};

use mavera_triggers::{
    config::Secret,
    sources::{customerio, signature::sign_sha1},
};

pub const SEGMENT_SECRET: &str = "bench-segment-shared-secret";
pub const CIO_SECRET: &str = "bench-cio-signing-key";
pub const MAVERA_KEY: &str = "mvra_live_bench_key";
pub const CIO_APP_KEY: &str = "bench-cio-app-key";

/// The shipped trigger table.
pub const CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/mavera-triggers.toml");

/// A Segment track event as analytics.js sends it through a Webhooks (Actions) destination: about 1 KB.
pub fn segment_track(event: &str, message_id: &str, user_id: &str) -> String {
    format!(
        concat!(
            r#"{{"anonymousId":"anon-7f3c2a91-5d4e-4b8a-9c61-2e0f8b7d4a13","#,
            r#""context":{{"ip":"203.0.113.7","library":{{"name":"analytics.js","version":"next-1.70.0"}},"#,
            r#""locale":"en-US","page":{{"path":"/onboarding/trial","referrer":"https://www.google.com/","#,
            r#""search":"?utm_source=google&utm_medium=cpc","title":"Start your trial","#,
            r#""url":"https://app.acme.example/onboarding/trial?utm_source=google&utm_medium=cpc"}},"#,
            r#""timezone":"Europe/Berlin","traits":{{"company":"Acme Analytics GmbH","email":"jane.doe@acme.example","#,
            r#""employees":"120","industry":"fintech"}},"#,
            r#""userAgent":"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"}},"#,
            r#""event":"{event}","integrations":{{}},"messageId":"{message_id}","#,
            r#""originalTimestamp":"2026-11-25T13:30:57.912Z","#,
            r#""properties":{{"plan":"pro","source":"google_ads","trial_days":14,"seats":5,"billing":"monthly","#,
            r#""campaign":"q4-fintech-trials","experiment":"pricing-page-v3"}},"#,
            r#""receivedAt":"2026-11-25T13:30:58.052Z","sentAt":"2026-11-25T13:30:57.990Z","#,
            r#""timestamp":"2026-11-25T13:30:57.974Z","type":"track","userId":"{user_id}","version":2}}"#
        ),
        event = event,
        message_id = message_id,
        user_id = user_id,
    )
}

/// A Customer.io reporting webhook event in the current envelope.
pub fn cio_event(metric: &str, object_type: &str, event_id: &str, customer_id: &str) -> String {
    format!(
        concat!(
            r#"{{"data":{{"action_id":36,"campaign_id":23,"customer_id":"{customer_id}","#,
            r#""delivery_id":"RAECAAFwnUSneIa0ZXkmq8EdkAM==","#,
            r#""identifiers":{{"cio_id":"a3000001","email":"{customer_id}@acme.example","id":"{customer_id}"}},"#,
            r#""recipient":"{customer_id}@acme.example","subject":"Your trial ends in 3 days"}},"#,
            r#""event_id":"{event_id}","metric":"{metric}","object_type":"{object_type}","timestamp":1732541458}}"#
        ),
        metric = metric,
        object_type = object_type,
        event_id = event_id,
        customer_id = customer_id,
    )
}

/// `X-Signature` for a Segment body, or for the first element of a batch (what Segment signs).
pub fn segment_signature(signed: &[u8]) -> String {
    sign_sha1(&Secret::new(SEGMENT_SECRET), signed)
}

/// (`X-CIO-Timestamp`, `X-CIO-Signature`) with the current time.
pub fn cio_signature(body: &[u8]) -> (String, String) {
    let ts = unix_now();
    (
        ts.to_string(),
        customerio::sign(&Secret::new(CIO_SECRET), ts, body),
    )
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// RSS of this process, from /proc/self/status.
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS")
        * 1024
}
