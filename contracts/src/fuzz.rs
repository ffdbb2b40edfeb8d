//! Property-based fuzzing of what users type: the flowchart parser and validator and the
//! condition language. Each property runs a few dozen cases so `cargo test` stays fast;
//! `RUNLEDGER_FUZZ_CASES=100000 cargo test -p runledger-contracts fuzz` is the long run
//! (docs/reliability.md). A failing case is shrunk and printed by proptest; its regression test
//! goes below the properties.

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use crate::condition;
use crate::flowchart::{SourceFormat, load};

/// Cases per property: `RUNLEDGER_FUZZ_CASES`, else `default`.
fn cases(default: u32) -> ProptestConfig {
    let cases = std::env::var("RUNLEDGER_FUZZ_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

const EXAMPLES: [&str; 4] = [
    include_str!("../../examples/review-loop.yaml"),
    include_str!("../../examples/fan-in.yaml"),
    include_str!("../../examples/fallback-route.yaml"),
    include_str!("../../examples/project-tools.yaml"),
];

/// Strings users and attackers type: plain words, flowchart words, NUL and other control
/// characters, non-ASCII, template and condition syntax.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z_]{0,12}",
        Just("\u{0}".to_owned()),
        Just("a\u{0}b".to_owned()),
        Just("\u{7}\u{1b}[31m".to_owned()),
        Just("é🦉\u{202e}".to_owned()),
        Just("{{ inputs.topic }}".to_owned()),
        Just("latest_upstream.output.score >= 8".to_owned()),
        Just("start".to_owned()),
        Just("end".to_owned()),
        Just("task".to_owned()),
        Just("decision".to_owned()),
        Just("scripted".to_owned()),
        ".{0,40}",
    ]
}

/// Numbers at the edges: zero, negatives, 2^53 and beyond, u64::MAX, fractions, huge floats.
fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!(0)),
        Just(json!(-1)),
        Just(json!(9_007_199_254_740_991_u64)),
        Just(json!(9_007_199_254_740_993_u64)),
        Just(json!(u64::MAX)),
        Just(json!(i64::MIN)),
        Just(json!(0.5)),
        Just(json!(1e308)),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u32>().prop_map(|n| json!(n)),
        (-1e6f64..1e6).prop_map(|f| json!(f)),
    ]
}

