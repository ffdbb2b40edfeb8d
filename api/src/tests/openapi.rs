//! The committed OpenAPI document equals the generated one, and documents every route.

use std::path::PathBuf;

use reqwest::StatusCode;
use serde_json::Value;

use super::Backend;
use super::TestServer;
use crate::openapi::document;

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json")
}

#[test]
fn committed_openapi_matches_the_code() {
    let generated = document();
    if std::env::var_os("RUNLEDGER_BLESS").is_some() {
        std::fs::write(committed_path(), &generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(committed_path())
        .unwrap_or_else(|_| panic!("docs/openapi.json is missing; run RUNLEDGER_BLESS=1 cargo test -p runledger-api openapi"));
    assert!(
        committed == generated,
        "docs/openapi.json drifted from the code; run RUNLEDGER_BLESS=1 cargo test -p runledger-api openapi"
    );
}

/// Every route the router serves is in the document, with the same methods, and nothing else is.
#[test]
fn the_document_covers_exactly_the_routes() {
    let doc: Value = serde_json::from_str(&document()).unwrap();
    let mut documented: Vec<String> = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.push(format!("{} {path}", method.to_uppercase()));
        }
    }
    documented.sort();
    // The `.route(...)` calls of `router()`, however rustfmt wrapped them.
    let source: String = include_str!("../lib.rs").split_whitespace().collect();
    let mut routed: Vec<String> = Vec::new();
    for (at, _) in source.match_indices(".route(\"") {
        let mut depth = 0;
        let mut end = at;
        for (i, c) in source[at..].char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        end = at + i;
                        break;
                    }
                }
                _ => {}
            }
        }
        let call = &source[at..end];
        let path = call.split('"').nth(1).unwrap();
        let v1 = [
            "flowcharts::",
            "runs::",
            "read::",
            "control::",
            "fork::",
            "live::",
            "models::",
            "rag::",
            "session::",
        ]
        .iter()
        .any(|m| call.contains(m));
        let prefix = if v1 { "/v1" } else { "" };
        for method in ["get", "post", "put", "patch", "delete"] {
            if call.contains(&format!(",{method}(")) || call.contains(&format!(".{method}(")) {
                routed.push(format!("{} {prefix}{path}", method.to_uppercase()));
            }
        }
    }
    routed.sort();
    assert_eq!(routed, documented);
    // Every error response is the envelope.
    assert!(doc["components"]["schemas"]["ErrorEnvelope"].is_object());
}

async fn the_server_serves_the_document(backend: Backend) {
    let server = TestServer::start(backend).await;
    let r = server.get("/openapi.json").await;
    assert_eq!(r.status, StatusCode::OK);
    let doc: Value = serde_json::from_str(&document()).unwrap();
    assert_eq!(r.body, doc);
    assert!(r.body["openapi"].as_str().unwrap().starts_with("3."));
    server.finish().await;
}

/// The documented model spec has exactly the fields of `ModelSpec`, and requires the ones it
/// cannot do without.
#[test]
fn the_documented_model_spec_matches_the_contract() {
    use runledger_contracts::model::{ExecutorClass, ModelSettings, ModelSpec, ProviderKind};
    let spec = ModelSpec {
        name: "m".into(),
        provider: ProviderKind::OpenaiCompatible,
        model_id: "id".into(),
        base_url: Some("http://127.0.0.1:1/v1".into()),
        api_key_env: Some("KEY".into()),
        executor_class: Some(ExecutorClass::Frontier),
        timeout_s: Some(5),
        description: Some("d".into()),
        settings: ModelSettings {
            temperature: Some(0.5),
            ..ModelSettings::default()
        },
    };
    let fields: Vec<String> = match serde_json::to_value(&spec).unwrap() {
        serde_json::Value::Object(map) => map.keys().cloned().collect(),
        other => panic!("{other}"),
    };
    let document: serde_json::Value = serde_json::from_str(&crate::openapi::document()).unwrap();
    let schema = &document["components"]["schemas"]["ModelSpec"];
    let mut documented: Vec<String> = schema["properties"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    documented.sort();
    let mut fields = fields;
    fields.sort();
    assert_eq!(documented, fields);
    assert_eq!(
        schema["required"],
        serde_json::json!(["name", "provider", "model_id"])
    );
}

/// The documented collection and source specs have exactly the fields of the contract's.
#[test]
fn the_documented_collection_spec_matches_the_contract() {
    use runledger_contracts::rag::{CollectionSpec, SourceKind, SourceSpec};
    let spec = CollectionSpec {
        name: "c".into(),
        sources: vec![SourceSpec {
            name: "s".into(),
            kind: SourceKind::Git,
            path: "/p".into(),
            repo: Some("/r".into()),
            git_ref: Some("main".into()),
            include: vec!["*".into()],
            exclude: vec!["x".into()],
        }],
        description: Some("d".into()),
        embedding_model: Some("e".into()),
    };
    let value = serde_json::to_value(&spec).unwrap();
    let document: Value = serde_json::from_str(&document()).unwrap();
    for (schema, fields) in [
        ("CollectionSpec", &value),
        ("SourceSpec", &value["sources"][0]),
    ] {
        let mut fields: Vec<&String> = fields.as_object().unwrap().keys().collect();
        fields.sort();
        let properties = document["components"]["schemas"][schema]["properties"]
            .as_object()
            .unwrap();
        let mut documented: Vec<&String> = properties.keys().collect();
        documented.sort();
        assert_eq!(documented, fields, "{schema}");
    }
}

on_backends!(
    postgres: [the_server_serves_the_document],
    both: [],
);
