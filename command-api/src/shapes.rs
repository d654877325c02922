//! The forms request fields take, as JSON Schema for the OpenAPI document,
//! each built from the check the API runs on that field (the domain's
//! constants and tables), so that the document says what is refused
//! before a client is refused: a field's schema takes what its check
//! takes. Checks trim text first, so the patterns allow surrounding
//! white space; optional text that a check takes blank as absent says
//! so. Fields reach these through `#[schema(schema_with = ...)]`; the
//! contract test (`tests/api/contract.rs`) holds the document to the API.
//!
//! The patterns use only what ECMA-262, Python's `re` and Rust's regex
//! engines share (no look-around), so validators and test generators of
//! every kind read them alike.

use pivotal_domain::organization::CustomRole;
use pivotal_domain::permissions::Grant;
use pivotal_domain::pricing::{MAX_QUANTITY, MAX_SCALE, MAX_UNIT_PRICE};
use pivotal_domain::values::{Country, Currency, Name, PaymentTerms, Preferences, Tags, TimeZone};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{
    AdditionalProperties, AllOfBuilder, AnyOfBuilder, Array, ArrayBuilder, Object, ObjectBuilder,
    OneOfBuilder, Schema, SchemaType, Type,
};

/// The characters Rust's `str::trim` removes (Unicode `White_Space`).
const WHITE_SPACE: &str = r"\t-\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000";
/// Control characters (`Cc`), which names must not contain.
const CONTROL: &str = r"\u0000-\u001F\u007F-\u009F";

fn string(nullable: bool) -> ObjectBuilder {
    let kind = if nullable {
        SchemaType::from_iter([Type::String, Type::Null])
    } else {
        SchemaType::new(Type::String)
    };
    ObjectBuilder::new().schema_type(kind)
}

/// `core`, with the white space a check trims allowed around it; blank
/// too when `blank` (a check that takes blank as absent).
fn trimmed(core: &str, blank: bool) -> String {
    let space = format!("[{WHITE_SPACE}]*");
    if blank {
        format!("^{space}(?:{core})?{space}$")
    } else {
        format!("^{space}{core}{space}$")
    }
}

/// What [`Name::parse_bounded`] takes with `max`: 1 to `max` characters
/// once trimmed, none of them a control character.
fn name_core(max: usize) -> String {
    let edge = format!("[^{WHITE_SPACE}{CONTROL}]");
    let inner = format!("[^{CONTROL}]");
    if max < 2 {
        return edge;
    }
    format!("{edge}(?:{inner}{{0,{}}}{edge})?", max - 2)
}

fn name_of(max: usize, nullable: bool, blank: bool) -> Object {
    let rule = if blank {
        format!(
            "1 to {max} characters once trimmed, no control characters; blank is taken as absent"
        )
    } else {
        format!("1 to {max} characters once trimmed, no control characters")
    };
    string(nullable)
        .pattern(Some(trimmed(&name_core(max), blank)))
        .description(Some(rule))
        .build()
}

/// A name (legal, display, organization, rate card, role, title...).
pub fn name() -> Object {
    name_of(Name::MAX_CHARS, false, false)
}

/// An optional name that, when given, must not be blank.
pub fn optional_name() -> Object {
    name_of(Name::MAX_CHARS, true, false)
}

/// An optional name that is absent when blank.
pub fn name_or_blank() -> Object {
    name_of(Name::MAX_CHARS, true, true)
}

/// A person's first or last name.
pub fn person_name() -> Object {
    name_of(Name::PERSON_MAX_CHARS, false, false)
}

/// A rate card entry's name.
pub fn entry_name() -> Object {
    name_of(
        pivotal_domain::rate_card::MAX_ENTRY_NAME_CHARS,
        false,
        false,
    )
}

/// An address's region, absent when blank.
pub fn region() -> Object {
    name_of(
        pivotal_domain::values::Address::REGION_MAX_CHARS,
        true,
        true,
    )
}

