//! Time as the rate limiters see it: the runtime's monotonic clock, or a test clock that only moves when a
//! waiter asks it to. A leaf: nothing of the crate is imported here.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::time::Instant;

/// Reads the time and waits. Real by default ([`system`]); a test passes a [`TestClock`].
pub trait Clock: Send + Sync + fmt::Debug {
    fn now(&self) -> Instant;
    fn sleep(&self, wait: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// Milliseconds since the Unix epoch: the wall-clock time stores and metrics record.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// The clock every part of the app that waits on a budget shares.
pub type SharedClock = Arc<dyn Clock>;

/// The runtime's clock (tokio's, so a paused runtime pauses it too).
pub fn system() -> SharedClock {
    Arc::new(SystemClock)
}

#[derive(Debug)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep(&self, wait: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(tokio::time::sleep(wait))
    }
}

/// A clock that stands still until someone sleeps on it: a sleep moves it forward to the sleeper's wake-up
/// time at once (never back), as tokio's paused clock does when the runtime is idle. Waits cost no wall
/// time, and times read from it are exact, so a test can check the spacing of calls to the millisecond.
/// Exact only when one task at a time waits on it: two sleepers advance it for each other.
#[derive(Debug)]
pub struct TestClock {
    now: Mutex<Instant>,
    start: Instant,
}

impl TestClock {
    pub fn new() -> Arc<Self> {
        let start = Instant::now();
        Arc::new(Self {
            now: Mutex::new(start),
            start,
        })
    }

    /// How far the clock has moved since it was made.
    pub fn elapsed(&self) -> Duration {
        self.now().duration_since(self.start)
    }
}

impl Clock for TestClock {
    fn now(&self) -> Instant {
        *self.now.lock().expect("test clock lock")
    }

    fn sleep(&self, wait: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        {
            let mut now = self.now.lock().expect("test clock lock");
            *now += wait;
        }
        Box::pin(tokio::task::yield_now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_test_clock_moves_only_by_what_is_slept_on_it() {
        let clock = TestClock::new();
        assert_eq!(clock.elapsed(), Duration::ZERO);
        clock.sleep(Duration::from_secs(3600)).await;
        clock.sleep(Duration::from_millis(5)).await;
        assert_eq!(clock.elapsed(), Duration::from_millis(3_600_005));
    }
}
