//! Wake-ups: idle worker slots and pre-triage wait on a [`Notify`] instead of sleeping a poll
//! interval, and on Postgres a listener task turns `NOTIFY nightcrier_queue` (sent by a trigger
//! in the transaction that makes an incident `queued`, in any replica) into the same wake-up.
//! In process, a finished investigation also wakes a slot (its cluster, or its agent slot under
//! `fleet_max_agents`, is free); across replicas it need not, since the finishing slot claims
//! again at once.
//!
//! `notify_one` keeps a permit when no slot is waiting, so a wake-up sent between a slot's empty
//! claim and its wait is not lost; a slot that claims passes the wake-up on, so a burst reaches
//! every idle slot one claim at a time. Polling stays as the fallback (`[workers]
//! poll_interval`), and a delayed incident wakes a slot at its due time.

use std::time::Duration;

use sea_orm::DbBackend;
use sea_orm::sqlx::postgres::{PgListener, PgPoolOptions};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::Queue;

/// The Postgres channel the queue trigger notifies.
pub(crate) const CHANNEL: &str = "nightcrier_queue";

/// The `application_name` of the listener's connection, so operators (and tests) can find it in
/// `pg_stat_activity`.
pub const LISTENER_APPLICATION_NAME: &str = "nightcrier-queue-listener";

/// Longest pause between attempts to re-establish the listener's connection.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// First pause after the listener's connection failed.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// The wake-up signals of one process, shared by every clone of its [`Queue`].
#[derive(Debug, Default)]
pub(crate) struct Wakeups {
    /// An incident may be claimable: queued, or its cluster or agent slot freed.
    pub(crate) work: Notify,
    /// A pending incident may wait for pre-triage.
    pub(crate) pending: Notify,
}

/// Listens on [`CHANNEL`] until `shutdown` fires and wakes a worker slot for each notification.
/// A lost connection is re-established with exponential backoff (up to [`MAX_BACKOFF`]); after
/// each (re)connection a slot is woken, since notifications sent meanwhile are lost. Does nothing
/// on SQLite, where the process is alone and the in-process wake-ups suffice.
pub(crate) async fn listen(queue: Queue, shutdown: CancellationToken) {
    if queue.store().backend() != DbBackend::Postgres {
        return;
    }
    let mut backoff = FIRST_BACKOFF;
    loop {
        let mut connected = false;
        let session = async {
            let mut listener = connect(&queue).await?;
            listener.listen(CHANNEL).await?;
            connected = true;
            tracing::debug!(channel = CHANNEL, "listening for queue notifications");
            queue.wake_work();
            loop {
                match listener.try_recv().await {
                    Ok(Some(_)) => queue.wake_work(),
                    Ok(None) => {
                        // sqlx reconnected on its own; notifications may have been missed
                        tracing::warn!("queue listener reconnected");
                        queue.wake_work();
                    }
                    Err(error) => return Err::<(), sea_orm::sqlx::Error>(error),
                }
            }
        };
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            result = session => result,
        };
        if connected {
            backoff = FIRST_BACKOFF;
        }
        if let Err(error) = result {
            tracing::warn!(error = %error, retry_in = ?backoff, "queue listener lost its connection; idle workers poll until it is back");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// A listener on its own connection (not one of the pool's), with the pool's settings.
async fn connect(queue: &Queue) -> Result<PgListener, sea_orm::sqlx::Error> {
    let pool = queue.store().connection().get_postgres_connection_pool();
    let options = pool
        .connect_options()
        .as_ref()
        .clone()
        .application_name(LISTENER_APPLICATION_NAME);
    let own = PgPoolOptions::new()
        .max_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await?;
    PgListener::connect_with(&own).await
}