/// An address's postal code, absent when blank.
pub fn postal_code() -> Object {
    name_of(
        pivotal_domain::values::Address::POSTAL_CODE_MAX_CHARS,
        true,
        true,
    )
}

/// Free text of 1 to `max` characters once trimmed; blank too (taken as
/// absent) when `blank`.
fn text_of(max: usize, nullable: bool, blank: bool) -> Object {
    let edge = format!("[^{WHITE_SPACE}]");
    let core = if max < 2 {
        edge
    } else {
        format!("{edge}(?:[\\s\\S]{{0,{}}}{edge})?", max - 2)
    };
    string(nullable)
        .pattern(Some(trimmed(&core, blank)))
        .description(Some(if blank {
            format!("At most {max} characters once trimmed; blank is taken as absent")
        } else {
            format!("1 to {max} characters once trimmed")
        }))
        .build()
}

/// A quote's description, terms or notes.
pub fn quote_text() -> Object {
    text_of(pivotal_domain::quote::MAX_TEXT_CHARS, true, true)
}

/// Why a customer is archived.
pub fn archive_reason() -> Object {
    text_of(pivotal_domain::customer::MAX_REASON_CHARS, true, true)
}

/// Why a user is locked.
pub fn user_reason() -> Object {
    text_of(pivotal_domain::user::MAX_REASON_CHARS, false, false)
}

/// Why a user is deactivated, when said.
pub fn optional_user_reason() -> Object {
    text_of(pivotal_domain::user::MAX_REASON_CHARS, true, false)
}

/// Why a quote is rejected or declined, when a reason is needed.
pub fn quote_reason() -> Object {
    text_of(pivotal_domain::quote::MAX_REASON_CHARS, false, false)
}

/// A quote decision's optional reason or comment.
pub fn optional_quote_reason() -> Object {
    text_of(pivotal_domain::quote::MAX_REASON_CHARS, true, true)
}

/// What `Email::parse` takes: a dot-atom local part (at most 64
/// characters; here at most one dot), `@`, and a domain of labels
/// ending in an alphabetic top-level label.
fn email_core() -> &'static str {
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,32}(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,31})?@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.){1,4}[A-Za-z]{2,24}"
}

fn email_of(nullable: bool, blank: bool) -> Object {
    string(nullable)
        .pattern(Some(trimmed(email_core(), blank)))
        .max_length(Some(254))
        .description(Some(if blank {
            "An email address; blank is taken as absent"
        } else {
            "An email address"
        }))
        .examples(["ap@example.com"])
        .build()
}

/// An email address.
pub fn email() -> Object {
    email_of(false, false)
}

/// An optional email address, absent when blank.
pub fn email_or_blank() -> Object {
    email_of(true, true)
}

/// What `Phone::parse` takes: `+`, then 8 to 15 digits, the first not 0,
/// with spaces, dashes, dots and parentheses anywhere after the `+`.
pub fn phone_or_blank() -> Object {
    let separators = "[ ().-]*";
    let core = format!(r"\+{separators}[1-9](?:{separators}[0-9]){{7,14}}{separators}");
    string(true)
        .pattern(Some(trimmed(&core, true)))
        .description(Some(
            "International form: + and 8 to 15 digits (spaces, dashes, dots and parentheses are ignored); blank is taken as absent",
        ))
        .examples(["+64 9 555 0100"])
        .build()
}

/// What `TaxNumber::parse` takes: 2 to 32 letters, digits, spaces,
/// dashes, dots or slashes with a letter or digit among them (here, at
/// one end); absent when blank.
pub fn tax_number_or_blank() -> Object {
    let end = "[A-Za-z0-9./-]";
    let core =
        format!("[A-Za-z0-9][A-Za-z0-9 ./-]{{0,30}}{end}|{end}[A-Za-z0-9 ./-]{{0,30}}[A-Za-z0-9]");
    string(true)
        .pattern(Some(trimmed(&core, true)))
        .description(Some(
            "2 to 32 letters, digits, spaces, dashes, dots or slashes (GST, VAT, ABN...); blank is taken as absent",
        ))
        .build()
}

