//! Settings from the environment (and `.env` when present), parsed and validated once at start-up.
//!
//! Every variable is listed, with its default, in `.env.example`. Secrets are held in [`Secret`], whose
//! `Debug` and `Display` print a short fingerprint, never the value.

mod env;
mod parse;
mod sections;
#[cfg(test)]
mod tests;
mod vendors;

use std::path::PathBuf;

pub use crate::secret::{secret_list, Secret};
pub use sections::{
    parse_trusted, AccessSettings, IntakeSettings, JobSettings, ServerSettings, StoreSettings,
    DEFAULT_DATABASE_URL,
};
pub use vendors::{
    CustomerIoSettings, MaveraSettings, SegmentSettings, WriteBackSettings, CIO_EU_BASE_URL,
    CIO_TRACK_EU_BASE_URL, CIO_TRACK_US_BASE_URL, CIO_US_BASE_URL, DEFAULT_MAVERA_BASE_URL,
    SEGMENT_API_BASE_URL,
};

/// How the server was started: `serve` is strict, `dev` is forgiving and loud about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Production: every enabled source needs its secret, Mavera needs a key.
    Serve,
    /// The newcomer's mode: loopback only, unsigned requests accepted for sources without a secret,
    /// and without `MAVERA_API_KEY` every Mavera request is printed instead of sent.
    Dev,
}

/// A setting that could not be read. The message names the variable and the fix.
#[derive(Debug, thiserror::Error)]
#[error("{var}={value:?} is not valid: {fix}")]
pub struct SettingsError {
    pub var: &'static str,
    pub value: String,
    pub fix: String,
}

/// `[limits]`: the same knobs as `MAVERA_REQUESTS_PER_MINUTE`, `MAVERA_MAX_CONCURRENT_CHATS` and
/// `CIO_REQUESTS_PER_SECOND`, for people who keep their settings in the file.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSpec {
    pub mavera_requests_per_minute: Option<u32>,
    pub mavera_max_concurrent_chats: Option<u32>,
    pub cio_requests_per_second: Option<u32>,
}

/// Everything the server reads from its environment, in sections with one job each. A new setting goes
/// in the section of what it tunes (see `ARCHITECTURE.md`, "A setting").
#[derive(Debug, Clone)]
pub struct Settings {
    pub mode: Mode,
    /// `MAVERA_TRIGGERS_CONFIG` (default `config/mavera-triggers.toml`).
    pub config_path: PathBuf,
    /// How the process listens, answers and stops.
    pub server: ServerSettings,
    /// What a webhook may be, and what gets in.
    pub intake: IntakeSettings,
    /// The durable store and what it keeps.
    pub store: StoreSettings,
    /// How jobs run and are retried.
    pub jobs: JobSettings,
    /// The Mavera API.
    pub mavera: MaveraSettings,
    /// Customer.io's reporting webhooks and App API.
    pub customerio: CustomerIoSettings,
    /// Segment's webhooks.
    pub segment: SegmentSettings,
    /// Where the `customerio` and `segment` sinks write outcomes back.
    pub write_back: WriteBackSettings,
    /// Who may use the console and the admin API, and how hard guessing is made.
    pub access: AccessSettings,
}

impl Settings {
    /// Settings with every default and no secrets: the starting point of tests.
    pub fn defaults(mode: Mode) -> Self {
        Self {
            mode,
            config_path: PathBuf::from("config/mavera-triggers.toml"),
            server: ServerSettings::defaults(mode),
            intake: IntakeSettings::default(),
            store: StoreSettings::default(),
            jobs: JobSettings::default(),
            mavera: MaveraSettings::default(),
            customerio: CustomerIoSettings::default(),
            segment: SegmentSettings::default(),
            write_back: WriteBackSettings::default(),
            access: AccessSettings::default(),
        }
    }

    /// Takes the `[limits]` of the trigger file for each limit whose environment variable is unset (the
    /// default when the file does not set it either): at start, and again at each reload.
    pub fn apply_file_limits(&mut self, limits: &LimitsSpec, env: impl Fn(&str) -> Option<String>) {
        let unset = |k: &str| env(k).is_none_or(|v| v.trim().is_empty());
        let defaults = Settings::defaults(self.mode);
        if unset("MAVERA_REQUESTS_PER_MINUTE") {
            self.mavera.requests_per_minute = limits
                .mavera_requests_per_minute
                .filter(|n| *n > 0)
                .unwrap_or(defaults.mavera.requests_per_minute);
        }
        if unset("MAVERA_MAX_CONCURRENT_CHATS") {
            self.mavera.max_concurrent_chats = limits
                .mavera_max_concurrent_chats
                .filter(|n| *n > 0)
                .map_or(defaults.mavera.max_concurrent_chats, |n| n as usize);
        }
        if unset("CIO_REQUESTS_PER_SECOND") {
            self.customerio.requests_per_second = limits
                .cio_requests_per_second
                .filter(|n| *n > 0)
                .unwrap_or(defaults.customerio.requests_per_second);
        }
    }

    /// The client-side limits a reload may change: Mavera requests per window, Mavera chats at once,
    /// Customer.io requests per second.
    pub fn live_limits(&self) -> (u32, u32, u32) {
        (
            self.mavera.requests_per_minute,
            self.mavera.max_concurrent_chats as u32,
            self.customerio.requests_per_second,
        )
    }

    /// True when Mavera requests are printed instead of sent (`dev` without `MAVERA_API_KEY`).
    pub fn mavera_dry_run(&self) -> bool {
        self.mode == Mode::Dev && self.mavera.api_key.is_none()
    }
}
