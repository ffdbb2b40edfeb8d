//! The MCP registry and domain, against the stdio server of examples/mcp_test_server.rs.

use std::path::PathBuf;

use runledger_tools::mcp::{McpRegistry, McpServer};
use runledger_tools::{ToolsConfig, ToolsError};
use serde_json::json;

use crate::{Domains, Scratch, code, config, ctx};

/// The test server binary, built by cargo as an example of this crate: `cargo test -p
/// runledger-tools` (and `cargo test --workspace`) build examples. A nested cargo here would
/// wait for the build lock the running `cargo test` may hold, so a missing binary is an error
/// saying what to run.
fn test_server() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .to_owned();
    let server = profile_dir.join("examples").join("mcp_test_server");
    assert!(
        server.exists(),
        "{} is missing: run `cargo build -p runledger-tools --example mcp_test_server` first \
         (cargo test --test tools does not build examples)",
        server.display()
    );
    server
}

fn registry_with_server(scratch: &Scratch) -> ToolsConfig {
    let path = scratch.path().join("mcp.json");
    let mut registry = McpRegistry::load(&path).unwrap();
    registry
        .add(
            "testsrv",
            McpServer::Stdio {
                command: test_server().display().to_string(),
                args: vec![],
                env_allowlist: vec![],
            },
        )
        .unwrap();
    registry
        .add(
            "down",
            McpServer::Stdio {
                command: "/nonexistent/mcp-server".into(),
                args: vec![],
                env_allowlist: vec![],
            },
        )
        .unwrap();
    registry.save(&path).unwrap();
    ToolsConfig {
        mcp_registry: Some(path),
        ..config(scratch)
    }
}

#[tokio::test]
async fn a_stdio_servers_tools_join_as_mcp_server_tool_and_are_called() {
    let scratch = Scratch::new("mcp-stdio");
    let cfg = registry_with_server(&scratch);
    let domains = Domains::new(&cfg).await;
    let names: Vec<&str> = domains.0.iter().map(|d| d.domain()).collect();
    assert_eq!(
        names,
        ["workspace", "git", "command", "mcp__testsrv"],
        "the unreachable server is left out"
    );

    let mcp = domains.get("mcp__testsrv");
    let specs = mcp.specs();
    let tools: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        tools,
        [
            "mcp__testsrv__echo",
            "mcp__testsrv__add_numbers",
            "mcp__testsrv__fail"
        ]
    );
    assert_eq!(specs[0].parameters["properties"]["text"]["type"], "string");
    assert_eq!(specs[0].parameters["required"], json!(["text"]));
    assert!(
        specs[0].side_effects,
        "no read-only hint: side effects assumed"
    );

    let c = ctx(None, None);
    let echoed = mcp
        .call(&c, "mcp__testsrv__echo", json!({ "text": "hi" }))
        .await
        .unwrap();
    assert_eq!(echoed["text"], "echo: hi");
    let sum = mcp
        .call(&c, "mcp__testsrv__add_numbers", json!({ "a": 40, "b": 2 }))
        .await
        .unwrap();
    assert_eq!(sum["structured_content"], json!({ "sum": 42 }));
    let failed = mcp
        .call(&c, "mcp__testsrv__fail", json!({}))
        .await
        .unwrap_err();
    assert_eq!(failed.code(), "mcp_tool_error");
    assert!(failed.to_string().contains("boom"));
    assert_eq!(
        code(mcp.call(&c, "mcp__testsrv__nope", json!({})).await),
        "invalid_arguments"
    );

    // Parallel calls share the one connection.
    let (a, b) = tokio::join!(
        mcp.call(&c, "mcp__testsrv__echo", json!({ "text": "a" })),
        mcp.call(&c, "mcp__testsrv__echo", json!({ "text": "b" })),
    );
    assert_eq!(a.unwrap()["text"], "echo: a");
    assert_eq!(b.unwrap()["text"], "echo: b");
}

#[tokio::test]
async fn the_registry_adds_lists_and_removes_servers_with_checked_names_and_urls() {
    let scratch = Scratch::new("mcp-registry");
    let path = scratch.path().join("nested/mcp.json");
    let mut registry = McpRegistry::load(&path).unwrap();
    assert_eq!(
        registry.servers().count(),
        0,
        "a missing file is an empty registry"
    );
    registry
        .add(
            "docs",
            McpServer::Stdio {
                command: "docs-mcp".into(),
                args: vec!["--root".into(), "docs".into()],
                env_allowlist: vec![],
            },
        )
        .unwrap();
    registry
        .add(
            "web",
            McpServer::Http {
                url: "https://mcp.example.org/mcp".into(),
                bearer_token_env: Some("WEB_TOKEN".into()),
            },
        )
        .unwrap();
    for bad in ["Docs", "a__b", "9x", "", "x_"] {
        let err = registry
            .add(
                bad,
                McpServer::Http {
                    url: "http://localhost/mcp".into(),
                    bearer_token_env: None,
                },
            )
            .unwrap_err();
        assert!(
            matches!(err, ToolsError::InvalidServer { field: "name", .. }),
            "{bad}: {err}"
        );
    }
    let err = registry
        .add(
            "leaky",
            McpServer::Http {
                url: "https://user:secret@mcp.example.org/".into(),
                bearer_token_env: None,
            },
        )
        .unwrap_err();
    assert_eq!(err.code(), "invalid_argument");
    assert!(!err.to_string().contains("secret"));
    assert_eq!(
        registry
            .add(
                "docs",
                McpServer::Http {
                    url: "http://x/".into(),
                    bearer_token_env: None
                }
            )
            .unwrap_err()
            .code(),
        "mcp_server_exists"
    );
    registry.save(&path).unwrap();

    let text = std::fs::read_to_string(&path).unwrap();
    let on_disk: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        on_disk["servers"]["docs"],
        json!({ "transport": "stdio", "command": "docs-mcp", "args": ["--root", "docs"] })
    );
    assert_eq!(on_disk["servers"]["web"]["bearer_token_env"], "WEB_TOKEN");

    let mut again = McpRegistry::load(&path).unwrap();
    assert_eq!(again, registry);
    assert_eq!(
        again.get("docs").unwrap().describe(),
        "stdio: docs-mcp --root docs"
    );
    again.remove("docs").unwrap();
    assert_eq!(
        again.remove("docs").unwrap_err().code(),
        "unknown_mcp_server"
    );

    std::fs::write(
        &path,
        "{ \"servers\": { \"x\": { \"transport\": \"carrier-pigeon\" } } }",
    )
    .unwrap();
    assert_eq!(
        McpRegistry::load(&path).unwrap_err().code(),
        "mcp_registry_invalid"
    );
    let cfg = ToolsConfig {
        mcp_registry: Some(path),
        ..config(&scratch)
    };
    assert!(runledger_tools::domains(&cfg).await.is_err());
}
