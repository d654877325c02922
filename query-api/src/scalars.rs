//! The schema's date and time scalars, `NaiveDate` and `DateTime`: the
//! names and wire formats async-graphql gives chrono's types, with
//! descriptions written for the schema's readers, and checked in
//! validation: a value that is no date or instant (literal or variable)
//! is refused before execution as `GRAPHQL_VALIDATION_FAILED`, naming the
//! argument's path (`Invalid value for argument "filter.validUntilFrom",
//! expected type "NaiveDate"`). chrono's types are checked only when read
//! in execution, where the error names neither the field nor the value
//! ("input is out of range"), and a value of another kind (a number) was
//! not an argument error at all.

use async_graphql::{InputValueError, InputValueResult, Scalar, ScalarType, Value};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

/// How much of a value that cannot be read its error shows.
const SHOWN: usize = 40;

/// `text` as a message shows it: quoted, and cut at [`SHOWN`] characters.
fn shown(text: &str) -> String {
    match text.char_indices().nth(SHOWN) {
        Some((end, _)) => format!("{:?}…", &text[..end]),
        None => format!("{text:?}"),
    }
}

/// A calendar day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Date(pub NaiveDate);

/// A calendar day without a time zone, written `YYYY-MM-DD` (`2026-03-31`).
/// Which instants a day covers is said by each field that takes one.
#[Scalar(name = "NaiveDate")]
impl ScalarType for Date {
    fn is_valid(value: &Value) -> bool {
        matches!(value, Value::String(text) if Date::read(text).is_ok())
    }

    fn parse(value: Value) -> InputValueResult<Self> {
        match &value {
            Value::String(text) => Date::read(text).map(Date).map_err(|e| {
                InputValueError::custom(format!(
                    "{} is not a date written YYYY-MM-DD ({e})",
                    shown(text)
                ))
            }),
            _ => Err(InputValueError::expected_type(value)),
        }
    }

    fn to_value(&self) -> Value {
        Value::String(self.0.format("%Y-%m-%d").to_string())
    }
}

impl Date {
    fn read(text: &str) -> chrono::ParseResult<NaiveDate> {
        NaiveDate::parse_from_str(text, "%Y-%m-%d")
    }
}

impl std::fmt::Display for Date {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl From<NaiveDate> for Date {
    fn from(day: NaiveDate) -> Self {
        Self(day)
    }
}

/// An instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Instant(pub DateTime<Utc>);

/// An instant, written in RFC 3339 with its offset
/// (`2026-03-31T09:30:00Z`, `2026-03-31T22:30:00+13:00`) and answered in
/// UTC (`2026-03-31T09:30:00.123456+00:00`).
#[Scalar(name = "DateTime")]
impl ScalarType for Instant {
    fn is_valid(value: &Value) -> bool {
        matches!(value, Value::String(text) if text.parse::<DateTime<Utc>>().is_ok())
    }

    fn parse(value: Value) -> InputValueResult<Self> {
        match &value {
            Value::String(text) => text.parse::<DateTime<Utc>>().map(Instant).map_err(|e| {
                InputValueError::custom(format!(
                    "{} is not an instant written as RFC 3339, such as \
                     2026-03-31T09:30:00Z ({e})",
                    shown(text)
                ))
            }),
            _ => Err(InputValueError::expected_type(value)),
        }
    }

    fn to_value(&self) -> Value {
        Value::String(self.0.to_rfc3339())
    }
}

impl From<DateTime<Utc>> for Instant {
    fn from(at: DateTime<Utc>) -> Self {
        Self(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message<T: ScalarType + async_graphql::InputType>(text: &str) -> String {
        <T as ScalarType>::parse(Value::String(text.into()))
            .err()
            .map(|e| e.into_server_error(Default::default()).message)
            .unwrap_or_else(|| panic!("{text:?} was read"))
    }

    #[test]
    fn a_value_that_is_no_date_is_shown_with_the_form_expected() {
        assert_eq!(
            message::<Date>("2026-13-01"),
            r#"Failed to parse "NaiveDate": "2026-13-01" is not a date written YYYY-MM-DD (input is out of range)"#
        );
        assert_eq!(
            message::<Date>("31/03/2026"),
            r#"Failed to parse "NaiveDate": "31/03/2026" is not a date written YYYY-MM-DD (input contains invalid characters)"#
        );
        assert_eq!(
            message::<Instant>("2026-03-31T25:00:00Z"),
            r#"Failed to parse "DateTime": "2026-03-31T25:00:00Z" is not an instant written as RFC 3339, such as 2026-03-31T09:30:00Z (input is out of range)"#
        );
        let long = "9".repeat(10_000);
        let cut = message::<Date>(&long);
        assert!(cut.contains(&format!("{:?}…", "9".repeat(SHOWN))), "{cut}");
        assert!(cut.len() < 200, "{cut}");
    }

    #[test]
    fn dates_and_instants_are_read_and_written_as_before() {
        let day = Date::parse(Value::String("2026-03-31".into())).unwrap();
        assert_eq!(day.0, NaiveDate::from_ymd_opt(2026, 3, 31).unwrap());
        assert_eq!(day.to_value(), Value::String("2026-03-31".into()));
        assert_eq!(
            day.to_value(),
            <NaiveDate as ScalarType>::to_value(&day.0),
            "the wire form is async-graphql's for chrono's type"
        );

        let at = Instant::parse(Value::String("2026-03-31T22:30:00.5+13:00".into())).unwrap();
        assert_eq!(at.0.to_rfc3339(), "2026-03-31T09:30:00.500+00:00");
        assert_eq!(
            at.to_value(),
            <DateTime<Utc> as ScalarType>::to_value(&at.0)
        );
    }

    #[test]
    fn validation_takes_only_what_is_read() {
        for (value, date, instant) in [
            (Value::String("2026-03-31".into()), true, false),
            (Value::String("2026-03-31T09:30:00Z".into()), false, true),
            (Value::String("2026-02-30".into()), false, false),
            (Value::String(String::new()), false, false),
            (Value::Number(20_260_331.into()), false, false),
            (Value::Null, false, false),
        ] {
            assert_eq!(Date::is_valid(&value), date, "{value}");
            assert_eq!(Instant::is_valid(&value), instant, "{value}");
        }
    }
}
