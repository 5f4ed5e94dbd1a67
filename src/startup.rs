//! Builds the app from settings and a trigger table: bound port, shared HTTP client, state, workers.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::instrument::WithSubscriber;

use crate::{
    actions,
    alerts::{self, Alerts},
    clients::{customerio::CustomerIoClient, http_client, mavera::MaveraClient},
    clock::{self, SharedClock},
    config::Settings,
    dedupe::DedupeMemory,
    intake::{Counters, Intake},
    jobs::{
        lockfile::ServerLock,
        open_store,
        retry::{full_jitter, Jitter, RetryPolicy},
        sqlite,
        upkeep::{self, Retention},
        worker::{run_pending_jobs, spawn_pool, Runner, Stop},
        Jobs, StoreError,
    },
    limits::{LimitedListener, RemoteAddr},
    metrics::Metrics,
    ratelimit::LiveLimits,
    routes,
    state::{AppState, Inner},
    triggers::TriggerTable,
};

/// What a test may swap in; the real thing by default. The app's tasks log to the subscriber that was current
/// where it was built and run (`WithSubscriber`), so a test gives each app its own.
#[derive(Clone)]
pub struct Seams {
    /// The clock the request windows (Mavera, Customer.io) count and wait on.
    pub clock: SharedClock,
    /// How a retry's backoff is drawn below its ceiling.
    pub jitter: Jitter,
    /// `false`: no background workers; jobs run only when [`Drain::run_pending_jobs`] is called.
    pub workers: bool,
    /// `true`: each request also logs to the subscriber current where the app runs (a test's own), not
    /// only the process's global one. Off in production, where it would only add work to every request.
    pub scoped_logs: bool,
}

impl Default for Seams {
    fn default() -> Self {
        Self {
            clock: clock::system(),
            jitter: full_jitter,
            workers: true,
            scoped_logs: false,
        }
    }
}

pub struct App {
    listener: TcpListener,
    /// This process's claim on its SQLite file, held until the server stops.
    lock: Option<ServerLock>,
    state: AppState,
    runner: Arc<Runner>,
    /// The shared HTTP client, for the sinks alerts go to.
    http: reqwest::Client,
    policy: RetryPolicy,
    workers: bool,
    scoped_logs: bool,
}

/// Runs the app's due jobs on demand, with the code a worker runs (see [`Seams::workers`]).
#[derive(Clone)]
pub struct Drain {
    jobs: Jobs,
    runner: Arc<Runner>,
    policy: RetryPolicy,
    lease: Duration,
}

impl Drain {
    /// Every job that is due, until none is left to claim: how many attempts were made.
    pub async fn run_pending_jobs(&self) -> Result<usize, StoreError> {
        run_pending_jobs(&self.jobs, &self.runner, &self.policy, self.lease).await
    }
}

impl App {
    /// Binds the port and wires everything; nothing runs until [`App::run_until_stopped`].
    pub async fn build(settings: Settings, table: TriggerTable) -> anyhow::Result<Self> {
        Self::build_with(settings, table, Seams::default()).await
    }

