//! Entity for `fault_events`.

use sea_orm::entity::prelude::*;

#[allow(missing_docs)]
#[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Serialize)]
#[sea_orm(table_name = "fault_events")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub fault_id: Option<String>,
    pub subscription_id: Option<String>,
    pub source: String,
    pub cluster: String,
    pub received_at: DateTimeUtc,
    pub resource_api_version: Option<String>,
    pub resource_kind: Option<String>,
    pub resource_name: Option<String>,
    pub resource_namespace: Option<String>,
    pub resource_uid: Option<String>,
    pub fault_type: String,
    pub severity: String,
    pub context: String,
    pub timestamp: Option<String>,
    pub payload: Json,
    pub labels: Json,
}

#[allow(missing_docs)]
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
