//! `workspace.repo` and `workspace.ref` may name the run's inputs: `{{ inputs.repo }}`.
//!
//! A run's workspace is made at its first workspace, git or command call, for the whole run, so
//! only the run's inputs can fill these templates (no node has run when the run starts, and
//! `upstream`/`context` differ from node to node). The rules:
//!
//! - save time ([`check`]): every `{{ ... }}` is closed and holds a path under `inputs`
//!   (`inputs.<key>`, deeper paths allowed); anything else is `invalid_value` at
//!   `workspace.repo` / `workspace.ref`;
//! - run start ([`WorkspaceDoc::resolve`]): each path must name a non-empty string of the run's
//!   inputs, and the filled value must not be blank; otherwise the start is refused with
//!   `invalid_input` and nothing is written.
//!
//! Text outside placeholders is kept as written.

use serde_json::Value;

use super::model::WorkspaceDoc;
use crate::agent_tool::WorkspaceSource;
use crate::condition::{ParseError, Path, parse_path};

/// Why a workspace template cannot be filled from a run's inputs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`workspace.{key}` ({template}): {problem}")]
pub struct WorkspaceTemplateError {
    /// `repo` or `ref`.
    pub key: &'static str,
    pub template: String,
    pub problem: String,
}

/// A template cut into literal text and input paths.
enum Piece<'a> {
    Text(&'a str),
    Input { source: &'a str, path: Path },
}

/// Why a workspace template cannot be used, found at save time.
#[derive(Debug, thiserror::Error)]
pub enum TemplateSyntaxError {
    #[error("a `{{{{` is not closed by `}}}}`")]
    Unclosed,
    #[error("`{{{{ {source_text} }}}}`: {source}")]
    BadPath {
        source_text: String,
        #[source]
        source: ParseError,
    },
    #[error(
        "`{{{{ {0} }}}}` is not an input: only `{{{{ inputs.<name> }}}}` can fill the workspace, \
         which is made for the whole run before any node's output exists"
    )]
    NotAnInput(String),
}

/// The pieces of `template`, or the first placeholder that is not `{{ inputs.<path> }}`.
fn pieces(template: &str) -> Result<Vec<Piece<'_>>, TemplateSyntaxError> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        if open > 0 {
            out.push(Piece::Text(&rest[..open]));
        }
        let after = &rest[open + 2..];
        let close = after.find("}}").ok_or(TemplateSyntaxError::Unclosed)?;
        let source = after[..close].trim();
        let path = parse_path(source).map_err(|e| TemplateSyntaxError::BadPath {
            source_text: source.to_owned(),
            source: e,
        })?;
        if path.root() != "inputs" || path.segments().len() < 2 {
            return Err(TemplateSyntaxError::NotAnInput(source.to_owned()));
        }
        out.push(Piece::Input { source, path });
        rest = &after[close + 2..];
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest));
    }
    Ok(out)
}

/// Save-time check of one template: `Err` says what is wrong.
pub(super) fn check(template: &str) -> Result<(), TemplateSyntaxError> {
    pieces(template).map(|_| ())
}

/// `template` filled from `inputs` (the run's inputs object, without the `inputs` key).
fn fill(
    key: &'static str,
    template: &str,
    inputs: &Value,
) -> Result<String, WorkspaceTemplateError> {
    let error = |problem: String| WorkspaceTemplateError {
        key,
        template: template.to_owned(),
        problem,
    };
    let context = serde_json::json!({ "inputs": inputs });
    let mut out = String::with_capacity(template.len());
    for piece in pieces(template).map_err(|e| error(e.to_string()))? {
        match piece {
            Piece::Text(text) => out.push_str(text),
            Piece::Input { source, path } => match path.resolve(&context) {
                Some(Value::String(text)) if !text.trim().is_empty() => out.push_str(text),
                Some(Value::String(_)) => return Err(error(format!("`{source}` is blank"))),
                Some(other) => {
                    return Err(error(format!(
                        "`{source}` must be a string, found {}",
                        json_kind(other)
                    )));
                }
                None => return Err(error(format!("the run has no input `{source}`"))),
            },
        }
    }
    if out.trim().is_empty() {
        return Err(error("it is blank once filled".to_owned()));
    }
    Ok(out)
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl WorkspaceDoc {
    /// The workspace of a run with these `inputs`: `repo` and `ref` with their
    /// `{{ inputs.* }}` placeholders filled (see the module doc for the rules).
    pub fn resolve(&self, inputs: &Value) -> Result<WorkspaceSource, WorkspaceTemplateError> {
        Ok(WorkspaceSource {
            repo: fill("repo", &self.repo, inputs)?,
            git_ref: self
                .git_ref
                .as_deref()
                .map(|r| fill("ref", r, inputs))
                .transpose()?,
            keep_on_failure: self.keep_on_failure,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn doc(repo: &str, git_ref: Option<&str>) -> WorkspaceDoc {
        WorkspaceDoc {
            repo: repo.to_owned(),
            git_ref: git_ref.map(str::to_owned),
            keep_on_failure: false,
        }
    }

    #[test]
    fn placeholders_are_filled_from_the_inputs_and_the_rest_kept() {
        let inputs = json!({ "repo": "/srv/demo.git", "git": { "ref": "v2" } });
        let source = doc("{{ inputs.repo }}", Some("release-{{inputs.git.ref}}"))
            .resolve(&inputs)
            .unwrap();
        assert_eq!(source.repo, "/srv/demo.git");
        assert_eq!(source.git_ref.as_deref(), Some("release-v2"));
        let plain = doc("https://example.org/a.git", None)
            .resolve(&json!({}))
            .unwrap();
        assert_eq!(plain.repo, "https://example.org/a.git");
    }

    #[test]
    fn a_missing_blank_or_non_string_input_is_refused_naming_it() {
        let d = doc("{{ inputs.repo }}", None);
        let e = d.resolve(&json!({})).unwrap_err();
        assert_eq!(e.key, "repo");
        assert!(e.problem.contains("no input `inputs.repo`"), "{e}");
        let e = d.resolve(&json!({ "repo": 7 })).unwrap_err();
        assert!(
            e.problem.contains("must be a string, found a number"),
            "{e}"
        );
        let e = d.resolve(&json!({ "repo": "  " })).unwrap_err();
        assert!(e.problem.contains("blank"), "{e}");
        let e = doc("/x", Some("{{ inputs.r }}"))
            .resolve(&json!({}))
            .unwrap_err();
        assert_eq!(e.key, "ref");
    }

    #[test]
    fn only_closed_input_placeholders_pass_the_save_time_check() {
        assert!(check("{{ inputs.repo }}").is_ok());
        assert!(check("/srv/{{ inputs.name }}.git").is_ok());
        assert!(check("no placeholder").is_ok());
        for bad in [
            "{{ upstream.a.output }}",
            "{{ context.x.output }}",
            "{{ inputs }}",
            "{{ inputs.repo ",
            "{{ 1 + 2 }}",
        ] {
            assert!(check(bad).is_err(), "{bad}");
        }
    }
}
