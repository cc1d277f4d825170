//! Replicas of `serve` sharing one Postgres: who they are, that they are alive, and which of
//! them holds each MCP or poll feed. The database is the only coordinator.
//!
//! - **Identity**: each replica's id is `agent.instance_id` or, when unset, an id generated once
//!   and kept in `<data_dir>/instance-id`. A process registers in `nightcrier_replicas` with a
//!   random process token; a second process claiming an id whose holder still heartbeats is
//!   refused ([`Replica::register`]).
//! - **Assignment**: every replica computes the same owner for a feed from the list of live
//!   replicas by rendezvous hashing ([`owner_of`]): feeds spread evenly, and when a replica joins
//!   or leaves only the feeds that must move, move.
//! - **Leases**: a feed runs only on the replica that holds its row in `feed_leases` (owner,
//!   fencing token, expiry). The holder renews it with every heartbeat; a lease whose expiry
//!   passed can be taken by the replica the assignment names.
//!
//! Invariant: a replica stops a feed before its lease can expire: the supervisor
//! (`feed/supervisor.rs`) counts the lease from its last successful renewal on its own monotonic
//! clock and stops every feed `stop_margin` before that, whether or not it can reach the
//! database. Two replicas are therefore never subscribed to one cluster at once, as long as wall
//! clocks differ by less than the margin. A replica that was alone at its last heartbeat renews
//! for `lease + lone_hold` instead ([`ReplicaConfig::hold`]): with nobody to take over, it keeps
//! its feeds (and spools what arrives) through a database outage of up to `lone_hold`, and a
//! replica that starts during that outage waits as long before it takes them.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::queue::db_time;
use crate::store::{Store, StoreError};

/// How replicas coordinate (`[replica]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaConfig {
    /// Between heartbeats (and lease renewals).
    pub heartbeat: Duration,
    /// A replica silent this long is no longer live.
    pub ttl: Duration,
    /// A feed lease lasts this long after its last renewal.
    pub lease: Duration,
    /// Feeds stop this long before their lease could expire.
    pub stop_margin: Duration,
    /// Added to the leases of a replica that is alone: how long it keeps its feeds through a
    /// database outage (and how long a replica started meanwhile waits to take them).
    pub lone_hold: Duration,
}

impl ReplicaConfig {
    /// How long leases renewed now last: longer for a replica that saw no peer.
    pub fn hold(&self, alone: bool) -> Duration {
        if alone {
            self.lease + self.lone_hold
        } else {
            self.lease
        }
    }
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(2),
            ttl: Duration::from_secs(10),
            lease: Duration::from_secs(15),
            stop_margin: Duration::from_secs(5),
            lone_hold: Duration::from_secs(300),
        }
    }
}

/// The instance id kept in `data_dir` (generated on first use).
pub fn stored_instance_id(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("instance-id");
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => return Ok(text.trim().to_owned()),
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => {
            return Err(error).with_context(|| format!("cannot read {}", path.display()));
        }
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let id = format!("nc-{}", &Uuid::new_v4().simple().to_string()[..12]);
    std::fs::write(&path, format!("{id}\n"))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(id)
}

/// Where this process runs, as replicas record it: the host name and the data folder.
pub fn home(data_dir: &Path) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|text| text.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned());
    let folder = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_owned());
    format!("{host}:{}", folder.display())
}

/// The replica (of all `live` ones) that should hold `feed`: the highest rendezvous score.
pub fn owner_of<'a>(feed: &str, live: &'a [String]) -> Option<&'a str> {
    live.iter()
        .max_by_key(|replica| score(feed, replica))
        .map(String::as_str)
}

fn score(feed: &str, replica: &str) -> u64 {
    let digest = Sha256::new()
        .chain_update(feed.as_bytes())
        .chain_update([0u8])
        .chain_update(replica.as_bytes())
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// This process as a replica.
#[derive(Clone, Debug)]
pub struct Replica {
    db: DatabaseConnection,
    id: String,
    process: String,
    config: ReplicaConfig,
    /// `[workers] fleet_max_agents` of this replica, recorded for the others to compare.
    fleet_max_agents: Option<u32>,
    /// Whether the live replicas disagreed on it at the last heartbeat (warned once per change).
    cap_disagreement: Arc<AtomicBool>,
}

fn stmt(db: &DatabaseConnection, sql: &str, values: Vec<Value>) -> Statement {
    Statement::from_sql_and_values(db.get_database_backend(), sql, values)
}

fn after(now: DateTime<Utc>, duration: Duration) -> DateTime<Utc> {
    db_time(now + chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::MAX))
}

fn before(now: DateTime<Utc>, duration: Duration) -> DateTime<Utc> {
    db_time(now - chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::zero()))
}

impl Replica {
    /// A replica with `id` on `store`; nothing is written until [`Replica::register`].
    pub fn new(store: &Store, id: &str, config: ReplicaConfig) -> Self {
        Self {
            db: store.connection().clone(),
            id: id.to_owned(),
            process: Uuid::new_v4().to_string(),
            config,
            fleet_max_agents: None,
            cap_disagreement: Arc::default(),
        }
    }

