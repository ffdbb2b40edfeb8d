//! Deserializing typed values without serde's one leniency that matters here: a derived
//! `Deserialize` for a struct also reads a JSON *array*, field by position, so `{"spec": ["x",
//! "openai_compatible", "m"]}` would register a model and `[...]` would be a run's start. A
//! client never means that, the OpenAPI document says "object", and it hides mistakes (a field
//! list in the wrong order silently swaps values). [`Strict`] wraps any deserializer and
//! refuses an array wherever a struct (or a struct variant) is expected, at every depth; the
//! usual wrappers (`serde_path_to_error`, `serde_ignored`) go around it, so the error names the
//! field's path.
//!
//! One limit: internally tagged and untagged enums (`#[serde(tag = ...)]`) buffer their content
//! before their variant's struct is read, so an array inside one is out of this wrapper's sight
//! (the API bodies and the flowchart have none; executor reports do, whose top level is checked).

use std::fmt;

use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, Unexpected,
    VariantAccess, Visitor,
};

/// What a refused array is expected to be instead.
const OBJECT: &str = "a JSON object (with named fields), not an array";

/// A JSON document that does not fit the type, and where.
#[derive(Debug, thiserror::Error)]
#[error("{}{source}", path.as_deref().map(|p| format!("{p}: ")).unwrap_or_default())]
pub struct StrictError {
    /// The dotted path of the value at fault (`spec.settings`, `nodes[2].id`); `None` for the
    /// document as a whole.
    pub path: Option<String>,
    /// serde_json's error, line and column included.
    #[source]
    pub source: serde_json::Error,
}

impl StrictError {
    fn of(err: serde_path_to_error::Error<serde_json::Error>) -> Self {
        let path = err.path().to_string();
        Self {
            path: (path != ".").then_some(path),
            source: err.into_inner(),
        }
    }
}

/// Deserializes `T` from JSON bytes with [`Strict`], naming the path of any error.
pub fn from_slice<T: de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StrictError> {
    let mut json = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(Strict(&mut json)).map_err(StrictError::of)?;
    // Trailing characters are an error of the whole document.
    json.end()
        .map_err(|source| StrictError { path: None, source })?;
    Ok(value)
}

/// Deserializes `T` from a JSON value with [`Strict`], naming the path of any error.
pub fn from_value<T: de::DeserializeOwned>(value: serde_json::Value) -> Result<T, StrictError> {
    serde_path_to_error::deserialize(Strict(value)).map_err(StrictError::of)
}

/// A deserializer that refuses arrays where structs are expected; everything else is the
/// wrapped deserializer's business.
pub struct Strict<D>(pub D);

/// A visitor that refuses `visit_seq` when it stands for a struct, and keeps wrapping what it
/// hands on so nested values are strict too.
struct StrictVisitor<V> {
    inner: V,
    object: bool,
}

impl<V> StrictVisitor<V> {
    fn any(inner: V) -> Self {
        Self {
            inner,
            object: false,
        }
    }

    fn object(inner: V) -> Self {
        Self {
            inner,
            object: true,
        }
    }
}

macro_rules! forward_deserialize {
    ($($method:ident),*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
            self.0.$method(StrictVisitor::any(visitor))
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Strict<D> {
    type Error = D::Error;

    forward_deserialize!(
        deserialize_any,
        deserialize_bool,
        deserialize_i8,
        deserialize_i16,
        deserialize_i32,
        deserialize_i64,
        deserialize_i128,
        deserialize_u8,
        deserialize_u16,
        deserialize_u32,
        deserialize_u64,
        deserialize_u128,
        deserialize_f32,
        deserialize_f64,
        deserialize_char,
        deserialize_str,
        deserialize_string,
        deserialize_bytes,
        deserialize_byte_buf,
        deserialize_option,
        deserialize_unit,
        deserialize_seq,
        deserialize_map,
        deserialize_identifier,
        deserialize_ignored_any
    );

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0
            .deserialize_unit_struct(name, StrictVisitor::any(visitor))
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0
            .deserialize_newtype_struct(name, StrictVisitor::any(visitor))
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_tuple(len, StrictVisitor::any(visitor))
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0
            .deserialize_tuple_struct(name, len, StrictVisitor::any(visitor))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0
            .deserialize_struct(name, fields, StrictVisitor::object(visitor))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0
            .deserialize_enum(name, variants, StrictVisitor::any(visitor))
    }

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

macro_rules! forward_visit {
    ($($method:ident($ty:ty)),*) => {$(
        fn $method<E: de::Error>(self, v: $ty) -> Result<Self::Value, E> {
            self.inner.$method(v)
        }
    )*};
}

impl<'de, V: Visitor<'de>> Visitor<'de> for StrictVisitor<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    forward_visit!(
        visit_bool(bool),
        visit_i8(i8),
        visit_i16(i16),
        visit_i32(i32),
        visit_i64(i64),
        visit_i128(i128),
        visit_u8(u8),
        visit_u16(u16),
        visit_u32(u32),
        visit_u64(u64),
        visit_u128(u128),
        visit_f32(f32),
        visit_f64(f64),
        visit_char(char),
        visit_str(&str),
        visit_borrowed_str(&'de str),
        visit_string(String),
        visit_bytes(&[u8]),
        visit_borrowed_bytes(&'de [u8]),
        visit_byte_buf(Vec<u8>)
    );

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        self.inner.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        self.inner.visit_unit()
    }

    fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
        self.inner.visit_some(Strict(d))
    }

    fn visit_newtype_struct<D2: Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
        self.inner.visit_newtype_struct(Strict(d))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        if self.object {
            return Err(de::Error::invalid_type(Unexpected::Seq, &OBJECT));
        }
        self.inner.visit_seq(StrictSeq(seq))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        self.inner.visit_map(StrictMap(map))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Self::Value, A::Error> {
        self.inner.visit_enum(StrictEnum(data))
    }
}

