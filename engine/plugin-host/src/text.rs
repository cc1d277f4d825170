//! Showing untrusted text: `escape_untrusted`, the one function every log line and terminal
//! surface uses for text a plugin, a feed or a guest's stderr supplied.
//!
//! Such text is stored as received and escaped where it is shown, so a newline cannot start a
//! forged log line, an escape sequence cannot drive the operator's terminal, and a bidirectional
//! override cannot make a line read differently from what it holds.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` must not reach a log or a terminal as itself.
///
/// C0 and C1 controls and DEL (newline, carriage return, tab, ESC, NEL, CSI…), the Unicode line
/// and paragraph separators, and the invisible formatting characters that reorder or hide text:
/// bidirectional embeddings, overrides, isolates and marks, zero-width characters and the BOM.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}'               // arabic letter mark
                | '\u{200B}'..='\u{200F}' // zero-width space/joiners, LRM, RLM
                | '\u{2028}'..='\u{202E}' // line/paragraph separators, bidi embeddings and overrides
                | '\u{2060}'..='\u{2069}' // word joiner, invisible operators, bidi isolates
                | '\u{FEFF}'              // zero-width no-break space (BOM)
                | '\u{FFF9}'..='\u{FFFB}' // interlinear annotation controls
        )
}

/// `text` ready to be shown in a log line or on a terminal: every control, separator and
/// invisible formatting character is written as an escape (`\n`, `\r`, `\t`, otherwise
/// `\u{1b}`-style); everything else, backslashes included, is kept, so plain text is borrowed
/// unchanged and escaping twice changes nothing.
pub fn escape_untrusted(text: &str) -> Cow<'_, str> {
    let Some(first) = text.find(is_unsafe) else {
        return Cow::Borrowed(text);
    };
    let mut escaped = String::with_capacity(text.len() + 8);
    escaped.push_str(&text[..first]);
    for c in text[first..].chars() {
        match c {
            '\n' => escaped.push_str("\\n"),
            '\r' => escaped.push_str("\\r"),
            '\t' => escaped.push_str("\\t"),
            c if is_unsafe(c) => {
                // writing to a String cannot fail
                let _ = write!(escaped, "\\u{{{:x}}}", u32::from(c));
            }
            c => escaped.push(c),
        }
    }
    Cow::Owned(escaped)
}

/// At most `max_chars` characters of `text`, then escaped with [`escape_untrusted`].
pub(crate) fn escape_bounded(text: &str, max_chars: usize) -> Cow<'_, str> {
    match text.char_indices().nth(max_chars) {
        Some((end, _)) => Cow::Owned(escape_untrusted(&text[..end]).into_owned()),
        None => escape_untrusted(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        for text in [
            "",
            "kubernetes-mcp@0.1.0",
            "héllo wörld — 日本 ✓",
            r"C:\path\n is not a newline",
        ] {
            assert!(
                matches!(escape_untrusted(text), Cow::Borrowed(same) if same == text),
                "{text}"
            );
        }
    }

    #[test]
    fn line_breaks_and_escape_sequences_are_escaped() {
        assert_eq!(
            escape_untrusted("ok\n2026-01-01T00:00:00Z ERROR forged\u{1b}[31m\r\tx"),
            "ok\\n2026-01-01T00:00:00Z ERROR forged\\u{1b}[31m\\r\\tx"
        );
        assert_eq!(escape_untrusted("\0\u{7}\u{7f}"), "\\u{0}\\u{7}\\u{7f}");
        // C1: NEL (a line break to some readers) and the 8-bit CSI
        assert_eq!(escape_untrusted("a\u{85}b\u{9b}2J"), "a\\u{85}b\\u{9b}2J");
        assert_eq!(
            escape_untrusted("a\u{2028}b\u{2029}"),
            "a\\u{2028}b\\u{2029}"
        );
    }

    #[test]
    fn bidi_and_invisible_characters_are_escaped() {
        assert_eq!(
            escape_untrusted("admin\u{202E}txt.exe"),
            "admin\\u{202e}txt.exe"
        );
        assert_eq!(
            escape_untrusted("\u{2066}x\u{2069}\u{200B}\u{FEFF}\u{61C}"),
            "\\u{2066}x\\u{2069}\\u{200b}\\u{feff}\\u{61c}"
        );
    }

    #[test]
    fn escaping_twice_changes_nothing() {
        let once = escape_untrusted("a\nb\u{1b}c\u{202e}").into_owned();
        assert_eq!(escape_untrusted(&once), once);
    }

    #[test]
    fn bounded_escaping_cuts_by_characters_first() {
        assert_eq!(escape_bounded("héllo wörld", 5), "héllo");
        assert_eq!(escape_bounded("a\nbcdef", 3), "a\\nb");
        assert_eq!(escape_bounded("short", 100), "short");
    }
}
