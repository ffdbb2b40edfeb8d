//! Offline verification of an export: needs the file and nothing else.
//!
//! Checks, in file order, and stops at the first problem: every line is canonical JSON; the
//! manifest comes first with a known format version; each stream's events have versions 1, 2, …
//! with no gaps; each event's `prev_hash` is the previous event's `hash` (the genesis hash for
//! version 1) and its `hash` recomputes; every blob's digest matches its data; every referenced
//! blob is present; the counts and head hashes match the manifest; streams appear one after
//! another in byte order of their ids; the file ends with a newline; and an optional last
//! signature line verifies over the manifest line (see [`crate::sign`]).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::BufRead;

use runledger_contracts::canonical;
use runledger_contracts::canonical_scan::{self, Member};
use runledger_contracts::digest::Digest;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::export::{
    BlobEntry, FORMAT_VERSION, StreamEntry, base64_decode, manifest as build_manifest,
};
use crate::sign::{self, SignatureProblem, VerifyingKey};

/// A verified export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    pub streams: usize,
    pub events: u64,
    pub blobs: usize,
    /// Head hash per stream, as recomputed.
    pub heads: BTreeMap<String, String>,
    /// Hex public key of the signature line, when the file is signed (and the signature holds).
    pub signed_by: Option<String>,
}

/// The first thing that does not check out, and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("line {line}{}: {message}", event.as_ref().map(|e| format!(" ({e})")).unwrap_or_default())]
pub struct VerifyError {
    /// 1-based line number in the file (0 when the problem is the file as a whole).
    pub line: u64,
    /// `stream_id#version event_type` when the line is an event that could be read.
    pub event: Option<String>,
    /// Stable code: `io`, `not_json`, `not_canonical`, `manifest`, `sequence`, `prev_hash`,
    /// `hash_mismatch`, `blob_mismatch`, `missing_blob`, `counts`, `signature`, `unsigned`,
    /// `signature_key`.
    pub code: &'static str,
    pub message: String,
}

fn fail(
    line: u64,
    event: Option<String>,
    code: &'static str,
    message: impl Into<String>,
) -> VerifyError {
    VerifyError {
        line,
        event,
        code,
        message: message.into(),
    }
}

struct StreamState {
    version: u64,
    head: Digest,
}

/// Verifies an export read from `reader`; a signature line, if present, must hold.
pub fn verify<R: BufRead>(reader: R) -> Result<VerifyReport, VerifyError> {
    verify_with_key(reader, None)
}

/// Verifies an export and, with `key`, requires it to be signed by that key.
pub fn verify_with_key<R: BufRead>(
    reader: R,
    key: Option<&VerifyingKey>,
) -> Result<VerifyReport, VerifyError> {
    verify_each(reader, key, |_| {})
}

/// One line that passed every check of its own, handed to the caller of [`verify_each`] as it
/// is verified (the file as a whole may still fail later).
pub(crate) enum Verified<'a> {
    /// An event line: its text and top-level members (see [`canonical_scan`]).
    Event {
        line: u64,
        text: &'a str,
        members: &'a [Member],
    },
    /// A blob line, its data decoded.
    Blob { media_type: String, data: Vec<u8> },
}

