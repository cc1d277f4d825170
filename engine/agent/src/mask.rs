//! Masking of the secrets nightcrier itself hands to an agent: [`SecretMasker`] replaces each
//! value, and its base64 forms, in text the runtime captures from the agent (logs, the live
//! stream, the report, failure texts); [`StreamMasker`] does the same over a byte stream whose
//! chunks may split a secret.
//!
//! The engine knows every value it passes to a container, so it does not need to guess what a
//! secret looks like (that is the `redact-secrets` plugin's job, for secrets the agent found
//! elsewhere): an agent that prints its environment, whether told to by a prompt injection or
//! not, must not put its own API key into the logs or the database.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use aho_corasick::{AhoCorasick, MatchKind};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};

/// Base64 forms are masked only for secrets at least this long: the part of an encoding that a
/// short secret alone decides is only a few characters, which would mask ordinary text.
const MIN_BASE64_SECRET_BYTES: usize = 6;
/// The shortest base64 fragment worth masking.
const MIN_BASE64_FRAGMENT: usize = 8;

/// One secret value and the name it is known by (the container variable or file name; names
/// are not secret and tell the operator which credential leaked).
#[derive(Clone, PartialEq, Eq)]
pub struct NamedSecret {
    /// Variable or file name.
    pub name: String,
    /// The value.
    pub value: Vec<u8>,
}

impl fmt::Debug for NamedSecret {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("NamedSecret")
            .field("name", &self.name)
            .field("value", &"[redacted]")
            .finish()
    }
}

/// Replaces known secret values in text. Cheap to clone; `Default` masks nothing.
#[derive(Clone, Default)]
pub struct SecretMasker {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    automaton: AhoCorasick,
    patterns: Vec<Vec<u8>>,
    /// Replacement of each pattern, by pattern index.
    replacements: Vec<Vec<u8>>,
    longest: usize,
    /// `starts[b]`: whether some pattern begins with byte `b` (a quick filter for
    /// [`StreamMasker`]'s held-back tail).
    starts: [bool; 256],
}

impl fmt::Debug for SecretMasker {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let patterns = self.inner.as_ref().map_or(0, |inner| inner.patterns.len());
        formatter
            .debug_struct("SecretMasker")
            .field("patterns", &patterns)
            .finish()
    }
}

impl SecretMasker {
    /// A masker for `secrets` (empty values are ignored).
    pub fn new(secrets: &[NamedSecret]) -> Self {
        let mut entries: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for secret in secrets {
            if secret.value.is_empty() {
                continue;
            }
            let replacement = format!("[REDACTED:{}]", secret.name).into_bytes();
            for form in forms(&secret.value) {
                if !entries.iter().any(|(pattern, _)| *pattern == form) {
                    entries.push((form, replacement.clone()));
                }
            }
        }
        if entries.is_empty() {
            return Self::default();
        }
        let (patterns, replacements): (Vec<_>, Vec<_>) = entries.into_iter().unzip();
        let automaton = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&patterns)
            .expect("a few literal patterns always fit an Aho-Corasick automaton");
        let mut starts = [false; 256];
        for pattern in &patterns {
            starts[usize::from(pattern[0])] = true;
        }
        let longest = patterns.iter().map(Vec::len).max().unwrap_or(0);
        Self {
            inner: Some(Arc::new(Inner {
                automaton,
                patterns,
                replacements,
                longest,
                starts,
            })),
        }
    }

    /// Whether there is nothing to mask.
    pub fn is_empty(&self) -> bool {
        self.inner.is_none()
    }

    /// `bytes` with every secret form replaced.
    pub fn mask_bytes<'a>(&self, bytes: &'a [u8]) -> Cow<'a, [u8]> {
        let Some(inner) = &self.inner else {
            return Cow::Borrowed(bytes);
        };
        if !inner.automaton.is_match(bytes) {
            return Cow::Borrowed(bytes);
        }
        let mut out = Vec::with_capacity(bytes.len());
        let mut copied = 0;
        for found in inner.automaton.find_iter(bytes) {
            out.extend_from_slice(&bytes[copied..found.start()]);
            out.extend_from_slice(&inner.replacements[found.pattern().as_usize()]);
            copied = found.end();
        }
        out.extend_from_slice(&bytes[copied..]);
        Cow::Owned(out)
    }

    /// `text` with every secret form replaced.
    pub fn mask_str<'a>(&self, text: &'a str) -> Cow<'a, str> {
        match self.mask_bytes(text.as_bytes()) {
            Cow::Borrowed(_) => Cow::Borrowed(text),
            // Replacements are whole secrets; one may end inside a multi-byte character.
            Cow::Owned(bytes) => Cow::Owned(String::from_utf8_lossy(&bytes).into_owned()),
        }
    }

    /// Whether `bytes` holds a secret form.
    pub fn finds_any(&self, bytes: &[u8]) -> bool {
        self.inner
            .as_ref()
            .is_some_and(|inner| inner.automaton.is_match(bytes))
    }

    /// A masker for one stream of chunks.
    pub fn stream(&self) -> StreamMasker {
        StreamMasker {
            masker: self.clone(),
            held: Vec::new(),
            masked: 0,
        }
    }
}

