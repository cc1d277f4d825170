//! The one way a message becomes a fault event, for `serve` and for `nightcrier ingest` alike:
//! decode through the feed's source plugin, validate, and commit in groups, or keep as a dead
//! letter with the reason.
//!
//! [`Ingestor`] owns one writer task. Messages that arrive together are decoded and written in
//! one transaction (up to `batch_max` messages), so a storm is absorbed at batch speed while a
//! lone event is durable within milliseconds. The writer is a two-stage pipeline: while one
//! batch's transaction runs (in a task of its own), the next batch is gathered (for at most
//! `linger` after its first message) and decoded; transactions still run one at a time, in
//! order. With no transaction running, a message is written at once: batches grow with the load
//! by themselves, to what arrives during one commit.
//! Nothing here waits on pre-triage, agents or post-triage.
//!
//! When the database cannot be written (restart, network cut, disk full), stream messages (MCP,
//! poll) go to the on-disk [`spool`] and are written in arrival order once it can be written
//! again; a spool left by a crash is replayed at start-up. The writer also spools when a burst
//! leaves more than `backlog_batches` batches waiting, so memory stays bounded. Messages are
//! dropped (counted and logged) only when the spool is at its cap, or when the in-memory buffer
//! is full because the disk cannot keep up. Webhooks are never spooled: their senders get `503`
//! and retry. Dead letters are written in the same batches, and logged in aggregate.

mod decode;
mod read;
mod spool;
pub mod validate;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use chrono::Utc;
use nightcrier_intake::Message;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use decode::{Decoded, Decoder, Received, message_for};
pub use read::{InputItem, KEPT_OF_OVERSIZED, read_input};
pub use spool::{Recovered, Spool};

use crate::queue::{IngestBatch, Ingested, Queue, QueueError};

/// Largest message accepted (a fault is ~1 KiB).
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// How the ingest path batches, buffers and spools.
#[derive(Clone, Debug)]
pub struct IngestConfig {
    /// Most messages in one transaction.
    pub batch_max: usize,
    /// How long the writer gathers more messages after the first of a batch while the previous
    /// batch's transaction runs (with none running, it does not wait).
    pub linger: Duration,
    /// Messages held in memory between the feeds and the writer.
    pub buffer: usize,
    /// Batches waiting in memory above which the writer spools the backlog (storm or slow disk).
    pub backlog_batches: usize,
    /// The spool; `None` makes a database failure an error for the caller (the `ingest` command).
    pub spool: Option<SpoolConfig>,
    /// Log each dead letter (the first few per interval, then counts).
    pub log_rejections: bool,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            batch_max: 1000,
            linger: Duration::from_millis(5),
            buffer: 20_000,
            backlog_batches: 8,
            spool: None,
            log_rejections: true,
        }
    }
}

/// Where and how big the spool is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpoolConfig {
    /// Its folder.
    pub dir: PathBuf,
    /// Its cap in bytes; past it messages are dropped and counted.
    pub max_bytes: u64,
}

/// Counters of the ingest path since start.
#[derive(Debug, Default)]
pub struct IngestStats {
    /// Messages handed in.
    pub received: AtomicU64,
    /// Fault events committed.
    pub events: AtomicU64,
    /// Dead letters committed.
    pub rejected: AtomicU64,
    /// Messages written to the spool.
    pub spooled: AtomicU64,
    /// Messages replayed from the spool.
    pub replayed: AtomicU64,
    /// Messages dropped (spool full, or buffer full).
    pub dropped: AtomicU64,
    /// Bytes in the spool now.
    pub spool_bytes: AtomicU64,
}

/// What became of one message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MessageOutcome {
    /// Incidents created from it.
    pub incidents: Vec<Ingested>,
    /// Why each refused part was refused.
    pub rejected: Vec<String>,
}

/// Why a message was not committed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    /// The database cannot be written now.
    #[error("the database cannot be written now: {0}")]
    Unavailable(String),
    /// The ingest path has stopped.
    #[error("ingest has stopped")]
    Stopped,
}

type Reply = oneshot::Sender<Result<MessageOutcome, IngestError>>;

struct Item {
    received: Received,
    /// Waits for the commit; never spooled (webhooks, the `ingest` command).
    reply: Option<Reply>,
}