    /// The same replica, recording `fleet_max_agents` as its fleet-wide agent cap.
    pub fn with_fleet_cap(mut self, fleet_max_agents: Option<u32>) -> Self {
        self.fleet_max_agents = fleet_max_agents;
        self
    }

    /// This replica's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Its coordination settings.
    pub fn config(&self) -> &ReplicaConfig {
        &self.config
    }

    /// Announces this process; fails when another process holds the id and still heartbeats.
    /// `home` is where this process runs (host and data folder): the caller holds that folder's
    /// lock, so a live-looking row with the same home is a predecessor that died, and is taken
    /// over at once (a restart after `kill -9` need not wait for its heartbeat to go stale).
    pub async fn register(&self, home: &str, now: DateTime<Utc>) -> anyhow::Result<()> {
        let host = home.to_owned();
        let sql = "INSERT INTO nightcrier_replicas \
                   (id, process, host, pid, started_at, heartbeat_at, fleet_max_agents) \
                   VALUES ($1, $2, $3, $4, $5, $5, $7) \
                   ON CONFLICT (id) DO UPDATE SET process = excluded.process, host = excluded.host, \
                   pid = excluded.pid, started_at = excluded.started_at, \
                   heartbeat_at = excluded.heartbeat_at, fleet_max_agents = excluded.fleet_max_agents \
                   WHERE nightcrier_replicas.heartbeat_at < $6 OR nightcrier_replicas.host = excluded.host";
        let changed = self
            .db
            .execute_raw(stmt(
                &self.db,
                sql,
                vec![
                    self.id.clone().into(),
                    self.process.clone().into(),
                    host.into(),
                    i64::from(std::process::id()).into(),
                    db_time(now).into(),
                    before(now, self.config.ttl).into(),
                    self.fleet_max_agents.map(i64::from).into(),
                ],
            ))
            .await
            .map_err(StoreError::from)?
            .rows_affected();
        if changed == 0 {
            let holder = self
                .db
                .query_one_raw(stmt(
                    &self.db,
                    "SELECT host, pid, heartbeat_at FROM nightcrier_replicas WHERE id = $1",
                    vec![self.id.clone().into()],
                ))
                .await
                .map_err(StoreError::from)?;
            let (host, pid) = holder
                .map(|row| {
                    (
                        row.try_get::<String>("", "host").unwrap_or_default(),
                        row.try_get::<i64>("", "pid").unwrap_or_default(),
                    )
                })
                .unwrap_or_default();
            anyhow::bail!(
                "another nightcrier with instance id `{}` is running ({host}, pid {pid}, heartbeat within the last {:?}); give this one its own agent.instance_id or data_dir",
                self.id,
                self.config.ttl
            );
        }
        Ok(())
    }

    /// Renews this replica's heartbeat and returns the live replicas (sorted). Fails when the
    /// id was taken over by another process (this one was presumed dead).
    pub async fn heartbeat(&self, now: DateTime<Utc>) -> anyhow::Result<Vec<String>> {
        let changed = self
            .db
            .execute_raw(stmt(
                &self.db,
                "UPDATE nightcrier_replicas SET heartbeat_at = $1 WHERE id = $2 AND process = $3",
                vec![
                    db_time(now).into(),
                    self.id.clone().into(),
                    self.process.clone().into(),
                ],
            ))
            .await
            .map_err(StoreError::from)?
            .rows_affected();
        if changed == 0 {
            anyhow::bail!(
                "instance id `{}` was taken over by another process",
                self.id
            );
        }
        let rows = self
            .db
            .query_all_raw(stmt(
                &self.db,
                "SELECT id, fleet_max_agents FROM nightcrier_replicas WHERE heartbeat_at > $1 \
                 ORDER BY id",
                vec![before(now, self.config.ttl).into()],
            ))
            .await
            .map_err(StoreError::from)?;
        let live: Vec<(String, Option<i64>)> = rows
            .iter()
            .filter_map(|row| {
                Some((
                    row.try_get::<String>("", "id").ok()?,
                    row.try_get::<Option<i64>>("", "fleet_max_agents").ok()?,
                ))
            })
            .collect();
        self.compare_fleet_caps(&live);
        Ok(live.into_iter().map(|(id, _)| id).collect())
    }

    /// Warns (once per change) while live replicas record different fleet-wide agent caps: the
    /// cap holds only if every replica claims with it.
    fn compare_fleet_caps(&self, live: &[(String, Option<i64>)]) {
        let ours = self.fleet_max_agents.map(i64::from);
        let differing: Vec<String> = live
            .iter()
            .filter(|(_, cap)| *cap != ours)
            .map(|(id, cap)| match cap {
                Some(cap) => format!("{id}: {cap}"),
                None => format!("{id}: none"),
            })
            .collect();
        let disagree = !differing.is_empty();
        metrics::gauge!("nightcrier_fleet_cap_mismatch").set(if disagree { 1.0 } else { 0.0 });
        if self.cap_disagreement.swap(disagree, Ordering::Relaxed) != disagree {
            if disagree {
                let ours = ours.map_or("none".to_owned(), |cap| cap.to_string());
                tracing::warn!(ours = %ours, others = %differing.join(", "), "replicas disagree on workers.fleet_max_agents: the fleet-wide agent cap does not hold until every replica has the same value");
            } else {
                tracing::info!("replicas agree on workers.fleet_max_agents again");
            }
        }
    }