/// [`verify_with_key`], handing each verified event and blob to `seen` in file order, so a
/// reader of the file (replay, import) decodes from the same pass instead of reading it again.
pub(crate) fn verify_each<R: BufRead>(
    mut reader: R,
    key: Option<&VerifyingKey>,
    mut seen: impl FnMut(Verified<'_>),
) -> Result<VerifyReport, VerifyError> {
    let mut manifest: Option<Map<String, Value>> = None;
    let mut streams: BTreeMap<String, StreamState> = BTreeMap::new();
    let mut stream_order: Vec<String> = Vec::new();
    let mut referenced: BTreeSet<Digest> = BTreeSet::new();
    let mut blobs: Vec<BlobEntry> = Vec::new();
    let mut blob_index: HashMap<Digest, usize> = HashMap::new();
    let mut events = 0u64;
    let mut seen_blob = false;
    let mut line_no = 0u64;
    let mut manifest_line: Vec<u8> = Vec::new();
    let mut signed_by: Option<VerifyingKey> = None;
    let mut current_stream: Option<String> = None;
    // Reused for every line: the line, its members, and the bytes its hash covers.
    let mut bytes = Vec::new();
    let mut members: Vec<Member> = Vec::new();
    let mut body: Vec<u8> = Vec::new();

    loop {
        bytes.clear();
        let read = reader
            .read_until(b'\n', &mut bytes)
            .map_err(|e| fail(line_no + 1, None, "io", e.to_string()))?;
        if read == 0 {
            break;
        }
        line_no += 1;
        if bytes.pop() != Some(b'\n') {
            return Err(fail(
                line_no,
                None,
                "not_json",
                "the last line does not end with a newline (every line ends with \\n)",
            ));
        }
        if signed_by.is_some() {
            return Err(fail(
                line_no,
                None,
                "signature",
                "a line follows the signature, which must be the last line",
            ));
        }
        if bytes.is_empty() {
            return Err(fail(line_no, None, "not_json", "empty line"));
        }
        let text = match canonical_scan::scan_object(&bytes, &mut members) {
            Some(text) => text,
            None => check_canonical(&bytes, line_no, &mut members)?,
        };
        let line = Line {
            text,
            members: &members,
        };
        let kind = line.string("kind").unwrap_or_default();
        if kind == "event" && manifest.is_some() {
            let label = || line.describe();
            if seen_blob {
                return Err(fail(
                    line_no,
                    label(),
                    "sequence",
                    "event after the blob section",
                ));
            }
            let (Some(stream_id), Some(version)) =
                (line.string("stream_id"), line.unsigned("stream_version"))
            else {
                return Err(fail(
                    line_no,
                    label(),
                    "not_json",
                    "event without stream_id or stream_version",
                ));
            };
            let recorded = line.digest("hash").ok_or_else(|| {
                fail(
                    line_no,
                    label(),
                    "hash_mismatch",
                    "missing or malformed hash",
                )
            })?;
            let prev = line.digest("prev_hash").ok_or_else(|| {
                fail(
                    line_no,
                    label(),
                    "prev_hash",
                    "missing or malformed prev_hash",
                )
            })?;
            if current_stream.as_deref() != Some(&*stream_id) {
                if streams.contains_key(&*stream_id) {
                    return Err(fail(
                        line_no,
                        label(),
                        "sequence",
                        format!(
                            "stream `{stream_id}` resumes after another stream; each stream's events come together"
                        ),
                    ));
                }
                if current_stream
                    .as_ref()
                    .is_some_and(|previous| previous.as_bytes() >= stream_id.as_bytes())
                {
                    return Err(fail(
                        line_no,
                        label(),
                        "sequence",
                        format!(
                            "stream `{stream_id}` comes after `{}`; streams appear in byte order of their ids",
                            current_stream.as_deref().unwrap_or_default()
                        ),
                    ));
                }
                current_stream = Some(stream_id.to_string());
                stream_order.push(stream_id.to_string());
                streams.insert(
                    stream_id.to_string(),
                    StreamState {
                        version: 0,
                        head: Digest::GENESIS,
                    },
                );
            }
            let Some(state) = streams.get_mut(&*stream_id) else {
                return Err(fail(line_no, label(), "sequence", "stream state lost"));
            };
            if version != state.version + 1 {
                return Err(fail(
                    line_no,
                    label(),
                    "sequence",
                    format!(
                        "version {version} follows version {} of the same stream",
                        state.version
                    ),
                ));
            }
            if prev != state.head {
                return Err(fail(
                    line_no,
                    label(),
                    "prev_hash",
                    format!(
                        "prev_hash {prev} is not the hash of the event before it ({})",
                        state.head
                    ),
                ));
            }
            line.blob_refs(&mut referenced)
                .map_err(|()| fail(line_no, label(), "not_json", "malformed blob reference"))?;
            line.chain_body(&mut body);
            let computed = Digest::chained(&prev, &body);
            if computed != recorded {
                return Err(fail(
                    line_no,
                    label(),
                    "hash_mismatch",
                    format!("hash recomputes to {computed}, the file says {recorded}"),
                ));
            }
            state.version = version;
            state.head = computed;
            events += 1;
            seen(Verified::Event {
                line: line_no,
                text,
                members: &members,
            });
            continue;
        }
        // Manifest, blob and signature lines are few: they are read as JSON values.
        let kind = kind.into_owned();
        let object: Map<String, Value> = serde_json::from_str(text)
            .map_err(|e| fail(line_no, None, "not_json", format!("not valid JSON: {e}")))?;
        match (kind.as_str(), manifest.is_some()) {
            ("manifest", false) if line_no == 1 => {
                let version = object.get("format_version").and_then(Value::as_u64);
                if version != Some(FORMAT_VERSION) {
                    return Err(fail(
                        line_no,
                        None,
                        "manifest",
                        format!(
                            "format_version {} is not supported (this build reads {FORMAT_VERSION})",
                            version.map_or("missing".to_owned(), |v| v.to_string())
                        ),
                    ));
                }
                manifest_line = bytes.clone();
                manifest = Some(object);
            }
            (_, false) => {
                return Err(fail(
                    line_no,
                    None,
                    "manifest",
                    "the first line must be the manifest",
                ));
            }
            ("manifest", true) => return Err(fail(line_no, None, "manifest", "a second manifest")),
            ("blob", true) => {
                seen_blob = true;
                let keys: BTreeSet<&str> = object.keys().map(String::as_str).collect();
                if keys != BTreeSet::from(["data", "encoding", "hash", "kind", "media_type"]) {
                    return Err(fail(
                        line_no,
                        None,
                        "blob_mismatch",
                        "a blob line has exactly kind, hash, media_type, encoding and data",
                    ));
                }
                let hash = object
                    .get("hash")
                    .and_then(Value::as_str)
                    .and_then(|h| Digest::parse_hex(h).ok())
                    .ok_or_else(|| {
                        fail(line_no, None, "blob_mismatch", "blob without a valid hash")
                    })?;
                if object.get("encoding").and_then(Value::as_str) != Some("base64") {
                    return Err(fail(
                        line_no,
                        None,
                        "blob_mismatch",
                        format!("blob {hash}: encoding must be base64"),
                    ));
                }
                let media_type = object
                    .get("media_type")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let data = object
                    .get("data")
                    .and_then(Value::as_str)
                    .and_then(base64_decode)
                    .ok_or_else(|| {
                        fail(
                            line_no,
                            None,
                            "blob_mismatch",
                            format!("blob {hash}: data is not base64"),
                        )
                    })?;
                if Digest::of(&data) != hash {
                    return Err(fail(
                        line_no,
                        None,
                        "blob_mismatch",
                        format!("blob {hash}: data does not hash to its digest"),
                    ));
                }
                if blob_index.insert(hash, blobs.len()).is_some() {
                    return Err(fail(
                        line_no,
                        None,
                        "blob_mismatch",
                        format!("blob {hash} appears twice"),
                    ));
                }
                blobs.push(BlobEntry {
                    hash,
                    media_type: media_type.to_owned(),
                    size: data.len() as u64,
                });
                seen(Verified::Blob {
                    media_type: media_type.to_owned(),
                    data,
                });
            }
            ("signature", true) => {
                let public = sign::check_signature_line(&object, &manifest_line).map_err(|problem| match problem {
                    SignatureProblem::Malformed(message) => fail(line_no, None, "signature", message),
                    SignatureProblem::Invalid => fail(line_no, None, "signature", "the signature does not verify over the manifest line: the manifest (or the signature) was changed after signing"),
                })?;
                signed_by = Some(public);
            }
            (other, true) => {
                return Err(fail(
                    line_no,
                    None,
                    "not_json",
                    format!("unknown line kind `{other}`"),
                ));
            }
        }
    }

    let Some(manifest) = manifest else {
        return Err(fail(0, None, "manifest", "the file is empty"));
    };
    if let Some(missing) = referenced.iter().find(|d| !blob_index.contains_key(d)) {
        return Err(fail(
            0,
            None,
            "missing_blob",
            format!("blob {missing} is referenced but not in the file"),
        ));
    }
    let entries: Vec<StreamEntry> = stream_order
        .iter()
        .filter_map(|id| {
            streams.get(id).map(|s| StreamEntry {
                stream_id: id.clone(),
                events: s.version,
                head_hash: s.head,
            })
        })
        .collect();
    check_manifest(&manifest, &entries, &blobs)?;
    match (key, &signed_by) {
        (Some(_), None) => {
            return Err(fail(
                0,
                None,
                "unsigned",
                "the file has no signature line, and a key was given",
            ));
        }
        (Some(key), Some(signer)) if key != signer => {
            return Err(fail(
                line_no,
                None,
                "signature_key",
                format!(
                    "signed by key {}, not by the given key {}",
                    sign::hex(signer.as_bytes()),
                    sign::hex(key.as_bytes())
                ),
            ));
        }
        _ => {}
    }
    Ok(VerifyReport {
        streams: streams.len(),
        events,
        blobs: blobs.len(),
        heads: streams
            .into_iter()
            .map(|(id, s)| (id, s.head.to_hex()))
            .collect(),
        signed_by: signed_by.map(|k| sign::hex(k.as_bytes())),
    })
}

/// The full check for a line the scan could not prove canonical: parse it, canonicalize it,
/// compare. On success, returns the line as text with its members recorded.
fn check_canonical<'a>(
    bytes: &'a [u8],
    line_no: u64,
    members: &mut Vec<Member>,
) -> Result<&'a str, VerifyError> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| fail(line_no, None, "not_json", format!("not valid JSON: {e}")))?;
    let Value::Object(object) = value else {
        return Err(fail(
            line_no,
            None,
            "not_json",
            "a line must be a JSON object",
        ));
    };
    let canonical = canonical::canonicalize(&object)
        .map_err(|e| fail(line_no, None, "not_canonical", e.to_string()))?;
    if canonical != bytes {
        return Err(fail(
            line_no,
            describe(&object),
            "not_canonical",
            "line is not in RFC 8785 canonical form",
        ));
    }
    // Canonical bytes came from a string, so they are UTF-8, and split into members.
    match std::str::from_utf8(bytes) {
        Ok(text) if canonical_scan::split_members(text, members) => Ok(text),
        _ => Err(fail(
            line_no,
            None,
            "not_json",
            "a line must be a JSON object",
        )),
    }
}

