//! The queue: claiming due jobs under a lease, recording progress, and ending each attempt (done with its
//! follow-ups, retried, buried, held) or putting a finished job back. Claiming is each backend's own (SQLite's
//! one writer, Postgres's `FOR UPDATE SKIP LOCKED`); everything else is one set of statements.

use serde_json::Value;

use super::{
    store::{numbered, Dialect},
    Job, JobId, JobState, NewJob, StoreError,
};

/// Which due job a claim takes. A job whose lease expired (its worker died) goes before any newer one in
/// either lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// The oldest due job: a backlog drains in the order it came.
    Oldest,
    /// The newest due job, so that a fresh event is acted on while an older backlog drains (workers
    /// alternate the two lanes). A persona job still waits for an older pending one of its trigger and
    /// user: a person's personas are created and updated in the order their events came.
    Newest,
}

/// A persona job with an older pending persona job of the same trigger and user (the newest lane leaves it
/// for later). Found along `jobs_user`: a person's jobs, not the backlog.
pub const OLDER_PENDING_PERSONA: &str = "c.action = 'create_persona' AND EXISTS (
         SELECT 1 FROM jobs o
         WHERE o.user_id = c.user_id AND o.id < c.id AND o.trigger_name = c.trigger_name
           AND o.action = 'create_persona' AND o.state = 'pending')";

#[async_trait::async_trait]
pub trait Queue: Send + Sync {
    /// Takes the oldest due job (pending, or running with an expired lease), marks it running until
    /// `now + lease`, and counts the attempt.
    async fn claim(&self, now_ms: u64, lease_ms: u64) -> Result<Option<Job>, StoreError> {
        self.claim_in(now_ms, lease_ms, Lane::Oldest).await
    }
    /// As [`Queue::claim`], taking the due job `lane` says.
    async fn claim_in(
        &self,
        now_ms: u64,
        lease_ms: u64,
        lane: Lane,
    ) -> Result<Option<Job>, StoreError>;
    /// Puts every running job back to pending (start-up of a single-process store: nobody else holds them).
    async fn release_running(&self) -> Result<u64, StoreError>;
    /// Extends the lease of a job its worker is still running.
    async fn renew_lease(&self, id: JobId, lease_ms: u64) -> Result<(), StoreError>;
    /// Records steps done so far, so a retry does not repeat them: `patch` is merged into the job's progress
    /// (a key set to `null` is removed).
    async fn merge_progress(&self, id: JobId, patch: Value) -> Result<(), StoreError>;
    /// Records the outcome and, in the same transaction, the follow-up jobs (sink deliveries).
    async fn finish(
        &self,
        id: JobId,
        outcome: Value,
        followups: Vec<NewJob>,
    ) -> Result<(), StoreError>;
    async fn retry_at(&self, id: JobId, run_at_ms: u64, error: String) -> Result<(), StoreError>;
    async fn bury(&self, id: JobId, reason: String) -> Result<(), StoreError>;
    /// Marks a job held back by a cost guard, with the reason.
    async fn hold(&self, id: JobId, reason: String) -> Result<(), StoreError>;
    /// Puts a job that is not pending or running back in the queue, due now, marked as an operator's replay
    /// (which no cooldown holds back).
    async fn requeue(&self, id: JobId, now_ms: u64) -> Result<(), StoreError>;
}

/// A worker's write to the queue: a claim, or a step of the job it holds. A backend runs them its own way
/// (SQLite gathers what workers have queued into one transaction on its writer).
#[derive(Debug)]
pub enum Bookkeeping {
    Claim {
        now_ms: u64,
        lease_ms: u64,
        lane: Lane,
    },
    Renew {
        id: JobId,
        lease_ms: u64,
    },
    Progress {
        id: JobId,
        patch: Value,
    },
    Finish {
        id: JobId,
        outcome: Value,
        followups: Vec<NewJob>,
        now_ms: u64,
    },
    Retry {
        id: JobId,
        run_at_ms: u64,
        error: String,
        now_ms: u64,
    },
    /// Ends an attempt for good (dead) or until an operator replays it (held), with the reason.
    End {
        id: JobId,
        state: Ended,
        reason: String,
        now_ms: u64,
    },
}

