//! The on-disk spool: where stream messages (MCP, poll) go while the database cannot be written,
//! and where they are replayed from, in arrival order, when it can again. A spool left by a
//! crash is replayed at start-up.
//!
//! Layout: `<dir>/spool-<sequence>.log` segments, appended to in order, each a run of records
//! `[payload length: u32 LE][CRC-32 of payload: u32 LE][payload]`, where the payload is
//! `[version: u8 = 1][header length: u32 LE][header JSON][body bytes]`. Every append is fsynced
//! before it returns. A record cut short by a crash (or one whose checksum fails) ends its
//! segment: the bytes from there on are counted as lost and the segment is truncated to its last
//! good record when it is reopened.
//!
//! Written here rather than taken from a crate: the queue-on-a-file crates at hand do not
//! checksum records, and this is the one place where a torn write must be told from data.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use nightcrier_intake::{FeedKind, Message};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::decode::Received;

const VERSION: u8 = 1;
const FRAME_HEADER: usize = 8;
/// A new segment is started past this size.
const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// A record longer than this is corrupt, whatever its length field says.
const MAX_RECORD_BYTES: usize = 64 * 1024 * 1024;

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Header {
    id: Uuid,
    source: String,
    cluster: Option<String>,
    kind: FeedKind,
    logger: Option<String>,
    headers: Vec<(String, String)>,
    received_at: DateTime<Utc>,
    unreadable: Option<String>,
}

fn encode(received: &Received) -> Vec<u8> {
    let message = &received.message;
    let header = Header {
        id: received.id,
        source: message.source.to_string(),
        cluster: message.cluster.as_deref().map(str::to_owned),
        kind: message.kind,
        logger: message.logger.clone(),
        headers: message.headers.clone(),
        received_at: message.received_at,
        unreadable: message.unreadable.clone(),
    };
    // Serialising plain strings, ids and times cannot fail.
    let header = serde_json::to_vec(&header).unwrap_or_default();
    let mut payload = Vec::with_capacity(5 + header.len() + message.body.len());
    payload.push(VERSION);
    payload.extend_from_slice(&(header.len() as u32).to_le_bytes());
    payload.extend_from_slice(&header);
    payload.extend_from_slice(&message.body);
    let mut frame = Vec::with_capacity(FRAME_HEADER + payload.len());
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    frame.extend_from_slice(&payload);
    frame
}

fn decode(payload: &[u8]) -> Result<Received, String> {
    let (&version, rest) = payload.split_first().ok_or("empty record")?;
    if version != VERSION {
        return Err(format!("unknown record version {version}"));
    }
    let length: [u8; 4] = rest
        .get(..4)
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or("record too short")?;
    let length = u32::from_le_bytes(length) as usize;
    let header = rest.get(4..4 + length).ok_or("record header cut short")?;
    let body = &rest[4 + length..];
    let header: Header =
        serde_json::from_slice(header).map_err(|e| format!("record header: {e}"))?;
    Ok(Received {
        id: header.id,
        message: Message {
            source: Arc::from(header.source.as_str()),
            cluster: header.cluster.as_deref().map(Arc::from),
            kind: header.kind,
            logger: header.logger,
            headers: header.headers,
            body: Bytes::copy_from_slice(body),
            received_at: header.received_at,
            unreadable: header.unreadable,
        },
    })
}

#[derive(Debug)]
struct Segment {
    sequence: u64,
    path: PathBuf,
    /// Bytes of good records.
    len: u64,
}

/// Where replay stands: a segment and an offset in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    sequence: u64,
    offset: u64,
}

/// What opening a spool found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Records waiting to be replayed.
    pub records: u64,
    /// Bytes of damaged records dropped (a crash mid-append, a failed checksum).
    pub damaged_bytes: u64,
}

/// What an append did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Appended {
    /// Records written and fsynced.
    pub written: usize,
    /// Records dropped because the spool is at its size cap.
    pub dropped: usize,
}

/// The spool of one process.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segments: VecDeque<Segment>,
    writer: Option<File>,
    head: Cursor,
    pending_records: u64,
}

