//! Cost guards: cooldowns per (trigger, user) and call budgets per window, taken all at once or not at all.

use super::{store::Dialect, Guard, Hold, JobId, StoreError};

#[async_trait::async_trait]
pub trait Guards: Send + Sync {
    /// Takes every guard at once, or none: `None` when all allow the call, else the first refusal's reason.
    /// Taking them marks job `job` as holding them (`guards_taken` in its progress) in the same transaction,
    /// so a kill between the two can never leave the job refused by its own cooldown on its next attempt.
    async fn take_guards(
        &self,
        job: JobId,
        guards: &[Guard],
        now_ms: u64,
    ) -> Result<Option<Hold>, StoreError>;
}

/// Takes the cooldown of (`$1` trigger, `$2` user) at `$3` unless it was taken within `$4` ms.
pub const COOLDOWN: &str =
    "INSERT INTO cooldowns (trigger_name, user_id, last_ms) VALUES ($1, $2, $3)
     ON CONFLICT (trigger_name, user_id) DO UPDATE SET last_ms = excluded.last_ms
     WHERE cooldowns.last_ms <= $3 - $4
     RETURNING last_ms";

/// Counts one call against `$1`'s budget for the window starting `$2`, unless `$3` are spent.
pub const BUDGET: &str =
    "INSERT INTO budget_usage (scope, window_start_ms, used) SELECT $1, $2, 1 WHERE $3 > 0
     ON CONFLICT (scope, window_start_ms) DO UPDATE SET used = budget_usage.used + 1
     WHERE budget_usage.used < $3
     RETURNING used";

/// Marks job `$1` as holding its guards (kept in [`super::store::Statements`]).
pub(crate) fn taken(d: Dialect) -> String {
    format!(
        "UPDATE jobs SET progress = {} WHERE id = $1",
        d.set_true("progress", "guards_taken")
    )
}

/// The guards on a backend's writer, in one transaction.
macro_rules! impl_guards {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::jobs::guards::Guards for $store {
            async fn take_guards(
                &self,
                job: $crate::jobs::JobId,
                guards: &[$crate::jobs::Guard],
                now_ms: u64,
            ) -> Result<Option<$crate::jobs::Hold>, $crate::jobs::StoreError> {
                use sqlx::Acquire;
                use $crate::jobs::{guards, Guard};
                let mut conn = self.writer().await?;
                let mut tx = conn.begin().await?;
                for guard in guards {
                    let refused = match guard {
                        Guard::Cooldown {
                            trigger,
                            user,
                            window_ms,
                        } => {
                            let taken: Option<(i64,)> = sqlx::query_as(guards::COOLDOWN)
                                .bind(trigger)
                                .bind(user)
                                .bind(now_ms as i64)
                                .bind(*window_ms as i64)
                                .fetch_optional(&mut *tx)
                                .await?;
                            taken.is_none().then(|| guard.refusal())
                        }
                        Guard::Budget {
                            scope,
                            window_start_ms,
                            limit,
                            ..
                        } => {
                            let taken: Option<(i64,)> = sqlx::query_as(guards::BUDGET)
                                .bind(scope)
                                .bind(*window_start_ms as i64)
                                .bind(*limit as i64)
                                .fetch_optional(&mut *tx)
                                .await?;
                            taken.is_none().then(|| guard.refusal())
                        }
                    };
                    if refused.is_some() {
                        tx.rollback().await?;
                        return Ok(refused);
                    }
                }
                let dialect = <Self as $crate::jobs::store::SqlBackend>::DIALECT;
                sqlx::query(&$crate::jobs::store::Statements::of(dialect).guards_taken)
                    .bind(job as i64)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(None)
            }
        }
    };
}

pub(crate) use impl_guards;
