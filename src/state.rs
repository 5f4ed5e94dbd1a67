//! The state every handler shares: one cloneable handle over `Arc<Inner>`.

use std::{ops::Deref, sync::Arc, time::Instant};

use arc_swap::ArcSwap;

use crate::{config::Settings, intake::Intake, jobs::Jobs, triggers::TriggerTable};

#[derive(Clone)]
pub struct AppState(pub Arc<Inner>);

pub struct Inner {
    pub settings: Settings,
    pub intake: Intake,
    pub jobs: Jobs,
    pub table: Arc<ArcSwap<TriggerTable>>,
    pub started: Instant,
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}