/// A new password as the default policy takes it: at least 12 characters
/// (`identity.passwords.min_length`), at most 256 bytes (here, at most
/// 64 characters, which never exceed them), at least 4 different
/// characters, not the email address.
fn password_of(nullable: bool) -> Object {
    string(nullable)
        .min_length(Some(12))
        .max_length(Some(64))
        .description(Some(
            "At least 12 characters (the default policy) and at most 256 bytes, with at least 4 different characters, not the email address",
        ))
        .build()
}

/// A new password.
pub fn password() -> Object {
    password_of(false)
}

/// A new user's password, or none: the user is then invited.
pub fn optional_password() -> Object {
    adding(
        password_of(true),
        "Without a password the user is invited: the response carries a one-time invitation token for `/v1/auth/invitations/accept`.",
    )
}

/// Rules across fields that the fields' own shapes cannot state, added
/// to the components they apply to: a second factor is a TOTP code or a
/// recovery code, never both nor neither; a quote line names a rate
/// entry, or gives its unit price and description itself.
pub fn across_fields(schemas: &mut std::collections::BTreeMap<String, RefOr<Schema>>) {
    let given = |fields: &[&str]| {
        let mut object = ObjectBuilder::new();
        for field in fields {
            object = object.property(*field, string(false)).required(*field);
        }
        object.build()
    };
    let rules = [
        (
            "VerifyMfaBody",
            Schema::OneOf(
                OneOfBuilder::new()
                    .item(given(&["code"]))
                    .item(given(&["recoveryCode"]))
                    .build(),
            ),
        ),
        (
            "DisableMfaBody",
            Schema::OneOf(
                OneOfBuilder::new()
                    .item(given(&["code"]))
                    .item(given(&["recoveryCode"]))
                    .build(),
            ),
        ),
        (
            "LineBody",
            Schema::AnyOf(
                AnyOfBuilder::new()
                    .item(given(&["rateEntryId"]))
                    .item(given(&["unitPrice", "description"]))
                    .build(),
            ),
        ),
    ];
    for (name, rule) in rules {
        if let Some(schema) = schemas.remove(name) {
            schemas.insert(
                name.to_owned(),
                RefOr::T(Schema::AllOf(
                    AllOfBuilder::new().item(schema).item(rule).build(),
                )),
            );
        }
    }
}

/// A component's schema, by reference, with what this field adds to it;
/// nullable when `nullable`.
fn component(name: &str, nullable: bool, adds: Option<&str>) -> RefOr<Schema> {
    let reference = utoipa::openapi::schema::RefBuilder::new()
        .ref_location_from_schema_name(name)
        .description(adds.filter(|_| !nullable))
        .build();
    if nullable {
        RefOr::T(Schema::OneOf(
            OneOfBuilder::new()
                .item(reference)
                .item(ObjectBuilder::new().schema_type(SchemaType::new(Type::Null)))
                .description(adds)
                .build(),
        ))
    } else {
        RefOr::Ref(reference)
    }
}

/// `object` with a sentence about its field after the shape's rule.
fn adding(mut object: Object, sentence: &str) -> Object {
    object.description = Some(match object.description.take() {
        Some(rule) => format!("{sentence} {rule}"),
        None => sentence.to_owned(),
    });
    object
}

/// The components these shapes refer to, for [`crate::openapi`] to add:
/// the currencies, countries and time zones the API takes.
pub fn components() -> [(&'static str, RefOr<Schema>); 3] {
    let codes = |description: &str, values: Vec<&'static str>| {
        RefOr::T(Schema::Object(
            string(false)
                .enum_values(Some(values))
                .description(Some(description.to_owned()))
                .build(),
        ))
    };
    [
        (
            "Currency",
            codes(
                "An active ISO 4217 currency code.",
                Currency::CODES.to_vec(),
            ),
        ),
        (
            "Country",
            codes(
                "An ISO 3166-1 alpha-2 country code.",
                Country::CODES.to_vec(),
            ),
        ),
        (
            "TimeZone",
            codes(
                "An IANA time zone name, such as Pacific/Auckland.",
                TimeZone::names().collect(),
            ),
        ),
    ]
}

