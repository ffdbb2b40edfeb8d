//! Writing a `serde_json::Value` in RFC 8785 form straight into a buffer.
//!
//! The same bytes `serde_json_canonicalizer` writes (a test holds them equal on arbitrary
//! values), without its per-member copies: it serializes every member to a scratch buffer and
//! builds a UTF-16 sort key for every name, where this walks the value once and sorts only an
//! object whose names are not already in UTF-16 order (a `serde_json::Map` iterates in byte
//! order, which is UTF-16 order unless names mix characters at or above U+E000 with
//! characters beyond U+FFFF). Callers check [`crate::canonical::check_ijson`] first.

use std::cmp::Ordering;

use serde_json::{Map, Number, Value};

/// Appends the canonical form of `value` to `out`. `value` must pass `check_ijson` (so every
/// number is finite and every integer is within ±(2^53−1)).
pub(crate) fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(number) => write_number(out, number),
        Value::String(text) => write_string(out, text),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item);
            }
            out.push(b']');
        }
        Value::Object(members) => write_object(out, members),
    }
}

fn write_object(out: &mut Vec<u8>, members: &Map<String, Value>) {
    out.push(b'{');
    let in_order = members
        .keys()
        .zip(members.keys().skip(1))
        .all(|(a, b)| utf16_cmp(a, b) == Ordering::Less);
    if in_order {
        for (i, (name, value)) in members.iter().enumerate() {
            write_member(out, i, name, value);
        }
    } else {
        let mut sorted: Vec<(&String, &Value)> = members.iter().collect();
        sorted.sort_by(|a, b| utf16_cmp(a.0, b.0));
        for (i, (name, value)) in sorted.into_iter().enumerate() {
            write_member(out, i, name, value);
        }
    }
    out.push(b'}');
}

fn write_member(out: &mut Vec<u8>, index: usize, name: &str, value: &Value) {
    if index > 0 {
        out.push(b',');
    }
    write_string(out, name);
    out.push(b':');
    write_value(out, value);
}

/// Names compared as UTF-16 code units (RFC 8785 section 3.2.3).
fn utf16_cmp(a: &str, b: &str) -> Ordering {
    if a.is_ascii() && b.is_ascii() {
        a.as_bytes().cmp(b.as_bytes())
    } else {
        a.encode_utf16().cmp(b.encode_utf16())
    }
}

/// Every number as ECMAScript writes the double it denotes. Integers within ±(2^53−1) are
/// exact doubles whose shortest form is their decimal digits.
fn write_number(out: &mut Vec<u8>, number: &Number) {
    if let Some(unsigned) = number.as_u64() {
        write_integer(out, unsigned, false);
    } else if let Some(signed) = number.as_i64() {
        write_integer(out, signed.unsigned_abs(), signed < 0);
    } else if let Some(double) = number.as_f64() {
        match serde_json_canonicalizer::to_vec(&double) {
            Ok(text) => out.extend_from_slice(&text),
            // Not reached for a value that passed `check_ijson` (finite numbers only).
            Err(_) => out.extend_from_slice(b"null"),
        }
    }
}

fn write_integer(out: &mut Vec<u8>, mut magnitude: u64, negative: bool) {
    if negative {
        out.push(b'-');
    }
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (magnitude % 10) as u8;
        magnitude /= 10;
        if magnitude == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// A string as RFC 8785 writes it (ECMAScript `JSON.stringify`): `"` and `\` escaped, the five
/// short escapes, other control characters as lower-case `\u00xx`, everything else as UTF-8.
pub(crate) fn write_string(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    let bytes = text.as_bytes();
    let mut plain = 0;
    for (i, &byte) in bytes.iter().enumerate() {
        let escape: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x0c => b"\\f",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[plain..i]);
        plain = i + 1;
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(byte >> 4)],
                HEX[usize::from(byte & 0xf)],
            ]);
        } else {
            out.extend_from_slice(escape);
        }
    }
    out.extend_from_slice(&bytes[plain..]);
    out.push(b'"');
}
