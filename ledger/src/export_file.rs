//! Reading a verified export back into recorded events and blobs (for replay and import).

use std::borrow::Cow;

use runledger_contracts::canonical_scan::{self, Member};
use runledger_contracts::digest::Digest;
use runledger_contracts::envelope::{Position, RecordedEvent};
use runledger_contracts::events::{DecodeError, DomainEvent};
use serde_json::Value;

use crate::Blob;
use crate::verify::{Verified, VerifyError, VerifyReport, verify_each};

/// An export, verified and decoded.
#[derive(Debug, Clone)]
pub struct ExportFile {
    pub report: VerifyReport,
    /// Every event, in file order (stream by stream, each from version 1 up). Positions are
    /// not exported; they are `Position::START` here.
    pub events: Vec<RecordedEvent>,
    pub blobs: Vec<Blob>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportFileError {
    #[error("the export does not verify")]
    Invalid(#[from] VerifyError),
    #[error("line {line}: `{field}` {message}")]
    Field {
        line: usize,
        field: &'static str,
        message: String,
    },
}

/// Verifies `bytes` as an export and decodes its events and blobs in the same pass (each line
/// is read once). A file that does not verify is `Invalid`, even when a line before the failing
/// one also does not decode.
pub fn read_export(bytes: &[u8]) -> Result<ExportFile, ExportFileError> {
    let mut events = Vec::new();
    let mut blobs = Vec::new();
    let mut undecodable: Option<ExportFileError> = None;
    let report = verify_each(bytes, None, |line| {
        if undecodable.is_some() {
            return;
        }
        match line {
            Verified::Event {
                line,
                text,
                members,
            } => match event_from_line(line, text, members) {
                Ok(event) => events.push(event),
                Err(e) => undecodable = Some(e),
            },
            Verified::Blob { media_type, data } => blobs.push(Blob { media_type, data }),
        }
    })?;
    if let Some(e) = undecodable {
        return Err(e);
    }
    Ok(ExportFile {
        report,
        events,
        blobs,
    })
}

/// A verified export whose payloads were decoded straight from the line text into their
/// typed events, without building a JSON value of each (replay's reading, where the payload
/// value itself is never looked at).
#[derive(Debug, Clone)]
pub struct DecodedExport {
    pub report: VerifyReport,
    /// Every event, in file order, as in [`ExportFile::events`] but with `payload` left
    /// `Value::Null`: the payload is in `decoded`.
    pub events: Vec<RecordedEvent>,
    /// `decoded[i]` is `events[i]`'s payload, upcast to the current schema, or why it does not
    /// decode (an error that matters only to a reader of that event's stream).
    pub decoded: Vec<Result<DomainEvent, DecodeError>>,
}

/// [`read_export`] for a reader that wants typed events: verifies `bytes` and decodes each
/// event's payload with [`DomainEvent::decode_str`] in the same pass. Blobs are verified and
/// not kept.
pub fn read_export_decoded(bytes: &[u8]) -> Result<DecodedExport, ExportFileError> {
    let mut events = Vec::new();
    let mut decoded = Vec::new();
    let mut undecodable: Option<ExportFileError> = None;
    let report = verify_each(bytes, None, |line| {
        if undecodable.is_some() {
            return;
        }
        if let Verified::Event {
            line,
            text,
            members,
        } = line
        {
            match envelope_from_line(line, text, members, |_| Ok(Value::Null)) {
                Ok(event) => {
                    let payload =
                        canonical_scan::member(text, members, "payload").unwrap_or("null");
                    decoded.push(DomainEvent::decode_str(
                        &event.event_type,
                        event.schema_version,
                        payload,
                    ));
                    events.push(event);
                }
                Err(e) => undecodable = Some(e),
            }
        }
    })?;
    if let Some(e) = undecodable {
        return Err(e);
    }
    Ok(DecodedExport {
        report,
        events,
        decoded,
    })
}

/// Decodes a verified event line from its member spans, each field parsed on its own.
fn event_from_line(
    line: u64,
    text: &str,
    members: &[Member],
) -> Result<RecordedEvent, ExportFileError> {
    envelope_from_line(line, text, members, |raw| {
        serde_json::from_str(raw).map_err(|e| e.to_string())
    })
}

/// An event line's fields, the payload read from its raw JSON text by `payload`.
fn envelope_from_line(
    line: u64,
    text: &str,
    members: &[Member],
    payload: impl FnOnce(&str) -> Result<Value, String>,
) -> Result<RecordedEvent, ExportFileError> {
    let line = usize::try_from(line).unwrap_or(usize::MAX);
    let take = |field: &'static str| -> Result<&str, ExportFileError> {
        Ok(canonical_scan::member(text, members, field).unwrap_or("null"))
    };
    fn parse<'de, T: serde::Deserialize<'de>>(
        raw: &'de str,
        line: usize,
        field: &'static str,
    ) -> Result<T, ExportFileError> {
        serde_json::from_str(raw).map_err(|e| ExportFileError::Field {
            line,
            field,
            message: e.to_string(),
        })
    }
    let digest = |field: &'static str| -> Result<Digest, ExportFileError> {
        let text: Cow<'_, str> = parse(take(field)?, line, field)?;
        Digest::parse_hex(&text).map_err(|e| ExportFileError::Field {
            line,
            field,
            message: e.to_string(),
        })
    };
    let blob_refs: Vec<Cow<'_, str>> = parse(take("blob_refs")?, line, "blob_refs")?;
    let blob_refs = blob_refs
        .iter()
        .map(|h| {
            Digest::parse_hex(h).map_err(|e| ExportFileError::Field {
                line,
                field: "blob_refs",
                message: e.to_string(),
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(RecordedEvent {
        event_id: parse(take("event_id")?, line, "event_id")?,
        stream_id: parse(take("stream_id")?, line, "stream_id")?,
        stream_version: parse(take("stream_version")?, line, "stream_version")?,
        position: Position::START,
        event_type: parse(take("event_type")?, line, "event_type")?,
        schema_version: parse(take("schema_version")?, line, "schema_version")?,
        request_id: parse(take("request_id")?, line, "request_id")?,
        correlation_id: parse(take("correlation_id")?, line, "correlation_id")?,
        causation_id: parse(take("causation_id")?, line, "causation_id")?,
        recorded_at: parse(take("recorded_at")?, line, "recorded_at")?,
        payload: payload(take("payload")?).map_err(|message| ExportFileError::Field {
            line,
            field: "payload",
            message,
        })?,
        blob_refs,
        prev_hash: digest("prev_hash")?,
        hash: digest("hash")?,
    })
}
