//! The event log as the console reads it: pages of events, their jobs, one event in full, tallies per
//! minute. The statements are [`super::events`]'s, the same on both backends.

use super::{events, Job, StoreError};

#[async_trait::async_trait]
pub trait EventLog: Send + Sync {
    /// One page of events (at most `limit`), newest first, and the key of the next page.
    async fn events(
        &self,
        filter: &events::EventFilter,
        limit: usize,
    ) -> Result<events::EventPage, StoreError>;
    /// The jobs of the given events.
    async fn event_jobs(&self, rows: &[i64]) -> Result<Vec<events::JobBrief>, StoreError>;
    /// One event with its headers, signature check and raw body, and its jobs.
    async fn event(&self, row: i64) -> Result<Option<(events::EventDetail, Vec<Job>)>, StoreError>;
    /// Event tallies per minute since `minute` (minutes since the Unix epoch).
    async fn event_minutes(&self, minute: i64) -> Result<Vec<events::MinuteCount>, StoreError>;
}

/// The event log on a backend's readers.
macro_rules! impl_event_log {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::jobs::event_log::EventLog for $store {
            async fn events(
                &self,
                filter: &$crate::jobs::events::EventFilter,
                limit: usize,
            ) -> Result<$crate::jobs::events::EventPage, $crate::jobs::StoreError> {
                use $crate::jobs::events;
                let (sql, binds) = events::list_query(filter, limit);
                let rows = events::bind_all(sqlx::query_as(&sql), binds)
                    .fetch_all(self.reader())
                    .await?;
                Ok(events::dedupe_page(rows, limit))
            }

            async fn event_jobs(
                &self,
                rows: &[i64],
            ) -> Result<Vec<$crate::jobs::events::JobBrief>, $crate::jobs::StoreError> {
                if rows.is_empty() {
                    return Ok(Vec::new());
                }
                let sql = $crate::jobs::events::jobs_query(rows.len());
                let mut query = sqlx::query_as(&sql);
                for row in rows {
                    query = query.bind(*row);
                }
                Ok(query.fetch_all(self.reader()).await?)
            }

            async fn event(
                &self,
                row: i64,
            ) -> Result<
                Option<($crate::jobs::events::EventDetail, Vec<$crate::jobs::Job>)>,
                $crate::jobs::StoreError,
            > {
                let detail: Option<$crate::jobs::events::EventDetail> =
                    sqlx::query_as($crate::jobs::events::DETAIL_QUERY)
                        .bind(row)
                        .fetch_optional(self.reader())
                        .await?;
                let Some(detail) = detail else {
                    return Ok(None);
                };
                let jobs = sqlx::query_as(&Self::reads().of_event)
                    .bind(row)
                    .fetch_all(self.reader())
                    .await?;
                Ok(Some((detail, $crate::jobs::row::jobs(jobs)?)))
            }

            async fn event_minutes(
                &self,
                minute: i64,
            ) -> Result<Vec<$crate::jobs::events::MinuteCount>, $crate::jobs::StoreError> {
                Ok(sqlx::query_as($crate::jobs::events::MINUTES_SINCE)
                    .bind(minute)
                    .fetch_all(self.reader())
                    .await?)
            }
        }
    };
}

pub(crate) use impl_event_log;
