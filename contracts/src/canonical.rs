//! Canonical JSON: the RFC 8785 JSON Canonicalization Scheme (JCS), with the I-JSON (RFC 7493)
//! limits the ledger keeps.
//!
//! # What JCS is
//!
//! JCS gives every JSON value exactly one serialization:
//!
//! - no whitespace between tokens;
//! - object members sorted by their names compared as arrays of UTF-16 code units (not UTF-8
//!   bytes, not code points: `"\u{1f600}"` sorts before `"\u{e000}"` because its first code unit
//!   is the surrogate `0xd83d`), recursively; array order is kept;
//! - strings escaped as ECMAScript's `JSON.stringify` does (RFC 8785 section 3.2.2.2): `"` and `\`
//!   escaped, U+0008/9/A/C/D as `\b \t \n \f \r`, every other control character below U+0020 as
//!   `\u00XX` with lower-case hex, and everything else, U+007F, U+2028 and `/` included, written
//!   as is in UTF-8;
//! - numbers written as ECMAScript's `Number.prototype.toString` writes an IEEE-754 double
//!   (RFC 8785 section 3.2.2.3): shortest round-tripping digits, `-0` as `0`, plain notation from
//!   `1e-6` up to below `1e21` (`0.000001`, `295147905179352830000`), exponent form outside it
//!   (`1e-7`, `1e+21`).
//!
//! # Why the ledger needs it
//!
//! Each event's hash is `blake3(prev_hash || canonical_json(event))`. The hash must not depend
//! on how a value happened to be built or stored: the insertion order of a map, the way a float
//! was spelled in the request (`4.50` or `4.5`), or which JSON library wrote it. With JCS, a chain
//! can be recomputed from an export alone by any conforming implementation, and two exports of
//! the same ledger are byte-identical.
//!
//! # I-JSON limits
//!
//! [`to_canonical_vec`] and [`canonicalize`] first run [`check_ijson`], so a value is hashed only
//! if every reader will see the same number the writer meant:
//!
//! - integers must lie within ±(2^53−1). `serde_json` holds `u64`/`i64` exactly but JCS writes
//!   every number as a double, so `9007199254740993` would otherwise be hashed as
//!   `9007199254740992`. The same holds for a double that JCS writes as an integer literal (an
//!   integral double of magnitude at least 2^53 and below 1e21, such as `9007199254740993.0`
//!   parsed to `9007199254740992.0`, or `123456789012345678901`, which `serde_json` parses as a
//!   double): it was rounded just the same, and its canonical text reads back as an out-of-range
//!   integer, so it could be hashed but not verified after a round trip. Larger doubles
//!   (`1e+30`) are written in exponent form and are accepted. Carry big integers as strings;
//! - numbers must be finite;
//! - nesting must not exceed [`MAX_DEPTH`] levels, the deepest `serde_json` parses back by default.
//!
//! Strings are always valid Unicode (a Rust `String` cannot hold a lone surrogate) and a
//! `serde_json::Map` cannot hold duplicate names, so the other I-JSON rules hold by construction.
//!
//! # Which crate does the work
//!
//! `Value`s are written by `canonical_write`, a direct writer that a property test holds
//! byte-equal to [`serde_json_canonicalizer`] on arbitrary values (it skips that crate's
//! per-member copies and sort keys, which made canonicalizing the ledger's hot path
//! allocation-bound); numbers other than integers are still formatted by that crate. It passes every RFC 8785 test
//! vector of the reference repository (`cyberphone/json-canonicalization`), the Appendix B number
//! table and the examples in the RFC's text (see the tests and `testdata/rfc8785/`); it is the
//! Rust implementation that repository lists; it formats numbers with `ryu-js` 1.x (ECMAScript
//! number formatting) and sorts names by UTF-16 code units; and it adds only `ryu-js` to our
//! dependency tree. `serde_jcs` 0.2 passes the same vectors but pins the older `ryu-js` 0.2.
//! Neither refuses a NaN or infinity nested inside a typed value (`serde_json`'s serializer writes
//! it as `null` before they see it), so [`canonicalize`] checks for that itself.
//!
//! `serde_json_canonicalizer` enables `serde_json`'s `float_roundtrip` feature, and through
//! feature unification that applies to the whole build. The ledger relies on it: without it
//! `serde_json` may parse a float one ulp away from the value its own writer meant
//! (`1.5777777777770001`), and an event read back from storage or an export would hash
//! differently from the event written.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt;

use serde::Serialize;
use serde::ser::{
    SerializeMap, SerializeSeq, SerializeStruct, SerializeStructVariant, SerializeTuple,
    SerializeTupleStruct, SerializeTupleVariant, Serializer,
};
use serde_json::{Number, Value};

/// The largest integer magnitude I-JSON lets a reader take as exact: 2^53 − 1.
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// The deepest nesting of arrays and objects accepted. `serde_json` parses at most 127 levels by
/// default, so a deeper value could be hashed but its canonical bytes could not be read back.
/// Bounding the depth also bounds the recursion of the serializer.
pub const MAX_DEPTH: usize = 127;

/// [`MAX_SAFE_INTEGER`] as a double (exactly representable).
const MAX_SAFE_DOUBLE: f64 = 9_007_199_254_740_991.0;

/// Doubles at or above this magnitude are written in exponent form by JCS.
const EXPONENT_FORM_FROM: f64 = 1e21;

/// Why a value has no canonical form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CanonicalError {
    /// An integer (or a double JCS writes as an integer literal) outside ±(2^53−1).
    #[error(
        "integer {value} at {path} is outside the I-JSON range ±(2^53−1); carry it as a string"
    )]
    IntegerOutOfRange { path: String, value: String },
    /// NaN or an infinity, in a typed value passed to [`canonicalize`]. (A `serde_json::Value`
    /// cannot hold one unless `serde_json/arbitrary_precision` is enabled.)
    #[error("number at {path} is not finite")]
    NonFiniteNumber { path: String },
    /// Two members of one object serialized under the same name (e.g. a `#[serde(flatten)]`
    /// field or a `#[serde(rename)]` colliding with another field); `path` names the second.
    #[error("duplicate member name at {path}")]
    DuplicateName { path: String },
    /// Arrays and objects nested more than [`MAX_DEPTH`] levels deep.
    #[error("value at {path} is nested more than {max} levels deep")]
    TooDeep { path: String, max: usize },
    /// The value could not be turned into JSON: a failing `Serialize` implementation or a map key
    /// that is not a string, a number or a bool.
    #[error("cannot serialize to canonical JSON: {0}")]
    Serialize(String),
}

/// Canonical bytes of a JSON value (RFC 8785). Errors if the value is not I-JSON (see
/// [`check_ijson`]).
///
/// # Errors
///
/// Whatever [`check_ijson`] refuses; [`CanonicalError::Serialize`] should not happen for a
/// `Value` that passed it.
pub fn to_canonical_vec(value: &Value) -> Result<Vec<u8>, CanonicalError> {
    check_ijson(value)?;
    Ok(write(value))
}

