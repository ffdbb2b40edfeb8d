use std::io::BufReader;
use std::path::Path;

use runledger_ledger::sign;
use runledger_ledger::verify::{VerifyError, verify_with_key};
use serde_json::json;

use crate::Failure;

pub fn run(file: &Path, key: Option<&Path>, json: bool) -> Result<(), Failure> {
    let result = check(file, key);
    match (result, json) {
        (Ok(report), true) => {
            outln!(
                "{}",
                json!({"valid": true, "streams": report.streams, "events": report.events, "blobs": report.blobs, "heads": report.heads, "signed_by": report.signed_by})
            );
            Ok(())
        }
        (Ok(report), false) => {
            outln!(
                "ok: {} event(s) in {} stream(s), {} blob(s); every hash chain recomputes",
                report.events,
                report.streams,
                report.blobs
            );
            if let Some(signer) = &report.signed_by {
                let trust = if key.is_some() {
                    "the given key"
                } else {
                    "its own key (pass --key to name the key you trust)"
                };
                outln!("  signed by {signer}: the signature over the manifest holds for {trust}");
            }
            for (stream, head) in &report.heads {
                outln!("  {stream}  head {head}");
            }
            Ok(())
        }
        (Err(e), true) => {
            outln!("{}", json!({"valid": false, "error": e}));
            Err(Failure::silent())
        }
        (Err(e), false) => Err(Failure::new(format!(
            "{} is not a valid export: {e}",
            file.display()
        ))
        .with_code(e.code)),
    }
}

/// Reading the file or the key is part of the check, so `--json` reports those failures in the
/// same object as any other (code `io`, line 0).
fn check(
    file: &Path,
    key: Option<&Path>,
) -> Result<runledger_ledger::verify::VerifyReport, VerifyError> {
    let io = |message: String| VerifyError {
        line: 0,
        event: None,
        code: "io",
        message,
    };
    let key = key
        .map(sign::read_verifying_key)
        .transpose()
        .map_err(|e| io(super::error_chain(&e)))?;
    if file == Path::new("-") {
        verify_with_key(std::io::stdin().lock(), key.as_ref())
    } else {
        let handle = std::fs::File::open(file)
            .map_err(|e| io(format!("cannot read {}: {e}", file.display())))?;
        verify_with_key(BufReader::new(handle), key.as_ref())
    }
}