impl Spool {
    /// Opens (creating) the spool in `dir`, checking every record already there.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<(Self, Recovered), String> {
        fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create the spool folder {}: {e}", dir.display()))?;
        let mut sequences = Vec::new();
        for entry in fs::read_dir(dir)
            .map_err(|e| format!("cannot read the spool folder {}: {e}", dir.display()))?
        {
            let entry = entry.map_err(|e| format!("cannot read the spool folder: {e}"))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(sequence) = name
                .strip_prefix("spool-")
                .and_then(|rest| rest.strip_suffix(".log"))
                .and_then(|number| number.parse::<u64>().ok())
            {
                sequences.push(sequence);
            }
        }
        sequences.sort_unstable();
        let mut recovered = Recovered::default();
        let mut segments = VecDeque::new();
        for sequence in sequences {
            let path = segment_path(dir, sequence);
            let scan = scan(&path)?;
            recovered.records += scan.records;
            recovered.damaged_bytes += scan.damaged_bytes;
            if scan.damaged_bytes > 0 {
                let file = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| format!("cannot repair {}: {e}", path.display()))?;
                file.set_len(scan.good_bytes)
                    .and_then(|()| file.sync_all())
                    .map_err(|e| format!("cannot repair {}: {e}", path.display()))?;
            }
            if scan.good_bytes == 0 {
                let _ = fs::remove_file(&path);
                continue;
            }
            segments.push_back(Segment {
                sequence,
                path,
                len: scan.good_bytes,
            });
        }
        let head = Cursor {
            sequence: segments.front().map_or(0, |s| s.sequence),
            offset: 0,
        };
        Ok((
            Self {
                dir: dir.to_owned(),
                max_bytes,
                segments,
                writer: None,
                head,
                pending_records: recovered.records,
            },
            recovered,
        ))
    }

    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.len).sum()
    }

    /// Whether nothing waits to be replayed.
    pub fn is_empty(&self) -> bool {
        self.pending_records == 0
    }

    /// Records waiting to be replayed.
    pub fn pending(&self) -> u64 {
        self.pending_records
    }

    /// Appends `messages` in order and fsyncs. Past the size cap the rest are dropped (and
    /// counted by the caller); nothing else is ever dropped.
    pub fn append(&mut self, messages: &[Received]) -> Result<Appended, String> {
        let mut appended = Appended::default();
        if messages.is_empty() {
            return Ok(appended);
        }
        let mut total = self.bytes();
        let mut buffer = Vec::new();
        for received in messages {
            let frame = encode(received);
            if total + frame.len() as u64 > self.max_bytes {
                appended.dropped += 1;
                continue;
            }
            total += frame.len() as u64;
            buffer.extend_from_slice(&frame);
            appended.written += 1;
        }
        if buffer.is_empty() {
            return Ok(appended);
        }
        let needs_new = self
            .segments
            .back()
            .is_none_or(|segment| segment.len >= SEGMENT_BYTES)
            || self.writer.is_none();
        if needs_new {
            self.start_segment()?;
        }
        let segment = self.segments.back_mut().ok_or("no spool segment")?;
        let writer = self.writer.as_mut().ok_or("no spool writer")?;
        writer
            .write_all(&buffer)
            .and_then(|()| writer.sync_data())
            .map_err(|e| format!("cannot write the spool {}: {e}", segment.path.display()))?;
        segment.len += buffer.len() as u64;
        self.pending_records += appended.written as u64;
        Ok(appended)
    }

    fn start_segment(&mut self) -> Result<(), String> {
        let sequence = self.segments.back().map_or(0, |s| s.sequence + 1);
        let path = segment_path(&self.dir, sequence);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        // The new file's directory entry must survive a crash too.
        if let Ok(dir) = File::open(&self.dir) {
            let _ = dir.sync_all();
        }
        if self.segments.is_empty() {
            self.head = Cursor {
                sequence,
                offset: 0,
            };
        }
        self.segments.push_back(Segment {
            sequence,
            path,
            len: 0,
        });
        self.writer = Some(file);
        Ok(())
    }

    /// Reads up to `max` records from the head without consuming them; returns them and the
    /// cursor to pass to [`Spool::consume`] once they are committed.
    pub fn read(&self, max: usize) -> Result<(Vec<Received>, Cursor), String> {
        let mut out = Vec::new();
        let mut cursor = self.head;
        let start = cursor.sequence;
        for segment in self.segments.iter().filter(|s| s.sequence >= start) {
            if segment.sequence > cursor.sequence {
                cursor = Cursor {
                    sequence: segment.sequence,
                    offset: 0,
                };
            }
            if cursor.offset >= segment.len {
                continue;
            }
            let mut file = File::open(&segment.path)
                .map_err(|e| format!("cannot read {}: {e}", segment.path.display()))?;
            file.seek(SeekFrom::Start(cursor.offset))
                .map_err(|e| format!("cannot read {}: {e}", segment.path.display()))?;
            let mut reader = BufReader::new(file.take(segment.len - cursor.offset));
            while out.len() < max && cursor.offset < segment.len {
                match next_record(&mut reader) {
                    Ok(Some((payload, size))) => {
                        cursor.offset += size;
                        match decode(&payload) {
                            Ok(received) => out.push(received),
                            Err(reason) => {
                                tracing::error!(segment = %segment.path.display(), error = %reason, "skipping an unreadable spool record");
                            }
                        }
                    }
                    Ok(None) | Err(_) => {
                        // Checked at open; a record that fails now ends the segment.
                        cursor.offset = segment.len;
                    }
                }
            }
            if out.len() >= max {
                break;
            }
        }
        Ok((out, cursor))
    }

    /// Marks everything before `cursor` as committed; fully replayed segments are deleted.
    pub fn consume(&mut self, cursor: Cursor, records: usize) {
        self.pending_records = self.pending_records.saturating_sub(records as u64);
        self.head = cursor;
        while let Some(front) = self.segments.front() {
            let replayed = front.sequence < cursor.sequence
                || (front.sequence == cursor.sequence && cursor.offset >= front.len);
            if !replayed {
                break;
            }
            let is_current = self.segments.len() == 1;
            let _ = fs::remove_file(&front.path);
            self.segments.pop_front();
            if is_current {
                self.writer = None;
            }
        }
        if self.segments.is_empty() {
            self.pending_records = 0;
            self.head = Cursor {
                sequence: cursor.sequence + 1,
                offset: 0,
            };
        }
    }
}

