//! The worker pool: claims due jobs, runs them, records the outcome, retries with backoff, dead-letters.

use std::{sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;
use tracing::instrument::WithSubscriber;

use crate::metrics::{HoldLabel, Metrics};

use super::{
    now_ms, queue::Lane, retry::RetryPolicy, Hold, Job, JobStore, Jobs, NewJob, StoreError,
};

/// What runs a claimed job. The actions implement it (`actions::Runner`) and `startup` hands it to the pool,
/// so the queue knows nothing of triggers, clients or sinks.
#[async_trait::async_trait]
pub trait JobHandler: Send + Sync + 'static {
    /// Runs one attempt; the worker records what it returns.
    async fn run(&self, job: &Job, store: &dyn JobStore) -> Step;
}

/// What became of an attempt.
#[derive(Debug)]
pub enum Step {
    /// Finished, with the follow-up jobs (sink deliveries) to record with the outcome.
    Done(serde_json::Value, Vec<NewJob>),
    Retry {
        error: String,
        after: Option<Duration>,
    },
    Dead(String),
    /// A cost guard holds the job back (recorded with the reason, replayable).
    Held(Hold),
}

/// What every worker (and an on-demand drain) shares: the job handler and the metrics it counts outcomes in.
#[derive(Clone)]
pub struct Runner {
    handler: Arc<dyn JobHandler>,
    metrics: Arc<Metrics>,
}

impl Runner {
    pub fn new(handler: Arc<dyn JobHandler>, metrics: Arc<Metrics>) -> Self {
        Self { handler, metrics }
    }

    async fn run(&self, job: &Job, store: &dyn JobStore) -> Step {
        self.handler.run(job, store).await
    }
}

/// When workers stop: `shutdown` stops them taking jobs (each finishes the one it holds); `abandon` (the
/// end of the shutdown grace) puts a job still running back in the queue, due now.
#[derive(Clone, Default)]
pub struct Stop {
    pub shutdown: CancellationToken,
    pub abandon: CancellationToken,
}

/// Starts `count` workers (they log where their caller does).
pub fn spawn_pool(
    count: usize,
    jobs: Jobs,
    runner: Arc<Runner>,
    policy: RetryPolicy,
    lease: Duration,
    stop: Stop,
) -> tokio::task::JoinSet<()> {
    let mut set = tokio::task::JoinSet::new();
    for worker in 0..count.max(1) {
        let (jobs, runner, stop) = (jobs.clone(), runner.clone(), stop.clone());
        set.spawn(
            async move { work(worker, jobs, runner, policy, lease, stop).await }
                .with_current_subscriber(),
        );
    }
    set
}

/// Runs every job that is due, one at a time, until there is none left to claim (a job it retries with no
/// wait runs again in the same call); says how many attempts it made. Each is the attempt a worker makes,
/// so an app started without workers (tests) runs its jobs on demand instead of being waited on.
pub async fn run_pending_jobs(
    jobs: &Jobs,
    runner: &Runner,
    policy: &RetryPolicy,
    lease: Duration,
) -> Result<usize, StoreError> {
    let never = CancellationToken::new();
    let mut ran = 0;
    while let Some(job) = jobs.store.claim(now_ms(), lease.as_millis() as u64).await? {
        run_one(jobs, runner, policy, lease, job, &never).await;
        ran += 1;
    }
    Ok(ran)
}

