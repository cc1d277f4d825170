//! Which stream feeds run on this replica, when replicas share one Postgres: every heartbeat,
//! the supervisor learns the live replicas, renews the leases it holds (one statement), stops and
//! releases the feeds the assignment moved elsewhere, and acquires and starts the feeds assigned
//! to it. A watchdog stops every feed once the leases could be about to expire without a
//! renewal (`hold - stop_margin` after the last one, where the hold is the lease, plus
//! `lone_hold` for a replica that saw no peer), whether the database answers or not.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::Utc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use nightcrier_intake::Stopped;

use super::StreamFeed;
use crate::replica::{Replica, owner_of};

struct Running {
    token: i64,
    cancel: CancellationToken,
    task: JoinHandle<Stopped>,
}

impl Running {
    /// Stops the feed and gives up its lease, if its source confirmed the stop. Unconfirmed,
    /// the source may still deliver to the old session until it notices the dropped
    /// connection, so the lease is left to expire and the next owner waits for that.
    async fn stop_and_release(self, key: &str, replica: &Replica, call: Duration) {
        self.cancel.cancel();
        match self.task.await {
            Ok(Stopped::Clean) => {
                metrics::counter!("nightcrier_feed_handovers_total", "outcome" => "released")
                    .increment(1);
                let _ =
                    tokio::time::timeout(call, replica.release(key, self.token, Utc::now())).await;
            }
            _ => {
                metrics::counter!("nightcrier_feed_handovers_total", "outcome" => "left_to_expire")
                    .increment(1);
                tracing::warn!(feed = %key, "feed stop not confirmed by its source; its lease is left to expire before another replica takes it");
            }
        }
    }
}

/// How often the watchdog compares the time since the last renewal with the stop deadline.
pub const WATCHDOG_TICK: Duration = Duration::from_millis(250);

/// When the last successful renewal began (milliseconds since `epoch`) and for how long it
/// held the leases, shared with the watchdog.
struct RenewalClock {
    epoch: Instant,
    last: AtomicU64,
    hold: AtomicU64,
}

