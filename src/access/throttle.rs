//! Failed sign-ins are throttled per client: after `max_failures` in a minute the client is locked out for
//! `lockout`, doubled at each lockout that follows (up to an hour), and meanwhile every token it presents
//! is answered 429 with `Retry-After` without being checked, so guessing gets nowhere. A success clears the
//! client's record. IPv6 clients are counted per /64, the block one subscriber usually holds.

use std::{
    net::{IpAddr, Ipv6Addr},
    time::Duration,
};

use dashmap::DashMap;
use tokio::time::Instant;

/// Failures are counted over this window.
const WINDOW: Duration = Duration::from_secs(60);
/// The longest lockout, however often a client comes back.
const MAX_LOCKOUT: Duration = Duration::from_secs(3600);
/// Past this many clients on record, those with nothing current are forgotten first.
const MAX_CLIENTS: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Refused until the lockout ends.
    Locked {
        retry_after: Duration,
    },
}

#[derive(Debug, Clone, Copy)]
struct Record {
    window_start: Instant,
    failures: u32,
    /// Lockouts so far: each one lasts twice the one before.
    lockouts: u32,
    locked_until: Option<Instant>,
}

pub struct AuthThrottle {
    max_failures: u32,
    lockout: Duration,
    clients: DashMap<IpAddr, Record>,
}

impl AuthThrottle {
    pub fn new(max_failures: u32, lockout: Duration) -> Self {
        Self {
            max_failures: max_failures.max(1),
            lockout,
            clients: DashMap::new(),
        }
    }

    /// Whether `client` may present a credential now.
    pub fn check(&self, client: IpAddr) -> Verdict {
        let now = Instant::now();
        match self.clients.get(&key(client)).and_then(|r| r.locked_until) {
            Some(until) if until > now => Verdict::Locked {
                retry_after: until - now,
            },
            _ => Verdict::Allowed,
        }
    }

    /// Records a wrong credential from `client`; `Locked` when this one starts a lockout.
    pub fn failure(&self, client: IpAddr) -> Verdict {
        let now = Instant::now();
        if self.clients.len() >= MAX_CLIENTS {
            self.forget_idle(now);
        }
        let mut record = self.clients.entry(key(client)).or_insert(Record {
            window_start: now,
            failures: 0,
            lockouts: 0,
            locked_until: None,
        });
        if now.duration_since(record.window_start) > WINDOW {
            record.window_start = now;
            record.failures = 0;
        }
        record.failures += 1;
        if record.failures < self.max_failures {
            return Verdict::Allowed;
        }
        let factor = 1u32 << record.lockouts.min(16);
        let lockout = self.lockout.saturating_mul(factor).min(MAX_LOCKOUT);
        record.lockouts += 1;
        record.failures = 0;
        record.window_start = now;
        record.locked_until = Some(now + lockout);
        Verdict::Locked {
            retry_after: lockout,
        }
    }

    /// A right credential: the client starts afresh.
    pub fn success(&self, client: IpAddr) {
        self.clients.remove(&key(client));
    }

    /// Drops clients with no failure in the window and no lockout running (or one that could still grow).
    fn forget_idle(&self, now: Instant) {
        self.clients.retain(|_, r| {
            r.locked_until.is_some_and(|u| u + MAX_LOCKOUT > now)
                || now.duration_since(r.window_start) <= WINDOW
        });
    }
}

fn key(client: IpAddr) -> IpAddr {
    match client {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

/// `Retry-After` in whole seconds, never 0.
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0).max(u64::from(wait.is_zero()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_is_locked_after_the_failures_and_longer_each_time() {
        let t = AuthThrottle::new(3, Duration::from_secs(10));
        let a = ip("198.51.100.1");
        assert_eq!(t.failure(a), Verdict::Allowed);
        assert_eq!(t.failure(a), Verdict::Allowed);
        assert_eq!(
            t.failure(a),
            Verdict::Locked {
                retry_after: Duration::from_secs(10)
            }
        );
        // Someone else is not affected.
        assert_eq!(t.check(ip("198.51.100.2")), Verdict::Allowed);
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(
            t.check(a),
            Verdict::Locked {
                retry_after: Duration::from_secs(6)
            }
        );
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(t.check(a), Verdict::Allowed);
        t.failure(a);
        t.failure(a);
        assert_eq!(
            t.failure(a),
            Verdict::Locked {
                retry_after: Duration::from_secs(20)
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn failures_spread_beyond_the_window_never_lock_and_a_success_clears() {
        let t = AuthThrottle::new(3, Duration::from_secs(10));
        let a = ip("198.51.100.1");
        for _ in 0..10 {
            assert_eq!(t.failure(a), Verdict::Allowed);
            assert_eq!(t.failure(a), Verdict::Allowed);
            tokio::time::advance(WINDOW + Duration::from_secs(1)).await;
        }
        t.failure(a);
        t.failure(a);
        t.success(a);
        assert_eq!(t.failure(a), Verdict::Allowed);
    }

    #[tokio::test(start_paused = true)]
    async fn one_ipv6_subscriber_block_counts_as_one_client() {
        let t = AuthThrottle::new(2, Duration::from_secs(10));
        t.failure(ip("2001:db8:1:2::1"));
        assert!(matches!(
            t.failure(ip("2001:db8:1:2::ffff")),
            Verdict::Locked { .. }
        ));
        assert!(matches!(
            t.check(ip("2001:db8:1:2::9")),
            Verdict::Locked { .. }
        ));
        assert_eq!(t.check(ip("2001:db8:1:3::1")), Verdict::Allowed);
    }

    #[test]
    fn retry_after_rounds_up_and_is_never_zero() {
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(3)), 3);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }
}
