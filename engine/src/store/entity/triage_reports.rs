//! Entity for `triage_reports`.

use sea_orm::entity::prelude::*;

#[allow(missing_docs)]
#[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Serialize)]
#[sea_orm(table_name = "triage_reports")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub incident_id: String,
    pub execution_id: Option<String>,
    pub generated_at: DateTimeUtc,
    pub report_markdown: String,
    pub report_html: Option<String>,
    pub structured: Option<Json>,
    pub summary: Option<String>,
    pub artifact_uri: Option<String>,
    pub storage_type: String,
    pub store_uri: Option<String>,
    pub uploaded_at: Option<DateTimeUtc>,
    pub upload_attempts: i32,
    pub next_upload_at: Option<DateTimeUtc>,
    pub upload_error: Option<String>,
}

#[allow(missing_docs)]
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