impl Item {
    fn spoolable(&self) -> bool {
        self.reply.is_none()
    }
}

#[derive(Debug)]
struct Shared {
    accepting: AtomicBool,
    stats: IngestStats,
    buffer_full_logged: AtomicU64,
}

/// The ingest path's handle; cheap to clone.
#[derive(Clone, Debug)]
pub struct Ingestor {
    items: mpsc::Sender<Item>,
    shared: Arc<Shared>,
}

impl Ingestor {
    /// Opens the spool (replaying what a previous run left first) and starts the writer, which
    /// runs until `shutdown`, then commits or spools what it holds and ends.
    pub fn start(
        queue: Queue,
        decoder: Decoder,
        config: IngestConfig,
        shutdown: CancellationToken,
    ) -> anyhow::Result<(Self, tokio::task::JoinHandle<()>)> {
        let spool = match &config.spool {
            Some(spool) => {
                let (spool, recovered) =
                    Spool::open(&spool.dir, spool.max_bytes).map_err(anyhow::Error::msg)?;
                if recovered.records > 0 || recovered.damaged_bytes > 0 {
                    tracing::warn!(
                        records = recovered.records,
                        damaged_bytes = recovered.damaged_bytes,
                        "spool left by an earlier run; replaying it first"
                    );
                }
                Some(spool)
            }
            None => None,
        };
        let (items, rx) = mpsc::channel(config.buffer.max(1));
        let shared = Arc::new(Shared {
            accepting: AtomicBool::new(true),
            stats: IngestStats::default(),
            buffer_full_logged: AtomicU64::new(0),
        });
        let mode = if spool.as_ref().is_some_and(|s| !s.is_empty()) {
            shared.accepting.store(false, Ordering::Relaxed);
            Mode::Spooling {
                retry_at: tokio::time::Instant::now(),
                delay: RETRY_MIN,
                store_up: true,
            }
        } else {
            Mode::Direct
        };
        if let Some(spool) = &spool {
            shared
                .stats
                .spool_bytes
                .store(spool.bytes(), Ordering::Relaxed);
        }
        let writer = Writer {
            rx,
            queue,
            decoder,
            config,
            shared: shared.clone(),
            spool,
            mode,
            rejects: RejectLog::default(),
            gathered: Vec::new(),
            linger_end: tokio::time::Instant::now(),
        };
        let task = tokio::spawn(writer.run(shutdown));
        Ok((Self { items, shared }, task))
    }

    /// Hands over a stream message. Never waits: the message is buffered (or spooled by the
    /// writer); only a full buffer drops it, counted and logged.
    pub fn offer(&self, message: Message) {
        self.shared.stats.received.fetch_add(1, Ordering::Relaxed);
        count_received(&message);
        let item = Item {
            received: Received::new(message),
            reply: None,
        };
        if let Err(error) = self.items.try_send(item) {
            let item = match error {
                mpsc::error::TrySendError::Full(item) | mpsc::error::TrySendError::Closed(item) => {
                    item
                }
            };
            let dropped = self.shared.stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            metrics::counter!("nightcrier_events_dropped_total", "source" => item.received.message.source.to_string(), "reason" => "buffer_full").increment(1);
            // One line for the first drop and then at powers of two, not one per message.
            if dropped.is_power_of_two()
                && self
                    .shared
                    .buffer_full_logged
                    .swap(dropped, Ordering::Relaxed)
                    != dropped
            {
                tracing::error!(
                    source = %item.received.message.source,
                    dropped_total = dropped,
                    "ingest buffer full: messages dropped (the disk cannot keep up with the feeds)"
                );
            }
        }
    }

    /// Hands over a message and waits until it is committed or refused. Never spooled: while
    /// the database cannot be written the answer is [`IngestError::Unavailable`] at once.
    pub async fn submit(&self, message: Message) -> Result<MessageOutcome, IngestError> {
        if !self.accepting() {
            return Err(IngestError::Unavailable(
                "the database is unreachable; messages are being spooled".into(),
            ));
        }
        let reply = self.send(message).await?;
        reply.await.map_err(|_| IngestError::Stopped)?
    }

