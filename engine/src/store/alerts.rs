//! The `alerts` and `alert_deliveries` tables: recording raised alerts and what each plugin made
//! of them, listing them newest first, and the last feed alert per cluster.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set, Statement,
};
use uuid::Uuid;

use super::entity::{alert_deliveries, alerts};
use super::text::{storable_json, storable_owned};
use super::{Store, StoreError};
use crate::alert::{AlertKind, DeliveryOutcome, RaisedAlert};

/// One alert with its deliveries, for the API.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredAlert {
    /// The alert row.
    pub alert: alerts::Model,
    /// Its deliveries, by plugin.
    pub deliveries: Vec<alert_deliveries::Model>,
}

impl Store {
    /// Records a raised alert, by `instance`.
    pub async fn insert_alert(
        &self,
        raised: &RaisedAlert,
        instance: &str,
    ) -> Result<(), StoreError> {
        let mut fields = serde_json::Value::Object(
            raised
                .alert
                .fields
                .iter()
                .map(|(key, value)| (key.clone(), serde_json::Value::String(value.clone())))
                .collect(),
        );
        storable_json(&mut fields);
        let row = alerts::ActiveModel {
            id: Set(raised.id.to_string()),
            kind: Set(raised.alert.kind.as_str().to_owned()),
            severity: Set(crate::alert::severity_name(raised.to_wit().severity).to_owned()),
            cluster: Set(raised.alert.cluster.clone().map(storable_owned)),
            summary: Set(storable_owned(raised.alert.summary.clone())),
            detail: Set(storable_owned(raised.alert.detail.clone())),
            fields: Set(fields),
            raised_by: Set(storable_owned(instance.to_owned())),
            raised_at: Set(crate::queue::db_time(raised.raised_at)),
        };
        alerts::Entity::insert(row).exec(&self.db).await?;
        Ok(())
    }

