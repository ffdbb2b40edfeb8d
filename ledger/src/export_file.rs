//! Reading a verified export back into recorded events and blobs (for replay and import).

use runledger_contracts::digest::Digest;
use runledger_contracts::envelope::{Position, RecordedEvent};
use serde_json::{Map, Value};

use crate::Blob;
use crate::export::base64_decode;
use crate::verify::{VerifyError, VerifyReport, verify};

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

/// Verifies `bytes` as an export, then decodes its events and blobs.
pub fn read_export(bytes: &[u8]) -> Result<ExportFile, ExportFileError> {
    let report = verify(bytes)?;
    let mut events = Vec::with_capacity(usize::try_from(report.events).unwrap_or(0));
    let mut blobs = Vec::with_capacity(report.blobs);
    for (index, line) in bytes.split(|b| *b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let line_no = index + 1;
        let object: Map<String, Value> =
            serde_json::from_slice(line).map_err(|e| ExportFileError::Field {
                line: line_no,
                field: "kind",
                message: e.to_string(),
            })?;
        match object.get("kind").and_then(Value::as_str) {
            Some("event") => events.push(event_from_line(line_no, object)?),
            Some("blob") => {
                let media_type = object
                    .get("media_type")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                let data = object
                    .get("data")
                    .and_then(Value::as_str)
                    .and_then(base64_decode)
                    .ok_or_else(|| ExportFileError::Field {
                        line: line_no,
                        field: "data",
                        message: "is not base64".into(),
                    })?;
                blobs.push(Blob { media_type, data });
            }
            _ => {}
        }
    }
    Ok(ExportFile {
        report,
        events,
        blobs,
    })
}

fn event_from_line(
    line: usize,
    mut object: Map<String, Value>,
) -> Result<RecordedEvent, ExportFileError> {
    fn take<T: serde::de::DeserializeOwned>(
        object: &mut Map<String, Value>,
        line: usize,
        field: &'static str,
    ) -> Result<T, ExportFileError> {
        let value = object.remove(field).unwrap_or(Value::Null);
        serde_json::from_value(value).map_err(|e| ExportFileError::Field {
            line,
            field,
            message: e.to_string(),
        })
    }
    fn digest(
        object: &mut Map<String, Value>,
        line: usize,
        field: &'static str,
    ) -> Result<Digest, ExportFileError> {
        let text: String = take(object, line, field)?;
        Digest::parse_hex(&text).map_err(|e| ExportFileError::Field {
            line,
            field,
            message: e.to_string(),
        })
    }
    let blob_refs: Vec<String> = take(&mut object, line, "blob_refs")?;
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
        event_id: take(&mut object, line, "event_id")?,
        stream_id: take(&mut object, line, "stream_id")?,
        stream_version: take(&mut object, line, "stream_version")?,
        position: Position::START,
        event_type: take(&mut object, line, "event_type")?,
        schema_version: take(&mut object, line, "schema_version")?,
        request_id: take(&mut object, line, "request_id")?,
        correlation_id: take(&mut object, line, "correlation_id")?,
        causation_id: take(&mut object, line, "causation_id")?,
        recorded_at: take(&mut object, line, "recorded_at")?,
        payload: take(&mut object, line, "payload")?,
        blob_refs,
        prev_hash: digest(&mut object, line, "prev_hash")?,
        hash: digest(&mut object, line, "hash")?,
    })
}