/// The canonical bytes of a value that passed [`check_ijson`].
fn write(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    crate::canonical_write::write_value(&mut out, value);
    out
}

/// [`to_canonical_vec`] as a `String`.
///
/// # Errors
///
/// As [`to_canonical_vec`].
pub fn to_canonical_string(value: &Value) -> Result<String, CanonicalError> {
    String::from_utf8(to_canonical_vec(value)?).map_err(serialize_error)
}

/// Serialize any `T` to a `serde_json::Value`, then canonicalize it.
///
/// `serde_json::to_value` writes NaN and infinities as `null` and keeps only the last of two
/// members serialized under one name; `value` is walked once more to refuse both, so neither is
/// hashed silently. (`serde_json_canonicalizer` refuses a non-finite float only at the top level:
/// nested ones reach `serde_json`'s own serializer, which writes `null`.)
///
/// # Errors
///
/// [`CanonicalError::Serialize`] if `T` cannot be represented as JSON, what [`check_ijson`]
/// refuses, [`CanonicalError::NonFiniteNumber`] and [`CanonicalError::DuplicateName`].
pub fn canonicalize<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CanonicalError> {
    let tree = serde_json::to_value(value).map_err(serialize_error)?;
    check_ijson(&tree)?;
    value
        .serialize(&mut Probe::default())
        .map_err(|ProbeError(error)| error)?;
    Ok(write(&tree))
}

/// I-JSON (RFC 7493) limits the ledger keeps to: integers within ±(2^53−1), finite numbers, and
/// nesting of at most [`MAX_DEPTH`] levels. The error names the JSON path of the first offending
/// value in document order (e.g. `$.payload.items[3].n`; names that are not identifiers are
/// written `$["a b"]`).
///
/// # Errors
///
/// [`CanonicalError::IntegerOutOfRange`], [`CanonicalError::NonFiniteNumber`] or
/// [`CanonicalError::TooDeep`], for the first offending value.
pub fn check_ijson(value: &Value) -> Result<(), CanonicalError> {
    let mut path = Vec::new();
    walk(value, 0, &mut path)
}

/// One step of a JSON path.
pub(crate) enum Step<'a> {
    Name(Cow<'a, str>),
    Index(usize),
}

fn walk<'a>(
    value: &'a Value,
    depth: usize,
    path: &mut Vec<Step<'a>>,
) -> Result<(), CanonicalError> {
    match value {
        Value::Null | Value::Bool(_) | Value::String(_) => Ok(()),
        Value::Number(number) => check_number(number).map_err(|issue| issue.at(path)),
        Value::Array(items) => {
            enter(depth, path)?;
            for (index, item) in items.iter().enumerate() {
                path.push(Step::Index(index));
                walk(item, depth + 1, path)?;
                path.pop();
            }
            Ok(())
        }
        Value::Object(members) => {
            enter(depth, path)?;
            for (name, member) in members {
                path.push(Step::Name(Cow::Borrowed(name)));
                walk(member, depth + 1, path)?;
                path.pop();
            }
            Ok(())
        }
    }
}