    /// Hands over a message, waiting for room in the buffer; the receiver resolves when it is
    /// committed or refused. For callers that keep many messages in flight (`ingest`).
    pub async fn send(
        &self,
        message: Message,
    ) -> Result<oneshot::Receiver<Result<MessageOutcome, IngestError>>, IngestError> {
        self.shared.stats.received.fetch_add(1, Ordering::Relaxed);
        count_received(&message);
        let (reply, receiver) = oneshot::channel();
        self.items
            .send(Item {
                received: Received::new(message),
                reply: Some(reply),
            })
            .await
            .map_err(|_| IngestError::Stopped)?;
        Ok(receiver)
    }

    /// Whether messages are committed as they come (false while the writer spools).
    pub fn accepting(&self) -> bool {
        self.shared.accepting.load(Ordering::Relaxed)
    }

    /// The counters.
    pub fn stats(&self) -> &IngestStats {
        &self.shared.stats
    }
}

fn count_received(message: &Message) {
    metrics::counter!(
        "nightcrier_events_received_total",
        "source" => message.source.to_string(),
        "cluster" => message.cluster.as_deref().unwrap_or("-").to_owned(),
        "kind" => message.kind.as_str()
    )
    .increment(1);
}

const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(10);
/// Spool records replayed per commit.
const REPLAY_BATCH: usize = 1000;
/// Replay commits between looks at the buffer.
const REPLAY_ROUNDS: usize = 4;

#[derive(Debug)]
enum Mode {
    /// Commit as messages come.
    Direct,
    /// Stream messages go to the spool; it is replayed from `retry_at` on.
    Spooling {
        retry_at: tokio::time::Instant,
        delay: Duration,
        /// Whether the last attempt reached the database (then webhooks are committed directly).
        store_up: bool,
    },
}

struct Writer {
    rx: mpsc::Receiver<Item>,
    queue: Queue,
    decoder: Decoder,
    config: IngestConfig,
    shared: Arc<Shared>,
    spool: Option<Spool>,
    mode: Mode,
    rejects: RejectLog,
    /// The batch being gathered: kept here, not in a local, so that gathering can be
    /// interrupted (by the commit in flight ending) without losing what it took.
    gathered: Vec<Item>,
    /// When the batch being gathered stops waiting for more.
    linger_end: tokio::time::Instant,
}

/// A decoded batch, ready to be written.
struct Prepared {
    items: Vec<Item>,
    parts: Vec<Part>,
    batch: IngestBatch,
}

/// What the commit task hands back: the batch and how its transaction ended.
type Landed = (Prepared, Result<Vec<Ingested>, QueueError>);

/// A batch being written by its own task while the writer gathers and decodes the next one.
struct InFlight {
    task: tokio::task::JoinHandle<Landed>,
}

/// What the writer waited for.
enum Next {
    /// A batch was gathered (and whether shutdown has begun).
    Gathered(Vec<Item>, bool),
    /// The commit in flight ended.
    Landed(Result<Landed, tokio::task::JoinError>),
}

/// A commit that could not reach the database; the items are handed back.
struct Unreachable {
    items: Vec<Item>,
    error: String,
}