    /// [`App::build`] with a test's clock, jitter or no workers.
    pub async fn build_with(
        settings: Settings,
        table: TriggerTable,
        seams: Seams,
    ) -> anyhow::Result<Self> {
        let addr = SocketAddr::new(settings.server.bind_addr, settings.server.port);
        let listener = TcpListener::bind(addr).await.map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on {addr}: {e}. Fix: set WEBHOOK_PORT to a free port (or 0 for any)"
            )
        })?;
        let table = Arc::new(ArcSwap::from_pointee(table));
        // Before the store is opened: a second server must not touch the first one's running jobs.
        let lock = sqlite::database_file(&settings.store.database_url)
            .map(|file| ServerLock::take(&file))
            .transpose()?;
        let store = open_store(&settings).await.map_err(|e| {
            anyhow::anyhow!(
                "{e}. Fix: check DATABASE_URL ({}) and that its folder is writable",
                settings.store.database_url
            )
        })?;
        let released = store.release_running().await?;
        let counts = store.counts().await?;
        tracing::info!(
            store = %settings.store.database_url,
            pending = counts.pending,
            resumed = released,
            done = counts.done,
            dead = counts.dead,
            "job store open"
        );
        let http = http_client();
        let sink_http = http.clone();
        let metrics = Arc::new(Metrics::default());
        store.observe_commits(metrics.store_commits.clone());
        let limits = {
            let (requests, chats, cio) = settings.live_limits();
            Arc::new(LiveLimits::new(requests, chats, cio).on_clock(seams.clock))
        };
        let mavera = MaveraClient::new(
            http.clone(),
            &settings.mavera.base_url,
            settings.mavera.api_key.clone(),
            &settings,
            metrics.clone(),
            store.shared_limits(),
            limits.clone(),
        );
        let cio = CustomerIoClient::new(
            http,
            &settings.customerio.app_base_url,
            settings.customerio.app_key.clone(),
            &settings,
            metrics.clone(),
            store.shared_limits(),
            limits.clone(),
        );
        let jobs = Jobs::new(store, settings.store.event_log_max_per_sec);
        let intake = Intake {
            dedupe: DedupeMemory::new(settings.intake.dedupe_ttl, settings.intake.dedupe_capacity),
            table: table.clone(),
            jobs: jobs.clone(),
            counters: Counters::default(),
            backlog: AtomicU64::new(counts.pending),
            max_backlog: settings.intake.max_backlog,
            metrics: metrics.clone(),
            log_ignored: settings.store.log_ignored_events,
        };
        let policy = RetryPolicy {
            base: settings.jobs.retry_base,
            max: settings.jobs.retry_max,
            max_attempts: settings.jobs.retry_max_attempts,
            max_age: settings.jobs.retry_max_age,
            jitter: seams.jitter,
        };
        let door = crate::access::Door::new(&settings.access, metrics.clone());
        let state = AppState(Arc::new(Inner {
            door,
            settings,
            intake,
            jobs,
            table: table.clone(),
            started: Instant::now(),
            metrics: metrics.clone(),
            limits,
        }));
        let handler = Arc::new(actions::Runner {
            table,
            mavera,
            cio,
            daily_budget: state.settings.mavera.daily_budget,
            metrics: metrics.clone(),
            http: sink_http.clone(),
            write_back: Arc::new(crate::sinks::writeback::WriteBack::from_settings(
                &state.settings.write_back,
            )),
        });
        let runner = Arc::new(Runner::new(handler, metrics));
        Ok(Self {
            listener,
            lock,
            state,
            runner,
            http: sink_http,
            policy,
            workers: seams.workers,
            scoped_logs: seams.scoped_logs,
        })
    }

    /// A handle that runs this app's due jobs when asked, also while it serves.
    pub fn drain(&self) -> Drain {
        Drain {
            jobs: self.state.jobs.clone(),
            runner: self.runner.clone(),
            policy: self.policy,
            lease: self.state.settings.jobs.lease,
        }
    }

    /// The address actually bound (the port is the real one when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or_else(|_| {
            SocketAddr::new(
                self.state.settings.server.bind_addr,
                self.state.settings.server.port,
            )
        })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    pub fn state(&self) -> AppState {
        self.state.clone()
    }

    /// Serves until `shutdown` is cancelled, then stops intake, lets jobs in flight run to their end for up
    /// to `SHUTDOWN_GRACE`, and puts the rest back in the queue. Every task it starts, and every request,
    /// logs to the subscriber current where this runs.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let stop = Stop {
            shutdown: shutdown.clone(),
            abandon: CancellationToken::new(),
        };
        let http = self.http.clone();
        let workers = if self.workers {
            spawn_pool(
                self.state.settings.jobs.workers,
                self.state.jobs.clone(),
                self.runner,
                self.policy,
                self.state.settings.jobs.lease,
                stop.clone(),
            )
        } else {
            tokio::task::JoinSet::new()
        };
        tokio::spawn(watch_backlog(self.state.clone(), shutdown.clone()).with_current_subscriber());
        tokio::spawn(close_digests(self.state.clone(), shutdown.clone()).with_current_subscriber());
        tokio::spawn(
            upkeep::run(
                self.state.jobs.store.upkeep(),
                Retention::from_settings(&self.state.settings),
                self.state.settings.store.prune_interval,
                self.state.metrics.clone(),
                shutdown.clone(),
            )
            .with_current_subscriber(),
        );
        tokio::spawn(
            alerts::run(
                Alerts::new(
                    self.state.jobs.store.clone(),
                    self.state.metrics.clone(),
                    self.state.table.clone(),
                    http,
                ),
                shutdown.clone(),
            )
            .with_current_subscriber(),
        );
        let mut router = routes::router(self.state.clone());
        if self.scoped_logs {
            // axum serves each connection on a task of its own: each request logs where this runs.
            let logs = tracing::dispatcher::get_default(tracing::Dispatch::clone);
            router = router.layer(axum::middleware::from_fn(
                move |request: axum::extract::Request, next: axum::middleware::Next| {
                    next.run(request).with_subscriber(logs.clone())
                },
            ));
        }
        let app = router.into_make_service_with_connect_info::<RemoteAddr>();
        let listener =
            LimitedListener::new(self.listener, self.state.settings.server.max_connections);
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .await;
        shutdown.cancel();
        let grace = self.state.settings.server.shutdown_grace;
        let mut workers = workers;
        let running = self
            .state
            .jobs
            .store
            .counts()
            .await
            .map(|c| c.running)
            .unwrap_or(0);
        tracing::info!(running, grace = %humantime::format_duration(grace), "stopping: intake closed; jobs in flight may finish within SHUTDOWN_GRACE");
        if tokio::time::timeout(grace, join_workers(&mut workers))
            .await
            .is_err()
        {
            tracing::warn!(grace = %humantime::format_duration(grace), "SHUTDOWN_GRACE ran out: putting the jobs still running back in the queue");
            stop.abandon.cancel();
            if tokio::time::timeout(Duration::from_secs(10), join_workers(&mut workers))
                .await
                .is_err()
            {
                // Their jobs stay `running`: resumed at the next start, or taken over when the lease ends.
                tracing::error!("workers did not let go of their jobs: stopping anyway");
            }
        }
        drop(self.lock);
        served.map_err(Into::into)
    }
}

