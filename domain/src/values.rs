//! Value objects: untrusted input is parsed into these types once, at the edge,
//! so the rest of the system only ever sees valid values.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One field that failed validation, addressed by a JSON pointer into the
/// request body (RFC 6901), with a stable machine-readable code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    /// JSON pointer of the offending field, e.g. `/billingAddress/country`.
    pub pointer: String,
    /// Stable code, e.g. `invalid_email`.
    pub code: &'static str,
    /// Human-readable explanation.
    pub message: String,
}

impl FieldError {
    pub fn new(pointer: impl Into<String>, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            pointer: pointer.into(),
            code,
            message: message.into(),
        }
    }

    /// The same error nested under a parent pointer.
    #[must_use]
    pub fn under(mut self, parent: &str) -> Self {
        self.pointer = format!("{parent}{}", self.pointer);
        self
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.pointer, self.message)
    }
}

/// Collects field errors while a whole body is parsed, so that the caller sees
/// every problem at once instead of one per round trip.
#[derive(Debug, Default)]
pub struct Validator {
    errors: Vec<FieldError>,
}

impl Validator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the error of `result` (if any) and returns its value.
    pub fn check<T>(&mut self, result: Result<T, FieldError>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(error) => {
                self.errors.push(error);
                None
            }
        }
    }

    /// Like [`Validator::check`] for parsers that report several errors.
    pub fn check_all<T>(&mut self, result: Result<T, Vec<FieldError>>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(errors) => {
                self.errors.extend(errors);
                None
            }
        }
    }

    pub fn push(&mut self, error: FieldError) {
        self.errors.push(error);
    }

    /// `Ok(value)` when nothing failed, every recorded error otherwise.
    pub fn finish<T>(self, value: impl FnOnce() -> Option<T>) -> Result<T, Vec<FieldError>> {
        if self.errors.is_empty() {
            // Every checked field returned Some, so the builder succeeds.
            value().ok_or_else(|| {
                vec![FieldError::new(
                    "",
                    "invalid",
                    "the request could not be validated",
                )]
            })
        } else {
            Err(self.errors)
        }
    }
}

fn trimmed(raw: &str) -> &str {
    raw.trim()
}

/// A non-empty name of bounded length (legal name, display name, city...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct Name(String);

impl Name {
    pub const MAX_CHARS: usize = 200;
    /// Longest first or last name of a person, in characters.
    pub const PERSON_MAX_CHARS: usize = 100;

    pub fn parse(pointer: &str, raw: &str) -> Result<Self, FieldError> {
        Self::parse_bounded(pointer, raw, Self::MAX_CHARS)
    }

