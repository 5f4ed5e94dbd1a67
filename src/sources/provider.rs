//! The seam every webhook source plugs into: a [`Provider`] verifies a request on its raw bytes, parses it into
//! events and refusals, and describes itself to the console's dry run and `mavera-triggers send`. One generic
//! route handler (`routes/webhook.rs`) serves every provider; none of the code above asks which source it is.

use std::time::{Duration, SystemTime};

use axum::http::HeaderMap;
use serde_json::{Map, Value};

use super::{Event, RejectReason, Source, Unusable, Verified};
use crate::config::Secret;

/// What the settings give one provider (its per-integration state): its secrets and its limits.
#[derive(Debug, Clone)]
pub struct SourceSettings {
    /// The signing secrets, newest first: any of them verifies (rotation).
    pub secrets: Vec<Secret>,
    /// `dev` mode: with no secret set, a request is let through unsigned (and each one is logged loudly).
    pub unsigned_ok: bool,
    /// The largest body the route reads (413 past it).
    pub max_body_bytes: usize,
    /// The most events one request may carry (a Segment batch; 400 past it).
    pub max_batch_events: usize,
    /// How far a signed timestamp may be from now (zero: not checked).
    pub timestamp_tolerance: Duration,
}

impl SourceSettings {
    /// For a dry run: no signature wanted, no limit but the parser's own.
    pub fn unsigned() -> Self {
        SourceSettings {
            secrets: Vec::new(),
            unsigned_ok: true,
            max_body_bytes: usize::MAX,
            max_batch_events: usize::MAX,
            timestamp_tolerance: Duration::ZERO,
        }
    }
}

/// What a verified body holds: its events, in order, and the parts that are not events (each kept with why).
#[derive(Debug, Default)]
pub struct Parsed {
    pub events: Vec<Event>,
    pub unusable: Vec<Unusable>,
}

/// A request header: its name and value.
pub type Header = (&'static str, String);

/// A provider as the console's dry run and `mavera-triggers send` see it: how to make and sign a test
/// request, and what its sender is answered.
pub struct Description {
    /// Its name as people write it (`Customer.io`), for pages and messages.
    pub title: &'static str,
    /// The setting that holds its signing secret, as the `dev` mode warning and `send` name it.
    pub secret_variable: &'static str,
    /// The body the console's test form shows.
    pub console_sample: &'static str,
    /// A sample body for `send <name>`: an event of that name (or type, or metric).
    pub sample: fn(name: &str) -> Value,
    /// The headers that sign `body` as the sender would, with `secret`, at `now`.
    pub sign: fn(secret: &Secret, body: &[u8], now: SystemTime) -> Vec<Header>,
    /// How `send` says a request was signed.
    pub signed_with: &'static str,
    /// What the sender is answered when part of a genuine request is kept as not usable, not run.
    pub kept_answer: &'static str,
}

/// One webhook source. Its route is `/<source>`; its answers, log lines and metrics are the generic
/// handler's, so that two providers cannot drift apart.
pub trait Provider: Sync {
    /// Which source this is: its name, its route and its dedupe key space.
    fn source(&self) -> Source;

    /// What the console's dry run, `send` and the `dev` mode warning say about it.
    fn describe(&self) -> &'static Description;

    /// Checks the signature on the raw bytes, before anything else is read from them.
    fn verify<'a>(
        &self,
        settings: &SourceSettings,
        headers: &HeaderMap,
        body: &'a [u8],
        now: SystemTime,
    ) -> Result<Verified<'a>, RejectReason>;

    /// What a signed request's check covered, as the event log records it.
    fn signature_note(&self, headers: &HeaderMap) -> String;

    /// Reads a verified body into events. `shape` is whether the body passed the JSON shape limits (depth,
    /// array length); the provider decides what a body over them gets. `Err` refuses the whole request.
    fn parse(
        &self,
        settings: &SourceSettings,
        verified: &Verified<'_>,
        shape: Result<(), RejectReason>,
    ) -> Result<Parsed, RejectReason>;

    /// The template context of an event parsed from its head alone (read in full only when a trigger
    /// wants it); a provider that builds the context while parsing never needs it.
    fn full_context(&self, _raw: &str) -> Map<String, Value> {
        Map::new()
    }
}