pub fn currency() -> RefOr<Schema> {
    component("Currency", false, None)
}

/// A quote's currency.
pub fn quote_currency() -> RefOr<Schema> {
    component(
        "Currency",
        true,
        Some("Defaults to the customer's billing currency."),
    )
}

pub fn country() -> RefOr<Schema> {
    component("Country", false, None)
}

pub fn time_zone() -> RefOr<Schema> {
    component("TimeZone", false, None)
}

/// A new organization's time zone.
pub fn organization_time_zone() -> RefOr<Schema> {
    component("TimeZone", true, Some("Defaults to UTC."))
}

/// A new owner's time zone.
pub fn owner_time_zone() -> RefOr<Schema> {
    component(
        "TimeZone",
        true,
        Some("Defaults to the organization's time zone."),
    )
}

/// A user's time zone.
pub fn user_time_zone() -> RefOr<Schema> {
    component("TimeZone", true, Some("Defaults to UTC."))
}

/// A customer's display name.
pub fn display_name() -> Object {
    adding(optional_name(), "Defaults to the legal name.")
}

/// A quote line's description.
pub fn line_description() -> Object {
    adding(optional_name(), "Defaults to the rate entry's name.")
}

/// Who decided on a quote, on the customer's side.
pub fn decided_by() -> Object {
    adding(name(), "The customer's person who decided.")
}

/// What `Tags::parse` takes: at most 20 tags of 1 to 40 characters
/// once trimmed (stored lower-cased, duplicates dropped).
pub fn tags() -> Array {
    ArrayBuilder::new()
        .items(
            string(false)
                .pattern(Some(trimmed(&name_core(Tags::MAX_CHARS), false)))
                .description(Some(format!(
                    "1 to {} characters once trimmed, no control characters; stored lower-cased",
                    Tags::MAX_CHARS
                ))),
        )
        .max_items(Some(Tags::MAX_TAGS))
        .description(Some(format!(
            "At most {} tags; duplicates are dropped",
            Tags::MAX_TAGS
        )))
        .build()
}

fn integer(minimum: i64, maximum: i64, nullable: bool, description: &str) -> Object {
    let kind = if nullable {
        SchemaType::from_iter([Type::Integer, Type::Null])
    } else {
        SchemaType::new(Type::Integer)
    };
    ObjectBuilder::new()
        .schema_type(kind)
        .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
            utoipa::openapi::KnownFormat::Int64,
        )))
        .minimum(Some(minimum as f64))
        .maximum(Some(maximum as f64))
        .description(Some(description))
        .build()
}

/// Payment terms in days.
pub fn payment_terms() -> Object {
    integer(
        0,
        PaymentTerms::MAX_DAYS,
        true,
        "Days until invoices are due (0: on receipt); default 20",
    )
}

/// The month the fiscal year starts.
pub fn month() -> Object {
    integer(
        1,
        12,
        false,
        "The month the fiscal year starts, 1 (January) to 12",
    )
}

/// The month the fiscal year starts, default January.
pub fn optional_month() -> Object {
    integer(
        1,
        12,
        true,
        "The month the fiscal year starts, 1 (January) to 12; default 1",
    )
}

/// The default tax rate in basis points.
pub fn basis_points() -> Object {
    integer(0, 10_000, false, "Basis points: 1500 = 15%")
}

/// The days a quote stays valid.
pub fn validity_days() -> Object {
    integer(1, 365, false, "Days a new quote stays valid")
}