/// Hands each element, key or value to its seed through [`Strict`].
struct StrictSeed<S>(S);

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for StrictSeed<S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.0.deserialize(Strict(d))
    }
}

struct StrictSeq<A>(A);

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for StrictSeq<A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        self.0.next_element_seed(StrictSeed(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

struct StrictMap<A>(A);

impl<'de, A: MapAccess<'de>> MapAccess<'de> for StrictMap<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        self.0.next_key_seed(StrictSeed(seed))
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        self.0.next_value_seed(StrictSeed(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

struct StrictEnum<A>(A);

impl<'de, A: EnumAccess<'de>> EnumAccess<'de> for StrictEnum<A> {
    type Error = A::Error;
    type Variant = StrictVariant<A::Variant>;

    fn variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<(T::Value, Self::Variant), A::Error> {
        let (value, variant) = self.0.variant_seed(StrictSeed(seed))?;
        Ok((value, StrictVariant(variant)))
    }
}

struct StrictVariant<A>(A);

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for StrictVariant<A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.0.unit_variant()
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
        self.0.newtype_variant_seed(StrictSeed(seed))
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        self.0.tuple_variant(len, StrictVisitor::any(visitor))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        self.0
            .struct_variant(fields, StrictVisitor::object(visitor))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;
    use serde_json::{Value, json};

    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Inner {
        a: u32,
        #[serde(default)]
        b: Option<String>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "snake_case")]
    enum Kind {
        Unit,
        Pair(u32, u32),
        Named { x: u32 },
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Outer {
        inner: Inner,
        #[serde(default)]
        maybe: Option<Inner>,
        #[serde(default)]
        list: Vec<Inner>,
        #[serde(default)]
        by_name: BTreeMap<String, Inner>,
        #[serde(default)]
        kind: Option<Kind>,
        #[serde(default)]
        free: Option<Value>,
        #[serde(default)]
        pair: Option<(u32, String)>,
    }

    fn path_of(body: Value) -> String {
        let bytes = serde_json::to_vec(&body).unwrap();
        let err = from_slice::<Outer>(&bytes).unwrap_err();
        assert!(err.source.to_string().contains("not an array"), "{err}");
        let by_value = from_value::<Outer>(body).unwrap_err();
        assert_eq!(by_value.path, err.path);
        err.path.unwrap_or_default()
    }

    #[test]
    fn an_array_where_a_struct_is_expected_is_refused_with_its_path() {
        assert_eq!(path_of(json!([[1]])), "");
        assert_eq!(path_of(json!({"inner": [1, "x"]})), "inner");
        assert_eq!(path_of(json!({"inner": {"a": 1}, "maybe": [1]})), "maybe");
        assert_eq!(
            path_of(json!({"inner": {"a": 1}, "list": [{"a": 1}, [2]]})),
            "list[1]"
        );
        assert_eq!(
            path_of(json!({"inner": {"a": 1}, "by_name": {"k": [2]}})),
            "by_name.k"
        );
        assert_eq!(
            path_of(json!({"inner": {"a": 1}, "kind": {"named": [2]}})),
            "kind.named"
        );
    }

    #[test]
    fn everything_else_reads_as_serde_json_reads_it() {
        let body = json!({
            "inner": {"a": 1, "b": "x"},
            "maybe": null,
            "list": [{"a": 2}],
            "by_name": {"k": {"a": 3}},
            "kind": {"pair": [4, 5]},
            "free": [1, {"any": ["thing"]}],
            "pair": [6, "six"],
        });
        let bytes = serde_json::to_vec(&body).unwrap();
        let strict: Outer = from_slice(&bytes).unwrap();
        assert_eq!(
            strict,
            serde_json::from_value::<Outer>(body.clone()).unwrap()
        );
        assert_eq!(strict.kind, Some(Kind::Pair(4, 5)));
        let unit: Outer = from_value(json!({"inner": {"a": 1}, "kind": "unit"})).unwrap();
        assert_eq!(unit.kind, Some(Kind::Unit));
        assert_eq!(strict.free, body.get("free").cloned());
        // serde_json alone takes the array: the leniency this module exists to refuse.
        assert!(serde_json::from_value::<Outer>(json!({"inner": [1]})).is_ok());
    }

    #[test]
    fn trailing_characters_and_syntax_errors_stay_serde_json_errors() {
        let err = from_slice::<Outer>(br#"{"inner": {"a": 1}} x"#).unwrap_err();
        assert_eq!(
            err.source.classify(),
            serde_json::error::Category::Syntax,
            "{err}"
        );
        let err = from_slice::<Outer>(br#"{"inner": {"a": 1"#).unwrap_err();
        assert_eq!(err.source.classify(), serde_json::error::Category::Eof);
        let err = from_slice::<Outer>(br#"{"inner": {"a": "1"}}"#).unwrap_err();
        assert_eq!(err.path.as_deref(), Some("inner.a"));
        assert_eq!(err.source.classify(), serde_json::error::Category::Data);
        assert!(
            err.to_string().starts_with("inner.a: invalid type"),
            "{err}"
        );
    }
}
