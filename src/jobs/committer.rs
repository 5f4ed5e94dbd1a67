//! Group commit: concurrent webhook requests share one store transaction, so durability does not cost
//! throughput. Each request still waits for its own commit before it is answered.

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

use tokio::sync::{mpsc, oneshot};

use super::{now_ms, Delivery, Intake, StoreError};

type Reply = oneshot::Sender<Result<Vec<bool>, StoreError>>;

/// The most deliveries one transaction takes; the rest wait for the next.
const MAX_BATCH: usize = 512;

/// Events waiting for the event log, at most; past that, new ones are not logged (and counted).
const LOG_QUEUE: usize = 16_384;

/// Where a request's deliveries go to be recorded.
#[derive(Clone)]
enum Commits {
    /// To the task that gathers concurrent requests into one store transaction.
    Gathered(mpsc::Sender<(Vec<Delivery>, Reply)>),
    /// Straight to a store that groups concurrent commits itself ([`Intake::groups_commits`]).
    Direct(Arc<dyn Intake>),
}

#[derive(Clone)]
pub struct Committer {
    commits: Commits,
    log: mpsc::Sender<Delivery>,
    /// Events the log had no room for.
    pub dropped: Arc<AtomicU64>,
    /// At most this many events per second are logged (`EVENT_LOG_MAX_PER_SEC`).
    max_per_sec: u64,
    /// The current second and how many events it logged, packed: `second << 32 | count`.
    window: Arc<AtomicU64>,
}

impl Committer {
    pub fn spawn(store: Arc<dyn Intake>, log_max_per_sec: u64) -> Self {
        let (log, log_rx) = mpsc::channel(LOG_QUEUE);
        let commits = if store.groups_commits() {
            Commits::Direct(store.clone())
        } else {
            let (tx, rx) = mpsc::channel(4096);
            tokio::spawn(run(store.clone(), rx));
            Commits::Gathered(tx)
        };
        tokio::spawn(run_log(store, log_rx));
        Self {
            commits,
            log,
            dropped: Arc::default(),
            max_per_sec: log_max_per_sec,
            window: Arc::default(),
        }
    }

    /// Takes a place in this second's share of the event log, or counts the event as not listed. A flood
    /// of events no trigger wants then costs the writer (which the acknowledgements of events that do
    /// matter also need) at most this much.
    pub fn log_has_room(&self) -> bool {
        let second = (super::now_ms() / 1000) & 0xffff_ffff;
        let taken = self
            .window
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| {
                if w >> 32 != second {
                    Some(second << 32 | 1)
                } else if w & 0xffff_ffff < self.max_per_sec {
                    Some(w + 1)
                } else {
                    None
                }
            })
            .is_ok();
        if !taken {
            self.note_dropped();
        }
        taken
    }

    fn note_dropped(&self) {
        let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        if dropped.is_power_of_two() {
            tracing::warn!(dropped, max_per_sec = self.max_per_sec, "event log: over EVENT_LOG_MAX_PER_SEC or behind, so some events that matched no trigger are not listed in the console (counted on its overview)");
        }
    }

    /// Queues events that matched no trigger for the event log, without waiting. When the log is behind
    /// by [`LOG_QUEUE`] events, the rest are counted and left out: the log is for looking, the queue is
    /// what runs.
    pub fn log(&self, deliveries: Vec<Delivery>) {
        for d in deliveries {
            if self.log.try_send(d).is_err() {
                self.note_dropped();
            }
        }
    }

    /// Records deliveries; returns, per delivery, whether it was new.
    pub async fn record(&self, deliveries: Vec<Delivery>) -> Result<Vec<bool>, StoreError> {
        if deliveries.is_empty() {
            return Ok(Vec::new());
        }
        let tx = match &self.commits {
            Commits::Direct(store) => return store.record(deliveries, now_ms()).await,
            Commits::Gathered(tx) => tx,
        };
        let (reply, answer) = oneshot::channel();
        tx.send((deliveries, reply))
            .await
            .map_err(|_| StoreError::Unavailable("the store writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the store writer has stopped".into()))?
    }
}

async fn run(store: Arc<dyn Intake>, mut rx: mpsc::Receiver<(Vec<Delivery>, Reply)>) {
    while let Some(first) = rx.recv().await {
        let mut waiting = vec![first];
        let mut count = waiting[0].0.len();
        while count < MAX_BATCH {
            match rx.try_recv() {
                Ok(next) => {
                    count += next.0.len();
                    waiting.push(next);
                }
                Err(_) => break,
            }
        }
        let sizes: Vec<usize> = waiting.iter().map(|(d, _)| d.len()).collect();
        let (all, replies): (Vec<Vec<Delivery>>, Vec<Reply>) = waiting.into_iter().unzip();
        let result = store
            .record(all.into_iter().flatten().collect(), now_ms())
            .await;
        match result {
            Ok(fresh) => {
                let mut rest = fresh.as_slice();
                for (size, reply) in sizes.into_iter().zip(replies) {
                    let (mine, tail) = rest.split_at(size);
                    rest = tail;
                    let _ = reply.send(Ok(mine.to_vec()));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, deliveries = count, "group commit failed");
                let e = Arc::new(e);
                for reply in replies {
                    let _ = reply.send(Err(StoreError::Shared(e.clone())));
                }
            }
        }
    }
}

async fn run_log(store: Arc<dyn Intake>, mut rx: mpsc::Receiver<Delivery>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let count = batch.len();
        if let Err(e) = store.log_events(std::mem::take(&mut batch), now_ms()).await {
            tracing::warn!(error = %e, events = count, "cannot write the event log: these events are not listed in the console");
        }
    }
}