/// What `permissions::is_identifier` takes: a permission's resource or action, a
/// role's key.
const IDENTIFIER: &str = "^[a-z][a-z0-9_-]{0,49}$";

/// A permission's resource or action.
pub fn identifier() -> Object {
    string(false)
        .pattern(Some(IDENTIFIER))
        .description(Some(
            "1 to 50 lowercase letters, digits, `_` or `-`, starting with a letter",
        ))
        .build()
}

/// A role's key.
pub fn role_key() -> Object {
    string(false)
        .pattern(Some(IDENTIFIER))
        .description(Some(
            "A role's key, built-in (owner, admin, manager, member, accountant, auditor) or the organization's",
        ))
        .examples(["member"])
        .build()
}

/// A new user's roles.
pub fn role_keys() -> Array {
    ArrayBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .items(role_key())
        .min_items(Some(1))
        .max_items(Some(pivotal_domain::user::MAX_ROLES))
        .description(Some(format!(
            "1 to {} role keys, built-in or the organization's; default `[\"member\"]`",
            pivotal_domain::user::MAX_ROLES
        )))
        .build()
}

/// The key of a role an organization defines.
pub fn custom_role_key() -> Object {
    string(false)
        .pattern(Some(IDENTIFIER))
        .description(Some(
            "1 to 50 lowercase letters, digits, `_` or `-`, starting with a letter; not a built-in role's key (owner, admin, manager, member, accountant, auditor)",
        ))
        .examples(["sales-lead"])
        .build()
}

/// What `Grant::validate_all` takes: at most 100 grants, each a
/// resource and an action (an identifier or `*`) and at most 10
/// conditions on the request's context.
pub fn grants() -> Array {
    let any = |field: &str, article: &str| {
        string(false)
            .pattern(Some(format!("^(?:\\*|{})$", &IDENTIFIER[1..IDENTIFIER.len() - 1])))
            .description(Some(format!(
                "{article} {field} name (1 to 50 lowercase letters, digits, `_` or `-`, starting with a letter) or `*` for any"
            )))
    };
    let operators =
        |names: &[&str]| string(false).enum_values(Some(names.iter().map(|n| (*n).to_owned())));
    let kind = |names: &[&str], value: Option<SchemaType>| {
        let mut object = ObjectBuilder::new().property("operator", operators(names));
        if let Some(kind) = value {
            object = object.property("value", ObjectBuilder::new().schema_type(kind));
        }
        object.build()
    };
    let condition = ObjectBuilder::new()
        .schema_type(SchemaType::new(Type::Object))
        .property(
            "attribute",
            string(false)
                .pattern(Some("^[A-Za-z0-9_.]{1,64}$"))
                .description(Some("The context's attribute compared, such as ownerId")),
        )
        .property(
            "operator",
            operators(&["eq", "ne", "lt", "lte", "gt", "gte", "in", "contains"]),
        )
        .property(
            "value",
            ObjectBuilder::new().schema_type(SchemaType::AnyValue).description(Some(
                "What the attribute is compared with: an array for `in`, a number or a string for ordering; `$subject.id` and `$subject.organizationId` stand for the caller's",
            )),
        )
        .required("attribute")
        .required("operator")
        .required("value")
        .additional_properties(Some(AdditionalProperties::FreeForm(false)));
    let condition = AllOfBuilder::new().item(condition).item(
        AnyOfBuilder::new()
            .item(kind(&["eq", "ne", "contains"], None))
            .item(kind(&["in"], Some(SchemaType::new(Type::Array))))
            .item(kind(
                &["lt", "lte", "gt", "gte"],
                Some(SchemaType::from_iter([Type::Number, Type::String])),
            )),
    );
    let grant = ObjectBuilder::new()
        .schema_type(SchemaType::new(Type::Object))
        .property("resource", any("resource", "A"))
        .property("action", any("action", "An"))
        .property(
            "conditions",
            ArrayBuilder::new()
                .items(condition)
                .max_items(Some(Grant::MAX_CONDITIONS))
                .description(Some("All must hold; none means unconditional")),
        )
        .required("resource")
        .required("action")
        .additional_properties(Some(AdditionalProperties::FreeForm(false)));
    ArrayBuilder::new()
        .items(grant)
        .max_items(Some(Grant::MAX_PER_ROLE))
        .description(Some("The permissions the role grants"))
        .build()
}

