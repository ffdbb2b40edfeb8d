//! Timestamps as the ledger records them: UTC, microsecond precision, one fixed text form.
//!
//! The text form is part of every event hash, so it must not depend on how a value was built:
//! precision is cut to microseconds (what PostgreSQL keeps) and the format is always
//! `YYYY-MM-DDTHH:MM:SS.ffffffZ`.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(OffsetDateTime);

impl Timestamp {
    /// The last instant a timestamp holds (9999-12-31T23:59:59.999999Z): where deadline
    /// arithmetic saturates, so a deadline too far away means "never", not "now".
    pub const MAX: Timestamp = Timestamp(time::macros::datetime!(9999-12-31 23:59:59.999999 UTC));

    pub fn now() -> Self {
        Self::from_datetime(OffsetDateTime::now_utc())
    }

    /// Converts to UTC and truncates to microseconds.
    pub fn from_datetime(at: OffsetDateTime) -> Self {
        let at = at.to_offset(UtcOffset::UTC);
        let micros = at.microsecond();
        // replace_microsecond cannot fail for a value read from a valid datetime.
        Self(at.replace_microsecond(micros).unwrap_or(at))
    }

    pub fn from_unix_micros(micros: i64) -> Option<Self> {
        let nanos = i128::from(micros) * 1_000;
        OffsetDateTime::from_unix_timestamp_nanos(nanos)
            .ok()
            .map(Self)
    }

    pub fn unix_micros(&self) -> i64 {
        (self.0.unix_timestamp_nanos() / 1_000) as i64
    }

    pub fn as_datetime(&self) -> OffsetDateTime {
        self.0
    }

    pub fn parse(text: &str) -> Result<Self, time::error::Parse> {
        OffsetDateTime::parse(text, &Rfc3339).map(Self::from_datetime)
    }

    /// Milliseconds from `self` to `later` (negative when `later` is earlier).
    pub fn millis_until(&self, later: Timestamp) -> i64 {
        ((later.0 - self.0).whole_microseconds() / 1_000) as i64
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let format = format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
        );
        match self.0.format(&format) {
            Ok(text) => f.write_str(&text),
            Err(_) => Err(fmt::Error),
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Timestamp::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Timestamp {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Timestamp".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "format": "date-time",
            "description": "UTC, microsecond precision: YYYY-MM-DDTHH:MM:SS.ffffffZ"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_is_fixed_and_round_trips() {
        let t = Timestamp::parse("2026-11-21T07:08:09.123456789+01:00").unwrap();
        assert_eq!(t.to_string(), "2026-11-21T06:08:09.123456Z");
        assert_eq!(Timestamp::parse(&t.to_string()).unwrap(), t);
        let whole = Timestamp::parse("2026-01-01T00:00:00Z").unwrap();
        assert_eq!(whole.to_string(), "2026-01-01T00:00:00.000000Z");
    }

    #[test]
    fn micros_round_trip() {
        let t = Timestamp::now();
        assert_eq!(Timestamp::from_unix_micros(t.unix_micros()), Some(t));
        let later = Timestamp::from_unix_micros(t.unix_micros() + 2_500).unwrap();
        assert_eq!(t.millis_until(later), 2);
    }
}
