use std::path::Path;

use runledger_contracts::flowchart::{SourceFormat, ValidationError, load};
use serde::Serialize;

use crate::Failure;

/// Reads a flowchart file; the extension picks the format (anything else is detected).
pub fn read_flowchart(path: &Path) -> Result<(String, SourceFormat), Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::new(format!("cannot read {}: {e}", path.display())))?;
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
                println!(
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
        eprintln!(
            "{}: {at}: {} [{}]",
            path.display(),
            e.message,
            e.code.as_str()
        );
    }
    eprintln!(
        "{}: {} problem(s); the flowchart is not valid",
        path.display(),
        errors.len()
    );
}

/// The `--json` shape of FLOWCHART-FORMAT.md, fields in its order.
#[derive(Serialize)]
struct ValidateOutput<'a> {
    valid: bool,
    errors: &'a [ValidationError],
}

fn print_json(output: &ValidateOutput<'_>) {
    match serde_json::to_string(output) {
        Ok(line) => println!("{line}"),
        Err(e) => eprintln!("runledger: error: cannot print JSON: {e}"),
    }
}