async fn join_workers(workers: &mut tokio::task::JoinSet<()>) {
    while let Some(done) = workers.join_next().await {
        match done {
            Err(e) if e.is_panic() => tracing::error!(error = %e, "a worker panicked"),
            // Cancelled: the runtime is shutting down around us.
            _ => {}
        }
    }
}

/// Closes digests whose window has ended, once a second: a digest is closed at most a second late, and a
/// restart loses none (they are in the store).
async fn close_digests(state: AppState, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = state.jobs.close_due_digests(crate::jobs::now_ms()).await {
            tracing::warn!(error = %e, "cannot close due digests: trying again in a second");
        }
    }
}

/// Counts pending jobs twice a second, for backpressure and `/healthz`, without a query per request.
async fn watch_backlog(state: AppState, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Ok(counts) = state.jobs.store.backlog().await {
            state.metrics.queue_depth.set(counts.pending as i64);
            let age = counts
                .oldest_pending_ms
                .map(|t| crate::jobs::now_ms().saturating_sub(t) / 1000)
                .unwrap_or(0);
            state.metrics.oldest_pending_age_seconds.set(age as i64);
            let before = state.intake.backlog.swap(counts.pending, Ordering::Relaxed);
            let bound = state.intake.max_backlog;
            if counts.pending > bound && before <= bound {
                tracing::warn!(
                    pending = counts.pending,
                    bound,
                    "backlog over its bound: new webhooks get 503 + Retry-After until it drains"
                );
            }
        }
    }
}