/// The manifest must be exactly the one the verified content implies.
fn check_manifest(
    manifest: &Map<String, Value>,
    streams: &[StreamEntry],
    blobs: &[BlobEntry],
) -> Result<(), VerifyError> {
    let scope = manifest
        .get("scope")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let scope_ok = match scope.strip_prefix("stream:") {
        Some(id) => streams.len() == 1 && streams[0].stream_id == id,
        None => scope == "all",
    };
    if !scope_ok {
        return Err(fail(
            1,
            None,
            "manifest",
            format!("scope `{scope}` does not match the streams in the file"),
        ));
    }
    let expected = build_manifest(scope, streams, blobs);
    if &expected == manifest {
        return Ok(());
    }
    // Name the first field that differs, so the message says what is wrong.
    let field = expected
        .iter()
        .find(|(k, v)| manifest.get(*k) != Some(*v))
        .map(|(k, _)| k.clone())
        .or_else(|| {
            manifest
                .keys()
                .find(|k| !expected.contains_key(*k))
                .cloned()
        })
        .unwrap_or_default();
    Err(fail(
        1,
        None,
        "counts",
        format!(
            "the manifest's `{field}` does not match the file: expected {}, found {}",
            expected
                .get(&field)
                .map_or("nothing".to_owned(), Value::to_string),
            manifest
                .get(&field)
                .map_or("nothing".to_owned(), Value::to_string),
        ),
    ))
}

