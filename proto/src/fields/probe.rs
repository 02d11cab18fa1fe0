//! Test-only: what serde itself knows of a struct's fields. A derived `Deserialize` hands
//! its struct's name and every field name (renames applied) to `deserialize_struct`; the
//! probe is a `Deserializer` that catches them there, and follows a path of field names
//! (one field per object, one element per list) to reach the structs inside. No value is
//! ever built: the probe stops with what it found.

use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess};
use serde::de::{Deserializer, Visitor};
use std::fmt;

/// What sits at the end of a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// A struct: its Rust name and its fields' JSON names.
    Struct(&'static str, &'static [&'static str]),
    /// A plain value (string, number, enum, `serde_json::Value`, ...).
    Leaf,
    /// A map (or a `#[serde(flatten)]` struct): the audit cannot see its fields.
    Map,
}

/// The probe's "error": what it found, or a real problem.
#[derive(Debug)]
enum Stop {
    Found(Found),
    Other(String),
}

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

impl std::error::Error for Stop {}

impl de::Error for Stop {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Stop::Other(msg.to_string())
    }
}

/// What `T` holds at `path` (field names; lists and options are looked through).
pub fn probe<T: DeserializeOwned>(path: &[&'static str]) -> Found {
    match T::deserialize(Probe { path }) {
        Err(Stop::Found(f)) => f,
        Err(Stop::Other(e)) => panic!("probing {path:?}: {e}"),
        Ok(_) => panic!("probing {path:?}: a value was built from nothing"),
    }
}

#[derive(Clone, Copy)]
struct Probe<'a> {
    path: &'a [&'static str],
}

impl<'de> Deserializer<'de> for Probe<'_> {
    type Error = Stop;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        Err(Stop::Found(Found::Leaf))
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Stop> {
        v.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        v: V,
    ) -> Result<V::Value, Stop> {
        v.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Stop> {
        v.visit_seq(OneElement(Some(self)))
    }

    fn deserialize_map<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        Err(Stop::Found(Found::Map))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Stop> {
        let Some((first, rest)) = self.path.split_first() else {
            return Err(Stop::Found(Found::Struct(name, fields)));
        };
        if !fields.contains(first) {
            return Err(Stop::Other(format!("{name} has no field {first:?}")));
        }
        v.visit_map(OneField {
            key: Some(first),
            rest,
        })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
        byte_buf unit unit_struct tuple tuple_struct enum identifier ignored_any
    }
}

/// An object with one field, whose value is probed further.
struct OneField<'a> {
    key: Option<&'static str>,
    rest: &'a [&'static str],
}

impl<'de> MapAccess<'de> for OneField<'_> {
    type Error = Stop;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Stop> {
        match self.key.take() {
            Some(k) => seed
                .deserialize(IntoDeserializer::<Stop>::into_deserializer(k))
                .map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Stop> {
        seed.deserialize(Probe { path: self.rest })
    }
}

/// A list with one element, which is probed further.
struct OneElement<'a>(Option<Probe<'a>>);

impl<'de> SeqAccess<'de> for OneElement<'_> {
    type Error = Stop;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Stop> {
        match self.0.take() {
            Some(p) => seed.deserialize(p).map(Some),
            None => Ok(None),
        }
    }
}