/// What `Preferences::parse` takes: an object of at most 50 keys of 1 to
/// 64 letters, digits, `_`, `.` or `-`, at most 8 KiB as JSON.
pub fn preferences() -> Object {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Object, Type::Null]))
        .property_names(Some(
            string(false).pattern(Some("^[A-Za-z0-9_.-]{1,64}$")).build(),
        ))
        .max_properties(Some(Preferences::MAX_KEYS))
        .additional_properties(Some(AdditionalProperties::FreeForm(true)))
        .description(Some(format!(
            "The user's own settings: at most {} keys of 1 to 64 letters, digits, `_`, `.` or `-`, at most {} bytes as JSON",
            Preferences::MAX_KEYS,
            Preferences::MAX_BYTES
        )))
        .build()
}

/// A custom role's name.
pub fn role_name() -> Object {
    name_of(CustomRole::NAME_MAX_CHARS, false, false)
}

/// A custom role's description.
pub fn role_description() -> Object {
    text_of(CustomRole::DESCRIPTION_MAX_CHARS, true, true)
}

/// The total above which quotes need an approver.
pub fn approval_threshold() -> Object {
    decimal(
        amount_pattern(),
        false,
        format!(
            "Quotes above this total need an approver; \"0\" means every quote. A decimal string, not negative, at most {MAX_SCALE} decimal places"
        ),
        "5000",
    )
}

/// A decimal number written as a string: not negative, at most `max`
/// (a power of ten), at most `MAX_SCALE` decimal places.
fn decimal_pattern(max: rust_decimal::Decimal) -> String {
    let max = max.trunc().to_string();
    let fraction = format!("(?:\\.[0-9]{{1,{MAX_SCALE}}})?");
    format!(
        "^(?:[0-9]{{1,{}}}{fraction}|{max}(?:\\.0{{1,{MAX_SCALE}}})?)$",
        max.len() - 1
    )
}

fn decimal(pattern: String, nullable: bool, description: String, example: &str) -> Object {
    string(nullable)
        .pattern(Some(pattern))
        .description(Some(description))
        .examples([example])
        .build()
}

/// A line's quantity.
pub fn quantity() -> Object {
    decimal(
        decimal_pattern(MAX_QUANTITY),
        false,
        format!("A decimal string from 0 to {MAX_QUANTITY}, at most {MAX_SCALE} decimal places"),
        "12.5",
    )
}

/// A line's unit price.
pub fn unit_price() -> Object {
    decimal(
        decimal_pattern(MAX_UNIT_PRICE),
        true,
        format!(
            "A decimal string from 0 to {MAX_UNIT_PRICE}, at most {MAX_SCALE} decimal places; default: the rate entry's rate"
        ),
        "150",
    )
}

/// A percentage: 0 to 100, at most `MAX_SCALE` decimal places.
fn percent_of(nullable: bool, description: &str) -> Object {
    decimal(
        decimal_pattern(rust_decimal::Decimal::ONE_HUNDRED),
        nullable,
        format!("A decimal string from 0 to 100, at most {MAX_SCALE} decimal places{description}"),
        "15",
    )
}

/// A line's tax rate.
pub fn tax_rate() -> Object {
    percent_of(true, "; default: the organization's default rate")
}

/// An amount of money not below 0, at most `MAX_SCALE` decimal places.
fn amount_pattern() -> String {
    format!("^[0-9]{{1,{AMOUNT_DIGITS}}}(?:\\.[0-9]{{1,{MAX_SCALE}}})?$")
}