/// A canonical line read through its member spans, without parsing its values.
struct Line<'a> {
    text: &'a str,
    members: &'a [Member],
}

impl<'a> Line<'a> {
    fn raw(&self, name: &str) -> Option<&'a str> {
        canonical_scan::member(self.text, self.members, name)
    }

    /// A string member (as `Value::as_str` would give it).
    fn string(&self, name: &str) -> Option<Cow<'a, str>> {
        let raw = self.raw(name)?;
        let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
        if inner.contains('\\') {
            serde_json::from_str::<String>(raw).ok().map(Cow::Owned)
        } else {
            Some(Cow::Borrowed(inner))
        }
    }

    /// An unsigned integer member (as `Value::as_u64` would give it: canonical integers have
    /// no sign, fraction or exponent when they are unsigned).
    fn unsigned(&self, name: &str) -> Option<u64> {
        let raw = self.raw(name)?;
        if raw.bytes().all(|b| b.is_ascii_digit()) {
            raw.parse().ok()
        } else {
            None
        }
    }

    fn digest(&self, name: &str) -> Option<Digest> {
        Digest::parse_hex(&self.string(name)?).ok()
    }

    /// Adds the digests of `blob_refs` (when it is an array) to `into`; `Err` if one is not a
    /// digest string.
    fn blob_refs(&self, into: &mut BTreeSet<Digest>) -> Result<(), ()> {
        match self.raw("blob_refs") {
            Some("[]") | None => Ok(()),
            Some(raw) => match serde_json::from_str::<Value>(raw) {
                Ok(Value::Array(refs)) => {
                    for r in &refs {
                        let digest = r
                            .as_str()
                            .and_then(|h| Digest::parse_hex(h).ok())
                            .ok_or(())?;
                        into.insert(digest);
                    }
                    Ok(())
                }
                _ => Ok(()),
            },
        }
    }

    /// The bytes an event's hash covers: the line without its `hash` and `kind` members.
    /// Removing members from a canonical object leaves the canonical form of the rest.
    fn chain_body(&self, body: &mut Vec<u8>) {
        body.clear();
        body.push(b'{');
        let mut first = true;
        for member in self.members {
            let name = &self.text[member.name.clone()];
            if name == "hash" || name == "kind" {
                continue;
            }
            if !first {
                body.push(b',');
            }
            first = false;
            body.extend_from_slice(self.text[member.span()].as_bytes());
        }
        body.push(b'}');
    }

    fn describe(&self) -> Option<String> {
        let stream = self.string("stream_id")?;
        let version = self.unsigned("stream_version")?;
        let kind = self.string("event_type");
        Some(format!(
            "{stream}#{version} {}",
            kind.as_deref().unwrap_or("?")
        ))
    }
}

fn describe(object: &Map<String, Value>) -> Option<String> {
    let stream = object.get("stream_id")?.as_str()?;
    let version = object.get("stream_version")?.as_u64()?;
    let kind = object
        .get("event_type")
        .and_then(Value::as_str)
        .unwrap_or("?");
    Some(format!("{stream}#{version} {kind}"))
}
