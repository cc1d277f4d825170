//! Entity for `incidents` (also the job queue).

use sea_orm::entity::prelude::*;

#[allow(missing_docs)]
#[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Serialize)]
#[sea_orm(table_name = "incidents")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub fault_event_id: String,
    pub cluster: String,
    pub status: String,
    pub priority: i32,
    pub labels: Json,
    pub annotations: Json,
    pub agent_profile: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub queued_at: Option<DateTimeUtc>,
    pub started_at: Option<DateTimeUtc>,
    pub completed_at: Option<DateTimeUtc>,
    pub run_after: Option<DateTimeUtc>,
    pub attempts: i32,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<DateTimeUtc>,
    pub skip_reason: Option<String>,
    pub failure_reason: Option<String>,
    pub exit_code: Option<i32>,
    pub fault_type: Option<String>,
    pub severity: Option<String>,
    pub agent_slot: Option<i32>,
}

#[allow(missing_docs)]
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