    /// Records what became of alert `alert_id` at one plugin (a second record replaces the first).
    pub async fn record_alert_delivery(
        &self,
        alert_id: Uuid,
        outcome: &DeliveryOutcome,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let row = alert_deliveries::ActiveModel {
            alert_id: Set(alert_id.to_string()),
            plugin: Set(outcome.plugin.clone()),
            plugin_version: Set(outcome.plugin_version.clone().map(storable_owned)),
            outcome: Set(if outcome.delivered {
                "delivered"
            } else {
                "failed"
            }
            .to_owned()),
            attempts: Set(i32::try_from(outcome.attempts).unwrap_or(i32::MAX)),
            error: Set(outcome.error.clone().map(storable_owned)),
            finished_at: Set(crate::queue::db_time(now)),
        };
        alert_deliveries::Entity::insert(row)
            .on_conflict(
                OnConflict::columns([
                    alert_deliveries::Column::AlertId,
                    alert_deliveries::Column::Plugin,
                ])
                .update_columns([
                    alert_deliveries::Column::PluginVersion,
                    alert_deliveries::Column::Outcome,
                    alert_deliveries::Column::Attempts,
                    alert_deliveries::Column::Error,
                    alert_deliveries::Column::FinishedAt,
                ])
                .to_owned(),
            )
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// The newest `limit` alerts (optionally of one `kind` or `cluster`), newest first, each with
    /// its deliveries.
    pub async fn alerts(
        &self,
        limit: u64,
        kind: Option<&str>,
        cluster: Option<&str>,
    ) -> Result<Vec<StoredAlert>, StoreError> {
        let mut query = alerts::Entity::find();
        if let Some(kind) = kind {
            query = query.filter(alerts::Column::Kind.eq(kind));
        }
        if let Some(cluster) = cluster {
            query = query.filter(alerts::Column::Cluster.eq(cluster));
        }
        let rows = query
            .order_by_desc(alerts::Column::RaisedAt)
            .order_by_desc(alerts::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = rows.iter().map(|row| row.id.clone()).collect();
        let mut deliveries = alert_deliveries::Entity::find()
            .filter(alert_deliveries::Column::AlertId.is_in(ids))
            .order_by_asc(alert_deliveries::Column::Plugin)
            .all(&self.db)
            .await?;
        Ok(rows
            .into_iter()
            .map(|alert| {
                let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut deliveries)
                    .into_iter()
                    .partition(|delivery| delivery.alert_id == alert.id);
                deliveries = rest;
                StoredAlert {
                    alert,
                    deliveries: mine,
                }
            })
            .collect())
    }

    /// Alerts raised by `instance` after `since` and before `until` that no plugin's delivery is
    /// recorded for, oldest first (at most 1,000).
    pub async fn undelivered_alerts(
        &self,
        instance: &str,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<RaisedAlert>, StoreError> {
        let rows = alerts::Entity::find()
            .filter(alerts::Column::RaisedBy.eq(instance))
            .filter(alerts::Column::RaisedAt.gt(crate::queue::db_time(since)))
            .filter(alerts::Column::RaisedAt.lt(crate::queue::db_time(until)))
            .filter(
                alerts::Column::Id.not_in_subquery(
                    sea_orm::sea_query::Query::select()
                        .column(alert_deliveries::Column::AlertId)
                        .from(alert_deliveries::Entity)
                        .to_owned(),
                ),
            )
            .order_by_asc(alerts::Column::RaisedAt)
            .order_by_asc(alerts::Column::Id)
            .limit(1000)
            .all(&self.db)
            .await?;
        Ok(rows.into_iter().filter_map(raised_of).collect())
    }

    /// The kind of the newest feed alert (`feed-down` or `feed-up`) of `cluster`, if any.
    pub async fn last_feed_alert(&self, cluster: &str) -> Result<Option<String>, StoreError> {
        let row = alerts::Entity::find()
            .filter(alerts::Column::Cluster.eq(cluster))
            .filter(
                alerts::Column::Kind
                    .is_in([AlertKind::FeedDown.as_str(), AlertKind::FeedUp.as_str()]),
            )
            .order_by_desc(alerts::Column::RaisedAt)
            .order_by_desc(alerts::Column::Id)
            .one(&self.db)
            .await?;
        Ok(row.map(|row| row.kind))
    }

    /// Clusters whose newest feed alert is `feed-down` (reported down and not yet back up).
    pub async fn clusters_with_feed_down(&self) -> Result<Vec<String>, StoreError> {
        let rows = self
            .db
            .query_all_raw(Statement::from_sql_and_values(
                self.backend(),
                "SELECT a.cluster AS cluster FROM alerts a \
                 WHERE a.kind = $1 AND a.cluster IS NOT NULL AND NOT EXISTS ( \
                   SELECT 1 FROM alerts b WHERE b.cluster = a.cluster AND b.kind IN ($1, $2) \
                   AND (b.raised_at > a.raised_at OR (b.raised_at = a.raised_at AND b.id > a.id)))",
                [
                    AlertKind::FeedDown.as_str().into(),
                    AlertKind::FeedUp.as_str().into(),
                ],
            ))
            .await?;
        rows.iter()
            .map(|row| {
                row.try_get::<String>("", "cluster")
                    .map_err(StoreError::from)
            })
            .collect()
    }
}

/// The alert a stored row records (a row of an unknown kind is skipped).
fn raised_of(row: alerts::Model) -> Option<RaisedAlert> {
    let fields = row
        .fields
        .as_object()
        .map(|object| {
            object
                .iter()
                .map(|(key, value)| {
                    let value = value
                        .as_str()
                        .map_or_else(|| value.to_string(), str::to_owned);
                    (key.clone(), value)
                })
                .collect()
        })
        .unwrap_or_default();
    Some(RaisedAlert {
        id: Uuid::parse_str(&row.id).ok()?,
        alert: crate::alert::NewAlert {
            kind: AlertKind::parse(&row.kind)?,
            cluster: row.cluster,
            summary: row.summary,
            detail: row.detail,
            fields,
        },
        raised_at: row.raised_at,
    })
}
