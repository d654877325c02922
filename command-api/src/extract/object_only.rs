//! A reader of JSON values that takes a struct only from a JSON object.
//!
//! serde's derived `Deserialize` reads a struct from either a map or a
//! sequence of its fields in order, and serde_json offers the array form
//! for every struct; so without this, `"billingAddress": ["1 Queen St",
//! null, "Auckland", …]` is an address. serde leaves the choice to the
//! format; this one, like serde_yaml, refuses it: a struct, and an
//! adjacently tagged enum such as a discount, is read only from an object,
//! and anything else is refused as "invalid type: sequence (or string, null,
//! …), expected a JSON object", naming no Rust type. Scalars are read by serde_json's own `Value`
//! reader, so their errors and what they accept are serde_json's.

use serde::de::value::StringDeserializer;
use serde::de::{
    self, DeserializeSeed, EnumAccess, Error as _, IntoDeserializer, MapAccess, SeqAccess,
    Unexpected, VariantAccess, Visitor,
};
use serde::forward_to_deserialize_any;
use serde_json::{Error, Map, Value};

/// A JSON value read as a request body's part.
#[derive(Debug)]
pub struct ObjectOnly(pub Value);

fn unexpected(value: &Value) -> Unexpected<'_> {
    match value {
        Value::Null => Unexpected::Unit,
        Value::Bool(b) => Unexpected::Bool(*b),
        Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => Unexpected::Unsigned(u),
            (_, Some(i), _) => Unexpected::Signed(i),
            (_, _, Some(f)) => Unexpected::Float(f),
            _ => Unexpected::Other("number"),
        },
        Value::String(s) => Unexpected::Str(s),
        Value::Array(_) => Unexpected::Seq,
        Value::Object(_) => Unexpected::Map,
    }
}

const OBJECT: &str = "a JSON object";

fn visit_array<'de, V: Visitor<'de>>(items: Vec<Value>, visitor: V) -> Result<V::Value, Error> {
    let len = items.len();
    let mut seq = Items(items.into_iter());
    let value = visitor.visit_seq(&mut seq)?;
    if seq.0.len() == 0 {
        Ok(value)
    } else {
        Err(Error::invalid_length(len, &"fewer elements in array"))
    }
}

fn visit_object<'de, V: Visitor<'de>>(
    entries: Map<String, Value>,
    visitor: V,
) -> Result<V::Value, Error> {
    let len = entries.len();
    let mut map = Entries {
        entries: entries.into_iter(),
        value: None,
    };
    let value = visitor.visit_map(&mut map)?;
    if map.entries.len() == 0 {
        Ok(value)
    } else {
        Err(Error::invalid_length(len, &"fewer elements in map"))
    }
}

impl<'de> de::Deserializer<'de> for ObjectOnly {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Array(items) => visit_array(items, visitor),
            Value::Object(entries) => visit_object(entries, visitor),
            scalar => scalar.deserialize_any(visitor),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.0 {
            Value::Object(entries) => visit_object(entries, visitor),
            other => Err(Error::invalid_type(unexpected(&other), &OBJECT)),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.0 {
            Value::String(variant) => {
                visitor.visit_enum(IntoDeserializer::<Error>::into_deserializer(variant))
            }
            Value::Object(entries) if entries.len() == 1 => {
                let (variant, value) = entries.into_iter().next().expect("one entry");
                visitor.visit_enum(Variant { variant, value })
            }
            other => Err(Error::invalid_type(
                unexpected(&other),
                &"a string or an object with one entry",
            )),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map identifier
    }
}

struct Items(std::vec::IntoIter<Value>);

impl<'de> SeqAccess<'de> for Items {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        self.0
            .next()
            .map(|item| seed.deserialize(ObjectOnly(item)))
            .transpose()
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

struct Entries {
    entries: serde_json::map::IntoIter,
    value: Option<Value>,
}

impl<'de> MapAccess<'de> for Entries {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        self.value = Some(value);
        seed.deserialize(StringDeserializer::<Error>::new(key))
            .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        match self.value.take() {
            Some(value) => seed.deserialize(ObjectOnly(value)),
            None => Err(Error::custom("value is missing")),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

/// An enum written `{"variant": value}`.
struct Variant {
    variant: String,
    value: Value,
}

impl<'de> EnumAccess<'de> for Variant {
    type Error = Error;
    type Variant = ObjectOnly;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, ObjectOnly), Error> {
        let variant = seed.deserialize(StringDeserializer::<Error>::new(self.variant))?;
        Ok((variant, ObjectOnly(self.value)))
    }
}

impl<'de> VariantAccess<'de> for ObjectOnly {
    type Error = Error;

