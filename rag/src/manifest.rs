//! The manifest of an index run: every file the sources held, by key `<source>/<path>`, with
//! its content digest. It is stored as a blob (canonical JSON) and named by
//! `RagIndexCompleted.manifest`, so the ledger alone says which exact bytes an index version
//! was built from, and a delta compares the sources against it.

use std::collections::BTreeMap;

use runledger_contracts::canonical;
use runledger_contracts::digest::Digest;
use serde::{Deserialize, Serialize};

/// Media type of manifest blobs.
pub const MEDIA_TYPE: &str = "application/vnd.runledger.rag-manifest+json";

/// One file as indexed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// blake3 of the file's bytes, hex.
    pub digest: String,
    pub bytes: u64,
    /// Modification time when read (`<secs>.<nanos>`): a delta re-reads a file only when its
    /// size or this changed, and then re-indexes it only when the digest changed.
    pub mtime: String,
    /// Chunks the file gave (0 when skipped).
    pub chunks: u64,
    /// Why the file is not in the search index (binary, not text, too large).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub files: BTreeMap<String, FileEntry>,
}

impl Manifest {
    /// The blob bytes: canonical JSON, so the same files always give the same digest.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| canonical::to_canonical_vec(&v).ok())
            .unwrap_or_default()
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<Manifest> {
        serde_json::from_slice(bytes).ok()
    }

    pub fn digest(&self) -> Digest {
        Digest::of(&self.to_bytes())
    }

    pub fn chunks(&self) -> u64 {
        self.files.values().map(|f| f.chunks).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip_and_digest_is_stable() {
        let mut m = Manifest::default();
        m.files.insert(
            "docs/a.md".into(),
            FileEntry {
                digest: "ab".into(),
                bytes: 3,
                mtime: "1.2".into(),
                chunks: 1,
                skipped: None,
            },
        );
        let bytes = m.to_bytes();
        assert_eq!(Manifest::from_bytes(&bytes), Some(m.clone()));
        assert_eq!(m.digest(), Digest::of(&bytes));
        assert!(
            std::str::from_utf8(&bytes)
                .unwrap()
                .starts_with("{\"files\":{\"docs/a.md\"")
        );
    }
}
