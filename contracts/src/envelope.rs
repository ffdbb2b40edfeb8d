//! The envelope every stored event travels in, and the hash chain over it.
//!
//! `hash = blake3(prev_hash || canonical_json(chain body))`, where the chain body is the event as
//! exported minus `kind` and `hash`: every field an auditor sees is covered, and nothing that
//! depends on where the event is stored (its global position) is. That is what lets `verify`
//! recompute a chain from an export alone.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::canonical::{self, CanonicalError};
use crate::digest::Digest;
use crate::events::DomainEvent;
use crate::ids::{CausationId, CorrelationId, EventId, RequestId, StreamId};
use crate::time::Timestamp;

/// Where an event sits in the ledger's global, commit-safe order.
///
/// `commit` orders by the writing transaction (PostgreSQL's `xid8`) and `global` by insertion;
/// catch-up readers order and checkpoint by both, so an event whose transaction commits late is
/// never skipped.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Position {
    pub commit: u64,
    pub global: u64,
}

impl Position {
    /// Before the first event.
    pub const START: Position = Position {
        commit: 0,
        global: 0,
    };
}

/// An event to append. The store adds ids, versions, timestamps and hashes.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub event_type: String,
    pub schema_version: u32,
    pub payload: Value,
    /// Blobs this event refers to; each must be stored with the append or before it.
    pub blob_refs: Vec<Digest>,
}

impl NewEvent {
    pub fn from_domain(event: &DomainEvent) -> Result<Self, serde_json::Error> {
        Ok(Self {
            event_type: event.event_type().as_str().to_owned(),
            schema_version: event.schema_version(),
            payload: event.to_payload()?,
            blob_refs: event.blob_refs(),
        })
    }
}

/// An event as the ledger holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedEvent {
    pub event_id: EventId,
    pub stream_id: StreamId,
    /// 1 for the first event of a stream, with no gaps.
    pub stream_version: u64,
    pub position: Position,
    pub event_type: String,
    pub schema_version: u32,
    pub request_id: RequestId,
    pub correlation_id: CorrelationId,
    pub causation_id: Option<CausationId>,
    pub recorded_at: Timestamp,
    pub payload: Value,
    pub blob_refs: Vec<Digest>,
    pub prev_hash: Digest,
    pub hash: Digest,
}

/// The fields an event's hash covers, borrowed from wherever they live.
pub struct ChainBody<'a> {
    pub event_id: EventId,
    pub stream_id: &'a StreamId,
    pub stream_version: u64,
    pub event_type: &'a str,
    pub schema_version: u32,
    pub request_id: &'a RequestId,
    pub correlation_id: &'a CorrelationId,
    pub causation_id: Option<&'a CausationId>,
    pub recorded_at: Timestamp,
    pub payload: &'a Value,
    pub blob_refs: &'a [Digest],
    pub prev_hash: Digest,
}

