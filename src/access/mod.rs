//! Who may use the console and the admin API: the client's address (behind trusted proxies), the
//! throttle on failed sign-ins, the console's session cookie, and the admin token's strength.
//!
//! Webhook endpoints never pass through here: Segment and Customer.io share addresses with other senders,
//! and a bad signature is already answered 401 without work.

pub mod client;
pub mod session;
pub mod throttle;

pub use client::client_ip;
pub use throttle::{retry_after_secs, AuthThrottle, Verdict};

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use axum::http::HeaderMap;

use crate::{
    config::{AccessSettings, Secret},
    metrics::Metrics,
};

/// The door of the console and the admin API: tells clients apart, and keeps count of their wrong tokens.
pub struct Door {
    throttle: AuthThrottle,
    trusted: Vec<ipnet::IpNet>,
    metrics: Arc<Metrics>,
}

impl Door {
    pub fn new(settings: &AccessSettings, metrics: Arc<Metrics>) -> Self {
        Self {
            throttle: AuthThrottle::new(settings.auth_max_failures, settings.auth_lockout),
            trusted: settings.trusted_proxies.clone(),
            metrics,
        }
    }

    /// The client of a request from `peer`.
    pub fn client(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> IpAddr {
        let peer = peer.map_or(IpAddr::from([0, 0, 0, 0]), |p| p.ip());
        client_ip(peer, headers, &self.trusted)
    }

    /// How long `client` must still wait, when it is locked out.
    pub fn locked(&self, client: IpAddr) -> Option<Duration> {
        match self.throttle.check(client) {
            Verdict::Allowed => None,
            Verdict::Locked { retry_after } => Some(retry_after),
        }
    }

    /// Counts a wrong token from `client`. The answer to this one is still "wrong token"; when it was one
    /// too many, the client's next requests get 429 until the lockout ends.
    pub fn failed(&self, client: IpAddr) {
        self.metrics.auth_failures.inc();
        if let Verdict::Locked { retry_after } = self.throttle.failure(client) {
            self.metrics.auth_lockouts.inc();
            tracing::warn!(
                client = %client,
                seconds = retry_after.as_secs(),
                "too many wrong admin tokens: client locked out of the console and admin API"
            );
        }
    }

    /// A right token: the client's failures are forgotten.
    pub fn succeeded(&self, client: IpAddr) {
        self.throttle.success(client);
    }
}

/// The shortest admin token `serve` accepts.
pub const MIN_TOKEN_CHARS: usize = 32;

/// Values people paste from examples: refused whatever their length.
const PLACEHOLDERS: [&str; 12] = [
    "change-me",
    "changeme",
    "change_me",
    "admin",
    "password",
    "secret",
    "token",
    "test",
    "example",
    "your-admin-token",
    "admin-token",
    "replace-me",
];

/// Why an admin token is too weak to guard a public console, or `None` when it will do. Never quotes the
/// token.
pub fn token_weakness(token: &Secret) -> Option<String> {
    let value = token.expose();
    let lowered = value.to_ascii_lowercase();
    let fix = "make one with `openssl rand -hex 32` (or `head -c 32 /dev/urandom | base64`)";
    if PLACEHOLDERS
        .iter()
        .any(|p| lowered == *p || lowered.trim_matches(|c: char| !c.is_ascii_alphanumeric()) == *p)
        || lowered.contains("change-me")
        || lowered.contains("changeme")
    {
        return Some(format!(
            "ADMIN_TOKEN is a known placeholder, which anyone can guess: {fix}"
        ));
    }
    let chars = value.chars().count();
    if chars < MIN_TOKEN_CHARS {
        return Some(format!(
            "ADMIN_TOKEN is {chars} characters long; the console and admin API need at least {MIN_TOKEN_CHARS}: {fix}"
        ));
    }
    let mut distinct: Vec<char> = value.chars().collect();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < 8 {
        return Some(format!(
            "ADMIN_TOKEN repeats a few characters ({} distinct), which is easy to guess: {fix}",
            distinct.len()
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_placeholder_and_repetitive_tokens_are_weak_and_the_fix_is_named() {
        for weak in [
            "change-me",
            "CHANGE-ME",
            "short-token",
            "please-change-me-before-going-live-ok",
            &"a".repeat(40),
            "abababababababababababababababababab",
        ] {
            let why = token_weakness(&Secret::new(weak)).unwrap_or_else(|| panic!("{weak}"));
            assert!(why.contains("openssl rand -hex 32"), "{why}");
            assert!(!why.contains(weak), "the reason quotes the token: {why}");
        }
        assert_eq!(
            token_weakness(&Secret::new(
                "3f9a1c0e7b2d4f6a8c1e3b5d7f9a2c4e6b8d0f1a3c5e7b9d"
            )),
            None
        );
    }
}
