//! Reading `nightcrier ingest`'s input files as a stream of messages, in bounded memory,
//! whatever their size: a small file may be one JSON object or a JSON array of them; anything
//! else is JSON lines, one message per line. A big file that starts with `[` is streamed element
//! by element. A line or element over the size limit is refused on its own, with its true size,
//! and the rest goes on.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use serde::de::{DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde_json::value::RawValue;
use tokio::sync::mpsc;

/// How much of a refused message is kept as its dead letter.
pub const KEPT_OF_OVERSIZED: usize = 64 * 1024;

/// One message read from an input, or a reason it cannot be one.
#[derive(Debug, PartialEq, Eq)]
pub struct InputItem {
    /// Where it was: `file:line 3`, `file[2]`, `file`.
    pub position: String,
    /// Its bytes (for a refused one, the first [`KEPT_OF_OVERSIZED`]).
    pub body: Vec<u8>,
    /// Why it is refused before decoding, if it is.
    pub problem: Option<String>,
}

/// Reads `path` (`-` for stdin) into `items`. Returns how many items were sent; fails only when
/// the input cannot be read at all, or the receiver went away.
pub fn read_input(
    path: &Path,
    max_message_bytes: usize,
    items: &mpsc::Sender<InputItem>,
) -> Result<u64, String> {
    let name = path.display().to_string();
    let reader: Box<dyn Read> = if path.as_os_str() == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(File::open(path).map_err(|e| format!("failed to read {name}: {e}"))?)
    };
    let mut reader = BufReader::with_capacity(256 * 1024, reader);
    let mut prefix = Vec::new();
    (&mut reader)
        .take(max_message_bytes as u64 + 1)
        .read_to_end(&mut prefix)
        .map_err(|e| format!("failed to read {name}: {e}"))?;
    let mut sink = Sink {
        items,
        name: &name,
        sent: 0,
    };
    let first = prefix.iter().find(|b| !b.is_ascii_whitespace()).copied();
    if prefix.len() <= max_message_bytes {
        // The whole input is in hand: one object, or an array of them, else lines.
        if first == Some(b'{') && serde_json::from_slice::<&RawValue>(&prefix).is_ok() {
            sink.send(name.clone(), trim(&prefix).to_vec(), None)?;
            return Ok(sink.sent);
        }
        if first == Some(b'[')
            && let Ok(elements) = serde_json::from_slice::<Vec<&RawValue>>(&prefix)
        {
            for (index, element) in elements.iter().enumerate() {
                sink.send(
                    format!("{name}[{index}]"),
                    element.get().as_bytes().to_vec(),
                    None,
                )?;
            }
            return Ok(sink.sent);
        }
        lines(std::io::Cursor::new(prefix), max_message_bytes, &mut sink)?;
        return Ok(sink.sent);
    }
    let chained = BufReader::new(std::io::Cursor::new(prefix).chain(reader));
    if first == Some(b'[') {
        array(chained, max_message_bytes, &mut sink)?;
    } else {
        lines(chained, max_message_bytes, &mut sink)?;
    }
    Ok(sink.sent)
}

struct Sink<'a> {
    items: &'a mpsc::Sender<InputItem>,
    name: &'a str,
    sent: u64,
}

impl Sink<'_> {
    fn send(
        &mut self,
        position: String,
        body: Vec<u8>,
        problem: Option<String>,
    ) -> Result<(), String> {
        self.items
            .blocking_send(InputItem {
                position,
                body,
                problem,
            })
            .map_err(|_| "ingest stopped".to_owned())?;
        self.sent += 1;
        Ok(())
    }
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// One message per non-blank line; a line longer than the limit is refused on its own.
fn lines(mut reader: impl BufRead, max: usize, sink: &mut Sink<'_>) -> Result<(), String> {
    let mut number = 0u64;
    let mut line = Vec::new();
    loop {
        line.clear();
        let mut length = 0usize;
        let mut ended = false;
        loop {
            let available = reader
                .fill_buf()
                .map_err(|e| format!("failed to read {}: {e}", sink.name))?;
            if available.is_empty() {
                break;
            }
            let (chunk, found) = match available.iter().position(|&b| b == b'\n') {
                Some(end) => (&available[..end], true),
                None => (available, false),
            };
            let room = (max + 1).saturating_sub(line.len());
            line.extend_from_slice(&chunk[..chunk.len().min(room)]);
            length += chunk.len();
            let consumed = chunk.len() + usize::from(found);
            reader.consume(consumed);
            if found {
                ended = true;
                break;
            }
        }
        if length == 0 && !ended {
            return Ok(());
        }
        number += 1;
        if line.last() == Some(&b'\r') && length <= max + 1 {
            line.pop();
            length -= 1;
        }
        if line.iter().all(u8::is_ascii_whitespace) && length <= max {
            continue;
        }
        let position = format!("{}:line {number}", sink.name);
        if length > max {
            line.truncate(KEPT_OF_OVERSIZED);
            let problem = format!(
                "line {number} is {length} bytes, over the {max}-byte limit for one message (first {KEPT_OF_OVERSIZED} bytes kept)"
            );
            sink.send(position, line.clone(), Some(problem))?;
        } else {
            sink.send(position, line.clone(), None)?;
        }
    }
}

