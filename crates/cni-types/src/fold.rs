//! Go's rule for a config's object keys, as the upstream plugins decode them (`encoding/json`):
//! a key names a field exactly or, failing that, ignoring case, so `"isgateway": true` turns the
//! gateway on for upstream bridge and must for us too.
//!
//! [`Folding`] wraps a `serde_json::Value` as a deserializer that asks serde which fields a struct
//! has (names and aliases, as `deserialize_struct` is told them) and renames each key that
//! matches none of them exactly but one ignoring ASCII case, unless the exact key is there too
//! (then it wins, as in Go). Everything nested is wrapped the same way; scalars and enums are
//! decoded by `serde_json` itself, so its messages stay as they were.

use serde::de::value::StringDeserializer;
use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserializer;
use serde_json::{Error, Map, Value};

pub(crate) struct Folding(pub(crate) Value);

/// Folds the keys of `value`, if an object, to `fields` (for structs whose other keys serde
/// collects with `flatten`: it does not tell their fields).
pub(crate) fn fold_keys(value: &mut Value, fields: &[&str]) {
    if let Value::Object(map) = value {
        *map = fold(std::mem::take(map), fields);
    }
}

/// `map` with its keys renamed to the fields they name ignoring case.
fn fold(map: Map<String, Value>, fields: &[&str]) -> Map<String, Value> {
    let exact = |f: &str| map.contains_key(f);
    let target: Vec<(String, Option<&str>)> = map
        .keys()
        .map(|k| {
            let named = (!fields.contains(&k.as_str()))
                .then(|| fields.iter().copied().find(|f| f.eq_ignore_ascii_case(k)))
                .flatten()
                .filter(|f| !exact(f));
            (k.clone(), named)
        })
        .collect();
    let mut map = map;
    let mut out = Map::new();
    for (k, named) in target {
        if let Some(v) = map.remove(&k) {
            out.insert(named.map_or(k, str::to_string), v);
        }
    }
    out
}

struct Entries {
    iter: serde_json::map::IntoIter,
    value: Option<Value>,
}

impl<'de> MapAccess<'de> for Entries {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        match self.iter.next() {
            Some((k, v)) => {
                self.value = Some(v);
                let key: StringDeserializer<Error> = k.into_deserializer();
                seed.deserialize(key).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let v = self
            .value
            .take()
            .ok_or_else(|| de::Error::custom("value before key"))?;
        seed.deserialize(Folding(v))
    }
}

struct Elements(std::vec::IntoIter<Value>);

impl<'de> SeqAccess<'de> for Elements {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        self.0
            .next()
            .map(|v| seed.deserialize(Folding(v)))
            .transpose()
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

fn entries(map: Map<String, Value>) -> Entries {
    Entries {
        iter: map.into_iter(),
        value: None,
    }
}

/// Methods `serde_json::Value` answers as it would unwrapped.
macro_rules! as_json {
    ($($method:ident)*) => {
        $(fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            self.0.$method(visitor)
        })*
    };
}

impl<'de> Deserializer<'de> for Folding {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Array(a) => visitor.visit_seq(Elements(a.into_iter())),
            Value::Object(m) => visitor.visit_map(entries(m)),
            other => other.deserialize_any(visitor),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            other => visitor.visit_some(Folding(other)),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.0 {
            Value::Object(m) => visitor.visit_map(entries(fold(m, fields))),
            other => other.deserialize_struct(name, fields, visitor),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Array(a) => visitor.visit_seq(Elements(a.into_iter())),
            other => other.deserialize_seq(visitor),
        }
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Object(m) => visitor.visit_map(entries(m)),
            other => other.deserialize_map(visitor),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.0.deserialize_enum(name, variants, visitor)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.0.deserialize_unit_struct(name, visitor)
    }

    as_json! {
        deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64
        deserialize_i128 deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64
        deserialize_u128 deserialize_f32 deserialize_f64 deserialize_char deserialize_str
        deserialize_string deserialize_bytes deserialize_byte_buf deserialize_unit
        deserialize_identifier deserialize_ignored_any
    }
}

#[cfg(test)]
mod tests;