fn segment_path(dir: &Path, sequence: u64) -> PathBuf {
    dir.join(format!("spool-{sequence:020}.log"))
}

/// Reads one frame: `Ok(None)` at a clean end, `Err` on a damaged or cut-short record.
fn next_record(reader: &mut impl Read) -> Result<Option<(Vec<u8>, u64)>, String> {
    let mut header = [0u8; FRAME_HEADER];
    match read_full(reader, &mut header)? {
        0 => return Ok(None),
        n if n < FRAME_HEADER => return Err("record header cut short".into()),
        _ => {}
    }
    let length = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let checksum = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if length > MAX_RECORD_BYTES {
        return Err(format!("record length {length} is implausible"));
    }
    let mut payload = vec![0u8; length];
    if read_full(reader, &mut payload)? < length {
        return Err("record cut short".into());
    }
    if crc32fast::hash(&payload) != checksum {
        return Err("record checksum mismatch".into());
    }
    Ok(Some((payload, (FRAME_HEADER + length) as u64)))
}

fn read_full(reader: &mut impl Read, buffer: &mut [u8]) -> Result<usize, String> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error.to_string()),
        }
    }
    Ok(filled)
}

struct Scan {
    records: u64,
    good_bytes: u64,
    damaged_bytes: u64,
}