async fn work(
    worker: usize,
    jobs: Jobs,
    runner: Arc<Runner>,
    policy: RetryPolicy,
    lease: Duration,
    stop: Stop,
) {
    let shutdown = &stop.shutdown;
    // Every other claim takes the newest due job: a fresh event is acted on in milliseconds while an older
    // backlog drains (at half the workers' pace, from its oldest end: no job waits forever).
    let mut lane = Lane::Oldest;
    loop {
        // Boxed, not pinned on the stack, so that it can be dropped before a claimed job runs.
        let mut bell = Box::pin(jobs.bell.notified());
        bell.as_mut().enable();
        if shutdown.is_cancelled() {
            return;
        }
        lane = match lane {
            Lane::Oldest => Lane::Newest,
            Lane::Newest => Lane::Oldest,
        };
        match jobs
            .store
            .claim_in(now_ms(), lease.as_millis() as u64, lane)
            .await
        {
            Ok(Some(job)) => {
                // A wake-up this worker took while claiming goes on to an idle one (tokio passes on a
                // `notify_one` whose future is dropped unpolled).
                drop(bell);
                run_one(&jobs, &runner, &policy, lease, job, &stop.abandon).await;
                continue;
            }
            Ok(None) => {}
            Err(e) => tracing::error!(worker, error = %e, "cannot claim jobs"),
        }
        let wait = match jobs.store.next_due_ms().await {
            Ok(Some(due)) => {
                Duration::from_millis(due.saturating_sub(now_ms())).min(Duration::from_secs(1))
            }
            _ => Duration::from_secs(1),
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = &mut bell => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// One attempt at one job, in a `job` span that names it.
#[tracing::instrument(name = "job", skip_all, fields(id = job.id, trigger = %job.new.trigger, source = %job.new.source, event_id = %job.new.event_id, attempt = job.attempts))]
async fn run_one(
    jobs: &Jobs,
    runner: &Runner,
    policy: &RetryPolicy,
    lease: Duration,
    job: Job,
    abandon: &CancellationToken,
) {
    let metrics = &runner.metrics;
    let label = metrics.job(&job.new.trigger, job.new.action.as_str());
    if job.follows_an_interrupted_attempt() {
        tracing::warn!("the previous attempt never ended (the process was killed or lost its lease): running it again");
        metrics
            .jobs_rerun_after_interruption
            .get_or_create(&label)
            .inc();
    }
    // The lease is renewed while the job runs, so a long Mave call is not taken over by another worker;
    // a worker that dies stops renewing, and its job is claimed again once the lease ends.
    let renew = async {
        loop {
            tokio::time::sleep(lease / 3).await;
            if let Err(e) = jobs
                .store
                .renew_lease(job.id, lease.as_millis() as u64)
                .await
            {
                tracing::warn!(error = %e, "could not renew the job's lease");
            }
        }
    };
    let step = tokio::select! {
        step = runner.run(&job, jobs.store.as_ref()) => step,
        never = renew => never,
        _ = abandon.cancelled() => {
            tracing::warn!("SHUTDOWN_GRACE ran out: the job goes back to the queue unfinished and runs again at the next start");
            metrics.jobs_released_at_shutdown.inc();
            let released = jobs
                .store
                .retry_at(job.id, now_ms(), "stopped unfinished: the server shut down (SHUTDOWN_GRACE ran out)".into())
                .await;
            if let Err(e) = released {
                tracing::error!(error = %e, "cannot put the job back in the queue; it is taken over when its lease ends");
            }
            return;
        }
    };
    let recorded = match step {
        Step::Done(outcome, followups) => {
            tracing::debug!(followups = followups.len(), "job done");
            metrics.jobs_succeeded.get_or_create(&label).inc();
            let woke = followups.len();
            let done = jobs.store.finish(job.id, outcome, followups).await;
            jobs.wake(woke);
            done
        }
        Step::Held(hold) => {
            let guard = match hold {
                Hold::Cooldown(_) => "cooldown",
                Hold::Budget(_) => {
                    metrics
                        .budget_hold_ms
                        .store(now_ms(), std::sync::atomic::Ordering::Relaxed);
                    "budget"
                }
            };
            metrics
                .jobs_held
                .get_or_create(&HoldLabel {
                    trigger: job.new.trigger.clone(),
                    guard: guard.into(),
                })
                .inc();
            jobs.store.hold(job.id, hold.into_reason()).await
        }
        Step::Dead(reason) => {
            tracing::error!(reason = %reason, "job dead-lettered: final error");
            metrics.jobs_dead.get_or_create(&label).inc();
            jobs.store.bury(job.id, reason).await
        }
        Step::Retry { error, after } => {
            let age = Duration::from_millis(now_ms().saturating_sub(job.created_ms));
            if let Some(why) = policy.exhausted(job.attempts, age) {
                let reason = format!("{why}; last error: {error}");
                tracing::error!(reason = %reason, "job dead-lettered");
                metrics.jobs_dead.get_or_create(&label).inc();
                jobs.store.bury(job.id, reason).await
            } else {
                let delay = policy.delay(job.attempts, after);
                metrics.jobs_retried.get_or_create(&label).inc();
                tracing::warn!(error = %error, retry_in_ms = delay.as_millis() as u64, "attempt failed, will retry");
                jobs.store
                    .retry_at(job.id, now_ms() + delay.as_millis() as u64, error)
                    .await
            }
        }
    };
    if let Err(e) = recorded {
        tracing::error!(error = %e, "cannot record the job's outcome");
    }
}
