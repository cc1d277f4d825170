//! Text the database can hold. Postgres `TEXT` and `JSONB` cannot store U+0000, so a NUL in a
//! payload, a plugin's output or an agent's report would make the whole write fail (and a batch
//! lose its good events with it). nightcrier stores U+FFFD in its place, on both backends, so the
//! same input is stored the same way everywhere; raw bytes (`rejected_events.raw_payload`,
//! `plugin_kv.value`) are kept exactly.

use std::borrow::Cow;

use sea_orm::Value;

const REPLACEMENT: &str = "\u{FFFD}";

/// `text` with every NUL replaced; borrowed when there is none.
pub(crate) fn storable(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', REPLACEMENT))
    } else {
        Cow::Borrowed(text)
    }
}

/// [`storable`] for an owned string, without copying when there is no NUL.
pub(crate) fn storable_owned(text: String) -> String {
    match storable(&text) {
        Cow::Borrowed(_) => text,
        Cow::Owned(fixed) => fixed,
    }
}

/// Replaces NUL in every string and object key of `value`.
pub(crate) fn storable_json(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(text) if text.contains('\0') => {
            *text = text.replace('\0', REPLACEMENT);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(storable_json),
        serde_json::Value::Object(map) => {
            if map.keys().any(|key| key.contains('\0')) {
                let entries = std::mem::take(map);
                for (key, mut item) in entries {
                    storable_json(&mut item);
                    map.insert(storable_owned(key), item);
                }
            } else {
                map.values_mut().for_each(storable_json);
            }
        }
        _ => {}
    }
}

/// A bind value with [`storable`] text (strings and JSON documents; other types pass through).
pub(crate) fn storable_value(value: Value) -> Value {
    match value {
        Value::String(Some(text)) => Value::String(Some(storable_owned(text))),
        Value::Json(Some(mut document)) => {
            storable_json(&mut document);
            Value::Json(Some(document))
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_becomes_the_replacement_character_everywhere() {
        assert_eq!(storable("a\0b"), "a\u{FFFD}b");
        assert!(matches!(storable("clean"), Cow::Borrowed("clean")));
        let mut document = serde_json::json!({"a\u{0}": ["x\u{0}", {"k": "v\u{0}"}], "n": 1});
        storable_json(&mut document);
        assert_eq!(
            document,
            serde_json::json!({"a\u{FFFD}": ["x\u{FFFD}", {"k": "v\u{FFFD}"}], "n": 1})
        );
        assert_eq!(
            storable_value(Value::String(Some("z\0".into()))),
            Value::String(Some("z\u{FFFD}".into()))
        );
    }
}
