//! The workers' writes on the SQLite writer thread ([`super::sqlite_writer`]): claims, lease renewals,
//! progress, outcomes, guards and the persona map, each a piece of the writer's next transaction (in a
//! savepoint of its own), answered once it has committed.
//!
//! One sqlx round trip per statement, each taking the one writer in turn, put 16 workers' 3–5 writes per job
//! between the group commits (~1.2 ms of each ~4.2 ms commit under load). An outcome is as durable as before
//! (committed, on disk with the next acknowledgement's fsync) before the worker moves on.

use std::sync::OnceLock;

use rusqlite::{params, Connection, OptionalExtension};

use super::{
    guards, personas,
    queue::{Bookkeeping, Lane, OLDER_PENDING_PERSONA},
    row::{context_text, json_text, JobRow},
    store::{numbered, Dialect, Statements},
    Guard, Hold, JobId, KnownPersona, StoreError,
};

/// What a piece of bookkeeping answers: the claimed job's row, for a claim that found one.
pub type Answer = Result<Option<JobRow>, StoreError>;

/// Claims the next due job; `CLAIM_BUSY` is replaced by [`CLAIM_BUSY_SQL`]. Pending and expired jobs are
/// looked for apart, each along its index in run order: one search over both states (an OR) collected the
/// whole backlog and sorted it, on every claim.
pub const CLAIM_SQL: &str = "UPDATE jobs SET state = 'running', attempts = attempts + 1, lease_until_ms = ?1 + ?2, updated_ms = ?1
     WHERE id = (
         SELECT id FROM (
             SELECT * FROM (SELECT c.id, c.run_at_ms FROM jobs c
                            WHERE c.state = 'pending' AND c.run_at_ms <= ?1 AND NOT (CLAIM_BUSY)
                              AND NOT (CLAIM_OLDER)
                            ORDER BY CLAIM_ORDER LIMIT 1)
             UNION ALL
             SELECT * FROM (SELECT c.id, c.run_at_ms FROM jobs c
                            WHERE c.state = 'running' AND c.lease_until_ms < ?1 AND NOT (CLAIM_BUSY)
                            ORDER BY c.run_at_ms, c.id LIMIT 1))
         ORDER BY run_at_ms, id LIMIT 1)
     RETURNING {JOB}";

/// A persona job whose (trigger, user) has another persona job running: it waits its turn.
pub const CLAIM_BUSY_SQL: &str = "c.action = 'create_persona' AND EXISTS (
         SELECT 1 FROM jobs r INDEXED BY jobs_running_persona
         WHERE r.trigger_name = c.trigger_name AND r.user_id = c.user_id AND r.id != c.id
           AND r.state = 'running' AND r.action = 'create_persona' AND r.lease_until_ms >= ?1)";

/// The claim of `lane`: its order among pending jobs, and (newest first) a persona job's wait for an older
/// pending one of its trigger and user.
fn claim_sql(lane: Lane) -> &'static str {
    static OLDEST: OnceLock<String> = OnceLock::new();
    static NEWEST: OnceLock<String> = OnceLock::new();
    let (cell, order, older) = match lane {
        Lane::Oldest => (&OLDEST, "c.run_at_ms, c.id", "0"),
        Lane::Newest => (
            &NEWEST,
            "c.run_at_ms DESC, c.id DESC",
            OLDER_PENDING_PERSONA,
        ),
    };
    cell.get_or_init(|| {
        Dialect::Sqlite
            .fill(CLAIM_SQL)
            .replace("CLAIM_BUSY", CLAIM_BUSY_SQL)
            .replace("CLAIM_OLDER", older)
            .replace("CLAIM_ORDER", order)
    })
}

