//! The console's session cookie: `v2.<issued>.<mac>`, where the MAC is an HMAC under the admin token of the
//! time it was issued. Nothing is kept on the server, so every replica accepts it; it lasts `SESSION_TTL`
//! from its last renewal, is renewed while used, and changing `ADMIN_TOKEN` ends every session at once.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::Secret;

pub const COOKIE: &str = "mt_console";

/// A session in use is re-issued once it is this old, so it lasts `SESSION_TTL` from its last use.
pub const RENEW_AFTER_SECS: u64 = 300;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionCheck {
    /// Good; `renew` when the browser should get a fresh cookie.
    Valid { renew: bool },
    /// Was good, and has run out: sign in again.
    Expired,
    /// Not ours (or an old format, or made under another token).
    Invalid,
}

fn mac(token: &Secret, issued_secs: u64) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(token.expose().as_bytes()).expect("any key length");
    mac.update(format!("mavera-triggers console session v2|{issued_secs}").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// A session value issued at `issued_secs` (Unix seconds).
pub fn issue(token: &Secret, issued_secs: u64) -> String {
    format!("v2.{issued_secs}.{}", mac(token, issued_secs))
}

/// Checks a presented cookie value at `now_secs`.
pub fn check(token: &Secret, value: &str, now_secs: u64, ttl_secs: u64) -> SessionCheck {
    let mut parts = value.splitn(3, '.');
    let (Some("v2"), Some(issued), Some(presented)) = (parts.next(), parts.next(), parts.next())
    else {
        return SessionCheck::Invalid;
    };
    let Ok(issued) = issued.parse::<u64>() else {
        return SessionCheck::Invalid;
    };
    if !Secret::new(mac(token, issued)).matches(presented) {
        return SessionCheck::Invalid;
    }
    if issued > now_secs.saturating_add(60) {
        // From the future: not something this server issued on a sane clock.
        return SessionCheck::Invalid;
    }
    let age = now_secs.saturating_sub(issued);
    if age >= ttl_secs {
        SessionCheck::Expired
    } else {
        SessionCheck::Valid {
            renew: age >= RENEW_AFTER_SECS.min(ttl_secs / 2),
        }
    }
}

/// The `Set-Cookie` value that starts (or renews) a session.
pub fn set_cookie(token: &Secret, now_secs: u64, ttl_secs: u64) -> String {
    format!(
        "{COOKIE}={}; Path=/console; HttpOnly; Secure; SameSite=Strict; Max-Age={ttl_secs}",
        issue(token, now_secs)
    )
}

/// The `Set-Cookie` value that ends a session in this browser.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/console; HttpOnly; Secure; SameSite=Strict; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_valid_renewed_then_expired_and_tied_to_the_token() {
        let token = Secret::new("a".repeat(40));
        let value = issue(&token, 1_000_000);
        assert_eq!(
            check(&token, &value, 1_000_010, 43_200),
            SessionCheck::Valid { renew: false }
        );
        assert_eq!(
            check(&token, &value, 1_000_000 + 301, 43_200),
            SessionCheck::Valid { renew: true }
        );
        assert_eq!(
            check(&token, &value, 1_000_000 + 43_200, 43_200),
            SessionCheck::Expired
        );
        assert_eq!(
            check(&Secret::new("b".repeat(40)), &value, 1_000_010, 43_200),
            SessionCheck::Invalid
        );
        let forged = value.replace("v2.1000000.", "v2.1000500.");
        assert_eq!(
            check(&token, &forged, 1_000_600, 43_200),
            SessionCheck::Invalid
        );
        assert_eq!(check(&token, "garbage", 1, 43_200), SessionCheck::Invalid);
    }
}