impl ChainBody<'_> {
    /// The body as a JSON object: the export line minus `kind` and `hash`.
    pub fn to_object(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("event_id".into(), Value::String(self.event_id.to_string()));
        m.insert(
            "stream_id".into(),
            Value::String(self.stream_id.to_string()),
        );
        m.insert("stream_version".into(), Value::from(self.stream_version));
        m.insert(
            "event_type".into(),
            Value::String(self.event_type.to_owned()),
        );
        m.insert("schema_version".into(), Value::from(self.schema_version));
        m.insert(
            "request_id".into(),
            Value::String(self.request_id.to_string()),
        );
        m.insert(
            "correlation_id".into(),
            Value::String(self.correlation_id.to_string()),
        );
        m.insert(
            "causation_id".into(),
            self.causation_id
                .map_or(Value::Null, |c| Value::String(c.to_string())),
        );
        m.insert(
            "recorded_at".into(),
            Value::String(self.recorded_at.to_string()),
        );
        m.insert("payload".into(), self.payload.clone());
        m.insert(
            "blob_refs".into(),
            Value::Array(
                self.blob_refs
                    .iter()
                    .map(|d| Value::String(d.to_hex()))
                    .collect(),
            ),
        );
        m.insert("prev_hash".into(), Value::String(self.prev_hash.to_hex()));
        m
    }

    pub fn hash(&self) -> Result<Digest, CanonicalError> {
        chain_hash(&self.prev_hash, &self.to_object())
    }

    /// The same hash as [`ChainBody::hash`], given the payload's canonical bytes, without
    /// canonicalizing the payload again. The append path uses this: it already holds those
    /// bytes (they are what it stores), and re-canonicalizing every payload per append costs
    /// more than the rest of the envelope. A test holds the two paths byte-equal.
    pub fn hash_with_canonical_payload(&self, payload: &[u8]) -> Digest {
        Digest::chained(&self.prev_hash, &self.canonical_bytes_with(payload))
    }

    /// RFC 8785 bytes of the body. Keys are written in sorted order (all ASCII, so UTF-16 order
    /// is byte order) and `payload` is spliced in as given.
    pub fn canonical_bytes_with(&self, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(payload.len() + 512);
        out.extend_from_slice(b"{\"blob_refs\":[");
        for (i, d) in self.blob_refs.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.push(b'"');
            out.extend_from_slice(d.to_hex().as_bytes());
            out.push(b'"');
        }
        out.extend_from_slice(b"],\"causation_id\":");
        match self.causation_id {
            Some(c) => write_json_string(&mut out, c.as_str()),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"correlation_id\":");
        write_json_string(&mut out, self.correlation_id.as_str());
        out.extend_from_slice(b",\"event_id\":");
        write_json_string(&mut out, &self.event_id.to_string());
        out.extend_from_slice(b",\"event_type\":");
        write_json_string(&mut out, self.event_type);
        out.extend_from_slice(b",\"payload\":");
        out.extend_from_slice(payload);
        out.extend_from_slice(b",\"prev_hash\":\"");
        out.extend_from_slice(self.prev_hash.to_hex().as_bytes());
        out.extend_from_slice(b"\",\"recorded_at\":");
        write_json_string(&mut out, &self.recorded_at.to_string());
        out.extend_from_slice(b",\"request_id\":");
        write_json_string(&mut out, self.request_id.as_str());
        out.extend_from_slice(b",\"schema_version\":");
        out.extend_from_slice(self.schema_version.to_string().as_bytes());
        out.extend_from_slice(b",\"stream_id\":");
        write_json_string(&mut out, self.stream_id.as_str());
        out.extend_from_slice(b",\"stream_version\":");
        out.extend_from_slice(self.stream_version.to_string().as_bytes());
        out.push(b'}');
        out
    }
}

/// A JSON string as RFC 8785 writes it (ECMAScript `JSON.stringify`): `"` and `\` escaped,
/// the five short escapes, other control characters as lowercase `\u00xx`, everything else
/// as UTF-8. The payload writer's own function: it copies each run of plain bytes at once,
/// where a character at a time cost more than the rest of the envelope.
fn write_json_string(out: &mut Vec<u8>, s: &str) {
    crate::canonical_write::write_string(out, s);
}

/// `blake3(prev || canonical_json(body))`.
pub fn chain_hash(prev: &Digest, body: &Map<String, Value>) -> Result<Digest, CanonicalError> {
    let bytes = canonical::canonicalize(body)?;
    Ok(Digest::chained(prev, &bytes))
}

