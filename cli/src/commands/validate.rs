use std::path::Path;

use runledger_contracts::flowchart::{SourceFormat, ValidationError, load};
use serde::Serialize;

use crate::Failure;

/// Reads a flowchart file; the extension picks the format (anything else is detected).
pub fn read_flowchart(path: &Path) -> Result<(String, SourceFormat), Failure> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Failure::caused(format!("cannot read {}", path.display()), e).with_code("file_unreadable")
    })?;
    let format = SourceFormat::from_file_name(&path.to_string_lossy());
    Ok((text, format))
}

pub fn run(path: &Path, as_json: bool) -> Result<(), Failure> {
    let (text, format) = read_flowchart(path)?;
    match load(&text, format) {
        Ok(flowchart) => {
            if as_json {
                print_json(&ValidateOutput {
                    valid: true,
                    errors: &[],
                });
            } else {
                let doc = flowchart.doc();
                outln!(
                    "{}: valid flowchart `{}` ({} nodes, {} connectors)",
                    path.display(),
                    doc.name,
                    doc.nodes.len(),
                    doc.connectors.len()
                );
            }
            Ok(())
        }
        Err(errors) => {
            if as_json {
                print_json(&ValidateOutput {
                    valid: false,
                    errors: &errors,
                });
            } else {
                print_errors(path, &errors);
            }
            Err(Failure::silent())
        }
    }
}

pub fn print_errors(path: &Path, errors: &[ValidationError]) {
    for e in errors {
        let at = if e.path.is_empty() {
            "(document)"
        } else {
            e.path.as_str()
        };
        errln!(
            "{}: {at}: {} [{}]",
            path.display(),
            e.message,
            e.code.as_str()
        );
    }
    errln!(
        "{}: {} problem(s); the flowchart is not valid",
        path.display(),
        errors.len()
    );
}

/// The `--json` shape of FLOWCHART-FORMAT.md: `{"valid", "errors": [{"code", "path",
/// "message"}]}`.
#[derive(Serialize)]
struct ValidateOutput<'a> {
    valid: bool,
    errors: &'a [ValidationError],
}

/// `run --json` with an invalid flowchart prints the same object as `validate --json`.
pub fn print_json_errors(errors: &[ValidationError]) {
    print_json(&ValidateOutput {
        valid: false,
        errors,
    });
}

/// One line with keys in sorted order, the order the API's `/v1/flowcharts/validate` and its
/// `invalid_flowchart` error details use too: every JSON object built as a `serde_json::Value`
/// comes out sorted, so sorting is the one order all three can share.
fn print_json(output: &ValidateOutput<'_>) {
    match serde_json::to_value(output) {
        Ok(value) => outln!("{value}"),
        Err(e) => errln!("runledger: error: cannot print JSON: {e}"),
    }
}
