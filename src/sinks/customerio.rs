//! The `customerio` sink: the outcome written back to the person in Customer.io through the Track API.
//! `attributes` update the profile (`PUT /customers/{identifier}`); `event` records an event carrying the
//! brief (`POST /customers/{identifier}/events`) with an `id` (a ULID) fixed per delivery, which Customer.io
//! uses to drop a retry's second copy. Basic auth: `CIO_SITE_ID:CIO_TRACK_API_KEY`.

use percent_encoding::utf8_percent_encode;
use serde_json::{json, Value};

use super::{
    send,
    writeback::{dry_run, outcome_fields, Request, WriteBack},
    SinkError,
};

pub async fn deliver(
    http: &reqwest::Client,
    target: &WriteBack,
    r: Request<'_>,
) -> Result<Value, SinkError> {
    let identifier = r.person.cio_identifier().ok_or_else(|| {
        SinkError::Final(
            "the person has no id, email or cio_id: Customer.io cannot tell whom to write to"
                .into(),
        )
    })?;
    if identifier == "." || identifier == ".." {
        return Err(SinkError::Final(format!(
            "the person's id `{identifier}` cannot be sent as a URL path segment"
        )));
    }
    let path = utf8_percent_encode(&identifier, crate::clients::PATH_SEGMENT).to_string();
    let base = target.cio_track_base_url.trim_end_matches('/');
    let mut requests = Vec::new();
    if !r.profile.is_empty() {
        requests.push((
            reqwest::Method::PUT,
            format!("{base}/customers/{path}"),
            Value::Object(r.profile.clone()),
        ));
    }
    if let Some(name) = r.event {
        let mut data = outcome_fields(r.delivery);
        data.extend(r.data.clone());
        requests.push((
            reqwest::Method::POST,
            format!("{base}/customers/{path}/events"),
            json!({ "name": name, "id": r.delivery_id, "data": data }),
        ));
    }
    let Some((site_id, api_key)) = &target.cio_track else {
        let shown: Vec<(String, Value)> = requests
            .into_iter()
            .map(|(m, url, body)| (format!("{m} {url}"), body))
            .collect();
        return Ok(dry_run("customerio", "CIO_TRACK_API_KEY", &shown));
    };
    let mut sent = Vec::new();
    for (method, url, body) in requests {
        let request = http
            .request(method.clone(), &url)
            .basic_auth(site_id.expose(), Some(api_key.expose()))
            .json(&body);
        let status = send("the Customer.io Track API", request).await?;
        sent.push(json!({ "request": format!("{method} {}", url.trim_start_matches(base)), "status": status }));
    }
    Ok(json!({ "sink": "customerio", "identifier": identifier, "sent": sent }))
}