impl Writer {
    /// The writer's loop. In direct mode it is a two-stage pipeline: while one batch's
    /// transaction runs in its own task, the next batch is gathered and decoded, so decoding
    /// (plugin calls) and writing overlap instead of adding up. Batches still commit one at a
    /// time and in order; the next is launched only once the previous one has landed.
    async fn run(mut self, shutdown: CancellationToken) {
        let mut in_flight: Option<InFlight> = None;
        loop {
            let next = match in_flight.as_mut() {
                Some(flight) => tokio::select! {
                    joined = &mut flight.task => Next::Landed(joined),
                    (items, closing) = self.gather(&shutdown, true) => Next::Gathered(items, closing),
                },
                None => {
                    let (items, closing) = self.gather(&shutdown, false).await;
                    Next::Gathered(items, closing)
                }
            };
            let (items, closing) = match next {
                Next::Landed(joined) => {
                    in_flight = None;
                    self.land(joined).await;
                    continue;
                }
                Next::Gathered(items, closing) => (items, closing),
            };
            if self.config.log_rejections {
                self.rejects.flush_if_due();
            }
            if !items.is_empty() {
                match self.mode {
                    Mode::Direct if self.backlogged() => {
                        // No time to decode: after the batch in flight, this one and all that
                        // waits behind it go to the spool.
                        if let Some(flight) = in_flight.take() {
                            let joined = flight.task.await;
                            self.land(joined).await;
                        }
                        match self.mode {
                            Mode::Direct => self.spool_backlog(items).await,
                            Mode::Spooling { .. } => self.while_spooling(items).await,
                        }
                    }
                    Mode::Direct => {
                        // Decode this batch while the previous one is being written.
                        let prepared = self.prepare(items).await;
                        if let Some(flight) = in_flight.take() {
                            let joined = flight.task.await;
                            self.land(joined).await;
                        }
                        if let Some(prepared) = prepared {
                            match self.mode {
                                Mode::Direct if !self.backlogged() => {
                                    in_flight = Some(self.launch(prepared));
                                }
                                // The feeds outrun the disk: this batch and all that waits
                                // behind it go to the spool, in arrival order, so memory stays
                                // bounded; the replay decodes them again.
                                Mode::Direct => self.spool_backlog(prepared.items).await,
                                // The previous batch found the database gone: this one follows
                                // it to the spool.
                                Mode::Spooling { .. } => self.while_spooling(prepared.items).await,
                            }
                        }
                    }
                    Mode::Spooling { .. } => self.while_spooling(items).await,
                }
            }
            if matches!(self.mode, Mode::Spooling { .. }) && !closing {
                self.replay().await;
            }
            if closing && self.rx.is_empty() && self.gathered.is_empty() {
                if let Some(flight) = in_flight.take() {
                    let joined = flight.task.await;
                    self.land(joined).await;
                    continue;
                }
                break;
            }
        }
        if self.config.log_rejections {
            self.rejects.flush();
        }
    }

    /// Starts writing `prepared` in its own task.
    fn launch(&self, prepared: Prepared) -> InFlight {
        let queue = self.queue.clone();
        InFlight {
            task: tokio::spawn(async move {
                let result = queue.commit_batch(&prepared.batch).await;
                (prepared, result)
            }),
        }
    }

    /// Answers a batch whose transaction ended; spools it if the database was away.
    async fn land(&mut self, joined: Result<Landed, tokio::task::JoinError>) {
        let (prepared, result) =
            joined.unwrap_or_else(|panic| std::panic::resume_unwind(panic.into_panic()));
        if let Err(unreachable) = self.settle(prepared, result).await {
            self.enter_spooling(unreachable.items, &unreachable.error)
                .await;
        }
    }

    /// Whether more messages wait in memory than the bound (`backlog_batches` batches) and
    /// there is a spool to put them in.
    fn backlogged(&self) -> bool {
        self.spool.is_some() && self.rx.len() > self.config.batch_max * self.config.backlog_batches
    }

    /// Spools `first` and then everything waiting behind it, and replays from there.
    async fn spool_backlog(&mut self, first: Vec<Item>) {
        let mut backlog = first;
        backlog.append(&mut self.gathered);
        backlog.extend(self.drain_now());
        tracing::warn!(
            backlog = backlog.len(),
            "ingest backlog beyond its bound; spooling it to disk"
        );
        self.enter_spooling(backlog, "backlog").await;
        if let Mode::Spooling { store_up, .. } = &mut self.mode {
            *store_up = true;
        }
    }

