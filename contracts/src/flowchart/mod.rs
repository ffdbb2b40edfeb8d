//! Flowchart definitions: the document users write ([`FlowchartDoc`]), how it is read from YAML
//! or JSON ([`parse`]), and save-time validation into a [`Flowchart`] the run engine can trust
//! ([`validate`], [`load`]).
//!
//! Why validate at save time: a run that fails halfway because a connector names a missing node
//! wastes model calls and leaves a half-written ledger. Everything that can be known from the
//! definition alone is therefore checked before a flowchart is stored, and every problem is
//! reported at once, each with a stable [`ValidationCode`] and the path of the offending field
//! (`runledger validate --json` prints them; scripts match on `code` and `path`).
//!
//! The format itself is a user-facing contract (FLOWCHART-FORMAT.md): keys may be added, never
//! renamed.

mod agent_keys;
mod error;
mod graph;
mod model;
mod parse;
mod rag_keys;
mod validate;
mod workspace;

pub use error::{ValidationCode, ValidationError};
pub use graph::{CompiledCondition, Flowchart, NoMatchRoute};
pub use model::{
    AgentDoc, ConditionDoc, Connector, ConnectorMode, DEFAULT_BACKOFF_MS,
    DEFAULT_BACKOFF_MULTIPLIER, DEFAULT_MAX_ATTEMPTS, DEFAULT_MAX_TURNS, DEFAULT_TIMEOUT_S,
    DEFAULT_TOP_K, Defaults, FanIn, FlowchartDoc, ForgeDoc, GitPolicyDoc, Limits, MAX_MAX_TURNS,
    MAX_TOP_K, MemoryConfig, MemoryOperation, MilestoneConfig, MilestoneOperation, NoMatch,
    NoMatchPolicy, Node, NodeType, PlanConfig, PlanOperation, RagConfig, RagOperation, Retry,
    SCRIPTED_MODEL, ScriptedError, ScriptedResponse, ScriptedToolCall, WorkspaceDoc,
};
pub use parse::{SourceFormat, parse};
pub use validate::{CONDITION_ROOTS, is_valid_id, validate};
pub use workspace::WorkspaceTemplateError;