    pub fn parse_bounded(pointer: &str, raw: &str, max: usize) -> Result<Self, FieldError> {
        let value = trimmed(raw);
        if value.is_empty() {
            return Err(FieldError::new(pointer, "required", "must not be empty"));
        }
        if value.chars().count() > max {
            return Err(FieldError::new(
                pointer,
                "too_long",
                format!("must be at most {max} characters"),
            ));
        }
        if value.chars().any(char::is_control) {
            return Err(FieldError::new(
                pointer,
                "invalid_characters",
                "must not contain control characters",
            ));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An email address: one `@`, a plausible local part and a dotted domain.
/// Stored with the domain lower-cased.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct Email(String);

impl Email {
    pub fn parse(pointer: &str, raw: &str) -> Result<Self, FieldError> {
        let value = trimmed(raw);
        let invalid = || FieldError::new(pointer, "invalid_email", "must be an email address");
        if value.len() > 254 {
            return Err(invalid());
        }
        let (local, domain) = value.split_once('@').ok_or_else(invalid)?;
        let local_ok = !local.is_empty()
            && local.len() <= 64
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..")
            && local
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~.-".contains(c));
        let labels: Vec<&str> = domain.split('.').collect();
        let domain_ok = labels.len() >= 2
            && labels.iter().all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            })
            && labels
                .last()
                .is_some_and(|tld| tld.len() >= 2 && tld.chars().all(|c| c.is_ascii_alphabetic()));
        if local_ok && domain_ok {
            Ok(Self(format!("{local}@{}", domain.to_ascii_lowercase())))
        } else {
            Err(invalid())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A phone number in international form: `+`, then 8 to 15 digits; spaces,
/// dashes, dots and parentheses are accepted on input and removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct Phone(String);

impl Phone {
    pub fn parse(pointer: &str, raw: &str) -> Result<Self, FieldError> {
        let value = trimmed(raw);
        let invalid = || {
            FieldError::new(
                pointer,
                "invalid_phone",
                "must be an international number such as +64 21 555 0100",
            )
        };
        let rest = value.strip_prefix('+').ok_or_else(invalid)?;
        let mut digits = String::from("+");
        for c in rest.chars() {
            match c {
                '0'..='9' => digits.push(c),
                ' ' | '-' | '.' | '(' | ')' => {}
                _ => return Err(invalid()),
            }
        }
        let count = digits.len() - 1;
        if !(8..=15).contains(&count) || digits.as_bytes().get(1) == Some(&b'0') {
            return Err(invalid());
        }
        Ok(Self(digits))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Active ISO 4217 alphabetic currency codes.
const CURRENCIES: &[&str] = &[
    "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT",
    "BGN", "BHD", "BIF", "BMD", "BND", "BOB", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD",
    "CDF", "CHF", "CLP", "CNY", "COP", "CRC", "CUP", "CVE", "CZK", "DJF", "DKK", "DOP", "DZD",
    "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "GBP", "GEL", "GHS", "GIP", "GMD", "GNF", "GTQ",
    "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS", "INR", "IQD", "IRR", "ISK", "JMD", "JOD",
    "JPY", "KES", "KGS", "KHR", "KMF", "KPW", "KRW", "KWD", "KYD", "KZT", "LAK", "LBP", "LKR",
    "LRD", "LSL", "LYD", "MAD", "MDL", "MGA", "MKD", "MMK", "MNT", "MOP", "MRU", "MUR", "MVR",
    "MWK", "MXN", "MYR", "MZN", "NAD", "NGN", "NIO", "NOK", "NPR", "NZD", "OMR", "PAB", "PEN",
    "PGK", "PHP", "PKR", "PLN", "PYG", "QAR", "RON", "RSD", "RUB", "RWF", "SAR", "SBD", "SCR",
    "SDG", "SEK", "SGD", "SHP", "SLE", "SOS", "SRD", "SSP", "STN", "SVC", "SYP", "SZL", "THB",
    "TJS", "TMT", "TND", "TOP", "TRY", "TTD", "TWD", "TZS", "UAH", "UGX", "USD", "UYU", "UZS",
    "VES", "VND", "VUV", "WST", "XAF", "XCD", "XCG", "XOF", "XPF", "YER", "ZAR", "ZMW", "ZWG",
];

/// An active ISO 4217 currency code, upper case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "String", into = "String")]
pub struct Currency([u8; 3]);

impl Currency {
    /// Every code [`Currency::parse`] takes (upper case; it also takes
    /// them in lower case), in order.
    pub const CODES: &'static [&'static str] = CURRENCIES;

    pub fn parse(pointer: &str, raw: &str) -> Result<Self, FieldError> {
        let value = trimmed(raw).to_ascii_uppercase();
        match CURRENCIES.binary_search(&value.as_str()) {
            Ok(_) => {
                let bytes = value.as_bytes();
                Ok(Self([bytes[0], bytes[1], bytes[2]]))
            }
            Err(_) => Err(FieldError::new(
                pointer,
                "invalid_currency",
                "must be an ISO 4217 currency code such as NZD",
            )),
        }
    }

    pub fn as_str(&self) -> &str {
        // Only ever built from the ASCII table above.
        std::str::from_utf8(&self.0).unwrap_or("XXX")
    }
}

impl TryFrom<String> for Currency {
    type Error = FieldError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse("", &value)
    }
}

impl From<Currency> for String {
    fn from(value: Currency) -> Self {
        value.as_str().to_owned()
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Officially assigned ISO 3166-1 alpha-2 country codes.
const COUNTRIES: &[&str] = &[
    "AD", "AE", "AF", "AG", "AI", "AL", "AM", "AO", "AQ", "AR", "AS", "AT", "AU", "AW", "AX", "AZ",
    "BA", "BB", "BD", "BE", "BF", "BG", "BH", "BI", "BJ", "BL", "BM", "BN", "BO", "BQ", "BR", "BS",
    "BT", "BV", "BW", "BY", "BZ", "CA", "CC", "CD", "CF", "CG", "CH", "CI", "CK", "CL", "CM", "CN",
    "CO", "CR", "CU", "CV", "CW", "CX", "CY", "CZ", "DE", "DJ", "DK", "DM", "DO", "DZ", "EC", "EE",
    "EG", "EH", "ER", "ES", "ET", "FI", "FJ", "FK", "FM", "FO", "FR", "GA", "GB", "GD", "GE", "GF",
    "GG", "GH", "GI", "GL", "GM", "GN", "GP", "GQ", "GR", "GS", "GT", "GU", "GW", "GY", "HK", "HM",
    "HN", "HR", "HT", "HU", "ID", "IE", "IL", "IM", "IN", "IO", "IQ", "IR", "IS", "IT", "JE", "JM",
    "JO", "JP", "KE", "KG", "KH", "KI", "KM", "KN", "KP", "KR", "KW", "KY", "KZ", "LA", "LB", "LC",
    "LI", "LK", "LR", "LS", "LT", "LU", "LV", "LY", "MA", "MC", "MD", "ME", "MF", "MG", "MH", "MK",
    "ML", "MM", "MN", "MO", "MP", "MQ", "MR", "MS", "MT", "MU", "MV", "MW", "MX", "MY", "MZ", "NA",
    "NC", "NE", "NF", "NG", "NI", "NL", "NO", "NP", "NR", "NU", "NZ", "OM", "PA", "PE", "PF", "PG",
    "PH", "PK", "PL", "PM", "PN", "PR", "PS", "PT", "PW", "PY", "QA", "RE", "RO", "RS", "RU", "RW",
    "SA", "SB", "SC", "SD", "SE", "SG", "SH", "SI", "SJ", "SK", "SL", "SM", "SN", "SO", "SR", "SS",
    "ST", "SV", "SX", "SY", "SZ", "TC", "TD", "TF", "TG", "TH", "TJ", "TK", "TL", "TM", "TN", "TO",
    "TR", "TT", "TV", "TW", "TZ", "UA", "UG", "UM", "US", "UY", "UZ", "VA", "VC", "VE", "VG", "VI",
    "VN", "VU", "WF", "WS", "YE", "YT", "ZA", "ZM", "ZW",
];

/// An ISO 3166-1 alpha-2 country code, upper case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "String", into = "String")]
pub struct Country([u8; 2]);

impl Country {
    /// Every code [`Country::parse`] takes (upper case; it also takes them
    /// in lower case), in order.
    pub const CODES: &'static [&'static str] = COUNTRIES;

    pub fn parse(pointer: &str, raw: &str) -> Result<Self, FieldError> {
        let value = trimmed(raw).to_ascii_uppercase();
        match COUNTRIES.binary_search(&value.as_str()) {
            Ok(_) => {
                let bytes = value.as_bytes();
                Ok(Self([bytes[0], bytes[1]]))
            }
            Err(_) => Err(FieldError::new(
                pointer,
                "invalid_country",
                "must be an ISO 3166-1 alpha-2 country code such as NZ",
            )),
        }
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("ZZ")
    }
}

impl TryFrom<String> for Country {
    type Error = FieldError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse("", &value)
    }
}

impl From<Country> for String {
    fn from(value: Country) -> Self {
        value.as_str().to_owned()
    }
}

/// A postal address for invoices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Address {
    pub line1: Name,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line2: Option<Name>,
    pub city: Name,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<Name>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postal_code: Option<Name>,
    pub country: Country,
}

/// Raw address fields as they arrive in a request body.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AddressInput {
    pub line1: Option<String>,
    pub line2: Option<String>,
    pub city: Option<String>,
    pub region: Option<String>,
    pub postal_code: Option<String>,
    pub country: Option<String>,
}

impl Address {
    /// Longest region, in characters.
    pub const REGION_MAX_CHARS: usize = 100;
    /// Longest postal code, in characters.
    pub const POSTAL_CODE_MAX_CHARS: usize = 20;

    /// Parses every field, reporting each failure with its pointer under `pointer`.
    pub fn parse(pointer: &str, input: &AddressInput) -> Result<Self, Vec<FieldError>> {
        let mut v = Validator::new();
        let required = |field: &str, value: Option<&str>| -> Result<Name, FieldError> {
            let path = format!("{pointer}/{field}");
            match value {
                Some(raw) => Name::parse(&path, raw),
                None => Err(FieldError::new(path, "required", "is required")),
            }
        };
        let optional = |field: &str,
                        value: Option<&str>,
                        max: usize|
         -> Result<Option<Name>, FieldError> {
            match value.map(str::trim) {
                None | Some("") => Ok(None),
                Some(raw) => Name::parse_bounded(&format!("{pointer}/{field}"), raw, max).map(Some),
            }
        };
        let line1 = v.check(required("line1", input.line1.as_deref()));
        let line2 = v.check(optional("line2", input.line2.as_deref(), Name::MAX_CHARS));
        let city = v.check(required("city", input.city.as_deref()));
        let region = v.check(optional(
            "region",
            input.region.as_deref(),
            Self::REGION_MAX_CHARS,
        ));
        let postal_code = v.check(optional(
            "postalCode",
            input.postal_code.as_deref(),
            Self::POSTAL_CODE_MAX_CHARS,
        ));
        let country = v.check(match input.country.as_deref() {
            Some(raw) => Country::parse(&format!("{pointer}/country"), raw),
            None => Err(FieldError::new(
                format!("{pointer}/country"),
                "required",
                "is required",
            )),
        });
        v.finish(|| {
            Some(Self {
                line1: line1?,
                line2: line2?,
                city: city?,
                region: region?,
                postal_code: postal_code?,
                country: country?,
            })
        })
    }
}

/// A tax registration number (GST, VAT, ABN...): letters, digits, spaces,
/// dashes and dots, 2 to 32 characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct TaxNumber(String);

impl TaxNumber {
    pub fn parse(pointer: &str, raw: &str) -> Result<Self, FieldError> {
        let value = trimmed(raw).to_ascii_uppercase();
        let ok = (2..=32).contains(&value.chars().count())
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, ' ' | '-' | '.' | '/'))
            && value.chars().any(|c| c.is_ascii_alphanumeric());
        if ok {
            Ok(Self(value))
        } else {
            Err(FieldError::new(
                pointer,
                "invalid_tax_number",
                "must be 2 to 32 letters, digits, spaces, dashes, dots or slashes",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Payment terms: invoices are due this many days after issue (0 = on receipt).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct PaymentTerms(u16);

impl PaymentTerms {
    pub const MAX_DAYS: i64 = 365;

    pub fn parse(pointer: &str, days: i64) -> Result<Self, FieldError> {
        match u16::try_from(days) {
            Ok(value) if days <= Self::MAX_DAYS => Ok(Self(value)),
            _ => Err(FieldError::new(
                pointer,
                "out_of_range",
                format!("must be between 0 and {} days", Self::MAX_DAYS),
            )),
        }
    }

    pub fn days(self) -> u16 {
        self.0
    }
}

/// Free-form tags: at most 20, each 1 to 40 characters, lower-cased, without
/// duplicates, kept in the order given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct Tags(Vec<String>);

impl Tags {
    pub const MAX_TAGS: usize = 20;
    pub const MAX_CHARS: usize = 40;

    pub fn parse(pointer: &str, raw: &[String]) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        if raw.len() > Self::MAX_TAGS {
            errors.push(FieldError::new(
                pointer,
                "too_many",
                format!("at most {} tags are allowed", Self::MAX_TAGS),
            ));
        }
        let mut tags: Vec<String> = Vec::with_capacity(raw.len());
        for (index, tag) in raw.iter().enumerate() {
            let value = tag.trim().to_lowercase();
            let count = value.chars().count();
            if count == 0 || count > Self::MAX_CHARS || value.chars().any(char::is_control) {
                errors.push(FieldError::new(
                    format!("{pointer}/{index}"),
                    "invalid_tag",
                    format!("each tag must be 1 to {} characters", Self::MAX_CHARS),
                ));
            } else if !tags.contains(&value) {
                tags.push(value);
            }
        }
        if errors.is_empty() {
            Ok(Self(tags))
        } else {
            Err(errors)
        }
    }

    pub fn as_slice(&self) -> &[String] {
        &self.0
    }
}

/// An IANA time zone name, e.g. `Pacific/Auckland`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct TimeZone(String);

impl TimeZone {
    /// Every name [`TimeZone::parse`] takes: the time zone database's
    /// zones and links.
    pub fn names() -> impl Iterator<Item = &'static str> {
        chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name())
    }

    pub fn parse(pointer: &str, raw: &str) -> Result<Self, FieldError> {
        let value = trimmed(raw);
        match value.parse::<chrono_tz::Tz>() {
            Ok(tz) => Ok(Self(tz.name().to_owned())),
            Err(_) => Err(FieldError::new(
                pointer,
                "invalid_time_zone",
                "must be an IANA time zone name such as Pacific/Auckland",
            )),
        }
    }

    pub fn utc() -> Self {
        Self("UTC".to_owned())
    }

    /// The instant `day` begins in this time zone: its first moment on
    /// the local clock. A day whose midnight falls in a daylight saving
    /// gap begins when the clock jumps; one whose midnight comes twice
    /// begins at the first. A name no longer in the time zone database is
    /// taken as UTC.
    pub fn start_of(&self, day: chrono::NaiveDate) -> chrono::DateTime<chrono::Utc> {
        use chrono::TimeZone as _;
        let zone = self.0.parse::<chrono_tz::Tz>().unwrap_or(chrono_tz::UTC);
        let midnight = day.and_time(chrono::NaiveTime::MIN);
        // Gaps end on a quarter hour, and none is longer than a day.
        (0..=24 * 4)
            .find_map(|quarter| {
                zone.from_local_datetime(&(midnight + chrono::Duration::minutes(quarter * 15)))
                    .earliest()
            })
            .map_or_else(|| midnight.and_utc(), |at| at.with_timezone(&chrono::Utc))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// User preferences: a flat JSON object of at most 50 keys (1 to 64
/// characters of letters, digits, `_`, `.` or `-`) and at most 8 KiB.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct Preferences(serde_json::Map<String, serde_json::Value>);

impl Preferences {
    pub const MAX_KEYS: usize = 50;
    pub const MAX_BYTES: usize = 8 * 1024;

    pub fn parse(
        pointer: &str,
        raw: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        if raw.len() > Self::MAX_KEYS {
            errors.push(FieldError::new(
                pointer,
                "too_many",
                format!("at most {} preferences are allowed", Self::MAX_KEYS),
            ));
        }
        for key in raw.keys() {
            let ok = (1..=64).contains(&key.len())
                && key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
            if !ok {
                errors.push(FieldError::new(
                    format!("{pointer}/{}", key.replace('~', "~0").replace('/', "~1")),
                    "invalid_key",
                    "keys are 1 to 64 letters, digits, `_`, `.` or `-`",
                ));
            }
        }
        if serde_json::to_vec(raw).map_or(usize::MAX, |v| v.len()) > Self::MAX_BYTES {
            errors.push(FieldError::new(
                pointer,
                "too_large",
                format!("must serialize to at most {} bytes", Self::MAX_BYTES),
            ));
        }
        if errors.is_empty() {
            Ok(Self(raw.clone()))
        } else {
            Err(errors)
        }
    }

    pub fn as_map(&self) -> &serde_json::Map<String, serde_json::Value> {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_day_starts_at_its_first_moment_on_the_local_clock() {
        use chrono::{NaiveDate, TimeZone as _, Utc};
        let zone = |name: &str| TimeZone::parse("/tz", name).unwrap();
        let day = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap();
        let at = |y, m, d, h, min| Utc.with_ymd_and_hms(y, m, d, h, min, 0).unwrap();
        // Auckland in daylight saving time (UTC+13), and in standard time
        // (UTC+12); UTC itself.
        assert_eq!(
            zone("Pacific/Auckland").start_of(day(2026, 3, 2)),
            at(2026, 3, 1, 11, 0)
        );
        assert_eq!(
            zone("Pacific/Auckland").start_of(day(2026, 6, 2)),
            at(2026, 6, 1, 12, 0)
        );
        assert_eq!(
            TimeZone::utc().start_of(day(2026, 6, 2)),
            at(2026, 6, 2, 0, 0)
        );
        // Santiago's clock went from midnight to 01:00 (UTC-4 to UTC-3)
        // on 6 September 2026: that day began at 01:00.
        let santiago = chrono_tz::America::Santiago;
        let gap = day(2026, 9, 6).and_time(chrono::NaiveTime::MIN);
        assert!(santiago.from_local_datetime(&gap).earliest().is_none());
        assert_eq!(
            zone("America/Santiago").start_of(day(2026, 9, 6)),
            at(2026, 9, 6, 4, 0)
        );
        // A name the database does not know is taken as UTC.
        assert_eq!(
            TimeZone("Mars/Olympus".to_owned()).start_of(day(2026, 6, 2)),
            at(2026, 6, 2, 0, 0)
        );
    }

    #[test]
    fn time_zones_and_preferences() {
        assert_eq!(
            TimeZone::parse("/tz", " Pacific/Auckland ")
                .unwrap()
                .as_str(),
            "Pacific/Auckland"
        );
        assert_eq!(
            TimeZone::parse("/tz", "Mars/Olympus").unwrap_err().code,
            "invalid_time_zone"
        );
        let mut prefs = serde_json::Map::new();
        prefs.insert("theme".into(), "dark".into());
        assert!(Preferences::parse("/p", &prefs).is_ok());
        prefs.insert("bad key".into(), 1.into());
        let errors = Preferences::parse("/p", &prefs).unwrap_err();
        assert_eq!(errors[0].pointer, "/p/bad key");
        let big: serde_json::Map<_, _> = (0..51).map(|i| (format!("k{i}"), 1.into())).collect();
        assert_eq!(
            Preferences::parse("/p", &big).unwrap_err()[0].code,
            "too_many"
        );
    }

    #[test]
    fn email_accepts_ordinary_addresses_and_lowercases_domain() {
        let email = Email::parse("/email", " Ana.Smith+billing@Example.CO.nz ").unwrap();
        assert_eq!(email.as_str(), "Ana.Smith+billing@example.co.nz");
    }

    #[test]
    fn email_rejects_malformed_addresses() {
        for raw in [
            "",
            "plain",
            "@example.com",
            "a@",
            "a@b",
            "a@b.c",
            "a..b@example.com",
            "a@-x.com",
            "a b@example.com",
        ] {
            let error = Email::parse("/email", raw).unwrap_err();
            assert_eq!(error.code, "invalid_email", "{raw}");
            assert_eq!(error.pointer, "/email");
        }
    }

    #[test]
    fn currency_accepts_iso_codes_only() {
        assert_eq!(Currency::parse("/c", "nzd").unwrap().as_str(), "NZD");
        assert_eq!(Currency::parse("/c", "USD").unwrap().as_str(), "USD");
        for raw in ["", "US", "XYZ", "EURO", "usd1"] {
            assert_eq!(
                Currency::parse("/c", raw).unwrap_err().code,
                "invalid_currency"
            );
        }
    }

    #[test]
    fn tables_are_sorted_for_binary_search() {
        assert!(CURRENCIES.windows(2).all(|w| w[0] < w[1]));
        assert!(COUNTRIES.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn country_accepts_alpha2_only() {
        assert_eq!(Country::parse("/c", "nz").unwrap().as_str(), "NZ");
        for raw in ["", "NZL", "XX", "1A"] {
            assert_eq!(
                Country::parse("/c", raw).unwrap_err().code,
                "invalid_country"
            );
        }
    }

    #[test]
    fn phone_normalises_international_numbers() {
        assert_eq!(
            Phone::parse("/p", "+64 (21) 555-0100").unwrap().as_str(),
            "+64215550100"
        );
        for raw in ["021 555 0100", "+0 123 4567 89", "+64 21", "+64abc12345"] {
            assert_eq!(
                Phone::parse("/p", raw).unwrap_err().code,
                "invalid_phone",
                "{raw}"
            );
        }
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(
            Name::parse("/n", "  Acme Ltd ").unwrap().as_str(),
            "Acme Ltd"
        );
        assert_eq!(Name::parse("/n", "   ").unwrap_err().code, "required");
        assert_eq!(
            Name::parse("/n", &"x".repeat(201)).unwrap_err().code,
            "too_long"
        );
        assert_eq!(
            Name::parse("/n", "a\u{0}b").unwrap_err().code,
            "invalid_characters"
        );
    }

    #[test]
    fn tags_are_normalised_and_deduplicated() {
        let tags = Tags::parse("/tags", &["VIP".into(), "vip".into(), " retail ".into()]).unwrap();
        assert_eq!(tags.as_slice(), ["vip", "retail"]);
        let errors = Tags::parse("/tags", &["ok".into(), String::new()]).unwrap_err();
        assert_eq!(errors[0].pointer, "/tags/1");
        let too_many: Vec<String> = (0..21).map(|i| format!("t{i}")).collect();
        assert_eq!(
            Tags::parse("/tags", &too_many).unwrap_err()[0].code,
            "too_many"
        );
    }

    #[test]
    fn address_reports_every_bad_field() {
        let input = AddressInput {
            line1: Some(String::new()),
            city: None,
            country: Some("Atlantis".into()),
            ..AddressInput::default()
        };
        let errors = Address::parse("/billingAddress", &input).unwrap_err();
        let pointers: Vec<&str> = errors.iter().map(|e| e.pointer.as_str()).collect();
        assert_eq!(
            pointers,
            [
                "/billingAddress/line1",
                "/billingAddress/city",
                "/billingAddress/country"
            ]
        );
    }

    #[test]
    fn payment_terms_are_bounded() {
        assert_eq!(PaymentTerms::parse("/p", 30).unwrap().days(), 30);
        assert!(PaymentTerms::parse("/p", -1).is_err());
        assert!(PaymentTerms::parse("/p", 366).is_err());
    }
}