fn scan(path: &Path) -> Result<Scan, String> {
    let file = File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let total = file
        .metadata()
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .len();
    let mut reader = BufReader::new(file);
    let mut scan = Scan {
        records: 0,
        good_bytes: 0,
        damaged_bytes: 0,
    };
    loop {
        match next_record(&mut reader) {
            Ok(Some((_, size))) => {
                scan.records += 1;
                scan.good_bytes += size;
            }
            Ok(None) => break,
            Err(reason) => {
                scan.damaged_bytes = total - scan.good_bytes;
                tracing::error!(segment = %path.display(), error = %reason, lost_bytes = scan.damaged_bytes, "spool segment damaged; keeping the records before the damage");
                break;
            }
        }
    }
    Ok(scan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(n: usize) -> Received {
        Received::new(Message {
            source: Arc::from("kubernetes-mcp"),
            cluster: Some(Arc::from("prod")),
            kind: FeedKind::Mcp,
            logger: Some("kubernetes/faults".into()),
            headers: vec![],
            body: Bytes::from(format!("{{\"n\":{n}}}")),
            received_at: Utc::now(),
            unreadable: None,
        })
    }

    fn bodies(records: &[Received]) -> Vec<String> {
        records
            .iter()
            .map(|r| String::from_utf8_lossy(&r.message.body).into_owned())
            .collect()
    }

    #[test]
    fn records_come_back_in_order_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, recovered) = Spool::open(dir.path(), 1 << 30).unwrap();
        assert_eq!(recovered, Recovered::default());
        let sent: Vec<Received> = (0..10).map(message).collect();
        assert_eq!(spool.append(&sent[..6]).unwrap().written, 6);
        assert_eq!(spool.append(&sent[6..]).unwrap().written, 4);
        drop(spool);

        let (mut spool, recovered) = Spool::open(dir.path(), 1 << 30).unwrap();
        assert_eq!(recovered.records, 10);
        let (first, cursor) = spool.read(4).unwrap();
        assert_eq!(bodies(&first), bodies(&sent[..4]));
        assert_eq!(first[0].id, sent[0].id);
        spool.consume(cursor, first.len());
        let (rest, cursor) = spool.read(100).unwrap();
        assert_eq!(bodies(&rest), bodies(&sent[4..]));
        spool.consume(cursor, rest.len());
        assert!(spool.is_empty());
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            0,
            "drained segments are removed"
        );
        // and it keeps working after draining
        spool.append(&[message(11)]).unwrap();
        assert_eq!(bodies(&spool.read(10).unwrap().0), vec!["{\"n\":11}"]);
    }

    #[test]
    fn a_torn_tail_is_cut_and_the_good_records_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = Spool::open(dir.path(), 1 << 30).unwrap();
        spool
            .append(&(0..3).map(message).collect::<Vec<_>>())
            .unwrap();
        drop(spool);
        let path = segment_path(dir.path(), 0);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, b'x']).unwrap();
        drop(file);
        let (spool, recovered) = Spool::open(dir.path(), 1 << 30).unwrap();
        assert_eq!(recovered.records, 3);
        assert_eq!(recovered.damaged_bytes, 9);
        assert_eq!(spool.read(10).unwrap().0.len(), 3);
    }

    #[test]
    fn a_flipped_bit_fails_the_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = Spool::open(dir.path(), 1 << 30).unwrap();
        spool
            .append(&(0..3).map(message).collect::<Vec<_>>())
            .unwrap();
        drop(spool);
        let path = segment_path(dir.path(), 0);
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 2;
        bytes[last] ^= 0x40;
        fs::write(&path, bytes).unwrap();
        let (_, recovered) = Spool::open(dir.path(), 1 << 30).unwrap();
        assert_eq!(recovered.records, 2);
        assert!(recovered.damaged_bytes > 0);
    }

    #[test]
    fn past_the_cap_messages_are_dropped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let one = encode(&message(0)).len() as u64;
        let (mut spool, _) = Spool::open(dir.path(), one * 3).unwrap();
        let appended = spool
            .append(&(0..5).map(message).collect::<Vec<_>>())
            .unwrap();
        assert_eq!(
            appended,
            Appended {
                written: 3,
                dropped: 2
            }
        );
        assert_eq!(spool.pending(), 3);
    }
}