/// Parses and validates: the text becomes a [`Flowchart`], or every problem is returned.
///
/// Unknown and duplicate keys do not stop validation of the graph, so one call reports them
/// together with graph problems; only syntax and type errors (which leave no document to check)
/// end it early.
pub fn load(text: &str, format: SourceFormat) -> Result<Flowchart, Vec<ValidationError>> {
    let (doc, mut errors) = parse::parse_collect(text, format);
    let Some(doc) = doc else {
        return Err(errors);
    };
    match validate(doc) {
        Ok(flowchart) if errors.is_empty() => Ok(flowchart),
        Ok(_) => Err(errors),
        Err(more) => {
            errors.extend(more);
            Err(errors)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The full example of FLOWCHART-FORMAT.md, verbatim.
    const FORMAT_EXAMPLE: &str = r#"name: review-loop                 # required; a flowchart's versions share its name
description: Draft, review, revise until the review approves.
limits:                           # all optional
  max_node_executions: 50         # required when solid connectors form a cycle
  max_runtime_s: 600
  max_parallel_nodes: 8
defaults:                         # optional; per-node keys of the same name override
  timeout_s: 300
  retry: { max_attempts: 1, backoff_ms: 500, backoff_multiplier: 2.0 }
nodes:
  - id: start
    type: start
  - id: draft
    type: task
    model: scripted               # a model name from the registry; `scripted` is built in
    prompt: "Write about {{ inputs.topic }}. Earlier review: {{ context.review.output.notes }}"
    output_schema: { type: object, required: [text], properties: { text: { type: string } } }
    schema_repair_attempts: 2
    scripted:                     # responses of the scripted model, one per attempt, in order (a retry takes the next)
      - output: { text: "first draft" }
      - output: { text: "second draft" }
  - id: review
    type: task
    model: scripted
    timeout_s: 30
    retry: { max_attempts: 3, backoff_ms: 100 }
    scripted:
      - error: { code: provider_unavailable, message: "503", retryable: true }
      - output: { score: 5, notes: "too short" }
      - delay_ms: 50              # delay before answering (use with timeout_s to script a timeout)
        output: { score: 9, notes: "good" }
  - id: gate
    type: decision
    conditions:                   # evaluated in order; every match fires
      - { connector: approve, when: "latest_upstream.output.score >= 8" }
      - { connector: revise,  when: "latest_upstream.output.score < 8 and exists(latest_upstream.output.notes)" }
    no_match: { policy: fallback, connector: revise }   # or { policy: fail }
  - id: done
    type: end
connectors:
  - { id: c1, from: start, to: draft }                 # mode defaults to solid
  - { id: c2, from: draft, to: review }
  - { id: c3, from: review, to: gate }
  - { id: approve, from: gate, to: done }
  - { id: revise, from: gate, to: draft }
  - { id: ctx1, from: review, to: draft, mode: dotted }
"#;

    const REVIEW_LOOP: &str = include_str!("../../../examples/review-loop.yaml");
    const FAN_IN: &str = include_str!("../../../examples/fan-in.yaml");
    const FALLBACK_ROUTE: &str = include_str!("../../../examples/fallback-route.yaml");

    fn must_load(text: &str) -> Flowchart {
        match load(text, SourceFormat::Auto) {
            Ok(fc) => fc,
            Err(errors) => panic!("unexpected errors: {errors:#?}"),
        }
    }

    #[test]
    fn format_example_loads_and_is_indexed() {
        let fc = must_load(FORMAT_EXAMPLE);
        assert_eq!(fc.name(), "review-loop");
        assert_eq!(fc.nodes().len(), 5);
        assert!(fc.has_solid_cycle());
        assert_eq!(fc.max_node_executions(), Some(50));
        let draft = fc.node_index("draft").unwrap();
        let gate = fc.node_index("gate").unwrap();
        assert_eq!(fc.start(), fc.node_index("start").unwrap());
        // draft: solid from start and from gate (revise); dotted from review.
        let names = |ids: &[usize]| {
            ids.iter()
                .map(|&c| fc.connectors()[c].id.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(fc.solid_incoming(draft)), ["c1", "revise"]);
        assert_eq!(names(fc.dotted_incoming(draft)), ["ctx1"]);
        assert_eq!(fc.solid_parent_count(draft), 2);
        assert_eq!(fc.fan_in_threshold(draft), Some(2));
        assert_eq!(names(fc.solid_outgoing(gate)), ["approve", "revise"]);
        let review = fc.node_index("review").unwrap();
        assert_eq!(names(fc.dotted_outgoing(review)), ["ctx1"]);
        assert_eq!(fc.conditions(gate).len(), 2);
        assert_eq!(
            fc.no_match(gate),
            NoMatchRoute::Fallback {
                connector: fc.connector_index("revise").unwrap()
            }
        );
        let revise = fc.connector_index("revise").unwrap();
        assert_eq!(fc.connector_source(revise), Some(gate));
        assert_eq!(fc.connector_target(revise), Some(draft));
        assert_eq!(
            fc.node("review").unwrap().scripted.as_ref().unwrap().len(),
            3
        );
        assert_eq!(
            fc.nodes_of_type(NodeType::End).collect::<Vec<_>>(),
            vec![fc.node_index("done").unwrap()]
        );
        // Out-of-range lookups do not panic.
        assert_eq!(fc.solid_incoming(99), &[] as &[usize]);
        assert_eq!(fc.effective_timeout_s(99), None);
        assert!(fc.node("nope").is_none());
    }

    #[test]
    fn review_loop_example_is_the_format_example() {
        assert_eq!(REVIEW_LOOP, FORMAT_EXAMPLE);
        must_load(REVIEW_LOOP);
    }

    #[test]
    fn fan_in_example_loads() {
        let fc = must_load(FAN_IN);
        let merge = fc.node_index("merge").unwrap();
        assert_eq!(fc.node("merge").unwrap().fan_in, Some(FanIn::Custom(2)));
        assert_eq!(fc.solid_parent_count(merge), 3);
        assert_eq!(fc.fan_in_threshold(merge), Some(2));
        let publish = fc.node_index("publish").unwrap();
        assert_eq!(fc.solid_parent_count(publish), 1);
        assert_eq!(fc.dotted_incoming(publish).len(), 1);
        assert!(!fc.has_solid_cycle());
        assert_eq!(fc.effective_timeout_s(merge), Some(60));
    }

    #[test]
    fn fallback_route_example_loads() {
        let fc = must_load(FALLBACK_ROUTE);
        let route = fc.node_index("route").unwrap();
        let triage = fc.connector_index("to_triage").unwrap();
        assert_eq!(
            fc.no_match(route),
            NoMatchRoute::Fallback { connector: triage }
        );
        assert_eq!(fc.conditions(route).len(), 2);
        // The scripted classifier answers a category no condition covers.
        let classify = fc.node("classify").unwrap();
        let output = classify.scripted.as_ref().unwrap()[0]
            .output
            .as_ref()
            .unwrap();
        assert_eq!(output["category"], "question");
        assert!(output.get("route_key").is_none());
        assert_eq!(fc.fan_in_threshold(fc.node_index("done").unwrap()), Some(1));
    }

    #[test]
    fn round_trip_serialize_then_parse_is_equal() {
        for text in [FORMAT_EXAMPLE, FAN_IN, FALLBACK_ROUTE] {
            let doc = parse(text, SourceFormat::Yaml).unwrap();
            let json = serde_json::to_string_pretty(&doc).unwrap();
            assert_eq!(parse(&json, SourceFormat::Json).unwrap(), doc);
            let yaml = serde_yaml_ng::to_string(&doc).unwrap();
            assert_eq!(parse(&yaml, SourceFormat::Yaml).unwrap(), doc);
            // The validated form serializes as its document.
            let fc = must_load(text);
            assert_eq!(serde_json::to_string_pretty(&fc).unwrap(), json);
        }
    }

    #[test]
    fn effective_timeout_and_retry_resolution() {
        let fc = must_load(FORMAT_EXAMPLE);
        let review = fc.node_index("review").unwrap();
        let draft = fc.node_index("draft").unwrap();
        // Node override; keys left out of the node's retry take the built-in defaults.
        assert_eq!(fc.effective_timeout_s(review), Some(30));
        assert_eq!(
            fc.effective_retry(review),
            Some(&Retry {
                max_attempts: 3,
                backoff_ms: 100,
                backoff_multiplier: 2.0
            })
        );
        // From `defaults`.
        assert_eq!(fc.effective_timeout_s(draft), Some(300));
        assert_eq!(
            fc.effective_retry(draft),
            Some(&Retry {
                max_attempts: 1,
                backoff_ms: 500,
                backoff_multiplier: 2.0
            })
        );

        let custom_defaults = r#"
name: d
defaults: { timeout_s: 45, retry: { max_attempts: 4, backoff_ms: 10, backoff_multiplier: 1.5 } }
nodes:
  - { id: s, type: start }
  - { id: a, type: task, model: m }
  - { id: b, type: task, model: m, timeout_s: 7, retry: { max_attempts: 2 } }
connectors:
  - { id: c1, from: s, to: a }
  - { id: c2, from: a, to: b }
"#;
        let fc = must_load(custom_defaults);
        let (a, b) = (fc.node_index("a").unwrap(), fc.node_index("b").unwrap());
        assert_eq!(fc.effective_timeout_s(a), Some(45));
        assert_eq!(
            fc.effective_retry(a),
            Some(&Retry {
                max_attempts: 4,
                backoff_ms: 10,
                backoff_multiplier: 1.5
            })
        );
        assert_eq!(fc.effective_timeout_s(b), Some(7));
        assert_eq!(
            fc.effective_retry(b),
            Some(&Retry {
                max_attempts: 2,
                backoff_ms: 500,
                backoff_multiplier: 2.0
            })
        );

        let no_defaults = "name: n\nnodes:\n  - { id: s, type: start }\n  - { id: a, type: task, model: m }\nconnectors:\n  - { id: c1, from: s, to: a }\n";
        let fc = must_load(no_defaults);
        let a = fc.node_index("a").unwrap();
        assert_eq!(fc.effective_timeout_s(a), Some(DEFAULT_TIMEOUT_S));
        assert_eq!(fc.effective_retry(a), Some(&Retry::default()));
        assert_eq!(
            Retry::default(),
            Retry {
                max_attempts: 1,
                backoff_ms: 500,
                backoff_multiplier: 2.0
            }
        );
    }

    #[test]
    fn load_reports_parse_and_graph_problems_but_parse_only_parse_problems() {
        let text =
            "name: x\nnodes:\n  - { id: s, type: start, colour: red }\n  - { id: e, type: end }\n";
        let parse_errors = parse(text, SourceFormat::Yaml).unwrap_err();
        assert_eq!(parse_errors.len(), 1);
        let load_errors = load(text, SourceFormat::Yaml).unwrap_err();
        let codes: Vec<_> = load_errors.iter().map(|e| e.code).collect();
        assert_eq!(
            codes,
            vec![ValidationCode::UnknownKey, ValidationCode::Unreachable]
        );
    }

    #[test]
    fn validate_accepts_a_document_built_in_code() {
        let doc = FlowchartDoc {
            name: "built".into(),
            description: None,
            limits: None,
            defaults: None,
            nodes: vec![
                Node::new("s", NodeType::Start),
                Node::new("e", NodeType::End),
            ],
            connectors: vec![Connector::new("c", "s", "e")],
            workspace: None,
            git_policy: None,
        };
        let fc = Flowchart::try_from(doc.clone()).unwrap();
        assert_eq!(fc.doc(), &doc);
        assert_eq!(fc.into_doc(), doc);
    }

    #[test]
    fn validation_errors_serialize_for_the_cli() {
        let errors = load("name: x\nnodes: []\n", SourceFormat::Yaml).unwrap_err();
        let json = serde_json::to_value(&errors).unwrap();
        assert_eq!(
            json,
            serde_json::json!([{
                "code": "start_count",
                "path": "nodes",
                "message": "a flowchart needs exactly one start node; it has none"
            }])
        );
    }
}
