//! mavera-triggers: Segment and Customer.io webhooks in, Mavera personas and research briefs out.
//!
//! # Layout
//! An event walks one way, and the modules follow it:
//! route (`routes/`) → verify and parse (`sources/`) → dedupe (`dedupe`) → match triggers (`triggers/`)
//! → enqueue (`intake`, `jobs/`) → worker (`jobs::worker`) → actions (`actions/`) → remote APIs (`clients/`)
//! → where the outcome goes (`sinks/`).
//! `config` reads the environment (`secret` holds its secrets), `startup` wires the app, `cli` is the command line. Beside the path:
//! `alerts` (telling someone when work stops), `jobs::upkeep` (retention, erasure), `access` (who may use the
//! console and the admin API). `ARCHITECTURE.md` is the map.

pub mod access;
pub mod actions;
pub mod alerts;
pub mod cli;
pub mod clients;
pub mod clock;
pub mod config;
pub mod console;
pub mod dedupe;
pub mod error;
pub mod intake;
pub mod jobs;
pub mod limits;
pub mod metrics;
pub mod preflight;
pub mod ratelimit;
pub mod routes;
pub mod secret;
pub mod sinks;
pub mod sources;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod triggers;
