//! What must be set before the server may start: checked by `serve` and `dev` at start, `check-config`, and
//! each reload of the trigger table.

use crate::{config::Settings, sources::Source, triggers::TriggerTable};

/// What must be set before the server may start, given the mode and the trigger table. In `serve` each is a
/// refusal; in `dev` a warning. Each line names the variable and where its value comes from.
pub fn preflight(settings: &Settings, table: &TriggerTable) -> Vec<String> {
    let mut missing = Vec::new();
    if table.uses_source(Source::Segment) && settings.segment.secrets.is_empty() {
        missing.push("SEGMENT_SHARED_SECRET is not set, and a trigger listens to Segment: set it to the Shared Secret of your Segment Webhooks destination (destination Settings → Shared Secret)".to_string());
    }
    if table.uses_source(Source::CustomerIo) && settings.customerio.webhook_secrets.is_empty() {
        missing.push("CIO_WEBHOOK_SECRET is not set, and a trigger listens to Customer.io: set it to the signing key of your reporting webhook (Data & Integrations → Reporting Webhooks → your webhook)".to_string());
    }
    if settings.mavera.api_key.is_none() {
        missing.push("MAVERA_API_KEY is not set: create a key in Mavera (Settings → Developer → API Keys; it starts with mvra_live_)".to_string());
    }
    let w = &settings.write_back;
    if table.uses_sink("customerio") && (w.cio_site_id.is_none() || w.cio_track_api_key.is_none()) {
        missing.push("CIO_SITE_ID and CIO_TRACK_API_KEY are not both set, and a trigger writes back to Customer.io (a `customerio` sink): copy them from Customer.io (Workspace Settings → API and webhook credentials → Track API keys)".to_string());
    }
    if table.uses_sink("segment") && w.segment_write_key.is_none() {
        missing.push("SEGMENT_WRITE_KEY is not set, and a trigger writes back to Segment (a `segment` sink): use the write key of a Segment source (Connections → Sources → your HTTP API source → Settings → API Keys)".to_string());
    }
    if table.uses_enrichment() && settings.customerio.app_key.is_none() {
        missing.push("CIO_APP_KEY is not set, and a trigger looks customers up: create an App API key in Customer.io (Account Settings → API Credentials → App API Keys)".to_string());
    }
    missing
}

/// What is wrong with the settings whatever the trigger table (`serve` refuses, `dev` warns): an admin
/// token too weak for the console and the admin API, which often sit on a public URL.
pub fn preflight_settings(settings: &Settings) -> Vec<String> {
    settings
        .access
        .admin_token
        .as_ref()
        .and_then(crate::access::token_weakness)
        .map(|weak| format!("{weak}. It guards the console (every event, every brief) and the admin API, often on a public URL"))
        .into_iter()
        .collect()
}