    /// Waits for the next batch: in direct mode for a first message, then for up to `linger`
    /// more if `lingering` (a commit is in flight, so the batch could not be written before it
    /// lands anyway), else only what is already waiting; while spooling, until the next replay
    /// is due. So a lone message is written at once, and under load batches grow by themselves
    /// to what arrives during one commit. The flag says shutdown has begun. Cancel-safe: what it
    /// has taken stays in `self.gathered` for the next call.
    async fn gather(&mut self, shutdown: &CancellationToken, lingering: bool) -> (Vec<Item>, bool) {
        if shutdown.is_cancelled() {
            while self.gathered.len() < self.config.batch_max {
                match self.rx.try_recv() {
                    Ok(item) => self.gathered.push(item),
                    Err(_) => break,
                }
            }
            return (std::mem::take(&mut self.gathered), true);
        }
        if self.gathered.is_empty() {
            let deadline = match self.mode {
                Mode::Direct => None,
                Mode::Spooling { retry_at, .. } => Some(retry_at),
            };
            let first = tokio::select! {
                item = self.rx.recv() => item,
                _ = shutdown.cancelled() => return (Vec::new(), true),
                _ = sleep_until_opt(deadline) => return (Vec::new(), false),
            };
            let Some(first) = first else {
                return (Vec::new(), true);
            };
            self.gathered.push(first);
            self.linger_end = tokio::time::Instant::now() + self.config.linger;
        }
        if matches!(self.mode, Mode::Spooling { .. }) {
            // Everything waiting goes to the spool in one append (one fsync): the spool must
            // take messages faster than any feed can send them.
            while self.gathered.len() < self.config.buffer {
                match self.rx.try_recv() {
                    Ok(item) => self.gathered.push(item),
                    Err(_) => break,
                }
            }
            return (std::mem::take(&mut self.gathered), false);
        }
        while self.gathered.len() < self.config.batch_max {
            match self.rx.try_recv() {
                Ok(item) => self.gathered.push(item),
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) if !lingering => break,
                Err(mpsc::error::TryRecvError::Empty) => {
                    tokio::select! {
                        item = self.rx.recv() => match item {
                            Some(item) => self.gathered.push(item),
                            None => break,
                        },
                        _ = tokio::time::sleep_until(self.linger_end) => break,
                    }
                }
            }
        }
        (std::mem::take(&mut self.gathered), false)
    }

    fn drain_now(&mut self) -> Vec<Item> {
        let mut items = Vec::with_capacity(self.rx.len());
        while let Ok(item) = self.rx.try_recv() {
            items.push(item);
        }
        items
    }

    /// Decodes and commits `items` in one transaction and answers each. If the database cannot
    /// be reached (a transient error) the items come back; if it refuses the batch for its
    /// data, each message is committed alone so that one bad message cannot hold the others
    /// back, and the one it refuses is kept as a dead letter.
    async fn commit(&mut self, items: Vec<Item>) -> Result<(), Unreachable> {
        let Some(prepared) = self.prepare(items).await else {
            return Ok(());
        };
        let result = self.queue.commit_batch(&prepared.batch).await;
        self.settle(prepared, result).await
    }

    /// Decodes `items` into one batch; `None` when none is left to write.
    async fn prepare(&mut self, items: Vec<Item>) -> Option<Prepared> {
        // A caller that stopped waiting (a webhook answered 503 on its timeout) must not have
        // its message stored behind its back: the sender will send it again.
        let items: Vec<Item> = items
            .into_iter()
            .filter(|item| !item.reply.as_ref().is_some_and(|reply| reply.is_closed()))
            .collect();
        if items.is_empty() {
            return None;
        }
        let mut batch = IngestBatch::default();
        let mut parts = Vec::with_capacity(items.len());
        for item in &items {
            let decoded = self.decoder.decode(&item.received).await;
            parts.push(Part {
                events: decoded.events.iter().map(|e| e.id).collect(),
                rejected: decoded.rejected.iter().map(|r| r.reason.clone()).collect(),
            });
            batch.events.extend(decoded.events);
            batch.rejected.extend(decoded.rejected);
            batch.plugin_runs.extend(decoded.plugin_run);
        }
        Some(Prepared {
            items,
            parts,
            batch,
        })
    }

    /// Answers a batch from how its transaction ended (see [`Writer::commit`]).
    async fn settle(
        &mut self,
        prepared: Prepared,
        result: Result<Vec<Ingested>, QueueError>,
    ) -> Result<(), Unreachable> {
        let Prepared {
            items,
            parts,
            batch,
        } = prepared;
        match result {
            Ok(created) => {
                self.committed(items, parts, &batch, created);
                Ok(())
            }
            // The database is away (or restarting): keep everything and try again later.
            Err(error) if error.is_transient() => Err(Unreachable {
                items,
                error: error.to_string(),
            }),
            Err(error) if items.len() > 1 => {
                tracing::warn!(error = %error, messages = items.len(), "the database refused a batch; committing its messages one by one");
                let mut items = items.into_iter();
                while let Some(item) = items.next() {
                    // A single message either commits, or is dead-lettered with the reason; if
                    // the database goes away meanwhile, the rest come back with it.
                    if let Err(mut unreachable) = Box::pin(self.commit(vec![item])).await {
                        unreachable.items.extend(items);
                        return Err(unreachable);
                    }
                }
                Ok(())
            }
            Err(error) => {
                let error = error.to_string();
                self.unstorable(items, &error).await
            }
        }
    }

    /// Answers and counts a committed batch.
    fn committed(
        &mut self,
        items: Vec<Item>,
        parts: Vec<Part>,
        batch: &IngestBatch,
        created: Vec<Ingested>,
    ) {
        let now = Utc::now();
        let incidents: HashMap<Uuid, Ingested> =
            created.into_iter().map(|ids| (ids.event_id, ids)).collect();
        let stats = &self.shared.stats;
        stats
            .events
            .fetch_add(batch.events.len() as u64, Ordering::Relaxed);
        stats
            .rejected
            .fetch_add(batch.rejected.len() as u64, Ordering::Relaxed);
        for rejected in &batch.rejected {
            if self.config.log_rejections {
                self.rejects.record(rejected);
            }
        }
        for (item, part) in items.into_iter().zip(parts) {
            let message = &item.received.message;
            let cluster = message.cluster.as_deref().unwrap_or("-").to_owned();
            let source = message.source.to_string();
            let latency = (now - message.received_at)
                .to_std()
                .unwrap_or_default()
                .as_secs_f64();
            metrics::histogram!("nightcrier_ingest_commit_latency_seconds", "kind" => message.kind.as_str()).record(latency);
            if !part.events.is_empty() {
                metrics::counter!("nightcrier_events_committed_total", "source" => source.clone(), "cluster" => cluster.clone()).increment(part.events.len() as u64);
            }
            if !part.rejected.is_empty() {
                metrics::counter!("nightcrier_events_rejected_total", "source" => source, "cluster" => cluster).increment(part.rejected.len() as u64);
            }
            if let Some(reply) = item.reply {
                let outcome = MessageOutcome {
                    incidents: part
                        .events
                        .iter()
                        .filter_map(|id| incidents.get(id).copied())
                        .collect(),
                    rejected: part.rejected,
                };
                let _ = reply.send(Ok(outcome));
            }
        }
    }

    /// The database is up but will not store this message: keep it as a dead letter instead.
    async fn unstorable(&mut self, items: Vec<Item>, error: &str) -> Result<(), Unreachable> {
        let reason = format!("could not be stored: {error}");
        let letter = IngestBatch {
            rejected: items
                .iter()
                .map(|item| crate::queue::NewRejected {
                    id: decode::dead_letter_id(item.received.id),
                    source: item.received.message.source.to_string(),
                    cluster: item.received.message.cluster.as_deref().map(str::to_owned),
                    raw_payload: item.received.message.body.to_vec(),
                    reason: reason.clone(),
                    received_at: item.received.message.received_at,
                })
                .collect(),
            ..IngestBatch::default()
        };
        match self.queue.commit_batch(&letter).await {
            Ok(_) => {
                self.shared
                    .stats
                    .rejected
                    .fetch_add(items.len() as u64, Ordering::Relaxed);
            }
            Err(second) if second.is_transient() => {
                return Err(Unreachable {
                    items,
                    error: second.to_string(),
                });
            }
            Err(second) => {
                self.shared
                    .stats
                    .dropped
                    .fetch_add(items.len() as u64, Ordering::Relaxed);
                tracing::error!(error = %error, dead_letter_error = %second, dropped = items.len(), "message dropped: it can be neither stored nor kept as a dead letter");
            }
        }
        for item in items {
            if let Some(reply) = item.reply {
                let _ = reply.send(Ok(MessageOutcome {
                    incidents: Vec::new(),
                    rejected: vec![reason.clone()],
                }));
            }
        }
        Ok(())
    }

    async fn store_reachable(&self) -> bool {
        self.queue.store().ping().await.is_ok()
    }

    /// The database failed: spool the stream messages, refuse the waiting ones, and replay
    /// later. Without a spool, everyone waiting is told.
    async fn enter_spooling(&mut self, items: Vec<Item>, error: &str) {
        if self.spool.is_none() {
            for item in items {
                if let Some(reply) = item.reply {
                    let _ = reply.send(Err(IngestError::Unavailable(error.to_owned())));
                }
            }
            return;
        }
        if error != "backlog" {
            tracing::error!(error = %error, "the database cannot be written; spooling stream messages to disk");
        }
        self.shared.accepting.store(false, Ordering::Relaxed);
        self.mode = Mode::Spooling {
            retry_at: tokio::time::Instant::now() + RETRY_MIN,
            delay: RETRY_MIN,
            store_up: false,
        };
        self.spool_items(items, error).await;
    }

    async fn while_spooling(&mut self, items: Vec<Item>) {
        let store_up = matches!(self.mode, Mode::Spooling { store_up: true, .. });
        let (waiting, streams): (Vec<Item>, Vec<Item>) =
            items.into_iter().partition(|item| !item.spoolable());
        self.spool_items(streams, "spooling").await;
        if waiting.is_empty() {
            return;
        }
        if store_up {
            if let Err(unreachable) = self.commit(waiting).await {
                self.spool_items(unreachable.items, &unreachable.error)
                    .await;
            }
        } else {
            for item in waiting {
                if let Some(reply) = item.reply {
                    let _ = reply.send(Err(IngestError::Unavailable(
                        "the database is unreachable".into(),
                    )));
                }
            }
        }
    }

    /// Appends the stream messages of `items` to the spool; waiting ones are refused.
    async fn spool_items(&mut self, items: Vec<Item>, error: &str) {
        let mut records = Vec::with_capacity(items.len());
        for item in items {
            match item.reply {
                Some(reply) => {
                    let _ = reply.send(Err(IngestError::Unavailable(error.to_owned())));
                }
                None => records.push(item.received),
            }
        }
        if records.is_empty() {
            return;
        }
        let Some(mut spool) = self.spool.take() else {
            return;
        };
        let count = records.len();
        let (spool, result) = tokio::task::spawn_blocking(move || {
            let result = spool.append(&records);
            (spool, result.map(|appended| (appended, records)))
        })
        .await
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic.into_panic()));
        let stats = &self.shared.stats;
        stats.spool_bytes.store(spool.bytes(), Ordering::Relaxed);
        metrics::gauge!("nightcrier_spool_bytes").set(spool.bytes() as f64);
        self.spool = Some(spool);
        match result {
            Ok((appended, records)) => {
                stats
                    .spooled
                    .fetch_add(appended.written as u64, Ordering::Relaxed);
                metrics::counter!("nightcrier_events_spooled_total")
                    .increment(appended.written as u64);
                if appended.dropped > 0 {
                    stats
                        .dropped
                        .fetch_add(appended.dropped as u64, Ordering::Relaxed);
                    metrics::counter!("nightcrier_events_dropped_total", "source" => "-", "reason" => "spool_full").increment(appended.dropped as u64);
                    tracing::error!(dropped = appended.dropped, first_source = %records.first().map(|r| r.message.source.to_string()).unwrap_or_default(), "spool full: messages dropped");
                }
            }
            Err(error) => {
                stats.dropped.fetch_add(count as u64, Ordering::Relaxed);
                metrics::counter!("nightcrier_events_dropped_total", "source" => "-", "reason" => "spool_error").increment(count as u64);
                tracing::error!(error = %error, dropped = count, "cannot write the spool: messages dropped");
            }
        }
    }

    /// Replays the spool in order while the database takes it; back to direct mode once empty.
    async fn replay(&mut self) {
        let Mode::Spooling {
            retry_at, delay, ..
        } = self.mode
        else {
            return;
        };
        if tokio::time::Instant::now() < retry_at {
            return;
        }
        for _ in 0..REPLAY_ROUNDS {
            // Messages that came in during the last round go to the spool's tail first: a
            // replay commit can take a while, and the buffer must not fill up behind it.
            let arrived = self.drain_now();
            if !arrived.is_empty() {
                self.while_spooling(arrived).await;
            }
            let Some(spool) = self.spool.take() else {
                self.leave_spooling();
                return;
            };
            let (spool, read) = tokio::task::spawn_blocking(move || {
                let read = spool.read(REPLAY_BATCH);
                (spool, read)
            })
            .await
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic.into_panic()));
            self.spool = Some(spool);
            let (records, cursor) = match read {
                Ok(read) => read,
                Err(error) => {
                    tracing::error!(error = %error, "cannot read the spool");
                    self.retry_later(delay, false);
                    return;
                }
            };
            if records.is_empty() {
                if let Some(spool) = self.spool.as_mut() {
                    spool.consume(cursor, 0);
                }
                // Nothing to replay proves nothing about the database: ask it first.
                if self.store_reachable().await {
                    self.leave_spooling();
                } else {
                    self.retry_later(delay, false);
                }
                return;
            }
            let count = records.len();
            let items = records
                .into_iter()
                .map(|received| Item {
                    received,
                    reply: None,
                })
                .collect();
            match self.commit(items).await {
                Ok(()) => {
                    if let Some(spool) = self.spool.as_mut() {
                        spool.consume(cursor, count);
                        self.shared
                            .stats
                            .spool_bytes
                            .store(spool.bytes(), Ordering::Relaxed);
                        metrics::gauge!("nightcrier_spool_bytes").set(spool.bytes() as f64);
                    }
                    self.shared
                        .stats
                        .replayed
                        .fetch_add(count as u64, Ordering::Relaxed);
                    if let Mode::Spooling { store_up, .. } = &mut self.mode {
                        *store_up = true;
                    }
                }
                Err(unreachable) => {
                    // Still on disk: nothing to put back.
                    tracing::debug!(error = %unreachable.error, "the database is still unreachable");
                    self.retry_later(delay, false);
                    return;
                }
            }
            if self.spool.as_ref().is_some_and(Spool::is_empty) {
                self.leave_spooling();
                return;
            }
        }
    }

    fn retry_later(&mut self, delay: Duration, store_up: bool) {
        let next = (delay * 2).min(RETRY_MAX);
        self.mode = Mode::Spooling {
            retry_at: tokio::time::Instant::now() + delay,
            delay: next,
            store_up,
        };
    }

    fn leave_spooling(&mut self) {
        if matches!(self.mode, Mode::Spooling { .. }) {
            tracing::warn!(
                replayed = self.shared.stats.replayed.load(Ordering::Relaxed),
                "the spool is replayed; committing directly again"
            );
        }
        self.mode = Mode::Direct;
        self.shared.accepting.store(true, Ordering::Relaxed);
    }
}

