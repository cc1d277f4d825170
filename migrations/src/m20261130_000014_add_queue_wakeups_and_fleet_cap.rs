//! Wake-ups and the fleet-wide agent cap of the queue:
//!
//! - `incidents.agent_slot`: which of the fleet's `[workers] fleet_max_agents` slots an
//!   investigating incident holds (null when no cap is configured). The partial unique index
//!   `uq_incidents_agent_slot (agent_slot) WHERE status = 'investigating' AND agent_slot IS NOT
//!   NULL` (uncapped claims never write it) makes a slot number
//!   held by at most one running investigation, in every process and replica, the way
//!   `uq_incidents_one_investigating_per_cluster` does for clusters; a claim only takes numbers
//!   below the cap, so at most `fleet_max_agents` investigations run at once. A slot is a
//!   property of the investigating row: finishing, a swept lease or a crash (its lease then
//!   expires) frees it with the status change, so it cannot leak.
//! - `idx_incidents_queued_run_after (run_after) WHERE status = 'queued' AND run_after IS NOT
//!   NULL`: the earliest due time of a delayed incident, which an idle worker sleeps until
//!   instead of polling. Only retried-later incidents are in it.
//! - Cheaper claims: `idx_incidents_lease (lease_expires_at) WHERE lease_expires_at IS NOT NULL`
//!   is replaced by `idx_incidents_pending_lease`, the same on pending incidents only. Claims,
//!   heartbeats and finishes no longer write a lease index (two fewer index writes per
//!   incident, none per heartbeat); the sweep finds expired investigations through
//!   `uq_incidents_one_investigating_per_cluster`, which holds only running investigations.
//! - Postgres only: the trigger `nightcrier_queue_notify` sends `NOTIFY nightcrier_queue` in the
//!   transaction that makes an incident `queued` (pre-triage, a retry, a retry-later outcome, a
//!   swept lease), so idle workers of every replica wake at once. Postgres folds identical
//!   notifications of one transaction into one. An investigation that ends does not notify: the
//!   slot that ran it claims again at once, and so takes the cluster or agent slot it freed;
//!   completions stay off the global lock every notifying commit takes.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

const NOTIFY_FUNCTION: &str = r#"
CREATE FUNCTION nightcrier_queue_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('nightcrier_queue', '');
    RETURN NULL;
END
$$"#;

const NOTIFY_TRIGGER: &str = r#"
CREATE TRIGGER nightcrier_queue_notify
    AFTER UPDATE OF status ON incidents
    FOR EACH ROW
    WHEN (NEW.status = 'queued' AND OLD.status <> 'queued')
    EXECUTE FUNCTION nightcrier_queue_notify()"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::sql(
            manager,
            r#"
            ALTER TABLE incidents ADD COLUMN agent_slot INTEGER;
            CREATE UNIQUE INDEX uq_incidents_agent_slot ON incidents (agent_slot)
                WHERE status = 'investigating' AND agent_slot IS NOT NULL;
            CREATE INDEX idx_incidents_queued_run_after ON incidents (run_after)
                WHERE status = 'queued' AND run_after IS NOT NULL;
            DROP INDEX idx_incidents_lease;
            CREATE INDEX idx_incidents_pending_lease ON incidents (lease_expires_at)
                WHERE status = 'pending' AND lease_expires_at IS NOT NULL
            "#,
        )
        .await?;
        if manager.get_database_backend() == DbBackend::Postgres {
            let db = manager.get_connection();
            db.execute_unprepared(NOTIFY_FUNCTION).await?;
            db.execute_unprepared(NOTIFY_TRIGGER).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() == DbBackend::Postgres {
            let db = manager.get_connection();
            db.execute_unprepared("DROP TRIGGER nightcrier_queue_notify ON incidents")
                .await?;
            db.execute_unprepared("DROP FUNCTION nightcrier_queue_notify()")
                .await?;
        }
        crate::sql(
            manager,
            r#"
            DROP INDEX idx_incidents_pending_lease;
            CREATE INDEX idx_incidents_lease ON incidents (lease_expires_at)
                WHERE lease_expires_at IS NOT NULL;
            DROP INDEX idx_incidents_queued_run_after;
            DROP INDEX uq_incidents_agent_slot;
            ALTER TABLE incidents DROP COLUMN agent_slot
            "#,
        )
        .await
    }
}