/// The forms of `value` that are masked: the value itself and, for long enough values, its
/// base64 encodings (standard and URL-safe alphabets, with and without padding) and the part of
/// the encoding the value alone decides at each of the three alignments, so the value is caught
/// inside a longer base64 blob (a dumped `Authorization: Basic` header, a Kubernetes secret).
fn forms(value: &[u8]) -> Vec<Vec<u8>> {
    let mut forms = vec![value.to_vec()];
    if value.len() < MIN_BASE64_SECRET_BYTES {
        return forms;
    }
    for engine in [&STANDARD, &URL_SAFE] {
        forms.push(engine.encode(value).into_bytes());
    }
    for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
        for offset in 0..3usize {
            let mut shifted = vec![0u8; offset];
            shifted.extend_from_slice(value);
            let encoded = engine.encode(&shifted).into_bytes();
            // Characters that also depend on the bytes before the value (offset 1: two
            // characters, offset 2: three) or after it (the last one unless the value ends a
            // 3-byte group) differ from blob to blob; the rest do not.
            let skip_front = [0, 2, 3][offset];
            let skip_back = usize::from(shifted.len() % 3 != 0);
            if encoded.len() < skip_front + skip_back + MIN_BASE64_FRAGMENT {
                continue;
            }
            forms.push(encoded[skip_front..encoded.len() - skip_back].to_vec());
        }
    }
    forms
}

/// Masks a stream of chunks: a secret split across two chunks is still masked. Bytes that might
/// begin a secret are held back (at most the longest form less one byte) until the next chunk
/// or [`StreamMasker::finish`] decides them.
#[derive(Debug)]
pub struct StreamMasker {
    masker: SecretMasker,
    held: Vec<u8>,
    masked: usize,
}