impl RecordedEvent {
    pub fn chain_body(&self) -> ChainBody<'_> {
        ChainBody {
            event_id: self.event_id,
            stream_id: &self.stream_id,
            stream_version: self.stream_version,
            event_type: &self.event_type,
            schema_version: self.schema_version,
            request_id: &self.request_id,
            correlation_id: &self.correlation_id,
            causation_id: self.causation_id.as_ref(),
            recorded_at: self.recorded_at,
            payload: &self.payload,
            blob_refs: &self.blob_refs,
            prev_hash: self.prev_hash,
        }
    }

    /// The event's line in an export: the chain body plus `kind` and `hash`.
    pub fn export_object(&self) -> Map<String, Value> {
        let mut m = self.chain_body().to_object();
        m.insert("kind".into(), Value::String("event".into()));
        m.insert("hash".into(), Value::String(self.hash.to_hex()));
        m
    }

    /// Decodes the payload into the current catalog type.
    pub fn decode(&self) -> Result<DomainEvent, crate::events::DecodeError> {
        DomainEvent::decode(&self.event_type, self.schema_version, self.payload.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RecordedEvent {
        let mut e = RecordedEvent {
            event_id: EventId::new_v7(),
            stream_id: StreamId::new("run-x").unwrap(),
            stream_version: 1,
            position: Position {
                commit: 7,
                global: 3,
            },
            event_type: "RunCanceled".into(),
            schema_version: 1,
            request_id: RequestId::new("r1").unwrap(),
            correlation_id: CorrelationId::new("c1").unwrap(),
            causation_id: None,
            recorded_at: Timestamp::now(),
            payload: serde_json::json!({"b": 1, "a": [true, null]}),
            blob_refs: vec![],
            prev_hash: Digest::GENESIS,
            hash: Digest::GENESIS,
        };
        e.hash = e.chain_body().hash().unwrap();
        e
    }

    #[test]
    fn hash_covers_every_exported_field_but_not_position() {
        let e = sample();
        let mut moved = e.clone();
        moved.position = Position {
            commit: 99,
            global: 99,
        };
        assert_eq!(moved.chain_body().hash().unwrap(), e.hash);

        let mut line = e.export_object();
        line.remove("kind");
        line.remove("hash");
        assert_eq!(chain_hash(&e.prev_hash, &line).unwrap(), e.hash);

        for field in ["event_type", "request_id", "correlation_id", "recorded_at"] {
            let mut changed = line.clone();
            changed.insert(field.into(), Value::String("other".into()));
            assert_ne!(
                chain_hash(&e.prev_hash, &changed).unwrap(),
                e.hash,
                "{field}"
            );
        }
        let mut payload = e.clone();
        payload.payload["b"] = Value::from(2);
        assert_ne!(payload.chain_body().hash().unwrap(), e.hash);
    }

    #[test]
    fn spliced_canonical_bytes_equal_the_generic_path() {
        let mut e = sample();
        let tricky = [
            "plain",
            "quote\"back\\slash",
            "tab\tnl\ncr\rbs\u{8}ff\u{c}",
            "ctl\u{1}\u{1f}",
            "ünï€😀\u{2028}",
        ];
        for (i, text) in tricky.iter().enumerate() {
            e.event_type = (*text).to_owned();
            e.payload = serde_json::json!({"z": text, "a": [1, 2.5, -0.0, 1e21], "m": {"\u{e000}": 1, "\u{1f600}": 2}});
            e.blob_refs = vec![Digest::of(text.as_bytes()); i % 3];
            e.causation_id = (i % 2 == 0).then(|| CausationId::new("cause\"x\\").unwrap());
            e.request_id = RequestId::new(format!("r{i}\"\\")).unwrap();
            let payload = canonical::to_canonical_vec(&e.payload).unwrap();
            let generic = canonical::canonicalize(&e.chain_body().to_object()).unwrap();
            assert_eq!(
                String::from_utf8(e.chain_body().canonical_bytes_with(&payload)).unwrap(),
                String::from_utf8(generic).unwrap(),
                "case {i}"
            );
            assert_eq!(
                e.chain_body().hash_with_canonical_payload(&payload),
                e.chain_body().hash().unwrap()
            );
        }
    }

    #[test]
    fn hash_depends_on_prev_hash() {
        let e = sample();
        let mut other = e.clone();
        other.prev_hash = Digest::of(b"x");
        assert_ne!(other.chain_body().hash().unwrap(), e.hash);
    }
}
