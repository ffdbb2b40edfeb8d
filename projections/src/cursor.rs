//! Opaque pagination cursors: the sort key of the last item of a page, so the next page starts
//! strictly after it (keyset pagination: stable under concurrent inserts, no OFFSET scans).
//! Clients must not build or read them; the encoding may change.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::QueryError;

/// Default page size when the caller gives none.
pub const DEFAULT_LIMIT: u32 = 50;
/// Largest page a caller may ask for.
pub const MAX_LIMIT: u32 = 500;

pub(crate) fn limit(requested: Option<u32>) -> Result<u32, QueryError> {
    match requested {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(n) => Err(QueryError::InvalidLimit {
            limit: n,
            max: MAX_LIMIT,
        }),
    }
}

/// `kind` tells cursors of different lists apart, so one list's cursor is refused by another.
pub(crate) fn encode(kind: &str, parts: &[String]) -> String {
    URL_SAFE_NO_PAD.encode(format!("{kind}1|{}", parts.join("|")))
}

pub(crate) fn decode(kind: &str, cursor: &str, parts: usize) -> Result<Vec<String>, QueryError> {
    let invalid = || QueryError::InvalidCursor {
        cursor: cursor.chars().take(80).collect(),
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(cursor.as_bytes())
        .map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let mut fields = text.split('|');
    if fields.next() != Some(&format!("{kind}1")) {
        return Err(invalid());
    }
    let values: Vec<String> = fields.map(str::to_owned).collect();
    if values.len() != parts {
        return Err(invalid());
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_other_kinds_and_garbage() {
        let c = encode("a", &["42".into()]);
        assert_eq!(decode("a", &c, 1).unwrap(), ["42"]);
        assert!(matches!(
            decode("r", &c, 1),
            Err(QueryError::InvalidCursor { .. })
        ));
        assert!(matches!(
            decode("a", &c, 2),
            Err(QueryError::InvalidCursor { .. })
        ));
        assert!(matches!(
            decode("a", "%%%", 1),
            Err(QueryError::InvalidCursor { .. })
        ));
        assert!(matches!(
            limit(Some(0)),
            Err(QueryError::InvalidLimit { .. })
        ));
        assert!(matches!(
            limit(Some(MAX_LIMIT + 1)),
            Err(QueryError::InvalidLimit { .. })
        ));
        assert_eq!(limit(None).unwrap(), DEFAULT_LIMIT);
    }
}