/// How [`Bookkeeping::End`] leaves a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Dead,
    Held,
}

impl Ended {
    pub fn as_str(self) -> &'static str {
        match self {
            Ended::Dead => JobState::Dead.as_str(),
            Ended::Held => JobState::Held.as_str(),
        }
    }
}

/// The queue's statements in one dialect.
pub struct Sql {
    pub renew_lease: String,
    pub merge_progress: String,
    pub done: String,
    pub followup: String,
    pub retry: String,
    /// Ends an attempt as `$2` (dead or held) with the reason `$3`.
    pub end: String,
    pub requeue: String,
}

impl Sql {
    pub(crate) fn new(d: Dialect) -> Self {
        let end =
            |state, error| format!("state = {state}, last_error = {error}, lease_until_ms = NULL");
        let sql = Sql {
            renew_lease: d.fill(
                "UPDATE jobs SET lease_until_ms = {NOW} + $2 WHERE id = $1 AND state = 'running'",
            ),
            merge_progress: format!(
                "UPDATE jobs SET progress = {} WHERE id = $1",
                d.patch("progress", "$2")
            ),
            done: d.fill(&format!(
                "UPDATE jobs SET state = 'done', outcome = $2{{J}}, lease_until_ms = NULL, updated_ms = $3,
                 history = {} WHERE id = $1",
                d.push_history("$3", "'done'", "NULL")
            )),
            followup: d.fill(
                "INSERT INTO jobs (event_row, trigger_name, action, source, event_id, user_id, context,
                                   created_ms, run_at_ms, updated_ms)
                 SELECT event_row, $2, $3, $4, $5, $6, $7{J}, $8, $8, $8 FROM jobs WHERE id = $1",
            ),
            retry: format!(
                "UPDATE jobs SET {}, run_at_ms = $2, updated_ms = $4, history = {} WHERE id = $1",
                end("'pending'", "$3"),
                d.push_history("$4", "'retry'", "$3")
            ),
            end: format!(
                "UPDATE jobs SET {}, updated_ms = $4, history = {} WHERE id = $1",
                end("$2", "$3"),
                d.push_history("$4", "$2", "$3")
            ),
            requeue: format!(
                "UPDATE jobs SET state = 'pending', run_at_ms = $2, attempts = 0, outcome = NULL, updated_ms = $2,
                 progress = {}, history = {}
                 WHERE id = $1 AND state IN ('done', 'dead', 'held')",
                d.set_true(&d.remove("progress", "guards_taken"), "replay"),
                d.push_history("$2", "'replayed'", "NULL")
            ),
        };
        match d {
            Dialect::Postgres => sql,
            // Numbered `?n`: SQLite binds `$n` in order of first appearance (rusqlite runs these
            // statements on the writer), `?n` by its number, as sqlx does both.
            Dialect::Sqlite => Sql {
                renew_lease: numbered(&sql.renew_lease),
                merge_progress: numbered(&sql.merge_progress),
                done: numbered(&sql.done),
                followup: numbered(&sql.followup),
                retry: numbered(&sql.retry),
                end: numbered(&sql.end),
                requeue: numbered(&sql.requeue),
            },
        }
    }
}

