//! The `segment` sink: the outcome written back to Segment through the HTTP Tracking API. `traits` go out in
//! an `identify`; `event` adds a `track` with the outcome as properties. Each call carries a `messageId`
//! fixed per delivery (Segment drops a retry's second copy by it) and `context.library.name =
//! "mavera-triggers"`, which this server's own Segment endpoint recognises and never triggers on, so a
//! write-back that Segment forwards back here cannot loop. Basic auth: the write key as the user name.

use serde_json::{json, Map, Value};

use super::{
    send,
    writeback::{dry_run, outcome_fields, Request, WriteBack},
    SinkError,
};

/// The library name of everything this server sends to Segment (and refuses to trigger on).
pub use crate::sources::OWN_LIBRARY as LIBRARY_NAME;

pub async fn deliver(
    http: &reqwest::Client,
    target: &WriteBack,
    r: Request<'_>,
) -> Result<Value, SinkError> {
    let who = match (&r.person.id, &r.person.anonymous_id) {
        (Some(id), _) => json!({ "userId": id }),
        (None, Some(anonymous)) => json!({ "anonymousId": anonymous }),
        (None, None) => {
            return Err(SinkError::Final(
                "the person has no userId or anonymousId: Segment cannot tell whom to write to"
                    .into(),
            ))
        }
    };
    let base = target.segment_base_url.trim_end_matches('/');
    let context =
        json!({ "library": { "name": LIBRARY_NAME, "version": env!("CARGO_PKG_VERSION") } });
    let call = |kind: &str, mut body: Map<String, Value>| {
        body.extend(who.as_object().cloned().unwrap_or_default());
        body.insert("type".into(), json!(kind));
        body.insert(
            "messageId".into(),
            json!(format!("{}-{kind}", r.delivery_id)),
        );
        body.insert("context".into(), context.clone());
        body.insert("timestamp".into(), r.delivery["at"].clone());
        (format!("{base}/{kind}"), Value::Object(body))
    };
    let mut requests = Vec::new();
    if !r.profile.is_empty() {
        requests.push(call(
            "identify",
            Map::from_iter([("traits".to_string(), Value::Object(r.profile.clone()))]),
        ));
    }
    if let Some(event) = r.event {
        let mut properties = outcome_fields(r.delivery);
        properties.extend(r.data.clone());
        requests.push(call(
            "track",
            Map::from_iter([
                ("event".to_string(), json!(event)),
                ("properties".to_string(), Value::Object(properties)),
            ]),
        ));
    }
    let Some(key) = &target.segment_write_key else {
        let shown: Vec<(String, Value)> = requests
            .into_iter()
            .map(|(url, body)| (format!("POST {url}"), body))
            .collect();
        return Ok(dry_run("segment", "SEGMENT_WRITE_KEY", &shown));
    };
    let mut sent = Vec::new();
    for (url, body) in requests {
        let request = http
            .post(&url)
            .basic_auth(key.expose(), Some(""))
            .json(&body);
        let status = send("the Segment Tracking API", request).await?;
        sent.push(json!({ "request": format!("POST {}", url.trim_start_matches(base)), "status": status }));
    }
    Ok(json!({ "sink": "segment", "sent": sent }))
}