    /// Removes this replica (orderly shutdown), so the others rebalance at once.
    pub async fn deregister(&self) {
        let _ = self
            .db
            .execute_raw(stmt(
                &self.db,
                "DELETE FROM nightcrier_replicas WHERE id = $1 AND process = $2",
                vec![self.id.clone().into(), self.process.clone().into()],
            ))
            .await;
    }

    /// Takes the lease of `feed` for `hold` if it is free, expired or already ours; returns its
    /// fencing token.
    pub async fn acquire(
        &self,
        feed: &str,
        now: DateTime<Utc>,
        hold: Duration,
    ) -> Result<Option<i64>, StoreError> {
        self.db
            .execute_raw(stmt(
                &self.db,
                "INSERT INTO feed_leases (feed, owner, token, expires_at) VALUES ($1, NULL, 0, $2) \
                 ON CONFLICT (feed) DO NOTHING",
                vec![feed.to_owned().into(), db_time(now).into()],
            ))
            .await?;
        let row = self
            .db
            .query_one_raw(stmt(
                &self.db,
                "UPDATE feed_leases SET owner = $1, token = token + 1, expires_at = $2 \
                 WHERE feed = $3 AND (owner IS NULL OR owner = $1 OR expires_at < $4) \
                 RETURNING token",
                vec![
                    self.id.clone().into(),
                    after(now, hold).into(),
                    feed.to_owned().into(),
                    db_time(now).into(),
                ],
            ))
            .await?;
        Ok(row.and_then(|row| row.try_get::<i64>("", "token").ok()))
    }

    /// Renews every lease this replica holds for `hold`, in one statement; returns them with
    /// their tokens.
    pub async fn renew_all(
        &self,
        now: DateTime<Utc>,
        hold: Duration,
    ) -> Result<std::collections::HashMap<String, i64>, StoreError> {
        let rows = self
            .db
            .query_all_raw(stmt(
                &self.db,
                "UPDATE feed_leases SET expires_at = $1 WHERE owner = $2 RETURNING feed, token",
                vec![after(now, hold).into(), self.id.clone().into()],
            ))
            .await?;
        Ok(rows
            .iter()
            .filter_map(|row| {
                Some((
                    row.try_get::<String>("", "feed").ok()?,
                    row.try_get::<i64>("", "token").ok()?,
                ))
            })
            .collect())
    }

    /// Gives up the lease of `feed` (after its feed stopped), so its new owner need not wait.
    pub async fn release(
        &self,
        feed: &str,
        token: i64,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.db
            .execute_raw(stmt(
                &self.db,
                "UPDATE feed_leases SET owner = NULL, expires_at = $1 \
                 WHERE feed = $2 AND owner = $3 AND token = $4",
                vec![
                    db_time(now).into(),
                    feed.to_owned().into(),
                    self.id.clone().into(),
                    token.into(),
                ],
            ))
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_replica_agrees_and_the_feeds_spread_evenly() {
        let replicas: Vec<String> = (0..10).map(|n| format!("nc-{n}")).collect();
        let mut counts = std::collections::BTreeMap::new();
        for cluster in 0..10_000 {
            let feed = format!("mcp:cluster-{cluster}");
            let owner = owner_of(&feed, &replicas).unwrap();
            *counts.entry(owner.to_owned()).or_insert(0usize) += 1;
        }
        let (min, max) = (
            *counts.values().min().unwrap(),
            *counts.values().max().unwrap(),
        );
        // 1,000 each on average; rendezvous hashing stays within a few percent
        assert!(min > 880 && max < 1120, "{counts:?}");
    }

    #[test]
    fn a_replica_leaving_moves_only_its_own_feeds() {
        let before: Vec<String> = (0..5).map(|n| format!("nc-{n}")).collect();
        let after: Vec<String> = before.iter().filter(|r| *r != "nc-2").cloned().collect();
        for cluster in 0..2_000 {
            let feed = format!("mcp:c{cluster}");
            let old = owner_of(&feed, &before).unwrap();
            let new = owner_of(&feed, &after).unwrap();
            if old != "nc-2" {
                assert_eq!(old, new, "{feed} moved though its owner stayed");
            }
        }
        assert_eq!(owner_of("x", &[]), None);
    }

    #[test]
    fn the_stored_instance_id_is_generated_once() {
        let dir = tempfile::tempdir().unwrap();
        let first = stored_instance_id(dir.path()).unwrap();
        assert!(first.starts_with("nc-") && first.len() == 15, "{first}");
        assert_eq!(stored_instance_id(dir.path()).unwrap(), first);
    }
}