/// Streams the elements of a top-level JSON array, one message each.
fn array(reader: impl Read, max: usize, sink: &mut Sink<'_>) -> Result<(), String> {
    struct Elements<'s, 'a> {
        sink: &'s mut Sink<'a>,
        max: usize,
        failure: Option<String>,
    }
    impl<'de> Visitor<'de> for &mut Elements<'_, '_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON array")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            let mut index = 0usize;
            while let Some(element) = seq.next_element::<Box<RawValue>>()? {
                let bytes = element.get().as_bytes();
                let position = format!("{}[{index}]", self.sink.name);
                let result = if bytes.len() > self.max {
                    self.sink.send(
                        position,
                        bytes[..KEPT_OF_OVERSIZED.min(bytes.len())].to_vec(),
                        Some(format!(
                            "element {index} is {} bytes, over the {}-byte limit for one message (first {KEPT_OF_OVERSIZED} bytes kept)",
                            bytes.len(),
                            self.max
                        )),
                    )
                } else {
                    self.sink.send(position, bytes.to_vec(), None)
                };
                if let Err(error) = result {
                    self.failure = Some(error);
                    return Err(serde::de::Error::custom("stopped"));
                }
                index += 1;
            }
            Ok(())
        }
    }
    impl<'de> DeserializeSeed<'de> for &mut Elements<'_, '_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
            deserializer.deserialize_seq(self)
        }
    }
    let mut elements = Elements {
        sink,
        max,
        failure: None,
    };
    let mut deserializer = serde_json::Deserializer::from_reader(reader);
    let result = (&mut elements).deserialize(&mut deserializer);
    if let Some(failure) = elements.failure {
        return Err(failure);
    }
    if let Err(error) = result.and_then(|()| deserializer.end()) {
        // The array cannot be followed past a syntax error: everything after it is one refusal.
        let position = format!("{}[…]", elements.sink.name);
        elements.sink.send(
            position,
            Vec::new(),
            Some(format!(
                "the JSON array breaks off: {error}; nothing after this point was read"
            )),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(content: &[u8], max: usize) -> Vec<InputItem> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("input.json");
        std::fs::write(&path, content).unwrap();
        let (tx, mut rx) = mpsc::channel(1_000_000);
        let sent = std::thread::scope(|scope| {
            scope
                .spawn(|| read_input(&path, max, &tx).unwrap())
                .join()
                .unwrap()
        });
        drop(tx);
        let mut items = Vec::new();
        while let Ok(item) = rx.try_recv() {
            items.push(item);
        }
        assert_eq!(sent as usize, items.len());
        items
    }

    #[test]
    fn a_pretty_printed_object_is_one_message() {
        let items = read_all(b"{\n  \"a\": 1\n}\n", 1024);
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].body, b"{\n  \"a\": 1\n}");
    }

    #[test]
    fn an_array_gives_one_message_per_element() {
        let items = read_all(br#"[{"a":1}, {"a":2}]"#, 1024);
        assert_eq!(items.len(), 2);
        assert_eq!(items[1].body, br#"{"a":2}"#);
        assert_eq!(
            items[1].position.rsplit('/').next().unwrap(),
            "input.json[1]"
        );
    }

    #[test]
    fn lines_are_messages_and_an_oversized_line_is_refused_alone() {
        let mut content = b"{\"a\":1}\r\n\n".to_vec();
        content.extend(vec![b'x'; 5000]);
        content.extend(b"\n{\"a\":3}");
        let items = read_all(&content, 1000);
        assert_eq!(items.len(), 3);
        assert_eq!(items[0].body, b"{\"a\":1}");
        assert!(
            items[1]
                .problem
                .as_deref()
                .unwrap()
                .contains("line 3 is 5000 bytes")
        );
        assert_eq!(items[2].body, b"{\"a\":3}");
        assert!(items[2].position.ends_with(":line 4"));
    }

    #[test]
    fn a_big_file_of_lines_streams() {
        let line =
            br#"{"faultType":"CrashLoop","pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}"#;
        let mut content = Vec::new();
        for _ in 0..20_000 {
            content.extend_from_slice(line);
            content.push(b'\n');
        }
        // bigger than the limit, so the streaming path is taken
        let items = read_all(&content, 64 * 1024);
        assert_eq!(items.len(), 20_000);
        assert!(
            items
                .iter()
                .all(|item| item.problem.is_none() && item.body == line)
        );
    }

    #[test]
    fn a_big_array_streams_and_a_break_is_reported() {
        let mut content = b"[".to_vec();
        for i in 0..5000 {
            if i > 0 {
                content.push(b',');
            }
            content.extend(format!("{{\"n\":{i}}}").as_bytes());
        }
        content.extend(b",{broken");
        let items = read_all(&content, 1024);
        assert_eq!(items.len(), 5001);
        assert_eq!(items[4999].body, b"{\"n\":4999}");
        assert!(
            items[5000]
                .problem
                .as_deref()
                .unwrap()
                .contains("breaks off")
        );
    }
}
