//! A server-sent events parser with a bound on event size.
//!
//! Written here rather than taken from `eventsource-stream` because that crate buffers a line
//! and an event's data without limit: a server that never ends an event would grow nightcrier's
//! memory until it dies. This one follows the WHATWG event-stream grammar (LF, CRLF or CR line
//! ends, `:` comments, multi-line `data`, events without an `event:` field) and hands back an
//! [`SseItem::Oversized`] event, with the first `max_event_bytes` kept, instead of growing.

/// One parsed item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum SseItem {
    /// A complete event.
    Event {
        /// The `event:` field, if any.
        event: Option<String>,
        /// The `data:` lines joined with `\n`.
        data: Vec<u8>,
    },
    /// An event longer than the bound; its beginning and true size.
    Oversized {
        /// The first bytes of its data.
        head: Vec<u8>,
        /// How many bytes it had.
        size: usize,
    },
}

/// Incremental parser: feed it chunks as they arrive.
#[derive(Debug)]
pub(crate) struct SseParser {
    max_event_bytes: usize,
    line: Vec<u8>,
    line_dropped: usize,
    after_cr: bool,
    at_start: bool,
    event: Option<String>,
    data: Vec<u8>,
    has_data: bool,
    oversized: Option<usize>,
}

impl SseParser {
    /// A parser that refuses events whose data is longer than `max_event_bytes`.
    pub(crate) fn new(max_event_bytes: usize) -> Self {
        Self {
            max_event_bytes,
            line: Vec::new(),
            line_dropped: 0,
            after_cr: false,
            at_start: true,
            event: None,
            data: Vec::new(),
            has_data: false,
            oversized: None,
        }
    }

    /// Parses `chunk`, appending every event it completes to `out`.
    pub(crate) fn push(&mut self, mut chunk: &[u8], out: &mut Vec<SseItem>) {
        if self.at_start && !chunk.is_empty() {
            // A UTF-8 byte order mark may open the stream.
            if let Some(rest) = chunk.strip_prefix(b"\xEF\xBB\xBF") {
                chunk = rest;
            }
            self.at_start = false;
        }
        while !chunk.is_empty() {
            if self.after_cr {
                self.after_cr = false;
                if chunk[0] == b'\n' {
                    chunk = &chunk[1..];
                    continue;
                }
            }
            match chunk.iter().position(|&b| b == b'\n' || b == b'\r') {
                Some(end) => {
                    self.append_to_line(&chunk[..end]);
                    self.after_cr = chunk[end] == b'\r';
                    chunk = &chunk[end + 1..];
                    self.end_line(out);
                }
                None => {
                    self.append_to_line(chunk);
                    chunk = &[];
                }
            }
        }
    }

    fn append_to_line(&mut self, bytes: &[u8]) {
        // A line can be at most a field name, a colon, a space and the event's whole data.
        let room = (self.max_event_bytes + 16).saturating_sub(self.line.len());
        if bytes.len() > room {
            self.line.extend_from_slice(&bytes[..room]);
            self.line_dropped += bytes.len() - room;
        } else {
            self.line.extend_from_slice(bytes);
        }
    }

    fn end_line(&mut self, out: &mut Vec<SseItem>) {
        let line = std::mem::take(&mut self.line);
        let dropped = std::mem::take(&mut self.line_dropped);
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (&line[..], &b""[..]),
        };
        match field {
            b"data" => {
                if self.has_data {
                    self.data_push(b"\n");
                }
                self.has_data = true;
                self.data_push(value);
                if dropped > 0 {
                    *self.oversized.get_or_insert(0) += dropped;
                }
            }
            b"event" => self.event = Some(String::from_utf8_lossy(value).into_owned()),
            // `id` and `retry` matter to reconnecting browsers; an MCP server sends neither
            // (no event store), so they are read and dropped.
            _ => {}
        }
    }

    fn data_push(&mut self, bytes: &[u8]) {
        let room = self.max_event_bytes.saturating_sub(self.data.len());
        if bytes.len() > room {
            self.data.extend_from_slice(&bytes[..room]);
            *self.oversized.get_or_insert(0) += bytes.len() - room;
        } else {
            self.data.extend_from_slice(bytes);
        }
    }

    fn dispatch(&mut self, out: &mut Vec<SseItem>) {
        let event = self.event.take();
        let data = std::mem::take(&mut self.data);
        let had_data = std::mem::replace(&mut self.has_data, false);
        if let Some(extra) = self.oversized.take() {
            let size = data.len() + extra;
            out.push(SseItem::Oversized { head: data, size });
        } else if had_data {
            out.push(SseItem::Event { event, data });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(chunks: &[&[u8]], max: usize) -> Vec<SseItem> {
        let mut parser = SseParser::new(max);
        let mut out = Vec::new();
        for chunk in chunks {
            parser.push(chunk, &mut out);
        }
        out
    }

    fn event(name: Option<&str>, data: &str) -> SseItem {
        SseItem::Event {
            event: name.map(str::to_owned),
            data: data.as_bytes().to_vec(),
        }
    }

    #[test]
    fn go_server_framing() {
        let items = parse(
            &[b"event: message\ndata: {\"a\":1}\n\nevent: message\ndata: {\"b\":2}\n\n"],
            1024,
        );
        assert_eq!(
            items,
            vec![
                event(Some("message"), "{\"a\":1}"),
                event(Some("message"), "{\"b\":2}")
            ]
        );
    }

    #[test]
    fn crlf_comments_multiline_data_and_no_event_field() {
        let items = parse(
            &[b": ping - 2025-12-20 14:00:00\r\n\r\ndata: one\r\ndata: two\r\n\r\ndata:x\r\r"],
            1024,
        );
        assert_eq!(items, vec![event(None, "one\ntwo"), event(None, "x")]);
    }

    #[test]
    fn events_split_at_any_byte_are_reassembled() {
        let whole = b"event: message\r\ndata: {\"k\":\"v\"}\r\n\r\n";
        for split in 0..whole.len() {
            let (a, b) = whole.split_at(split);
            assert_eq!(
                parse(&[a, b], 1024),
                vec![event(Some("message"), "{\"k\":\"v\"}")],
                "split at {split}"
            );
        }
    }

    #[test]
    fn an_unfinished_event_is_not_dispatched() {
        assert!(parse(&[b"data: half"], 1024).is_empty());
        assert!(parse(&[b"event: message\n\n"], 1024).is_empty());
    }

    #[test]
    fn an_oversized_event_is_cut_and_the_stream_goes_on() {
        let big = vec![b'x'; 5000];
        let mut stream = b"data: ".to_vec();
        stream.extend_from_slice(&big);
        stream.extend_from_slice(b"\n\ndata: next\n\n");
        let items = parse(&[&stream[..1000], &stream[1000..]], 100);
        assert_eq!(items.len(), 2);
        match &items[0] {
            SseItem::Oversized { head, size } => {
                assert_eq!(head.len(), 100);
                assert!(*size >= 5000, "{size}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(items[1], event(None, "next"));
    }

    #[test]
    fn a_byte_order_mark_is_skipped() {
        assert_eq!(
            parse(&[b"\xEF\xBB\xBFdata: a\n\n"], 64),
            vec![event(None, "a")]
        );
    }
}
