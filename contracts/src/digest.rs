//! blake3 digests: the event hash chain and content addresses of blobs.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A blake3 digest, written as 64 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest([u8; 32]);

impl Digest {
    /// The `prev_hash` of the first event of every stream.
    pub const GENESIS: Digest = Digest([0; 32]);

    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }

    /// `blake3(prev || body)`: the hash of one link of a chain.
    pub fn chained(prev: &Digest, body: &[u8]) -> Self {
        let mut hasher = blake3::Hasher::new();
        hasher.update(&prev.0);
        hasher.update(body);
        Self(*hasher.finalize().as_bytes())
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(bytes).ok().map(Self)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Exactly 64 lowercase hex characters. Verify and the export reader call this several
    /// times per event, so it decodes through a table in one pass (no validation pass first).
    pub fn parse_hex(text: &str) -> Result<Self, DigestError> {
        let invalid = || DigestError {
            value: text.chars().take(80).collect(),
        };
        let Ok(pairs) = <&[u8; 64]>::try_from(text.as_bytes()) else {
            return Err(invalid());
        };
        let mut out = [0u8; 32];
        // OR of every nibble's table entry: INVALID_NIBBLE's high bit marks a bad character.
        let mut bad = 0u8;
        for (byte, pair) in out.iter_mut().zip(pairs.chunks_exact(2)) {
            let high = HEX_NIBBLE[usize::from(pair[0])];
            let low = HEX_NIBBLE[usize::from(pair[1])];
            bad |= high | low;
            *byte = (high << 4) | (low & 0x0f);
        }
        if bad & INVALID_NIBBLE != 0 {
            return Err(invalid());
        }
        Ok(Self(out))
    }

    pub fn to_hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }
}

/// Marks a byte that is not a lowercase hex digit in [`HEX_NIBBLE`].
const INVALID_NIBBLE: u8 = 0x80;

/// The value of each lowercase hex digit; [`INVALID_NIBBLE`] for every other byte (uppercase
/// included: digests are written in lowercase only).
const HEX_NIBBLE: [u8; 256] = {
    let mut table = [INVALID_NIBBLE; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not a digest: expected 64 lowercase hex characters")]
pub struct DigestError {
    value: String,
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.to_hex())
    }
}

impl Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Digest::parse_hex(&text).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Digest {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Digest".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^[0-9a-f]{64}$",
            "description": "blake3 digest, lowercase hex"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_blake3_vector() {
        // blake3("") from the reference implementation's test vectors.
        assert_eq!(
            Digest::of(b"").to_hex(),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
    }

    #[test]
    fn chaining_depends_on_prev() {
        let a = Digest::chained(&Digest::GENESIS, b"x");
        let b = Digest::chained(&Digest::of(b"other"), b"x");
        assert_ne!(a, b);
        let mut both = vec![0u8; 32];
        both.extend_from_slice(b"x");
        assert_eq!(a, Digest::of(&both));
    }

    #[test]
    fn hex_round_trip_and_rejects() {
        let d = Digest::of(b"abc");
        assert_eq!(Digest::parse_hex(&d.to_hex()).unwrap(), d);
        assert!(Digest::parse_hex("ABC").is_err());
        assert!(Digest::parse_hex(&d.to_hex().to_uppercase()).is_err());
        assert!(serde_json::from_str::<Digest>("\"zz\"").is_err());
    }

    #[test]
    fn hex_parse_rejects_every_non_lowercase_hex_byte_at_every_position() {
        let hex = Digest::of(b"abc").to_hex();
        for at in [0, 1, 31, 62, 63] {
            for byte in 0..=255u8 {
                let valid = byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte);
                let mut text = hex.clone().into_bytes();
                text[at] = byte;
                // Non-ASCII bytes would not make a `str`; they are never hex.
                let Ok(text) = String::from_utf8(text) else {
                    continue;
                };
                assert_eq!(Digest::parse_hex(&text).is_ok(), valid, "{byte:#x} at {at}");
            }
        }
        assert!(Digest::parse_hex(&hex[..63]).is_err());
        assert!(Digest::parse_hex(&format!("{hex}0")).is_err());
        assert!(Digest::parse_hex("").is_err());
        // Every nibble value decodes to itself, in both positions of a byte.
        let all: String = "0123456789abcdef".repeat(4);
        let parsed = Digest::parse_hex(&all).unwrap();
        assert_eq!(parsed.to_hex(), all);
    }
}