/// The queue on a backend: each claim and each attempt's end is one [`Bookkeeping`] the backend's
/// `bookkeep` writes (SQLite batches them on its writer, Postgres runs each on a connection of its own);
/// `release_orphans` is the backend's, `requeue` (an operator's) one statement on the writer.
macro_rules! impl_queue {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::jobs::queue::Queue for $store {
            async fn claim_in(
                &self,
                now_ms: u64,
                lease_ms: u64,
                lane: $crate::jobs::queue::Lane,
            ) -> Result<Option<$crate::jobs::Job>, $crate::jobs::StoreError> {
                let row = self
                    .bookkeep($crate::jobs::queue::Bookkeeping::Claim {
                        now_ms,
                        lease_ms,
                        lane,
                    })
                    .await?;
                row.map($crate::jobs::Job::try_from).transpose()
            }

            async fn release_running(&self) -> Result<u64, $crate::jobs::StoreError> {
                self.release_orphans().await
            }

            async fn renew_lease(
                &self,
                id: $crate::jobs::JobId,
                lease_ms: u64,
            ) -> Result<(), $crate::jobs::StoreError> {
                let op = $crate::jobs::queue::Bookkeeping::Renew { id, lease_ms };
                self.bookkeep(op).await.map(drop)
            }

            async fn merge_progress(
                &self,
                id: $crate::jobs::JobId,
                patch: serde_json::Value,
            ) -> Result<(), $crate::jobs::StoreError> {
                let op = $crate::jobs::queue::Bookkeeping::Progress { id, patch };
                self.bookkeep(op).await.map(drop)
            }

            async fn finish(
                &self,
                id: $crate::jobs::JobId,
                outcome: serde_json::Value,
                followups: Vec<$crate::jobs::NewJob>,
            ) -> Result<(), $crate::jobs::StoreError> {
                let now_ms = $crate::jobs::now_ms();
                let op = $crate::jobs::queue::Bookkeeping::Finish {
                    id,
                    outcome,
                    followups,
                    now_ms,
                };
                self.bookkeep(op).await.map(drop)
            }

            async fn retry_at(
                &self,
                id: $crate::jobs::JobId,
                run_at_ms: u64,
                error: String,
            ) -> Result<(), $crate::jobs::StoreError> {
                let now_ms = $crate::jobs::now_ms();
                let op = $crate::jobs::queue::Bookkeeping::Retry {
                    id,
                    run_at_ms,
                    error,
                    now_ms,
                };
                self.bookkeep(op).await.map(drop)
            }

            async fn bury(
                &self,
                id: $crate::jobs::JobId,
                reason: String,
            ) -> Result<(), $crate::jobs::StoreError> {
                self.end_attempt(id, $crate::jobs::queue::Ended::Dead, reason)
                    .await
            }

            async fn hold(
                &self,
                id: $crate::jobs::JobId,
                reason: String,
            ) -> Result<(), $crate::jobs::StoreError> {
                self.end_attempt(id, $crate::jobs::queue::Ended::Held, reason)
                    .await
            }

            async fn requeue(
                &self,
                id: $crate::jobs::JobId,
                now_ms: u64,
            ) -> Result<(), $crate::jobs::StoreError> {
                use $crate::jobs::reads::JobReads;
                let done = sqlx::query(&Self::sql().requeue)
                    .bind(id as i64)
                    .bind(now_ms as i64)
                    .execute(&mut *self.writer().await?)
                    .await?;
                if done.rows_affected() == 0 && self.get(id).await?.is_none() {
                    return Err($crate::jobs::StoreError::NotFound(id));
                }
                Ok(())
            }
        }

        impl $store {
            fn sql() -> &'static $crate::jobs::queue::Sql {
                let dialect = <Self as $crate::jobs::store::SqlBackend>::DIALECT;
                &$crate::jobs::store::Statements::of(dialect).queue
            }

            /// Ends a job's attempt as dead or held, with the reason (in its history too).
            async fn end_attempt(
                &self,
                id: $crate::jobs::JobId,
                state: $crate::jobs::queue::Ended,
                reason: String,
            ) -> Result<(), $crate::jobs::StoreError> {
                let now_ms = $crate::jobs::now_ms();
                let op = $crate::jobs::queue::Bookkeeping::End {
                    id,
                    state,
                    reason,
                    now_ms,
                };
                self.bookkeep(op).await.map(drop)
            }
        }
    };
}

pub(crate) use impl_queue;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_statements_number_their_placeholders_and_keep_json_paths() {
        assert_eq!(
            numbered("json_insert(h, '$[#]', json_set(p, '$.replay', $12)) WHERE id = $1"),
            "json_insert(h, '$[#]', json_set(p, '$.replay', ?12)) WHERE id = ?1"
        );
        let sql = Sql::new(Dialect::Sqlite);
        assert!(
            !sql.retry.contains("$4") && sql.retry.contains("?4") && sql.retry.contains("'$[#]'")
        );
    }
}