/// Refuses a container nested deeper than [`MAX_DEPTH`] levels (`depth` containers enclose it).
fn enter(depth: usize, path: &[Step<'_>]) -> Result<(), CanonicalError> {
    if depth < MAX_DEPTH {
        Ok(())
    } else {
        Err(CanonicalError::TooDeep {
            path: render_path(path),
            max: MAX_DEPTH,
        })
    }
}

enum NumberIssue {
    OutOfRange(String),
    NonFinite,
}

impl NumberIssue {
    fn at(self, path: &[Step<'_>]) -> CanonicalError {
        let path = render_path(path);
        match self {
            NumberIssue::OutOfRange(value) => CanonicalError::IntegerOutOfRange { path, value },
            NumberIssue::NonFinite => CanonicalError::NonFiniteNumber { path },
        }
    }
}

fn check_number(number: &Number) -> Result<(), NumberIssue> {
    if let Some(unsigned) = number.as_u64() {
        return in_safe_range(unsigned, number);
    }
    if let Some(signed) = number.as_i64() {
        return in_safe_range(signed.unsigned_abs(), number);
    }
    match number.as_f64() {
        // With `serde_json/arbitrary_precision`, an integer literal beyond 64 bits is neither
        // u64, i64 nor f64-shaped; without it, every remaining number is a finite double.
        Some(_) if !number.is_f64() => Err(NumberIssue::OutOfRange(number.to_string())),
        Some(double) => check_double(double),
        None => Err(NumberIssue::NonFinite),
    }
}

fn in_safe_range(magnitude: u64, number: &Number) -> Result<(), NumberIssue> {
    if magnitude <= MAX_SAFE_INTEGER {
        Ok(())
    } else {
        Err(NumberIssue::OutOfRange(number.to_string()))
    }
}

fn check_double(double: f64) -> Result<(), NumberIssue> {
    if !double.is_finite() {
        return Err(NumberIssue::NonFinite);
    }
    // Every double above 2^53 − 1 is an integer; below 1e21 JCS writes it as an integer literal,
    // which reads back as an integer out of range.
    let magnitude = double.abs();
    if magnitude > MAX_SAFE_DOUBLE && magnitude < EXPONENT_FORM_FROM {
        let text =
            serde_json_canonicalizer::to_string(&double).unwrap_or_else(|_| double.to_string());
        return Err(NumberIssue::OutOfRange(text));
    }
    Ok(())
}

pub(crate) fn render_path(path: &[Step<'_>]) -> String {
    let mut out = String::from("$");
    for step in path {
        match step {
            Step::Index(index) => {
                out.push('[');
                out.push_str(&index.to_string());
                out.push(']');
            }
            Step::Name(name) if is_identifier(name) => {
                out.push('.');
                out.push_str(name);
            }
            Step::Name(name) => {
                out.push('[');
                out.push_str(&serde_json::to_string(name).unwrap_or_else(|_| format!("{name:?}")));
                out.push(']');
            }
        }
    }
    out
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Walks a typed value the way `serde_json::to_value` does, for what `to_value` hides: non-finite
/// floats and a second member under one name. Map keys are read as `to_value` reads them.
#[derive(Default)]
struct Probe {
    path: Vec<Step<'static>>,
    frames: Vec<Frame>,
}

/// An open array (next index) or object (names so far, and a key waiting for its value).
enum Frame {
    Array(usize),
    Object {
        names: BTreeSet<String>,
        key: Option<String>,
    },
}

#[derive(Debug)]
struct ProbeError(CanonicalError);

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for ProbeError {}

impl serde::ser::Error for ProbeError {
    fn custom<T: fmt::Display>(message: T) -> Self {
        ProbeError(CanonicalError::Serialize(message.to_string()))
    }
}

type Probed = Result<(), ProbeError>;

impl Probe {
    fn finite(&self, finite: bool) -> Probed {
        if finite {
            Ok(())
        } else {
            Err(ProbeError(CanonicalError::NonFiniteNumber {
                path: render_path(&self.path),
            }))
        }
    }

    fn open_object(&mut self) {
        self.frames.push(Frame::Object {
            names: BTreeSet::new(),
            key: None,
        });
    }

    fn open_array(&mut self) {
        self.frames.push(Frame::Array(0));
    }

    fn close(&mut self) {
        self.frames.pop();
    }

    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Probed {
        let index = match self.frames.last_mut() {
            Some(Frame::Array(next)) => {
                *next += 1;
                *next - 1
            }
            _ => 0,
        };
        self.path.push(Step::Index(index));
        value.serialize(&mut *self)?;
        self.path.pop();
        Ok(())
    }

    fn member<T: Serialize + ?Sized>(&mut self, name: Cow<'static, str>, value: &T) -> Probed {
        let fresh = match self.frames.last_mut() {
            Some(Frame::Object { names, .. }) => names.insert(name.clone().into_owned()),
            _ => true,
        };
        self.path.push(Step::Name(name));
        if !fresh {
            return Err(ProbeError(CanonicalError::DuplicateName {
                path: render_path(&self.path),
            }));
        }
        value.serialize(&mut *self)?;
        self.path.pop();
        Ok(())
    }

    /// A single-member object `{variant: ...}`, as `serde_json` writes enum variants with data.
    fn enter_variant(&mut self, variant: &'static str) {
        self.path.push(Step::Name(Cow::Borrowed(variant)));
    }

    fn leave_variant(&mut self) {
        self.frames.pop();
        self.path.pop();
    }
}

/// A map key as `serde_json::to_value` turns it into a member name.
fn key_name<K: Serialize + ?Sized>(key: &K) -> String {
    match key.serialize(serde_json::value::Serializer) {
        Ok(Value::String(name)) => name,
        Ok(other) => other.to_string(),
        Err(error) => error.to_string(),
    }
}

impl Serializer for &mut Probe {
    type Ok = ();
    type Error = ProbeError;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    fn serialize_bool(self, _: bool) -> Probed {
        Ok(())
    }
    fn serialize_i8(self, _: i8) -> Probed {
        Ok(())
    }
    fn serialize_i16(self, _: i16) -> Probed {
        Ok(())
    }
    fn serialize_i32(self, _: i32) -> Probed {
        Ok(())
    }
    fn serialize_i64(self, _: i64) -> Probed {
        Ok(())
    }
    fn serialize_i128(self, _: i128) -> Probed {
        Ok(())
    }
    fn serialize_u8(self, _: u8) -> Probed {
        Ok(())
    }
    fn serialize_u16(self, _: u16) -> Probed {
        Ok(())
    }
    fn serialize_u32(self, _: u32) -> Probed {
        Ok(())
    }
    fn serialize_u64(self, _: u64) -> Probed {
        Ok(())
    }
    fn serialize_u128(self, _: u128) -> Probed {
        Ok(())
    }
    fn serialize_f32(self, value: f32) -> Probed {
        self.finite(value.is_finite())
    }
    fn serialize_f64(self, value: f64) -> Probed {
        self.finite(value.is_finite())
    }
    fn serialize_char(self, _: char) -> Probed {
        Ok(())
    }
    fn serialize_str(self, _: &str) -> Probed {
        Ok(())
    }
    fn serialize_bytes(self, _: &[u8]) -> Probed {
        Ok(())
    }
    fn serialize_none(self) -> Probed {
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Probed {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Probed {
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Probed {
        Ok(())
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> Probed {
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, value: &T) -> Probed {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        value: &T,
    ) -> Probed {
        self.enter_variant(variant);
        value.serialize(&mut *self)?;
        self.path.pop();
        Ok(())
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self, ProbeError> {
        self.open_array();
        Ok(self)
    }
    fn serialize_tuple(self, _: usize) -> Result<Self, ProbeError> {
        self.open_array();
        Ok(self)
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self, ProbeError> {
        self.open_array();
        Ok(self)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Self, ProbeError> {
        self.enter_variant(variant);
        self.open_array();
        Ok(self)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self, ProbeError> {
        self.open_object();
        Ok(self)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, ProbeError> {
        self.open_object();
        Ok(self)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Self, ProbeError> {
        self.enter_variant(variant);
        self.open_object();
        Ok(self)
    }
}

impl SerializeSeq for &mut Probe {
    type Ok = ();
    type Error = ProbeError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Probed {
        self.element(value)
    }
    fn end(self) -> Probed {
        self.close();
        Ok(())
    }
}

impl SerializeTuple for &mut Probe {
    type Ok = ();
    type Error = ProbeError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Probed {
        self.element(value)
    }
    fn end(self) -> Probed {
        self.close();
        Ok(())
    }
}

impl SerializeTupleStruct for &mut Probe {
    type Ok = ();
    type Error = ProbeError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Probed {
        self.element(value)
    }
    fn end(self) -> Probed {
        self.close();
        Ok(())
    }
}

impl SerializeTupleVariant for &mut Probe {
    type Ok = ();
    type Error = ProbeError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Probed {
        self.element(value)
    }
    fn end(self) -> Probed {
        self.leave_variant();
        Ok(())
    }
}

impl SerializeMap for &mut Probe {
    type Ok = ();
    type Error = ProbeError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Probed {
        let name = key_name(key);
        if let Some(Frame::Object { key, .. }) = self.frames.last_mut() {
            *key = Some(name);
        }
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Probed {
        let name = match self.frames.last_mut() {
            Some(Frame::Object { key, .. }) => key.take().unwrap_or_default(),
            _ => String::new(),
        };
        self.member(Cow::Owned(name), value)
    }
    fn end(self) -> Probed {
        self.close();
        Ok(())
    }
}

impl SerializeStruct for &mut Probe {
    type Ok = ();
    type Error = ProbeError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, name: &'static str, value: &T) -> Probed {
        self.member(Cow::Borrowed(name), value)
    }
    fn end(self) -> Probed {
        self.close();
        Ok(())
    }
}

impl SerializeStructVariant for &mut Probe {
    type Ok = ();
    type Error = ProbeError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, name: &'static str, value: &T) -> Probed {
        self.member(Cow::Borrowed(name), value)
    }
    fn end(self) -> Probed {
        self.leave_variant();
        Ok(())
    }
}

fn serialize_error(error: impl fmt::Display) -> CanonicalError {
    CanonicalError::Serialize(error.to_string())
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use serde_json::{Map, json};

    use super::*;

    // ---------------------------------------------------------------------------------------
    // RFC 8785 reference vectors: testdata/rfc8785/{input,output}, copied byte for byte from
    // github.com/cyberphone/json-canonicalization `testdata/` (see testdata/rfc8785/README.md).
    // ---------------------------------------------------------------------------------------

    fn canonical_text(bytes: &[u8]) -> String {
        String::from_utf8_lossy(bytes).into_owned()
    }

    /// Parses `input`, canonicalizes it and compares with `expected` byte for byte; then checks
    /// that the canonical form is a fixed point (parse + canonicalize gives the same bytes).
    fn assert_vector(name: &str, input: &[u8], expected: &[u8]) {
        let value: Value = serde_json::from_slice(input).expect("vector input parses");
        let actual = to_canonical_vec(&value).expect("vector canonicalizes");
        assert_eq!(canonical_text(&actual), canonical_text(expected), "{name}");
        assert_eq!(actual, expected, "{name}: bytes");
        let reparsed: Value = serde_json::from_slice(&actual).expect("canonical output parses");
        assert_eq!(
            to_canonical_vec(&reparsed).expect("fixed point"),
            actual,
            "{name}: fixed point"
        );
    }

    macro_rules! rfc8785_file_vector {
        ($test:ident, $name:literal) => {
            #[test]
            fn $test() {
                let input = include_bytes!(concat!("../testdata/rfc8785/input/", $name, ".json"));
                let expected =
                    include_bytes!(concat!("../testdata/rfc8785/output/", $name, ".json"));
                assert_ne!(
                    expected.last(),
                    Some(&b'\n'),
                    "output files end without a newline"
                );
                assert_vector($name, input, expected);
            }
        };
    }

    rfc8785_file_vector!(rfc8785_vector_arrays, "arrays");
    rfc8785_file_vector!(rfc8785_vector_french, "french");
    rfc8785_file_vector!(rfc8785_vector_structures, "structures");
    rfc8785_file_vector!(rfc8785_vector_unicode, "unicode");
    rfc8785_file_vector!(rfc8785_vector_values, "values");
    rfc8785_file_vector!(rfc8785_vector_weird, "weird");
    rfc8785_file_vector!(rfc8785_vector_simple_string, "simpleString");

    /// The same vectors as later revised on the reference repository (`weird` gains `\n` and
    /// `\r` names, `structures` an `e`/`E` pair, `unicode` becomes `A` + U+030A). Those revisions
    /// were not available to us as files; they are taken from other implementations' test suites
    /// that quote them verbatim (a C++ `fc` library's `json_to_jcs` test, among others).
    #[test]
    fn rfc8785_vectors_latest_revision() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "arrays",
                "[\n  56,\n  {\n    \"d\": true,\n    \"10\": null,\n    \"1\": [ ]\n  }\n]",
                r#"[56,{"1":[],"10":null,"d":true}]"#,
            ),
            (
                "french",
                "{\n  \"peach\": \"This sorting order\",\n  \"p\u{e9}ch\u{e9}\": \"is wrong according to French\",\n  \"p\u{ea}che\": \"but canonicalization MUST\",\n  \"sin\":   \"ignore locale\"\n}",
                "{\"peach\":\"This sorting order\",\"p\u{e9}ch\u{e9}\":\"is wrong according to French\",\"p\u{ea}che\":\"but canonicalization MUST\",\"sin\":\"ignore locale\"}",
            ),
            (
                "structures",
                "{\n  \"1\": {\"f\": {\"f\": \"hi\",\"F\": 5} ,\"\\n\": 56.0},\n  \"10\": { },\n  \"\": \"empty\",\n  \"a\": { },\n  \"111\": [ {\"e\": \"yes\",\"E\": \"no\" } ],\n  \"A\": { }\n}",
                r#"{"":"empty","1":{"\n":56,"f":{"F":5,"f":"hi"}},"10":{},"111":[{"E":"no","e":"yes"}],"A":{},"a":{}}"#,
            ),
            (
                "unicode",
                "{\n  \"Unnormalized Unicode\":\"A\\u030a\"\n}",
                "{\"Unnormalized Unicode\":\"A\u{30a}\"}",
            ),
            (
                "values",
                r#"{
  "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
  "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
  "literals": [null, true, false]
}"#,
                "{\"literals\":[null,true,false],\"numbers\":[333333333.3333333,1e+30,4.5,0.002,1e-27],\"string\":\"\u{20ac}$\\u000f\\nA'B\\\"\\\\\\\\\\\"/\"}",
            ),
            (
                "weird",
                r#"{
  "\u20ac": "Euro Sign",
  "\r": "Carriage Return",
  "\u000a": "Newline",
  "1": "One",
  "\u0080": "Control\u007f",
  "\ud83d\ude02": "Smiley",
  "\u00f6": "Latin Small Letter O With Diaeresis",
  "\ufb33": "Hebrew Letter Dalet With Dagesh",
  "</script>": "Browser Challenge"
}"#,
                "{\"\\n\":\"Newline\",\"\\r\":\"Carriage Return\",\"1\":\"One\",\"</script>\":\"Browser Challenge\",\"\u{80}\":\"Control\u{7f}\",\"\u{f6}\":\"Latin Small Letter O With Diaeresis\",\"\u{20ac}\":\"Euro Sign\",\"\u{1f602}\":\"Smiley\",\"\u{fb33}\":\"Hebrew Letter Dalet With Dagesh\"}",
            ),
        ];
        for (name, input, expected) in cases {
            assert_vector(name, input.as_bytes(), expected.as_bytes());
        }
    }

    /// RFC 8785 section 3.2.2 (input), 3.2.3 (sorted output) and 3.2.4 (its UTF-8 bytes).
    #[test]
    fn rfc8785_text_example_and_its_utf8_bytes() {
        let input = r#"{
  "numbers": [333333333.33333329, 1E30, 4.50,
              2e-3, 0.000000000000000000000000001],
  "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
  "literals": [null, true, false]
}"#;
        let hex = "7b 22 6c 69 74 65 72 61 6c 73 22 3a 5b 6e 75 6c 6c 2c 74 72 \
                   75 65 2c 66 61 6c 73 65 5d 2c 22 6e 75 6d 62 65 72 73 22 3a \
                   5b 33 33 33 33 33 33 33 33 33 2e 33 33 33 33 33 33 33 2c 31 \
                   65 2b 33 30 2c 34 2e 35 2c 30 2e 30 30 32 2c 31 65 2d 32 37 \
                   5d 2c 22 73 74 72 69 6e 67 22 3a 22 e2 82 ac 24 5c 75 30 30 \
                   30 66 5c 6e 41 27 42 5c 22 5c 5c 5c 5c 5c 22 2f 22 7d";
        let expected: Vec<u8> = hex
            .split_whitespace()
            .map(|byte| u8::from_str_radix(byte, 16).expect("hex byte"))
            .collect();
        assert_vector("rfc8785 section 3.2.4", input.as_bytes(), &expected);
    }

    /// RFC 8785 section 3.2.3, the sorting example.
    #[test]
    fn rfc8785_text_sorting_example() {
        let input = r#"{
  "\u20ac": "Euro Sign",
  "\r": "Carriage Return",
  "\ufb33": "Hebrew Letter Dalet With Dagesh",
  "1": "One",
  "\ud83d\ude00": "Emoji: Grinning Face",
  "\u0080": "Control",
  "\u00f6": "Latin Small Letter O With Diaeresis"
}"#;
        let expected = "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u{80}\":\"Control\",\"\u{f6}\":\"Latin Small Letter O With Diaeresis\",\"\u{20ac}\":\"Euro Sign\",\"\u{1f600}\":\"Emoji: Grinning Face\",\"\u{fb33}\":\"Hebrew Letter Dalet With Dagesh\"}";
        assert_vector(
            "rfc8785 section 3.2.3",
            input.as_bytes(),
            expected.as_bytes(),
        );
    }

    // ---------------------------------------------------------------------------------------
    // Numbers: RFC 8785 Appendix B, every finite row (IEEE-754 bits -> expected text).
    // ---------------------------------------------------------------------------------------

    const APPENDIX_B: &[(u64, &str)] = &[
        (0x0000_0000_0000_0000, "0"),
        (0x8000_0000_0000_0000, "0"),
        (0x0000_0000_0000_0001, "5e-324"),
        (0x8000_0000_0000_0001, "-5e-324"),
        (0x7fef_ffff_ffff_ffff, "1.7976931348623157e+308"),
        (0xffef_ffff_ffff_ffff, "-1.7976931348623157e+308"),
        (0x4340_0000_0000_0000, "9007199254740992"),
        (0xc340_0000_0000_0000, "-9007199254740992"),
        (0x4430_0000_0000_0000, "295147905179352830000"),
        (0x44b5_2d02_c7e1_4af5, "9.999999999999997e+22"),
        (0x44b5_2d02_c7e1_4af6, "1e+23"),
        (0x44b5_2d02_c7e1_4af7, "1.0000000000000001e+23"),
        (0x444b_1ae4_d6e2_ef4e, "999999999999999700000"),
        (0x444b_1ae4_d6e2_ef4f, "999999999999999900000"),
        (0x444b_1ae4_d6e2_ef50, "1e+21"),
        (0x3eb0_c6f7_a0b5_ed8c, "9.999999999999997e-7"),
        (0x3eb0_c6f7_a0b5_ed8d, "0.000001"),
        (0x41b3_de43_5555_5553, "333333333.3333332"),
        (0x41b3_de43_5555_5554, "333333333.33333325"),
        (0x41b3_de43_5555_5555, "333333333.3333333"),
        (0x41b3_de43_5555_5556, "333333333.3333334"),
        (0x41b3_de43_5555_5557, "333333333.33333343"),
        (0xbecb_f647_612f_3696, "-0.0000033333333333333333"),
        (0x4314_3ff3_c1cb_0959, "1424953923781206.2"),
    ];

    /// Sample lines of the reference repository's ES6 number test file, quoted in its
    /// `testdata/README.md` (`hex-ieee,expected`).
    const ES6_TESTFILE_SAMPLES: &[(u64, &str)] = &[
        (0x4340_0000_0000_0001, "9007199254740994"),
        (0x4340_0000_0000_0002, "9007199254740996"),
        (0x444b_1ae4_d6e2_ef50, "1e+21"),
        (0x3eb0_c6f7_a0b5_ed8d, "0.000001"),
        (0x3eb0_c6f7_a0b5_ed8c, "9.999999999999997e-7"),
        (0x8000_0000_0000_0000, "0"),
        (0x0, "0"),
    ];

    /// Written by JCS as an integer literal beyond ±(2^53−1), so refused by `check_ijson`.
    fn is_unsafe_integer_literal(text: &str) -> bool {
        let digits = text.strip_prefix('-').unwrap_or(text);
        digits.bytes().all(|b| b.is_ascii_digit())
            && digits
                .parse::<u128>()
                .is_ok_and(|n| n > u128::from(MAX_SAFE_INTEGER))
    }

    fn assert_number_rows(rows: &[(u64, &str)]) {
        for &(bits, expected) in rows {
            let double = f64::from_bits(bits);
            // The formatting itself, as the backend writes it.
            let written = serde_json_canonicalizer::to_string(&double).expect("finite");
            assert_eq!(written, expected, "{bits:016x}");
            // Through the public API: the same text, unless I-JSON refuses it.
            let value = Value::from(double);
            let result = to_canonical_string(&value);
            if is_unsafe_integer_literal(expected) {
                assert_eq!(
                    result,
                    Err(CanonicalError::IntegerOutOfRange {
                        path: "$".into(),
                        value: expected.into()
                    }),
                    "{bits:016x}"
                );
            } else {
                assert_eq!(result.as_deref(), Ok(expected), "{bits:016x}");
                let in_array = to_canonical_string(&json!([double, { "n": double }]));
                assert_eq!(in_array, Ok(format!("[{expected},{{\"n\":{expected}}}]")));
            }
        }
    }

    #[test]
    fn rfc8785_appendix_b_numbers() {
        assert_number_rows(APPENDIX_B);
    }

    #[test]
    fn es6_testfile_sample_numbers() {
        assert_number_rows(ES6_TESTFILE_SAMPLES);
    }

    /// Appendix B's NaN (7fffffffffffffff) and Infinity (7ff0000000000000) rows have no JSON form.
    #[test]
    fn appendix_b_nan_and_infinity_are_refused() {
        for bits in [
            0x7fff_ffff_ffff_ffff_u64,
            0x7ff0_0000_0000_0000,
            0xfff0_0000_0000_0000,
        ] {
            let double = f64::from_bits(bits);
            assert!(
                Number::from_f64(double).is_none(),
                "a Value cannot hold {double}"
            );
            assert_eq!(canonicalize(&double), non_finite("$"));
            assert_eq!(canonicalize(&[1.0, double]), non_finite("$[1]"));
            assert!(matches!(check_double(double), Err(NumberIssue::NonFinite)));
        }
    }

    #[test]
    fn numbers_in_ecmascript_form() {
        let cases: &[(Value, &str)] = &[
            (json!(-0.0), "0"),
            (json!(0), "0"),
            (json!(-1), "-1"),
            (json!(56.0), "56"),
            (json!(4.50), "4.5"),
            (json!(1e21), "1e+21"),
            (json!(1e-6), "0.000001"),
            (json!(1e-7), "1e-7"),
            (json!(1e30), "1e+30"),
            (json!(-1.5e300), "-1.5e+300"),
            (json!(0.1), "0.1"),
            (json!(9007199254740991_u64), "9007199254740991"),
            (json!(-9007199254740991_i64), "-9007199254740991"),
            (json!(9007199254740991.0), "9007199254740991"),
        ];
        for (value, expected) in cases {
            assert_eq!(
                to_canonical_string(value).as_deref(),
                Ok(*expected),
                "{value}"
            );
        }
        // "123456789012345678901" is parsed by serde_json as the double 1.2345678901234568e20,
        // which JCS writes as 123456789012345680000 ...
        let parsed: Value = serde_json::from_str("123456789012345678901").expect("parses");
        assert_eq!(
            serde_json_canonicalizer::to_string(&parsed).ok().as_deref(),
            Some("123456789012345680000")
        );
        assert_eq!(
            serde_json_canonicalizer::to_string(&json!(1.2345678901234568e20))
                .ok()
                .as_deref(),
            Some("123456789012345680000")
        );
        // ... an integer literal beyond 2^53 − 1, so the ledger refuses it rather than hash a
        // rounded integer.
        // (The value names the double's text, or the literal's exact digits if
        // `serde_json/arbitrary_precision` is on.)
        assert!(matches!(
            to_canonical_vec(&parsed),
            Err(CanonicalError::IntegerOutOfRange { path, value })
                if path == "$" && value.starts_with("1234567890123456")
        ));
    }

    /// Canonical text read back with serde_json gives the same double, hence the same bytes: the
    /// property a hash chain verified from storage or an export relies on (`float_roundtrip`).
    #[test]
    fn floats_survive_a_round_trip_through_canonical_text() {
        for text in [
            "1.5777777777770001",
            "122.41629403378658",
            "0.30000000000000004",
            "5e-324",
        ] {
            let value: Value = serde_json::from_str(text).expect("parses");
            assert_eq!(to_canonical_string(&value).as_deref(), Ok(text));
            let double = value.as_f64().expect("a double");
            let again: Value =
                serde_json::from_slice(&to_canonical_vec(&json!(double)).expect("canonical"))
                    .expect("parses back");
            assert_eq!(
                again.as_f64().map(f64::to_bits),
                Some(double.to_bits()),
                "{text}"
            );
        }
    }

    // ---------------------------------------------------------------------------------------
    // Strings and names.
    // ---------------------------------------------------------------------------------------

    #[test]
    fn names_sort_by_utf16_code_units() {
        // U+1F600 is the surrogate pair d83d de00, below U+E000, though its UTF-8 bytes (f0 ..)
        // and its code point sort above.
        let value = json!({ "\u{e000}": 1, "\u{1f600}": 2 });
        assert_eq!(
            to_canonical_string(&value).as_deref(),
            Ok("{\"\u{1f600}\":2,\"\u{e000}\":1}")
        );
        let value = json!({ "\u{fffd}": 1, "\u{10000}": 2, "\u{ff}": 3, "z": 4, "": 5 });
        assert_eq!(
            to_canonical_string(&value).as_deref(),
            Ok("{\"\":5,\"z\":4,\"\u{ff}\":3,\"\u{10000}\":2,\"\u{fffd}\":1}")
        );
        // A prefix sorts first; comparison is by code unit, not by locale or case.
        let value = json!({ "ab": 1, "a": 2, "B": 3, "b": 4, "aa": 5 });
        assert_eq!(
            to_canonical_string(&value).as_deref(),
            Ok(r#"{"B":3,"a":2,"aa":5,"ab":1,"b":4}"#)
        );
    }

    #[test]
    fn strings_are_escaped_as_rfc8785_section_3_2_2_2() {
        for code in 0_u32..0x20 {
            let c = char::from_u32(code).expect("a control character");
            let expected = match c {
                '\u{8}' => "\"\\b\"".to_owned(),
                '\t' => "\"\\t\"".to_owned(),
                '\n' => "\"\\n\"".to_owned(),
                '\u{c}' => "\"\\f\"".to_owned(),
                '\r' => "\"\\r\"".to_owned(),
                _ => format!("\"\\u{code:04x}\""),
            };
            let value = Value::String(c.to_string());
            assert_eq!(to_canonical_string(&value), Ok(expected), "U+{code:04X}");
        }
        assert_eq!(
            to_canonical_string(&json!("\u{1f}")).as_deref(),
            Ok(r#""\u001f""#)
        );
        // Written as is: DEL, C1 controls, U+2028/U+2029, the solidus, non-ASCII.
        let raw = "\u{7f}\u{80}\u{9f}\u{2028}\u{2029}/<>&'\u{e9}\u{20ac}\u{1f600}";
        assert_eq!(to_canonical_string(&json!(raw)), Ok(format!("\"{raw}\"")));
        assert_eq!(
            to_canonical_string(&json!("\"\\")).as_deref(),
            Ok(r#""\"\\""#)
        );
        // Names are escaped like any other string.
        assert_eq!(
            to_canonical_string(&json!({ "a\u{1}\"b": "\u{2028}" })).as_deref(),
            Ok("{\"a\\u0001\\\"b\":\"\u{2028}\"}")
        );
        // Escapes in the input are decoded, then re-encoded canonically.
        let parsed: Value = serde_json::from_str(r#""\u00e9\/\u001F\u2028""#).expect("parses");
        assert_eq!(
            to_canonical_string(&parsed).as_deref(),
            Ok("\"\u{e9}/\\u001f\u{2028}\"")
        );
    }

    // ---------------------------------------------------------------------------------------
    // Structure and determinism.
    // ---------------------------------------------------------------------------------------

    #[test]
    fn nested_arrays_and_objects() {
        let value = json!({
            "b": [{ "z": 1, "a": [{ "d": 0, "c": [] }, [], [[{}]]] }, null],
            "a": { "y": {}, "x": [true, false, "s", 1.5] },
        });
        assert_eq!(
            to_canonical_string(&value).as_deref(),
            Ok(
                r#"{"a":{"x":[true,false,"s",1.5],"y":{}},"b":[{"a":[{"c":[],"d":0},[],[[{}]]],"z":1},null]}"#
            )
        );
        assert_eq!(to_canonical_string(&json!([])).as_deref(), Ok("[]"));
        assert_eq!(to_canonical_string(&json!({})).as_deref(), Ok("{}"));
        assert_eq!(to_canonical_string(&json!(null)).as_deref(), Ok("null"));
        assert_eq!(to_canonical_string(&json!(true)).as_deref(), Ok("true"));
        assert_eq!(to_canonical_string(&json!("x")).as_deref(), Ok(r#""x""#));
    }

    #[test]
    fn insertion_order_does_not_change_the_bytes() {
        let entries = [
            ("zeta", json!(1)),
            ("alpha", json!({ "y": [1, 2], "x": null })),
            ("\u{1f600}", json!("smile")),
            ("\u{e000}", json!(0.5)),
            ("Mid", json!([{ "b": 1, "a": 2 }])),
        ];
        let forward: Map<String, Value> = entries
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        let backward: Map<String, Value> = entries
            .iter()
            .rev()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        let a = to_canonical_vec(&Value::Object(forward)).expect("canonical");
        let b = to_canonical_vec(&Value::Object(backward)).expect("canonical");
        assert_eq!(a, b);

        // The same object spelled two ways in JSON text.
        let one: Value =
            serde_json::from_str(r#"{"b": 4.50, "a": [1, {"d": 1e1, "c": "x"}]}"#).expect("json");
        let two: Value =
            serde_json::from_str(r#"{ "a":[1,{"c":"x","d":10}],"b":4.5 }"#).expect("json");
        assert_eq!(to_canonical_vec(&one), to_canonical_vec(&two));
        assert_eq!(
            to_canonical_string(&one).as_deref(),
            Ok(r#"{"a":[1,{"c":"x","d":10}],"b":4.5}"#)
        );

        // A HashMap (random iteration order) and a BTreeMap through `canonicalize`.
        let hashed: HashMap<String, u32> = (0..64).map(|i| (format!("key{i}"), i)).collect();
        let ordered: BTreeMap<String, u32> =
            (0..64).rev().map(|i| (format!("key{i}"), i)).collect();
        assert_eq!(canonicalize(&hashed), canonicalize(&ordered));
    }

    #[test]
    fn canonicalize_serializes_typed_values() {
        #[derive(Serialize)]
        struct Item {
            n: u64,
            label: &'static str,
        }
        #[derive(Serialize)]
        struct Payload {
            zulu: Option<f64>,
            items: Vec<Item>,
            alpha: i32,
        }
        let payload = Payload {
            zulu: None,
            items: vec![Item { n: 3, label: "c" }, Item { n: 1, label: "a" }],
            alpha: -7,
        };
        let expected =
            r#"{"alpha":-7,"items":[{"label":"c","n":3},{"label":"a","n":1}],"zulu":null}"#;
        assert_eq!(
            canonicalize(&payload)
                .map(|b| canonical_text(&b))
                .as_deref(),
            Ok(expected)
        );
        // The same as canonicalizing its Value.
        let tree = serde_json::to_value(&payload).expect("to_value");
        assert_eq!(canonicalize(&payload), to_canonical_vec(&tree));
        // Unsized values work too.
        let slice: &[i32] = &[3, 1, 2];
        assert_eq!(canonicalize(slice), Ok(b"[3,1,2]".to_vec()));
        assert_eq!(canonicalize("text"), Ok(br#""text""#.to_vec()));
    }

    fn non_finite(path: &str) -> Result<Vec<u8>, CanonicalError> {
        Err(CanonicalError::NonFiniteNumber { path: path.into() })
    }

    #[test]
    fn canonicalize_refuses_non_finite_floats_that_to_value_would_write_as_null() {
        #[derive(Serialize)]
        struct Reading {
            value: f64,
        }
        assert_eq!(
            serde_json::to_value(Reading { value: f64::NAN }).ok(),
            Some(json!({ "value": null }))
        );
        assert_eq!(
            canonicalize(&Reading { value: f64::NAN }),
            non_finite("$.value")
        );
        assert_eq!(
            canonicalize(&Reading {
                value: f64::NEG_INFINITY
            }),
            non_finite("$.value")
        );

        #[derive(Serialize)]
        enum Shape {
            Point(f64),
            Pair(f64, f64),
            Box { low: f32, high: f32 },
        }
        assert_eq!(canonicalize(&Shape::Point(f64::NAN)), non_finite("$.Point"));
        assert_eq!(
            canonicalize(&[Shape::Pair(0.0, f64::INFINITY)]),
            non_finite("$[0].Pair[1]")
        );
        assert_eq!(
            canonicalize(&Shape::Box {
                low: 0.0,
                high: f32::NAN
            }),
            non_finite("$.Box.high")
        );
        assert_eq!(
            canonicalize(&Shape::Box {
                low: 0.5,
                high: 1.5
            }),
            Ok(br#"{"Box":{"high":1.5,"low":0.5}}"#.to_vec())
        );

        let mut readings: BTreeMap<String, Vec<Option<f64>>> = BTreeMap::new();
        readings.insert("ok".into(), vec![Some(1.0), None]);
        readings.insert("a b".into(), vec![None, Some(f64::NAN)]);
        assert_eq!(canonicalize(&readings), non_finite(r#"$["a b"][1]"#));
        let mut by_number: BTreeMap<u32, (f64, f64)> = BTreeMap::new();
        by_number.insert(7, (1.0, f64::NAN));
        assert_eq!(canonicalize(&by_number), non_finite(r#"$["7"][1]"#));
    }

    #[test]
    fn canonicalize_refuses_two_members_under_one_name() {
        #[derive(Serialize)]
        struct Inner {
            id: u32,
        }
        #[derive(Serialize)]
        struct Flattened {
            id: u32,
            #[serde(flatten)]
            inner: Inner,
        }
        let clash = Flattened {
            id: 1,
            inner: Inner { id: 2 },
        };
        // to_value keeps one of them silently.
        assert_eq!(
            serde_json::to_value(&clash).ok().map(|v| v["id"].clone()),
            Some(json!(2))
        );
        assert_eq!(
            canonicalize(&clash),
            Err(CanonicalError::DuplicateName {
                path: "$.id".into()
            })
        );

        #[derive(Serialize)]
        struct Renamed {
            a: u32,
            #[serde(rename = "a")]
            other: u32,
        }
        assert_eq!(
            canonicalize(&vec![Renamed { a: 1, other: 2 }]),
            Err(CanonicalError::DuplicateName {
                path: "$[0].a".into()
            })
        );

        // One name per object: the same name in sibling or nested objects is fine.
        #[derive(Serialize)]
        struct Nested {
            id: u32,
            child: Inner,
            siblings: Vec<Inner>,
        }
        let nested = Nested {
            id: 1,
            child: Inner { id: 2 },
            siblings: vec![Inner { id: 3 }, Inner { id: 4 }],
        };
        assert_eq!(
            canonicalize(&nested).map(|b| canonical_text(&b)).as_deref(),
            Ok(r#"{"child":{"id":2},"id":1,"siblings":[{"id":3},{"id":4}]}"#)
        );
    }

    #[test]
    fn canonicalize_reports_other_serialization_failures() {
        // Keys that are not strings, numbers or bools.
        let mut by_pair = BTreeMap::new();
        by_pair.insert((1, 2), "x");
        assert!(matches!(
            canonicalize(&by_pair),
            Err(CanonicalError::Serialize(_))
        ));

        // A failing Serialize implementation.
        struct Broken;
        impl Serialize for Broken {
            fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                Err(serde::ser::Error::custom("broken on purpose"))
            }
        }
        assert_eq!(
            canonicalize(&[Broken]),
            Err(CanonicalError::Serialize("broken on purpose".into()))
        );

        // Big integers name their path in a typed value as well.
        #[derive(Serialize)]
        struct Counter {
            total: u64,
        }
        assert_eq!(
            canonicalize(&Counter { total: u64::MAX }),
            Err(CanonicalError::IntegerOutOfRange {
                path: "$.total".into(),
                value: "18446744073709551615".into()
            })
        );
    }

    // ---------------------------------------------------------------------------------------
    // I-JSON.
    // ---------------------------------------------------------------------------------------

    fn out_of_range(path: &str, value: &str) -> Result<(), CanonicalError> {
        Err(CanonicalError::IntegerOutOfRange {
            path: path.into(),
            value: value.into(),
        })
    }

    #[test]
    fn ijson_integer_bounds() {
        let max = MAX_SAFE_INTEGER;
        assert_eq!(MAX_SAFE_DOUBLE.to_bits(), (max as f64).to_bits());
        assert_eq!(check_ijson(&json!(max)), Ok(()));
        assert_eq!(check_ijson(&json!(-(max as i64))), Ok(()));
        assert_eq!(
            check_ijson(&json!(max + 1)),
            out_of_range("$", "9007199254740992")
        );
        assert_eq!(
            check_ijson(&json!(-(max as i64) - 1)),
            out_of_range("$", "-9007199254740992")
        );
        assert_eq!(
            check_ijson(&json!(u64::MAX)),
            out_of_range("$", "18446744073709551615")
        );
        assert_eq!(
            check_ijson(&json!(i64::MIN)),
            out_of_range("$", "-9223372036854775808")
        );
        assert_eq!(
            check_ijson(&json!(i64::MAX)),
            out_of_range("$", "9223372036854775807")
        );
    }

    #[test]
    fn ijson_refuses_an_integer_that_would_be_rounded() {
        // Parsed exactly as a u64, and refused with its exact digits, not the rounded double.
        let value: Value = serde_json::from_str(r#"{"n": 9007199254740993}"#).expect("parses");
        assert_eq!(value["n"].as_u64(), Some(9_007_199_254_740_993));
        assert_eq!(check_ijson(&value), out_of_range("$.n", "9007199254740993"));
        assert_eq!(
            to_canonical_vec(&value),
            Err(CanonicalError::IntegerOutOfRange {
                path: "$.n".into(),
                value: "9007199254740993".into()
            })
        );
        // The same number spelled as a float is parsed to the double 2^53 ...
        let spelled: Value = serde_json::from_str("[9007199254740993.0]").expect("parses");
        assert_eq!(
            check_ijson(&spelled),
            out_of_range("$[0]", "9007199254740992")
        );
        // ... and a negative one.
        assert_eq!(
            check_ijson(&json!([-1e16])),
            out_of_range("$[0]", "-10000000000000000")
        );
        // Doubles JCS writes in exponent form are not integer literals and pass.
        assert_eq!(
            check_ijson(&json!([1e21, -1e21, 1e30, 1.7976931348623157e308])),
            Ok(())
        );
        // Below 2^53 a double may be integral or not.
        assert_eq!(
            check_ijson(&json!([9007199254740991.0, 4503599627370495.5, 0.1])),
            Ok(())
        );
    }

    #[test]
    fn ijson_names_the_path_of_the_first_offender() {
        let value = json!({
            "payload": {
                "items": [{ "n": 1 }, { "n": 2 }, { "n": 3 }, { "n": 9007199254740993_u64 }],
                "later": 18446744073709551615_u64,
            },
            "z": 9007199254740992_u64,
        });
        assert_eq!(
            check_ijson(&value),
            out_of_range("$.payload.items[3].n", "9007199254740993")
        );
        assert_eq!(
            to_canonical_vec(&value),
            Err(CanonicalError::IntegerOutOfRange {
                path: "$.payload.items[3].n".into(),
                value: "9007199254740993".into()
            })
        );

        let value = json!({ "a b": [[0, { "x-y": -9007199254740992_i64 }]] });
        assert_eq!(
            check_ijson(&value),
            out_of_range(r#"$["a b"][0][1]["x-y"]"#, "-9007199254740992")
        );
        let value = json!({ "": { "\"q\"": 1e19, "_ok1": 1 } });
        assert_eq!(
            check_ijson(&value),
            out_of_range(r#"$[""]["\"q\""]"#, "10000000000000000000")
        );
        let value = json!({ "_ok1": { "a1": [1, 2, 1e19] } });
        assert_eq!(
            check_ijson(&value),
            out_of_range("$._ok1.a1[2]", "10000000000000000000")
        );
    }

    #[test]
    fn ijson_accepts_ordinary_values() {
        let value = json!({
            "s": "text \u{1f600}",
            "n": [0, -0.0, 1, -1, 0.5, 1e-300, 9007199254740991_u64, -9007199254740991_i64],
            "b": [true, false, null],
            "o": { "nested": [[[]]] },
        });
        assert_eq!(check_ijson(&value), Ok(()));
    }

    fn nested_arrays(levels: usize) -> Value {
        let mut value = json!([]);
        for _ in 1..levels {
            value = Value::Array(vec![value]);
        }
        value
    }

    #[test]
    fn ijson_bounds_the_depth() {
        // The deepest value serde_json parses back by default is accepted ...
        let text = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        let parsed: Value = serde_json::from_str(&text).expect("serde_json parses 127 levels");
        assert_eq!(to_canonical_string(&parsed), Ok(text));
        assert_eq!(check_ijson(&nested_arrays(MAX_DEPTH)), Ok(()));
        // ... one level more is refused, naming the container that is too deep.
        let deeper = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert!(serde_json::from_str::<Value>(&deeper).is_err());
        let expected_path = format!("${}", "[0]".repeat(MAX_DEPTH));
        assert_eq!(
            check_ijson(&nested_arrays(MAX_DEPTH + 1)),
            Err(CanonicalError::TooDeep {
                path: expected_path,
                max: MAX_DEPTH
            })
        );
        let mut object = json!({});
        for _ in 0..MAX_DEPTH {
            object = json!({ "k": object });
        }
        assert!(matches!(
            to_canonical_vec(&object),
            Err(CanonicalError::TooDeep { .. })
        ));
        // Far too deep: refused without recursing through it.
        assert!(matches!(
            check_ijson(&nested_arrays(1_000)),
            Err(CanonicalError::TooDeep { .. })
        ));
    }

    #[test]
    fn to_canonical_string_matches_to_canonical_vec() {
        let value = json!({ "b": "\u{e9}", "a": [1.25, null] });
        let bytes = to_canonical_vec(&value).expect("canonical");
        assert_eq!(
            to_canonical_string(&value).map(String::into_bytes),
            Ok(bytes)
        );
    }

    #[test]
    fn errors_read_well() {
        let error = CanonicalError::IntegerOutOfRange {
            path: "$.payload.items[3].n".into(),
            value: "9007199254740993".into(),
        };
        assert_eq!(
            error.to_string(),
            "integer 9007199254740993 at $.payload.items[3].n is outside the I-JSON range \
             ±(2^53−1); carry it as a string"
        );
        let error = CanonicalError::TooDeep {
            path: "$[0]".into(),
            max: MAX_DEPTH,
        };
        assert_eq!(
            error.to_string(),
            "value at $[0] is nested more than 127 levels deep"
        );
    }
}
