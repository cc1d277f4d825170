//! Units in the config file, as serde helpers for any key: durations are humantime strings
//! (`"90s"`, `"15m"`, `"7d"`, `"1h 30m"`) and sizes are byte sizes with a unit (`"512m"`,
//! `"2g"`, `"1.5GiB"`; single letters are binary units, as in Docker), or a plain byte count.
//! Keys that had a unit-less spelling before (`lease_secs = 60`) keep it; [`either`] refuses a
//! file that gives both spellings of one setting, naming the two keys.
//!
//! Use: `#[serde(default, with = "units::duration")] lease: Option<Duration>` and
//! `#[serde(default, with = "units::size")] max_body: Option<u64>`.

use std::fmt;
use std::time::Duration;

use serde::Deserializer;
use serde::de::{self, Visitor};

/// An optional duration written with its unit (`"90s"`, `"7d"`).
pub mod duration {
    use super::*;

    /// Deserialises `"90s"` into `Some(90 s)`; a bare number other than `0` is refused, because
    /// its unit would be a guess.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        deserializer.deserialize_any(DurationVisitor).map(Some)
    }

    struct DurationVisitor;

    impl Visitor<'_> for DurationVisitor {
        type Value = Duration;

        fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            formatter.write_str("a duration with its unit, such as \"90s\", \"15m\" or \"7d\"")
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
            parse_duration(text).map_err(E::custom)
        }

        fn visit_i64<E: de::Error>(self, number: i64) -> Result<Duration, E> {
            // zero is zero in every unit ("keep forever" and "off" are written `0`)
            if number == 0 {
                return Ok(Duration::ZERO);
            }
            Err(E::custom(format!(
                "{number} has no unit; write it as a string with one, such as \"{number}s\""
            )))
        }

        fn visit_u64<E: de::Error>(self, number: u64) -> Result<Duration, E> {
            self.visit_i64(i64::try_from(number).unwrap_or(i64::MAX))
        }

        fn visit_f64<E: de::Error>(self, number: f64) -> Result<Duration, E> {
            Err(E::custom(format!(
                "{number} has no unit; write it as a string with one, such as \"{number}s\""
            )))
        }
    }
}

/// An optional byte size (`"512m"`, `"2g"`, `"1.5GiB"`, or a byte count).
pub mod size {
    use super::*;

    /// Deserialises `"512m"` into `Some(536870912)`.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<u64>, D::Error> {
        deserializer.deserialize_any(SizeVisitor).map(Some)
    }

    struct SizeVisitor;

    impl Visitor<'_> for SizeVisitor {
        type Value = u64;

        fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            formatter.write_str("a size such as \"512m\", \"2g\" or a number of bytes")
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<u64, E> {
            parse_size(text).map_err(E::custom)
        }

        fn visit_u64<E: de::Error>(self, number: u64) -> Result<u64, E> {
            if number == 0 {
                return Err(E::custom("a size must be more than 0 bytes"));
            }
            Ok(number)
        }

        fn visit_i64<E: de::Error>(self, number: i64) -> Result<u64, E> {
            u64::try_from(number)
                .map_err(|_| E::custom(format!("{number} is not a size")))
                .and_then(|number| self.visit_u64(number))
        }
    }
}

/// Parses a humantime duration (`"90s"`, `"1h 30m"`, `"7d"`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|error| {
        format!("cannot read {text:?} as a duration such as \"90s\" or \"7d\": {error}")
    })
}

/// Parses a byte size; the one rule for sizes, shared with agent profiles (`memory`, `log_cap`).
pub fn parse_size(text: &str) -> Result<u64, String> {
    nightcrier_agent::parse_size(text)
}

/// The one value given for a setting that has a new key with a unit and an old unit-less key
/// (converted by the caller); both given is an error naming the two keys.
pub fn either<T>(
    new_key: &str,
    new: Option<T>,
    old_key: &str,
    old: Option<T>,
) -> anyhow::Result<Option<T>> {
    match (new, old) {
        (Some(_), Some(_)) => anyhow::bail!("give either {new_key} or {old_key}, not both"),
        (new, old) => Ok(new.or(old)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct Sample {
        #[serde(default, with = "duration")]
        wait: Option<Duration>,
        #[serde(default, with = "size")]
        cap: Option<u64>,
    }

    fn sample(text: &str) -> Result<Sample, String> {
        toml::from_str(text).map_err(|error| error.to_string())
    }

    #[test]
    fn durations_and_sizes_read_with_their_units() {
        let read = sample("wait = \"1h 30m\"\ncap = \"1.5g\"").unwrap();
        assert_eq!(read.wait, Some(Duration::from_secs(5400)));
        assert_eq!(read.cap, Some(3 << 29));
        assert_eq!(
            sample("wait = \"7d\"").unwrap().wait,
            Some(Duration::from_secs(7 * 86400))
        );
        assert_eq!(sample("cap = 4096").unwrap().cap, Some(4096));
        assert_eq!(
            sample("wait = 0").unwrap().wait,
            Some(Duration::ZERO),
            "zero needs no unit"
        );
        let empty = sample("").unwrap();
        assert_eq!((empty.wait, empty.cap), (None, None));
    }

    #[test]
    fn mistakes_name_the_key_and_say_what_is_expected() {
        let error = sample("wait = 90").unwrap_err();
        assert!(
            error.contains("wait") && error.contains("\"90s\""),
            "{error}"
        );
        let error = sample("wait = \"soon\"").unwrap_err();
        assert!(error.contains("wait") && error.contains("soon"), "{error}");
        let error = sample("cap = \"lots\"").unwrap_err();
        assert!(error.contains("cap") && error.contains("lots"), "{error}");
        assert!(sample("cap = 0").is_err());
    }

    #[test]
    fn one_setting_two_spellings() {
        assert_eq!(
            either("a.lease", Some(1), "a.lease_secs", None).unwrap(),
            Some(1)
        );
        assert_eq!(
            either("a.lease", None, "a.lease_secs", Some(2)).unwrap(),
            Some(2)
        );
        assert_eq!(
            either::<u8>("a.lease", None, "a.lease_secs", None).unwrap(),
            None
        );
        let error = either("a.lease", Some(1), "a.lease_secs", Some(2)).unwrap_err();
        assert_eq!(
            error.to_string(),
            "give either a.lease or a.lease_secs, not both"
        );
    }
}
