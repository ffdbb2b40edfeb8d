//! Can the ledger store this JSON? The one check that the ledger, the engine, the API and the
//! CLI share, so that content is refused where it enters (a model's answer, a tool result, an
//! operator's skip output, run inputs, a flowchart document) with the same words the ledger
//! would use, instead of being refused later by an append that can never succeed.
//!
//! A value is storable when
//! - it is I-JSON ([`canonical::check_ijson`]): its hash must not depend on who reads it;
//! - no string and no member name holds U+0000: PostgreSQL's `jsonb` refuses that character
//!   (a Rust `String` cannot hold a lone surrogate, the other thing `jsonb` refuses);
//! - its canonical form fits in [`MAX_PAYLOAD_BYTES`], the most one event keeps inline.

use std::borrow::Cow;

use serde_json::Value;

use crate::canonical::{self, CanonicalError, Step, render_path};

/// Largest payload kept inline in an event; bigger content belongs in a blob.
pub const MAX_PAYLOAD_BYTES: usize = 4 << 20;

/// Why the ledger cannot store a value. The message names the JSON path of the first offending
/// part, so a user can find it in what they sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnstorableError {
    #[error("{path} contains U+0000, which the ledger cannot store")]
    Nul { path: String },
    #[error(transparent)]
    NotIJson(#[from] CanonicalError),
    #[error(
        "{size} bytes of canonical JSON, more than the {max} one event may hold; keep large content in a blob"
    )]
    TooLarge { size: usize, max: usize },
}

/// Checks that the ledger can store `value`, size aside ([`storable_bytes`] checks that too).
/// U+0000 is looked for first, then the I-JSON rules, each reported at its first occurrence in
/// document order.
///
/// # Errors
///
/// [`UnstorableError::Nul`] or [`UnstorableError::NotIJson`].
pub fn check_storable(value: &Value) -> Result<(), UnstorableError> {
    let mut path = Vec::new();
    if find_nul(value, &mut path) {
        return Err(UnstorableError::Nul {
            path: render_path(&path),
        });
    }
    canonical::check_ijson(value)?;
    Ok(())
}

/// The canonical bytes the ledger would store for `value`, after every check of
/// [`check_storable`] and the size limit.
///
/// # Errors
///
/// What [`check_storable`] refuses, and [`UnstorableError::TooLarge`].
pub fn storable_bytes(value: &Value) -> Result<Vec<u8>, UnstorableError> {
    check_storable(value)?;
    let bytes = canonical::to_canonical_vec(value)?;
    check_size(bytes.len())?;
    Ok(bytes)
}

/// Refuses a canonical size above [`MAX_PAYLOAD_BYTES`].
///
/// # Errors
///
/// [`UnstorableError::TooLarge`].
pub fn check_size(size: usize) -> Result<(), UnstorableError> {
    if size > MAX_PAYLOAD_BYTES {
        Err(UnstorableError::TooLarge {
            size,
            max: MAX_PAYLOAD_BYTES,
        })
    } else {
        Ok(())
    }
}

/// Leaves in `path` the location of the first string or name holding U+0000 (a name is
/// reported as its member's path). Iterative, so a deep value cannot exhaust the stack before
/// the I-JSON depth check refuses it.
fn find_nul<'a>(value: &'a Value, path: &mut Vec<Step<'a>>) -> bool {
    enum Frame<'a> {
        Array(std::iter::Enumerate<std::slice::Iter<'a, Value>>),
        Object(serde_json::map::Iter<'a>),
    }
    fn open<'a>(value: &'a Value) -> Option<Frame<'a>> {
        match value {
            Value::Array(items) => Some(Frame::Array(items.iter().enumerate())),
            Value::Object(members) => Some(Frame::Object(members.iter())),
            _ => None,
        }
    }
    if let Value::String(s) = value {
        return s.contains('\0');
    }
    let mut stack: Vec<Frame<'a>> = open(value).into_iter().collect();
    while let Some(frame) = stack.last_mut() {
        let next = match frame {
            Frame::Array(items) => items.next().map(|(i, v)| (Step::Index(i), v, false)),
            Frame::Object(members) => members
                .next()
                .map(|(k, v)| (Step::Name(Cow::Borrowed(k.as_str())), v, k.contains('\0'))),
        };
        let Some((step, child, bad_name)) = next else {
            stack.pop();
            path.pop();
            continue;
        };
        path.push(step);
        if bad_name || matches!(child, Value::String(s) if s.contains('\0')) {
            return true;
        }
        match open(child) {
            Some(frame) => stack.push(frame),
            None => {
                path.pop();
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn nul_is_found_in_strings_and_names_with_its_path() {
        assert_eq!(
            check_storable(&json!("a\u{0}b")),
            Err(UnstorableError::Nul { path: "$".into() })
        );
        assert_eq!(
            check_storable(&json!({"a": [1, {"b c": "x\u{0}"}]})),
            Err(UnstorableError::Nul {
                path: "$.a[1][\"b c\"]".into()
            })
        );
        assert_eq!(
            check_storable(&json!({"ok": "fine", "k\u{0}": 1})),
            Err(UnstorableError::Nul {
                path: "$[\"k\\u0000\"]".into()
            })
        );
        assert_eq!(
            check_storable(&json!({"a": [[], {}, "\u{1}"], "b": null})),
            Ok(())
        );
        let err = check_storable(&json!({"text": "\u{0}"})).unwrap_err();
        assert_eq!(
            err.to_string(),
            "$.text contains U+0000, which the ledger cannot store"
        );
    }

    #[test]
    fn integers_beyond_ijson_are_refused_with_their_path() {
        let err = check_storable(&json!({"n": [9_007_199_254_740_992u64]})).unwrap_err();
        assert!(
            matches!(
                err,
                UnstorableError::NotIJson(CanonicalError::IntegerOutOfRange { .. })
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("$.n[0]"), "{err}");
        assert_eq!(
            check_storable(&json!({"n": 9_007_199_254_740_991u64})),
            Ok(())
        );
    }

    #[test]
    fn the_size_limit_counts_canonical_bytes() {
        let fits = json!("x".repeat(MAX_PAYLOAD_BYTES - 2));
        assert_eq!(
            storable_bytes(&fits).map(|b| b.len()),
            Ok(MAX_PAYLOAD_BYTES)
        );
        let over = json!("x".repeat(MAX_PAYLOAD_BYTES - 1));
        assert_eq!(
            storable_bytes(&over),
            Err(UnstorableError::TooLarge {
                size: MAX_PAYLOAD_BYTES + 1,
                max: MAX_PAYLOAD_BYTES
            })
        );
    }

    #[test]
    fn a_deep_value_is_refused_without_recursion() {
        let mut deep = json!("\u{0}");
        for _ in 0..1_000 {
            deep = json!([deep]);
        }
        let err = check_storable(&deep).unwrap_err();
        assert!(matches!(err, UnstorableError::Nul { .. }));
        let mut deep = json!(1);
        for _ in 0..1_000 {
            deep = json!([deep]);
        }
        let err = check_storable(&deep).unwrap_err();
        assert!(
            matches!(
                err,
                UnstorableError::NotIJson(CanonicalError::TooDeep { .. })
            ),
            "{err:?}"
        );
    }
}
