//! A secret value (API key, signing secret, admin token): never printed, compared in constant time. A leaf
//! module: it imports nothing of the crate.

use std::fmt;

use sha2::{Digest, Sha256};

/// A secret value (API key, signing secret). Never printed: `Debug` shows a fingerprint.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for signing and `Authorization` headers only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `sha256:` and the first 8 hex digits of the value's SHA-256: enough to tell two secrets apart in
    /// `check-config` output, useless to an attacker.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::digest(self.0.as_bytes());
        format!("sha256:{}", &hex::encode(digest)[..8])
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({})", self.fingerprint())
    }
}

impl Secret {
    /// Constant-time comparison with a presented value (both sides hashed first, so length leaks nothing).
    pub fn matches(&self, presented: &str) -> bool {
        use subtle::ConstantTimeEq;
        let a = Sha256::digest(self.0.as_bytes());
        let b = Sha256::digest(presented.as_bytes());
        a.ct_eq(&b).into()
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.fingerprint())
    }
}

/// Parses `new,old` into several secrets so that a secret can be rotated without downtime.
pub fn secret_list(value: &str) -> Vec<Secret> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(Secret::new)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_prints_its_value() {
        let s = Secret::new("super-secret-value");
        assert!(!format!("{s:?}").contains("super-secret-value"));
        assert!(!format!("{s}").contains("super-secret-value"));
        assert!(format!("{s:?}").contains("sha256:"));
    }
}