/// Digits before the point an amount may have: well within what a
/// decimal holds at `MAX_SCALE` places.
const AMOUNT_DIGITS: usize = 18;

/// A rate card entry's rate.
pub fn rate_amount() -> Object {
    decimal(
        amount_pattern(),
        false,
        format!("A decimal string, not negative, at most {MAX_SCALE} decimal places"),
        "150",
    )
}

/// A discount on a line or on a whole quote: a percentage, or an amount
/// in the quote's currency (not above what it discounts).
pub fn discount() -> RefOr<Schema> {
    let kind = |name: &str, value: Object| {
        ObjectBuilder::new()
            .schema_type(SchemaType::new(Type::Object))
            .property(
                "type",
                string(false).enum_values(Some([name.to_owned()])).build(),
            )
            .property("value", value)
            .required("type")
            .required("value")
            .additional_properties(Some(AdditionalProperties::FreeForm(false)))
            .build()
    };
    let either = OneOfBuilder::new()
        .item(kind("percent", percent_of(false, "")))
        .item(kind(
            "amount",
            decimal(
                amount_pattern(),
                false,
                format!("A decimal string, not negative, at most {MAX_SCALE} decimal places"),
                "50",
            ),
        ))
        .item(ObjectBuilder::new().schema_type(SchemaType::new(Type::Null)))
        .description(Some(
            "A percentage (`{\"type\": \"percent\", \"value\": \"10\"}`) or an amount in the quote's currency, not above what it discounts",
        ))
        .build();
    RefOr::T(Schema::OneOf(either))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    //! Each pattern against the check it describes, on strings drawn from
    //! the characters the checks care about: letters, digits, every kind
    //! of white space `trim` removes, control characters and the
    //! punctuation of emails, phones and tax numbers.
    use pivotal_domain::values::{Email, Phone, TaxNumber};
    use proptest::prelude::*;

    use super::*;

    fn regex(object: &Object) -> regex::Regex {
        regex::Regex::new(object.pattern.as_deref().unwrap()).unwrap()
    }

    fn text(max_len: usize) -> impl Strategy<Value = String> {
        let chars = prop_oneof![
            4 => prop::sample::select(vec!['a', 'Z', 'ā', '7', '0', '1', '9']),
            2 => prop::sample::select(vec![' ', '\t', '\n', '\r', '\u{85}', '\u{a0}', '\u{2003}', '\u{3000}']),
            1 => prop::sample::select(vec!['\u{0}', '\u{1}', '\u{1f}', '\u{7f}', '\u{9f}', '\u{feff}']),
            2 => prop::sample::select(vec!['+', '.', '-', '(', ')', '/', '@', '_', '!', '`']),
        ];
        prop::collection::vec(chars, 0..max_len).prop_map(|c| c.into_iter().collect())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        #[test]
        fn a_name_matches_exactly_when_the_check_takes_it(raw in text(9), max in 1_usize..6) {
            let taken = Name::parse_bounded("/n", &raw, max).is_ok();
            prop_assert_eq!(regex(&name_of(max, false, false)).is_match(&raw), taken);
            let blank = raw.trim().is_empty();
            prop_assert_eq!(regex(&name_of(max, true, true)).is_match(&raw), taken || blank);
        }

        #[test]
        fn a_phone_matches_exactly_when_the_check_takes_it(
            raw in "[ \t]?\\+?[ ().-]?[0-9]{0,3}[ ().a-]?[0-9]{0,14}[ ()-]?[ \t]?",
        ) {
            let taken = Phone::parse("/p", &raw).is_ok();
            let blank = raw.trim().is_empty();
            prop_assert_eq!(regex(&phone_or_blank()).is_match(&raw), taken || blank);
        }

        #[test]
        fn an_email_that_matches_is_taken(raw in text(24)) {
            if regex(&email()).is_match(&raw) {
                prop_assert!(Email::parse("/e", &raw).is_ok(), "{:?}", raw);
            }
        }

        #[test]
        fn a_tax_number_that_matches_is_taken(raw in "[ \t]?[A-Za-z0-9 ./@-]{0,34}[ \t]?") {
            if regex(&tax_number_or_blank()).is_match(&raw) && !raw.trim().is_empty() {
                prop_assert!(TaxNumber::parse("/t", &raw).is_ok(), "{:?}", raw);
            }
        }

        #[test]
        fn a_tag_matches_exactly_when_the_check_takes_it(raw in text(9)) {
            let items = tags().items;
            let utoipa::openapi::schema::ArrayItems::RefOrSchema(item) = items else {
                panic!("tags have an item schema");
            };
            let RefOr::T(Schema::Object(item)) = *item else {
                panic!("a tag is a string");
            };
            let taken = Tags::parse("/tags", std::slice::from_ref(&raw)).is_ok();
            // The bound is 40; strings here are shorter, so this checks
            // the trimming and the characters.
            prop_assert_eq!(regex(&item).is_match(&raw), taken);
        }

        #[test]
        fn a_quantity_that_matches_is_a_valid_one(raw in "[0-9]{1,11}(\\.[0-9]{1,5})?") {
            let value: rust_decimal::Decimal = raw.parse().unwrap();
            let valid = value <= MAX_QUANTITY && value.normalize().scale() <= MAX_SCALE;
            let canonical = !(raw.starts_with('0') && raw.len() > 1 && !raw.starts_with("0."))
                && raw.split('.').nth(1).is_none_or(|f| f.len() <= MAX_SCALE as usize);
            if regex(&quantity()).is_match(&raw) {
                prop_assert!(valid, "{:?}", raw);
            } else {
                // The document refuses only values out of range, or
                // written with leading zeros or more decimals than needed.
                prop_assert!(!valid || !canonical, "{:?}", raw);
            }
        }
    }

    #[test]
    fn names_are_bounded_by_the_domains_lengths() {
        let name = regex(&name());
        assert!(name.is_match(&format!(" {} ", "x".repeat(Name::MAX_CHARS))));
        assert!(!name.is_match(&"x".repeat(Name::MAX_CHARS + 1)));
        let tag = tags();
        assert_eq!(tag.max_items, Some(Tags::MAX_TAGS));
        let reason = regex(&quote_reason());
        assert!(reason.is_match(&"x".repeat(pivotal_domain::quote::MAX_REASON_CHARS)));
        assert!(!reason.is_match(&"x".repeat(pivotal_domain::quote::MAX_REASON_CHARS + 1)));
        assert!(!reason.is_match(" \t "));
        assert!(regex(&optional_quote_reason()).is_match(" \t "));
    }

    #[test]
    fn the_code_lists_are_what_the_checks_take() {
        assert!(
            Currency::CODES
                .iter()
                .all(|c| Currency::parse("/c", c).is_ok())
        );
        assert!(
            Country::CODES
                .iter()
                .all(|c| Country::parse("/c", c).is_ok())
        );
        assert!(TimeZone::names().all(|z| TimeZone::parse("/z", z).is_ok()));
        assert!(TimeZone::names().any(|z| z == "Pacific/Auckland"));
        assert!(Currency::parse("/c", "ZZZ").is_err());
    }

    #[test]
    fn decimals_stop_at_the_domains_limits() {
        let quantity = regex(&quantity());
        for taken in [
            "0",
            "1000000000",
            "1000000000.0000",
            "999999999.9999",
            "0.5",
        ] {
            assert!(quantity.is_match(taken), "{taken}");
        }
        for refused in [
            "-1",
            "1000000000.0001",
            "1000000001",
            "1.23456",
            "1e3",
            ".5",
            "1.",
        ] {
            assert!(!quantity.is_match(refused), "{refused}");
        }
        let percent = regex(&tax_rate());
        assert!(percent.is_match("100") && percent.is_match("12.3456"));
        assert!(!percent.is_match("100.01") && !percent.is_match("101"));
    }
}