/// Any JSON value, a few levels deep.
fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(text(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// One change to a document: replace the value at a path, remove a key, or add one.
#[derive(Debug, Clone)]
enum Mutation {
    Replace {
        at: Vec<usize>,
        with: Value,
    },
    Remove {
        at: Vec<usize>,
    },
    Insert {
        at: Vec<usize>,
        key: String,
        with: Value,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let path = prop::collection::vec(any::<usize>(), 0..5);
    prop_oneof![
        (path.clone(), value()).prop_map(|(at, with)| Mutation::Replace { at, with }),
        path.clone().prop_map(|at| Mutation::Remove { at }),
        (path, text(), value()).prop_map(|(at, key, with)| Mutation::Insert { at, key, with }),
    ]
}

/// The child of `value` that `step` picks (an index modulo the number of children).
fn child(value: &mut Value, step: usize) -> Option<&mut Value> {
    match value {
        Value::Array(items) if !items.is_empty() => {
            let n = items.len();
            items.get_mut(step % n)
        }
        Value::Object(map) if !map.is_empty() => {
            let n = map.len();
            map.values_mut().nth(step % n)
        }
        _ => None,
    }
}

fn apply(doc: &mut Value, mutation: &Mutation) {
    let (at, last) = match mutation {
        Mutation::Replace { at, .. } | Mutation::Remove { at } | Mutation::Insert { at, .. } => {
            match at.split_last() {
                Some((last, at)) => (at, *last),
                None => (&at[..], 0),
            }
        }
    };
    // How far the path leads (a step into a scalar stops it), found without borrowing mutably.
    let mut depth = 0;
    let mut probe = &*doc;
    for step in at {
        let next = match probe {
            Value::Array(items) if !items.is_empty() => items.get(step % items.len()),
            Value::Object(map) if !map.is_empty() => map.values().nth(step % map.len()),
            _ => None,
        };
        match next {
            Some(next) => probe = next,
            None => break,
        }
        depth += 1;
    }
    let mut target = doc;
    for step in &at[..depth] {
        target = child(target, *step).expect("the probe walked this path");
    }
    match mutation {
        Mutation::Replace { with, .. } => {
            if let Some(slot) = child(target, last) {
                *slot = with.clone();
            }
        }
        Mutation::Remove { .. } => match target {
            Value::Array(items) if !items.is_empty() => {
                let n = items.len();
                items.remove(last % n);
            }
            Value::Object(map) if !map.is_empty() => {
                let n = map.len();
                if let Some(key) = map.keys().nth(last % n).cloned() {
                    map.remove(&key);
                }
            }
            _ => {}
        },
        Mutation::Insert { key, with, .. } => match target {
            Value::Object(map) => {
                map.insert(key.clone(), with.clone());
            }
            Value::Array(items) => items.push(with.clone()),
            _ => {}
        },
    }
}

fn example(index: usize) -> Value {
    let text = EXAMPLES[index % EXAMPLES.len()];
    serde_yaml_ng::from_str(text).expect("the examples are YAML")
}

/// What every answer of `load` must be: a flowchart whose document reloads to itself, or
/// problems that each have a code, a non-empty message and a path into the document.
fn check_load(text: &str, format: SourceFormat) -> Result<(), TestCaseError> {
    match load(text, format) {
        Ok(flowchart) => {
            let again = serde_json::to_string(flowchart.doc())
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let reloaded = load(&again, SourceFormat::Json).map_err(|errors| {
                TestCaseError::fail(format!(
                    "a valid flowchart does not reload: {errors:?}\n{again}"
                ))
            })?;
            prop_assert_eq!(reloaded.doc(), flowchart.doc());
        }
        Err(errors) => {
            prop_assert!(
                !errors.is_empty(),
                "an invalid flowchart names at least one problem"
            );
            for e in &errors {
                prop_assert!(!e.message.is_empty(), "{:?}", e);
                prop_assert!(!e.code.as_str().is_empty(), "{:?}", e);
                prop_assert!(
                    !e.message.contains("variant"),
                    "serde's words reach the user: {:?}",
                    e
                );
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(cases(64))]

    /// Mutated examples (a subtree replaced, a key removed or added) load or are refused with
    /// problems; never a panic, and what loads survives a round trip.
    #[test]
    fn mutated_flowcharts_load_or_name_their_problems(
        index in 0..EXAMPLES.len(),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let mut doc = example(index);
        for m in &mutations {
            apply(&mut doc, m);
        }
        let text = serde_json::to_string(&doc).unwrap();
        check_load(&text, SourceFormat::Json)?;
        let yaml = serde_yaml_ng::to_string(&doc).unwrap();
        check_load(&yaml, SourceFormat::Yaml)?;
    }

    /// Arbitrary text, YAML-looking or not, never panics the parser.
    #[test]
    fn arbitrary_text_never_panics_the_parser(text in prop_oneof![
        ".{0,200}",
        "(name|nodes|connectors|id|type|from|to|- |: |\\{|\\}|\\[|\\]|,|\n|  |&a|\\*a|!!str |[a-z0-9]){0,60}",
    ]) {
        check_load(&text, SourceFormat::Auto)?;
    }

    /// Conditions built from the language's own tokens parse or fail with a position inside
    /// the text; what parses evaluates (to a value or a typed error) against any context.
    #[test]
    fn conditions_parse_and_evaluate_without_panicking(
        tokens in prop::collection::vec(prop_oneof![
            Just("latest_upstream.output.score"), Just("inputs.topic"), Just("upstream.a.output"),
            Just("context.b.output.notes"), Just("node.execution_index"), Just("run.id"),
            Just("=="), Just("!="), Just("<"), Just("<="), Just(">"), Just(">="), Just("contains"),
            Just("in"), Just("and"), Just("or"), Just("not"), Just("exists("), Just("("), Just(")"),
            Just("["), Just("]"), Just(","), Just("8"), Just("-1.5e3"), Just("18446744073709551616"),
            Just("\"x\""), Just("\"\\u0000\""), Just("null"), Just("true"), Just("[1, \"a\"]"),
            Just("{\"k\": 1}"), Just("."), Just("\""), Just("é"),
        ], 0..12),
        context in value(),
    ) {
        let source = tokens.join(" ");
        match condition::parse(&source) {
            Ok(parsed) => {
                prop_assert_eq!(parsed.source(), source.as_str());
                let _ = parsed.evaluate(&context);
                let _ = parsed.evaluate_explained(&context);
            }
            Err(e) => prop_assert!(e.position <= source.len(), "{:?} in {:?}", e, source),
        }
    }

    /// A deeply nested condition is refused or evaluated, not a stack overflow.
    #[test]
    fn deeply_nested_conditions_do_not_overflow_the_stack(depth in 1usize..20_000, not in any::<bool>()) {
        let open = if not { "not (" } else { "(" };
        let source = format!("{}inputs.x == 1{}", open.repeat(depth), ")".repeat(depth));
        if let Ok(parsed) = condition::parse(&source) {
            let _ = parsed.evaluate(&json!({ "inputs": { "x": 1 } }));
        }
    }
}

/// Inputs contexts the way the engine builds them, for the regression cases below.
fn context_with(inputs: Value) -> Value {
    let mut map = Map::new();
    map.insert("inputs".into(), inputs);
    Value::Object(map)
}

#[test]
fn a_condition_over_a_nul_string_evaluates() {
    let parsed = condition::parse("inputs.x == \"a\\u0000b\"").unwrap();
    assert!(
        parsed
            .evaluate(&context_with(json!({ "x": "a\u{0}b" })))
            .unwrap()
    );
}
