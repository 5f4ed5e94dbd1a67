//! Client-side request budgets: "at most N requests in any window of W", as a sliding log.
//!
//! Mavera counts requests per key in a sliding 60 s window (PROTOCOLS.md §4.5) and Customer.io allows 10 per
//! second. A token bucket (GCRA, as in `governor`) lets a full burst through and then refills, so two bursts
//! can land in one window and exceed the vendor's count; the log below never does, and still lets a quiet
//! server spend its whole budget at once.

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicU32, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use tokio::time::Instant;
use tracing::instrument::WithSubscriber;

use crate::clock::SharedClock;

#[derive(Debug)]
pub struct SlidingWindow {
    limit: AtomicUsize,
    window: Duration,
    sent: Mutex<VecDeque<Instant>>,
    clock: SharedClock,
}

impl SlidingWindow {
    pub fn new(limit: u32, window: Duration, clock: SharedClock) -> Self {
        Self {
            limit: AtomicUsize::new(limit.max(1) as usize),
            window,
            sent: Mutex::new(VecDeque::new()),
            clock,
        }
    }

    /// A new limit, from the next request on (a reload of `[limits]`).
    pub fn set_limit(&self, limit: u32) {
        self.limit.store(limit.max(1) as usize, Ordering::Relaxed);
    }

    /// How long a place stays taken: the window and 1 % more. A request leaves a moment after its place is
    /// taken, and that moment varies; a place freed after exactly the window let the 61st request of a
    /// 60-per-minute limit reach the vendor 59.999 s after the first (the soak bench saw 61 in a window).
    fn held(&self) -> Duration {
        self.window + self.window / 100
    }

    /// Takes a place in the window, or says how long until one frees up.
    pub fn try_acquire(&self) -> Result<(), Duration> {
        let now = self.clock.now();
        let held = self.held();
        let mut sent = self.sent.lock().expect("rate limiter lock");
        while sent.front().is_some_and(|t| now.duration_since(*t) >= held) {
            sent.pop_front();
        }
        if sent.len() < self.limit.load(Ordering::Relaxed) {
            sent.push_back(now);
            Ok(())
        } else {
            let oldest = *sent.front().expect("full window has entries");
            Err(held.saturating_sub(now.duration_since(oldest)))
        }
    }

    /// Waits for a place in the window.
    pub async fn acquire(&self) {
        while let Err(wait) = self.try_acquire() {
            self.clock.sleep(wait.max(Duration::from_millis(1))).await;
        }
    }
}

/// The client-side limits in force. A reload (SIGHUP, `POST /admin/reload`) of the trigger file's
/// `[limits]` changes them without a restart; every limiter reads them at each request.
#[derive(Debug)]
pub struct LiveLimits {
    pub mavera_per_window: AtomicU32,
    pub mavera_chats: AtomicU32,
    pub cio_per_second: AtomicU32,
    /// The clock the request windows count and wait on.
    pub clock: SharedClock,
}

impl LiveLimits {
    /// Mavera requests per window, Mavera chats at once, Customer.io requests per second, on the real clock.
    pub fn new(mavera_per_window: u32, mavera_chats: u32, cio_per_second: u32) -> Self {
        Self {
            mavera_per_window: AtomicU32::new(mavera_per_window),
            mavera_chats: AtomicU32::new(mavera_chats),
            cio_per_second: AtomicU32::new(cio_per_second),
            clock: crate::clock::system(),
        }
    }

    /// The same limits, counted on `clock` (a test's).
    pub fn on_clock(self, clock: SharedClock) -> Self {
        Self { clock, ..self }
    }

    pub fn set(&self, mavera_per_window: u32, mavera_chats: u32, cio_per_second: u32) {
        self.mavera_per_window
            .store(mavera_per_window, Ordering::Relaxed);
        self.mavera_chats.store(mavera_chats, Ordering::Relaxed);
        self.cio_per_second.store(cio_per_second, Ordering::Relaxed);
    }
}

/// "At most N requests in any window": kept in this process (one replica, SQLite), or in the Postgres store
/// so that all replicas together stay under the vendor's limit for the key or workspace.
pub enum RequestWindow {
    Local(SlidingWindow),
    Shared {
        store: Arc<dyn SharedLimits>,
        bucket: &'static str,
        window: Duration,
        clock: SharedClock,
    },
}

impl RequestWindow {
    pub fn new(
        shared: Option<Arc<dyn SharedLimits>>,
        bucket: &'static str,
        limit: u32,
        window: Duration,
        clock: SharedClock,
    ) -> Self {
        match shared {
            None => RequestWindow::Local(SlidingWindow::new(limit, window, clock)),
            Some(store) => RequestWindow::Shared {
                store,
                bucket,
                window,
                clock,
            },
        }
    }