impl RenewalClock {
    fn mark(&self, at: Instant, hold: Duration) {
        let millis = u64::try_from(at.duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX);
        self.hold.store(
            u64::try_from(hold.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.last.store(millis, Ordering::Relaxed);
    }

    fn since_last(&self) -> Duration {
        let last = self.epoch + Duration::from_millis(self.last.load(Ordering::Relaxed));
        Instant::now().saturating_duration_since(last)
    }

    /// Zero when nothing is held: before the first renewal, and after the watchdog stopped
    /// everything.
    fn hold(&self) -> Duration {
        Duration::from_millis(self.hold.load(Ordering::Relaxed))
    }

    fn forget(&self) {
        self.hold.store(0, Ordering::Relaxed);
    }
}

/// Runs the feeds of `streams` that this replica holds, until `shutdown`; then stops them,
/// releases their leases and leaves the replica set.
pub async fn supervise(streams: Vec<StreamFeed>, replica: Replica, shutdown: CancellationToken) {
    let config = replica.config().clone();
    let clock = Arc::new(RenewalClock {
        epoch: Instant::now(),
        last: AtomicU64::new(0),
        hold: AtomicU64::new(0),
    });
    // Feeds run under a guard the watchdog cancels when the leases may be lapsing.
    let mut guard = shutdown.child_token();
    let watchdog = {
        let clock = clock.clone();
        let stop_margin = config.stop_margin;
        let shutdown = shutdown.clone();
        let guard_slot = Arc::new(std::sync::Mutex::new(guard.clone()));
        let slot = guard_slot.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(WATCHDOG_TICK) => {}
                }
                let current = slot.lock().unwrap_or_else(|p| p.into_inner()).clone();
                let hold = clock.hold();
                if !current.is_cancelled()
                    && !hold.is_zero()
                    && clock.since_last() > hold.saturating_sub(stop_margin)
                {
                    tracing::error!(since_renewal = ?clock.since_last(), "feed leases not renewed in time: stopping every feed before another replica may take them");
                    metrics::counter!("nightcrier_feed_lease_stops_total").increment(1);
                    current.cancel();
                    clock.forget();
                }
            }
        });
        (task, guard_slot)
    };
    let (watchdog_task, guard_slot) = watchdog;
    let mut running: HashMap<String, Running> = HashMap::new();
    let mut ticker = tokio::time::interval(config.heartbeat);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let call = config.heartbeat.max(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = ticker.tick() => {}
        }
        if guard.is_cancelled() {
            // The watchdog stopped everything; wait for the feeds to finish, then start over.
            for (_, feed) in running.drain() {
                let _ = feed.task.await;
            }
            guard = shutdown.child_token();
            *guard_slot.lock().unwrap_or_else(|p| p.into_inner()) = guard.clone();
        }
        let attempt = Instant::now();
        let now = Utc::now();
        let live = match tokio::time::timeout(call, replica.heartbeat(now)).await {
            Ok(Ok(live)) => live,
            Ok(Err(error)) => {
                tracing::warn!(error = %error, "replica heartbeat failed");
                continue;
            }
            Err(_) => {
                tracing::warn!("replica heartbeat timed out");
                continue;
            }
        };
        // Alone, nobody could take over during a database outage: hold longer (`lone_hold`).
        let hold = config.hold(live.iter().all(|id| id == replica.id()));
        // Renew everything held; a feed whose lease is no longer ours stops at once.
        let held = match tokio::time::timeout(call, replica.renew_all(now, hold)).await {
            Ok(Ok(held)) => {
                // nothing held, nothing to stop in time (a first acquisition marks the clock)
                if held.is_empty() {
                    clock.forget();
                } else {
                    clock.mark(attempt, hold);
                }
                held
            }
            Ok(Err(error)) => {
                tracing::warn!(error = %error, "renewing feed leases failed");
                continue;
            }
            Err(_) => {
                tracing::warn!("renewing feed leases timed out");
                continue;
            }
        };
        let lost: Vec<String> = running
            .iter()
            .filter(|(key, feed)| held.get(*key) != Some(&feed.token))
            .map(|(key, _)| key.clone())
            .collect();
        let stopping = lost.into_iter().filter_map(|key| {
            let feed = running.remove(&key)?;
            tracing::warn!(feed = %key, "feed lease taken by another replica; stopping the feed");
            feed.cancel.cancel();
            Some(feed.task)
        });
        futures::future::join_all(stopping).await;
        // Hand over what the assignment moved, then take up what it gave us.
        let moving: Vec<String> = running
            .keys()
            .filter(|key| owner_of(key, &live) != Some(replica.id()))
            .cloned()
            .collect();
        // all at once: a slow server must not hold up the others' handover or the next renewal
        let handing_over = moving.into_iter().filter_map(|key| {
            let feed = running.remove(&key)?;
            tracing::info!(feed = %key, "feed assigned to another replica; handing it over");
            let replica = &replica;
            Some(async move { feed.stop_and_release(&key, replica, call).await })
        });
        futures::future::join_all(handing_over).await;
        for stream in &streams {
            let owner = owner_of(&stream.key, &live);
            if owner != Some(replica.id()) {
                if !running.contains_key(&stream.key) {
                    stream.state.standby(owner);
                }
                continue;
            }
            if running.contains_key(&stream.key) {
                continue;
            }
            let asked = Instant::now();
            let acquired =
                match tokio::time::timeout(call, replica.acquire(&stream.key, Utc::now(), hold))
                    .await
                {
                    Ok(Ok(acquired)) => acquired,
                    _ => break,
                };
            let Some(token) = acquired else {
                // still held by a replica that has not let go yet (or died: its lease expires)
                stream.state.standby(None);
                continue;
            };
            if running.is_empty() {
                clock.mark(asked, hold);
            }
            stream.state.owned_by(replica.id());
            let cancel = guard.child_token();
            let task = tokio::spawn((stream.start)(cancel.clone()));
            tracing::info!(feed = %stream.key, token, "feed lease acquired; feed started");
            running.insert(
                stream.key.clone(),
                Running {
                    token,
                    cancel,
                    task,
                },
            );
        }
    }
    let leaving = running
        .drain()
        .map(|(key, feed)| {
            let replica = &replica;
            async move { feed.stop_and_release(&key, replica, call).await }
        })
        .collect::<Vec<_>>();
    futures::future::join_all(leaving).await;
    replica.deregister().await;
    watchdog_task.abort();
}