/// Runs one claim or step of a worker's job; a claim answers the job's row if it found one.
pub fn run_one(db: &Connection, op: Bookkeeping) -> Answer {
    let sql = &Statements::of(Dialect::Sqlite).queue;
    match op {
        Bookkeeping::Claim {
            now_ms,
            lease_ms,
            lane,
        } => {
            let mut claim = db.prepare_cached(claim_sql(lane))?;
            let row = claim
                .query_row(params![now_ms as i64, lease_ms as i64], JobRow::from_sqlite)
                .optional()?;
            return Ok(row);
        }
        Bookkeeping::Renew { id, lease_ms } => db
            .prepare_cached(&sql.renew_lease)?
            .execute(params![id as i64, lease_ms as i64])?,
        Bookkeeping::Progress { id, patch } => db
            .prepare_cached(&sql.merge_progress)?
            .execute(params![id as i64, json_text(&patch)])?,
        Bookkeeping::Finish {
            id,
            outcome,
            followups,
            now_ms,
        } => {
            let now = now_ms as i64;
            db.prepare_cached(&sql.done)?
                .execute(params![id as i64, json_text(&outcome), now])?;
            let mut followup = db.prepare_cached(&sql.followup)?;
            for job in &followups {
                followup.execute(params![
                    id as i64,
                    job.trigger,
                    job.action.as_str(),
                    job.source.as_str(),
                    job.event_id,
                    job.user_id,
                    context_text(job),
                    now,
                ])?;
            }
            0
        }
        Bookkeeping::Retry {
            id,
            run_at_ms,
            error,
            now_ms,
        } => db.prepare_cached(&sql.retry)?.execute(params![
            id as i64,
            run_at_ms as i64,
            error,
            now_ms as i64
        ])?,
        Bookkeeping::End {
            id,
            state,
            reason,
            now_ms,
        } => db.prepare_cached(&sql.end)?.execute(params![
            id as i64,
            state.as_str(),
            reason,
            now_ms as i64
        ])?,
    };
    Ok(None)
}

/// The SQLite text of a shared statement, numbered for rusqlite, made once.
fn sqlite_text(cell: &'static OnceLock<String>, shared: &str) -> &'static str {
    cell.get_or_init(|| numbered(&Dialect::Sqlite.fill(shared)))
}

/// Takes every guard at once, or none ([`super::guards::Guards::take_guards`]): a refusal rolls back the
/// guards taken before it and answers the refusing guard's reason.
pub fn take_guards(
    db: &Connection,
    job: JobId,
    guards: &[Guard],
    now_ms: u64,
) -> Result<Option<Hold>, StoreError> {
    static COOLDOWN: OnceLock<String> = OnceLock::new();
    static BUDGET: OnceLock<String> = OnceLock::new();
    static TAKEN: OnceLock<String> = OnceLock::new();
    let take = || -> Result<Option<Hold>, StoreError> {
        for guard in guards {
            let allowed: Option<i64> = match guard {
                Guard::Cooldown {
                    trigger,
                    user,
                    window_ms,
                } => db
                    .prepare_cached(sqlite_text(&COOLDOWN, guards::COOLDOWN))?
                    .query_row(
                        params![trigger, user, now_ms as i64, *window_ms as i64],
                        |r| r.get(0),
                    )
                    .optional()?,
                Guard::Budget {
                    scope,
                    window_start_ms,
                    limit,
                    ..
                } => db
                    .prepare_cached(sqlite_text(&BUDGET, guards::BUDGET))?
                    .query_row(
                        params![scope, *window_start_ms as i64, *limit as i64],
                        |r| r.get(0),
                    )
                    .optional()?,
            };
            if allowed.is_none() {
                return Ok(Some(guard.refusal()));
            }
        }
        let mark = &Statements::of(Dialect::Sqlite).guards_taken;
        db.prepare_cached(sqlite_text(&TAKEN, mark))?
            .execute(params![job as i64])?;
        Ok(None)
    };
    db.execute_batch("SAVEPOINT guards")?;
    let taken = take();
    if !matches!(taken, Ok(None)) {
        db.execute_batch("ROLLBACK TO guards")?;
    }
    db.execute_batch("RELEASE guards")?;
    taken
}

/// Remembers the persona created for (trigger, user) ([`super::personas::Personas::remember_persona`]).
pub fn remember_persona(
    db: &Connection,
    trigger: &str,
    user: &str,
    persona: &KnownPersona,
    now_ms: u64,
) -> Result<(), StoreError> {
    static REMEMBER: OnceLock<String> = OnceLock::new();
    db.prepare_cached(sqlite_text(&REMEMBER, personas::REMEMBER))?
        .execute(params![
            trigger,
            user,
            persona.persona_id,
            persona.name,
            now_ms as i64
        ])?;
    Ok(())
}