struct Part {
    events: Vec<Uuid>,
    rejected: Vec<String>,
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Dead letters in the log: the first few of each interval one by one, then a count per source
/// with the last reason, so a feed sending garbage cannot flood the log.
#[derive(Debug)]
struct RejectLog {
    window_start: tokio::time::Instant,
    logged: u32,
    suppressed: HashMap<String, (u64, String)>,
}

/// Dead letters logged one by one per interval.
const REJECTS_LOGGED_PER_WINDOW: u32 = 5;
const REJECT_WINDOW: Duration = Duration::from_secs(10);

impl Default for RejectLog {
    fn default() -> Self {
        Self {
            window_start: tokio::time::Instant::now(),
            logged: 0,
            suppressed: HashMap::new(),
        }
    }
}

impl RejectLog {
    fn record(&mut self, rejected: &crate::queue::NewRejected) {
        if self.logged < REJECTS_LOGGED_PER_WINDOW {
            self.logged += 1;
            tracing::warn!(source = %rejected.source, cluster = rejected.cluster.as_deref().unwrap_or("-"), rejected_id = %rejected.id, reason = %rejected.reason, "message rejected (kept in rejected_events)");
        } else {
            let entry = self
                .suppressed
                .entry(rejected.source.clone())
                .or_insert((0, String::new()));
            entry.0 += 1;
            entry.1.clone_from(&rejected.reason);
        }
    }

    fn flush_if_due(&mut self) {
        if self.window_start.elapsed() >= REJECT_WINDOW {
            self.flush();
        }
    }

    fn flush(&mut self) {
        for (source, (count, last_reason)) in self.suppressed.drain() {
            tracing::warn!(source = %source, rejected = count, last_reason = %last_reason, "more messages rejected (not logged one by one; see `nightcrier rejected`)");
        }
        self.window_start = tokio::time::Instant::now();
        self.logged = 0;
    }
}