    /// Waits for a place among `limit` per window. A store that cannot answer is an error (the job retries).
    pub async fn acquire(&self, limit: u32) -> Result<(), SharedLimitsDown> {
        match self {
            RequestWindow::Local(window) => {
                window.set_limit(limit);
                window.acquire().await;
                Ok(())
            }
            RequestWindow::Shared {
                store,
                bucket,
                window,
                clock,
            } => loop {
                // Counted on the database's clock, sent a moment later from several machines: a margin of
                // a tenth of the window (at most 2 s) keeps jitter from putting one request too many into
                // a window as the vendor counts it.
                let margin = (*window / 10).min(Duration::from_secs(2));
                match store
                    .try_rate(bucket, limit, (*window + margin).as_millis() as u64)
                    .await?
                {
                    Ok(()) => return Ok(()),
                    Err(wait) => clock.sleep(wait.max(Duration::from_millis(5))).await,
                }
            },
        }
    }
}

/// Mavera's client-side limits: requests per window and chats in flight.
pub struct MaveraLimits {
    pub live: Arc<LiveLimits>,
    pub requests: RequestWindow,
    pub chats: ChatPlaces,
}

/// Chats in flight: a semaphore in this process, or leased places in the Postgres store.
pub enum ChatPlaces {
    Local {
        places: tokio::sync::Semaphore,
        /// How many places the semaphore holds now (it follows a reload).
        sized: Mutex<u32>,
    },
    Shared {
        store: Arc<dyn SharedLimits>,
        /// How long a chat place is held without renewal: a replica that dies frees it after this.
        chat_lease: Duration,
        /// This process, in the slots table.
        holder: String,
    },
}

impl ChatPlaces {
    pub fn new(shared: Option<Arc<dyn SharedLimits>>, chats: u32) -> Self {
        match shared {
            None => ChatPlaces::Local {
                places: tokio::sync::Semaphore::new(chats as usize),
                sized: Mutex::new(chats),
            },
            Some(store) => ChatPlaces::Shared {
                store,
                chat_lease: CHAT_LEASE,
                holder: format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple()),
            },
        }
    }
}

/// A place among the chats in flight; given back when dropped.
pub enum ChatPermit<'a> {
    Local(#[allow(dead_code)] tokio::sync::SemaphorePermit<'a>),
    Shared {
        store: std::sync::Arc<dyn SharedLimits>,
        slot: i32,
        holder: String,
        /// Renews the lease while the chat runs.
        renewal: tokio::task::JoinHandle<()>,
    },
}

impl Drop for ChatPermit<'_> {
    fn drop(&mut self) {
        if let ChatPermit::Shared {
            store,
            slot,
            holder,
            renewal,
        } = self
        {
            renewal.abort();
            let (store, slot, holder) = (store.clone(), *slot, holder.clone());
            tokio::spawn(
                async move {
                    if let Err(e) = store.release_slot(CHAT_BUCKET, slot, &holder).await {
                        tracing::warn!(error = %e, "could not give back a shared chat place; it frees when its lease ends");
                    }
                }
                .with_current_subscriber(),
            );
        }
    }
}

pub const RATE_BUCKET: &str = "mavera:requests";
/// The Customer.io App API's limit is per workspace: shared by every replica.
pub const CIO_BUCKET: &str = "customerio:requests";
const CHAT_BUCKET: &str = "mavera:chats";

/// How often a replica asks the shared store again for a chat place.
const SLOT_POLL: Duration = Duration::from_millis(100);

/// A shared chat place's lease: short, and renewed every third of it while the chat runs (a Mave answer
/// takes 30–90 s), so the places a dead replica held are free again within seconds, not at the end of the
/// longest possible chat.
pub const CHAT_LEASE: Duration = Duration::from_secs(10);

impl MaveraLimits {
    /// Waits for a place in the request window.
    pub async fn request(&self) -> Result<(), SharedLimitsDown> {
        self.requests
            .acquire(self.live.mavera_per_window.load(Ordering::Relaxed))
            .await
    }

