//! Scalar config values that validate while they are parsed, so that an error
//! carries the path of the field it came from.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// A duration written with a unit: `500ms`, `10s`, `5m`, `1h 30m`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DurationValue(pub Duration);

impl<'de> Deserialize<'de> for DurationValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d).map_err(|_| {
            de::Error::custom("expected a duration string with a unit, like 500ms, 10s, 5m or 1h")
        })?;
        parse_duration(&text)
            .map(DurationValue)
            .map_err(de::Error::custom)
    }
}

/// Parses a duration with a unit; bare numbers are rejected because their unit is ambiguous.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if trimmed.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(format!(
            "invalid duration `{text}`: a unit is required, like 500ms, 10s, 5m or 1h"
        ));
    }
    humantime::parse_duration(trimmed).map_err(|e| {
        format!("invalid duration `{text}` ({e}): expected a number with a unit, like 500ms, 10s, 5m or 1h")
    })
}

/// A byte size: a plain number of bytes or a number with a unit
/// (`Ki`, `Mi`, `Gi` are powers of 1024; `K`, `M`, `G` powers of 1000), as in Kubernetes quantities.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a byte size like 67108864, 64Mi or 1Gi")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("invalid size {v}: must not be negative")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                parse_byte_size(v).map(ByteSize).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// Parses `64Mi`, `1G`, `512` and the like into bytes.
pub fn parse_byte_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let invalid = || {
        format!(
            "invalid size `{text}`: expected a number of bytes or a number with a unit Ki, Mi, Gi, K, M or G (like 64Mi)"
        )
    };
    let n: u64 = number.parse().map_err(|_| invalid())?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "Ki" | "KiB" => 1 << 10,
        "Mi" | "MiB" => 1 << 20,
        "Gi" | "GiB" => 1 << 30,
        "K" | "k" | "KB" => 1_000,
        "M" | "MB" => 1_000_000,
        "G" | "GB" => 1_000_000_000,
        _ => return Err(invalid()),
    };
    n.checked_mul(factor).ok_or_else(invalid)
}

/// A point in time in RFC 3339 form, like `2026-11-22T10:00:00Z`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timestamp(pub chrono::DateTime<chrono::Utc>);

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d).map_err(|_| {
            de::Error::custom("expected an RFC 3339 timestamp like 2026-11-22T10:00:00Z")
        })?;
        chrono::DateTime::parse_from_rfc3339(text.trim())
            .map(|t| Timestamp(t.with_timezone(&chrono::Utc)))
            .map_err(|e| {
                de::Error::custom(format!(
                    "invalid timestamp `{text}` ({e}): expected RFC 3339 like 2026-11-22T10:00:00Z"
                ))
            })
    }
}

/// An IANA time zone name like `Europe/Berlin`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeZone(pub chrono_tz::Tz);

impl<'de> Deserialize<'de> for TimeZone {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse::<chrono_tz::Tz>().map(TimeZone).map_err(|_| {
            de::Error::custom(format!(
                "unknown time zone `{text}`: expected an IANA name like UTC or Europe/Berlin"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_units() {
        assert_eq!(
            parse_duration("1500ms").unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(parse_duration("1m 30s").unwrap(), Duration::from_secs(90));
        assert!(
            parse_duration("10")
                .unwrap_err()
                .contains("unit is required")
        );
        assert!(
            parse_duration("10x")
                .unwrap_err()
                .contains("invalid duration `10x`")
        );
    }

    #[test]
    fn byte_sizes_follow_kubernetes_units() {
        assert_eq!(parse_byte_size("64Mi").unwrap(), 64 << 20);
        assert_eq!(parse_byte_size("2G").unwrap(), 2_000_000_000);
        assert_eq!(parse_byte_size("4096").unwrap(), 4096);
        assert!(parse_byte_size("12 parsecs").is_err());
        assert!(parse_byte_size("99999999999999999999Gi").is_err());
    }
}