    fn unit_variant(self) -> Result<(), Error> {
        match self.0 {
            Value::Null => Ok(()),
            other => Err(Error::invalid_type(unexpected(&other), &"unit variant")),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Error> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, Error> {
        de::Deserializer::deserialize_seq(self, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        de::Deserializer::deserialize_struct(self, "", fields, visitor)
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::json;

    use super::ObjectOnly;

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Address {
        line1: Option<String>,
        city: Option<String>,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(tag = "type", content = "value", rename_all = "snake_case")]
    enum Discount {
        Percent(rust_decimal::Decimal),
    }

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Mode {
        Exclusive,
        Inclusive,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    enum External {
        Unit,
        Pair(u8, u8),
        Named { n: u8 },
    }

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Body {
        name: String,
        count: Option<u32>,
        address: Option<Address>,
        addresses: Vec<Address>,
        discount: Option<Discount>,
        mode: Option<Mode>,
        #[serde(default)]
        external: Vec<External>,
        #[serde(default)]
        free: Option<serde_json::Value>,
    }

    fn read(value: serde_json::Value) -> Result<Body, String> {
        Body::deserialize(ObjectOnly(value)).map_err(|e| e.to_string())
    }

    #[test]
    fn objects_arrays_and_scalars_read_as_serde_json_reads_them() {
        let body = read(json!({
            "name": "Acme",
            "count": 3,
            "address": {"line1": "1 Queen St", "city": null},
            "addresses": [{"city": "Auckland"}],
            "discount": {"type": "percent", "value": "12.5"},
            "mode": "inclusive",
            "external": ["Unit", {"Pair": [1, 2]}, {"Named": {"n": 3}}],
            "free": [1, {"a": [true]}, null]
        }))
        .unwrap();
        assert_eq!(
            body,
            Body {
                name: "Acme".into(),
                count: Some(3),
                address: Some(Address {
                    line1: Some("1 Queen St".into()),
                    city: None
                }),
                addresses: vec![Address {
                    line1: None,
                    city: Some("Auckland".into())
                }],
                discount: Some(Discount::Percent("12.5".parse().unwrap())),
                mode: Some(Mode::Inclusive),
                external: vec![
                    External::Unit,
                    External::Pair(1, 2),
                    External::Named { n: 3 }
                ],
                free: Some(json!([1, {"a": [true]}, null])),
            }
        );
        // What serde_json's own reader answers, unchanged.
        for (value, message) in [
            (
                json!({"name": 7, "addresses": []}),
                "invalid type: integer `7`, expected a string",
            ),
            (
                json!({"name": "A", "count": -1, "addresses": []}),
                "invalid value: integer `-1`, expected u32",
            ),
            (
                json!({"name": "A", "addresses": [], "mode": "both"}),
                "unknown variant `both`, expected `exclusive` or `inclusive`",
            ),
            (
                json!({"name": "A", "addresses": [], "other": 1}),
                "unknown field `other`, expected one of `name`, `count`, `address`, \
                 `addresses`, `discount`, `mode`, `external`, `free`",
            ),
            (json!({"name": "A"}), "missing field `addresses`"),
        ] {
            assert_eq!(read(value.clone()).unwrap_err(), message, "{value}");
        }
    }

    #[test]
    fn a_struct_is_read_only_from_an_object() {
        for (value, message) in [
            (
                json!({"name": "A", "addresses": [], "address": ["1 Queen St", "Auckland"]}),
                "invalid type: sequence, expected a JSON object",
            ),
            (
                json!({"name": "A", "addresses": [["1 Queen St", "Auckland"]]}),
                "invalid type: sequence, expected a JSON object",
            ),
            (
                json!({"name": "A", "addresses": [], "discount": ["percent", "10"]}),
                "invalid type: sequence, expected a JSON object",
            ),
            (
                json!({"name": "A", "addresses": [], "address": "1 Queen St"}),
                "invalid type: string \"1 Queen St\", expected a JSON object",
            ),
            (
                json!({"name": "A", "addresses": [null]}),
                "invalid type: null, expected a JSON object",
            ),
            (
                json!(["A", null, null, []]),
                "invalid type: sequence, expected a JSON object",
            ),
        ] {
            assert_eq!(read(value.clone()).unwrap_err(), message, "{value}");
        }
        // serde_json's reader takes every one of those arrays.
        let lenient: Body = serde_json::from_value(json!({
            "name": "A", "addresses": [["1 Queen St", "Auckland"]],
            "discount": ["percent", "10"]
        }))
        .unwrap();
        assert_eq!(lenient.addresses[0].city.as_deref(), Some("Auckland"));
    }
}