    /// Waits for a chat place.
    pub async fn chat(&self) -> Result<ChatPermit<'_>, SharedLimitsDown> {
        let chats = self.live.mavera_chats.load(Ordering::Relaxed).max(1);
        match &self.chats {
            ChatPlaces::Local { places, sized } => {
                {
                    let mut sized = sized.lock().expect("chat places lock");
                    if chats > *sized {
                        places.add_permits((chats - *sized) as usize);
                        *sized = chats;
                    } else if chats < *sized {
                        // Places in use now are taken away as they come back, at a later call.
                        *sized -= places.forget_permits((*sized - chats) as usize) as u32;
                    }
                }
                Ok(ChatPermit::Local(
                    places
                        .acquire()
                        .await
                        .expect("the chat semaphore is never closed"),
                ))
            }
            ChatPlaces::Shared {
                store,
                chat_lease,
                holder,
            } => loop {
                if let Some(slot) = store
                    .try_slot(CHAT_BUCKET, chats, holder, chat_lease.as_millis() as u64)
                    .await?
                {
                    return Ok(ChatPermit::Shared {
                        store: store.clone(),
                        slot,
                        holder: holder.clone(),
                        renewal: tokio::spawn(
                            renew_slot(store.clone(), slot, holder.clone(), *chat_lease)
                                .with_current_subscriber(),
                        ),
                    });
                }
                tokio::time::sleep(SLOT_POLL).await;
            },
        }
    }
}

/// Keeps a chat place's lease alive until aborted (when the chat ends).
async fn renew_slot(
    store: std::sync::Arc<dyn SharedLimits>,
    slot: i32,
    holder: String,
    lease: Duration,
) {
    let mut tick = tokio::time::interval(lease / 3);
    tick.tick().await;
    loop {
        tick.tick().await;
        match store
            .renew_slot(CHAT_BUCKET, slot, &holder, lease.as_millis() as u64)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(slot, "a shared chat place's lease ran out before it was renewed (the store was slow or away): another replica may use it");
            }
            Err(e) => tracing::warn!(error = %e, "could not renew a shared chat place's lease"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn no_window_ever_holds_more_than_the_limit() {
        let limiter = SlidingWindow::new(60, Duration::from_secs(60), crate::clock::system());
        let start = Instant::now();
        let mut times = Vec::new();
        for _ in 0..200 {
            limiter.acquire().await;
            times.push(start.elapsed());
        }
        for (i, t) in times.iter().enumerate() {
            let in_window = times[i..]
                .iter()
                .take_while(|u| **u < *t + Duration::from_secs(60))
                .count();
            assert!(
                in_window <= 60,
                "{in_window} requests in the minute after {t:?}"
            );
        }
        // A place is taken again 1 % after the window (60.6 s): requests that leave a little late or early
        // still never put 61 in one of the vendor's minutes.
        for pair in times.windows(61) {
            assert!(
                pair[60] - pair[0] >= Duration::from_millis(60_600),
                "{pair:?}"
            );
        }
        // The first 60 go at once; the budget is spent at the limit's pace (with that 1 %) after that, not
        // slower.
        assert_eq!(times[59], Duration::ZERO);
        assert!(
            times[199] <= Duration::from_millis(181_800 + 1_000),
            "{:?}",
            times[199]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_limit_applies_from_the_next_request() {
        let limiter = SlidingWindow::new(5, Duration::from_secs(1), crate::clock::system());
        limiter.set_limit(2);
        assert!(limiter.try_acquire().is_ok() && limiter.try_acquire().is_ok());
        assert!(limiter.try_acquire().is_err(), "two per window now");
        limiter.set_limit(3);
        assert!(limiter.try_acquire().is_ok(), "raised: a third place");
    }
}

/// Limits that hold for every replica at once, kept in the shared store.
#[async_trait::async_trait]
pub trait SharedLimits: Send + Sync + 'static {
    /// Takes a place among `limit` requests per `window_ms` for `bucket`, or says how long until one frees.
    async fn try_rate(
        &self,
        bucket: &str,
        limit: u32,
        window_ms: u64,
    ) -> Result<Result<(), std::time::Duration>, SharedLimitsDown>;
    /// Takes one of `slots` places for `bucket` for at most `lease_ms`; `None` when all are taken.
    async fn try_slot(
        &self,
        bucket: &str,
        slots: u32,
        holder: &str,
        lease_ms: u64,
    ) -> Result<Option<i32>, SharedLimitsDown>;
    /// Extends `holder`'s lease on a place to `lease_ms` from now; false when it no longer holds it.
    async fn renew_slot(
        &self,
        bucket: &str,
        slot: i32,
        holder: &str,
        lease_ms: u64,
    ) -> Result<bool, SharedLimitsDown>;
    async fn release_slot(
        &self,
        bucket: &str,
        slot: i32,
        holder: &str,
    ) -> Result<(), SharedLimitsDown>;
}

/// The shared store could not be asked, so the limit is not known: the call waits for a retry. Keeps the
/// store's error (its text and its `source()`).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct SharedLimitsDown(pub Box<dyn std::error::Error + Send + Sync>);
