use std::io::BufReader;
use std::path::Path;

use runledger_ledger::verify::verify;
use serde_json::json;

use crate::Failure;

pub fn run(file: &Path, json: bool) -> Result<(), Failure> {
    let result = if file == Path::new("-") {
        verify(std::io::stdin().lock())
    } else {
        let handle = std::fs::File::open(file)
            .map_err(|e| Failure::caused(format!("cannot read {}", file.display()), e).with_code("file_unreadable"))?;
        verify(BufReader::new(handle))
    };
    match (result, json) {
        (Ok(report), true) => {
            outln!("{}", json!({"valid": true, "streams": report.streams, "events": report.events, "blobs": report.blobs, "heads": report.heads}));
            Ok(())
        }
        (Ok(report), false) => {
            outln!(
                "ok: {} event(s) in {} stream(s), {} blob(s); every hash chain recomputes",
                report.events, report.streams, report.blobs
            );
            for (stream, head) in &report.heads {
                outln!("  {stream}  head {head}");
            }
            Ok(())
        }
        (Err(e), true) => {
            outln!("{}", json!({"valid": false, "error": e}));
            Err(Failure::silent())
        }
        (Err(e), false) => Err(Failure::new(format!("{} is not a valid export: {e}", file.display())).with_code(e.code)),
    }
}
