//! The in-process job store: fast, and gone with the process. The durable store replaces it.

use std::{collections::BTreeMap, sync::Mutex};

use serde_json::{Map, Value};

use super::{Job, JobCounts, JobId, JobState, JobStore, NewJob, StoreError};

#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    next_id: JobId,
    jobs: BTreeMap<JobId, Job>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().expect("job store lock"))
    }

    fn update(&self, id: JobId, f: impl FnOnce(&mut Job)) -> Result<(), StoreError> {
        self.with(|inner| {
            let job = inner.jobs.get_mut(&id).ok_or(StoreError::NotFound(id))?;
            f(job);
            Ok(())
        })
    }
}

#[async_trait::async_trait]
impl JobStore for MemoryStore {
    async fn enqueue(&self, jobs: Vec<NewJob>, now_ms: u64) -> Result<Vec<JobId>, StoreError> {
        Ok(self.with(|inner| {
            jobs.into_iter()
                .map(|new| {
                    inner.next_id += 1;
                    let id = inner.next_id;
                    inner.jobs.insert(
                        id,
                        Job {
                            id,
                            new,
                            state: JobState::Pending,
                            attempts: 0,
                            created_ms: now_ms,
                            run_at_ms: now_ms,
                            progress: Map::new(),
                            last_error: None,
                            outcome: None,
                        },
                    );
                    id
                })
                .collect()
        }))
    }

    async fn claim(&self, now_ms: u64) -> Result<Option<Job>, StoreError> {
        Ok(self.with(|inner| {
            let job = inner
                .jobs
                .values_mut()
                .filter(|j| j.state == JobState::Pending && j.run_at_ms <= now_ms)
                .min_by_key(|j| (j.run_at_ms, j.id))?;
            job.state = JobState::Running;
            job.attempts += 1;
            Some(job.clone())
        }))
    }

    async fn save_progress(
        &self,
        id: JobId,
        progress: Map<String, Value>,
    ) -> Result<(), StoreError> {
        self.update(id, |j| j.progress = progress)
    }

    async fn finish(&self, id: JobId, outcome: Value) -> Result<(), StoreError> {
        self.update(id, |j| {
            j.state = JobState::Done;
            j.outcome = Some(outcome);
        })
    }

    async fn retry_at(&self, id: JobId, run_at_ms: u64, error: String) -> Result<(), StoreError> {
        self.update(id, |j| {
            j.state = JobState::Pending;
            j.run_at_ms = run_at_ms;
            j.last_error = Some(error);
        })
    }

    async fn bury(&self, id: JobId, reason: String) -> Result<(), StoreError> {
        self.update(id, |j| {
            j.state = JobState::Dead;
            j.last_error = Some(reason);
        })
    }

    async fn requeue(&self, id: JobId, now_ms: u64) -> Result<(), StoreError> {
        self.update(id, |j| {
            if matches!(j.state, JobState::Done | JobState::Dead) {
                j.state = JobState::Pending;
                j.run_at_ms = now_ms;
                j.attempts = 0;
                j.outcome = None;
            }
        })
    }

    async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        Ok(self.with(|inner| inner.jobs.get(&id).cloned()))
    }

    async fn list(&self, state: Option<JobState>, limit: usize) -> Result<Vec<Job>, StoreError> {
        Ok(self.with(|inner| {
            inner
                .jobs
                .values()
                .rev()
                .filter(|j| state.is_none_or(|s| j.state == s))
                .take(limit)
                .cloned()
                .collect()
        }))
    }

    async fn counts(&self) -> Result<JobCounts, StoreError> {
        Ok(self.with(|inner| {
            let mut c = JobCounts::default();
            for j in inner.jobs.values() {
                match j.state {
                    JobState::Pending => c.pending += 1,
                    JobState::Running => c.running += 1,
                    JobState::Done => c.done += 1,
                    JobState::Dead => c.dead += 1,
                }
            }
            c
        }))
    }

    async fn next_due_ms(&self) -> Result<Option<u64>, StoreError> {
        Ok(self.with(|inner| {
            inner
                .jobs
                .values()
                .filter(|j| j.state == JobState::Pending)
                .map(|j| j.run_at_ms)
                .min()
        }))
    }
}