impl StreamMasker {
    /// Takes the next chunk; returns the masked bytes that are final.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        let Some(inner) = self.masker.inner.clone() else {
            return chunk.to_vec();
        };
        let mut buffer = std::mem::take(&mut self.held);
        buffer.extend_from_slice(chunk);
        // The earliest position whose rest could be the start of a secret still arriving.
        let window = buffer.len().saturating_sub(inner.longest.saturating_sub(1));
        let pending = (window..buffer.len())
            .find(|&position| {
                inner.starts[usize::from(buffer[position])] && {
                    let rest = &buffer[position..];
                    inner
                        .patterns
                        .iter()
                        .any(|pattern| pattern.len() > rest.len() && pattern.starts_with(rest))
                }
            })
            .unwrap_or(buffer.len());
        let mut out = Vec::with_capacity(buffer.len());
        let mut copied = 0;
        for found in inner.automaton.find_iter(&buffer) {
            // A match starting at or after `pending` may yet be part of a longer, earlier one.
            if found.start() >= pending {
                break;
            }
            out.extend_from_slice(&buffer[copied..found.start()]);
            out.extend_from_slice(&inner.replacements[found.pattern().as_usize()]);
            copied = found.end();
            self.masked += 1;
        }
        let keep_from = pending.max(copied);
        out.extend_from_slice(&buffer[copied..keep_from]);
        self.held = buffer.split_off(keep_from);
        out
    }

    /// Ends the stream: the held-back bytes, masked.
    pub fn finish(&mut self) -> Vec<u8> {
        let held = std::mem::take(&mut self.held);
        let out = self.masker.mask_bytes(&held).into_owned();
        if out != held {
            self.masked += 1;
        }
        out
    }

    /// How many secrets were masked so far.
    pub fn masked(&self) -> usize {
        self.masked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(name: &str, value: &str) -> NamedSecret {
        NamedSecret {
            name: name.into(),
            value: value.as_bytes().to_vec(),
        }
    }

    const KEY: &str = "sk-ant-api03-Zx9_Qw8-Er7Ty6Ui5Op4As3Df2Gh1Jk0LzXcVbNm";

    #[test]
    fn exact_values_are_masked_with_their_name() {
        let masker = SecretMasker::new(&[secret("ANTHROPIC_API_KEY", KEY)]);
        let text = format!("HOME=/tmp\nANTHROPIC_API_KEY={KEY}\nPATH=/bin\n");
        let masked = masker.mask_str(&text);
        assert!(!masked.contains(KEY), "{masked}");
        assert!(
            masked.contains("ANTHROPIC_API_KEY=[REDACTED:ANTHROPIC_API_KEY]\n"),
            "{masked}"
        );
        assert!(masked.starts_with("HOME=/tmp\n") && masked.ends_with("PATH=/bin\n"));
        assert_eq!(masker.mask_str("nothing here"), "nothing here");
        assert!(SecretMasker::default().mask_str(KEY).contains(KEY));
    }

    #[test]
    fn base64_forms_are_masked_at_every_alignment_and_in_both_alphabets() {
        let value = "s3cr3t/with+chars?>~~";
        let masker = SecretMasker::new(&[secret("TOKEN", value)]);
        for engine in [&STANDARD, &URL_SAFE, &STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
            for prefix in ["", "a", "ab", "abc", "user:"] {
                for suffix in ["", "x", "xy", "\n"] {
                    let blob = engine.encode(format!("{prefix}{value}{suffix}"));
                    let masked = masker.mask_str(&blob);
                    assert!(
                        masked.contains("[REDACTED:TOKEN]"),
                        "{prefix:?}{suffix:?}: {blob} -> {masked}"
                    );
                    // What is left of the blob cannot be decoded back into the secret.
                    assert!(!masked.contains(&engine.encode(value)), "{masked}");
                }
            }
        }
    }

    #[test]
    fn a_secret_split_across_chunks_is_masked_in_a_stream() {
        let masker = SecretMasker::new(&[secret("K", KEY)]);
        let text = format!("before {KEY} middle {KEY}{KEY} after");
        let bytes = text.as_bytes();
        for chunk in [1, 2, 3, 7, 16, 50, 1000] {
            let mut stream = masker.stream();
            let mut out = Vec::new();
            for piece in bytes.chunks(chunk) {
                out.extend(stream.push(piece));
            }
            out.extend(stream.finish());
            let out = String::from_utf8(out).unwrap();
            assert_eq!(
                out, "before [REDACTED:K] middle [REDACTED:K][REDACTED:K] after",
                "chunks of {chunk}"
            );
        }
    }

    #[test]
    fn a_stream_holds_back_only_what_could_start_a_secret() {
        let masker = SecretMasker::new(&[secret("K", KEY)]);
        let mut stream = masker.stream();
        assert_eq!(stream.push(b"plain line\n"), b"plain line\n");
        assert_eq!(stream.push(b"ends with sk-an"), b"ends with ");
        assert_eq!(stream.push(b"gular\n"), b"sk-angular\n");
        assert_eq!(stream.finish(), b"");
        assert_eq!(stream.masked(), 0);
    }

    #[test]
    fn debug_never_shows_a_value() {
        let named = secret("K", KEY);
        assert!(!format!("{named:?}").contains(KEY));
        assert!(!format!("{:?}", SecretMasker::new(&[named])).contains(KEY));
    }
}
