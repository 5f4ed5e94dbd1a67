//! The persona map: which persona this server created for a (trigger, user) pair, so it is found again
//! rather than created twice.

use super::{KnownPersona, StoreError};

#[async_trait::async_trait]
pub trait Personas: Send + Sync {
    /// The persona created for (trigger, user), if any.
    async fn persona_for(
        &self,
        trigger: &str,
        user: &str,
    ) -> Result<Option<KnownPersona>, StoreError>;
    async fn remember_persona(
        &self,
        trigger: &str,
        user: &str,
        persona: &KnownPersona,
        now_ms: u64,
    ) -> Result<(), StoreError>;
}

pub const FIND: &str =
    "SELECT persona_id, name FROM personas WHERE trigger_name = $1 AND user_id = $2";

pub const REMEMBER: &str = "INSERT INTO personas (trigger_name, user_id, persona_id, name, updated_ms)
     VALUES ($1, $2, $3, $4, $5)
     ON CONFLICT (trigger_name, user_id) DO UPDATE SET persona_id = excluded.persona_id, name = excluded.name,
     updated_ms = excluded.updated_ms";

/// The persona map on a backend: reads on its readers, writes on its writer.
macro_rules! impl_personas {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::jobs::personas::Personas for $store {
            async fn persona_for(
                &self,
                trigger: &str,
                user: &str,
            ) -> Result<Option<$crate::jobs::KnownPersona>, $crate::jobs::StoreError> {
                let row: Option<(String, Option<String>)> =
                    sqlx::query_as($crate::jobs::personas::FIND)
                        .bind(trigger)
                        .bind(user)
                        .fetch_optional(self.reader())
                        .await?;
                Ok(row.map(|(persona_id, name)| $crate::jobs::KnownPersona { persona_id, name }))
            }

            async fn remember_persona(
                &self,
                trigger: &str,
                user: &str,
                persona: &$crate::jobs::KnownPersona,
                now_ms: u64,
            ) -> Result<(), $crate::jobs::StoreError> {
                sqlx::query($crate::jobs::personas::REMEMBER)
                    .bind(trigger)
                    .bind(user)
                    .bind(&persona.persona_id)
                    .bind(&persona.name)
                    .bind(now_ms as i64)
                    .execute(&mut *self.writer().await?)
                    .await?;
                Ok(())
            }
        }
    };
}

pub(crate) use impl_personas;
