//! git_pr_create against the stub forge (forge_stub.rs): the request it sends, the pull request
//! it answers, one pull request per idempotency key, refusal without a policy, and each error
//! typed, none of them carrying the token.

use std::time::Duration;

use runledger_tools::{Forge, GitPolicy, ToolCallContext, ToolCallError};
use serde_json::json;

use super::forge_stub::{Answer, StubForge};
use super::{Domains, Scratch, code, config, ctx, refused, source, source_repo};

/// A token no other test uses, set in this process's environment under `var`.
fn token(var: &str) -> String {
    let value = format!("ghp_{}", uuid::Uuid::now_v7().simple());
    // SAFETY: each test sets its own variable before any call reads it; nothing else of the
    // process reads or writes it.
    unsafe { std::env::set_var(var, &value) };
    value
}

fn policy(forge: &StubForge, token_env: &str) -> GitPolicy {
    GitPolicy {
        push: false,
        pr_create: true,
        branches: vec!["agent/*".into()],
        forge: Some(Forge {
            api_base: forge.api_base.clone(),
            repo: "acme/demo".into(),
            token_env: token_env.into(),
        }),
    }
}

/// What each test starts from: a workspace of the source repository, the stub forge accepting
/// the token set under `var`, and a call context without a policy. Keep `_scratch` bound: it
/// removes the directory when dropped.
struct Setup {
    _scratch: Scratch,
    secret: String,
    forge: StubForge,
    domains: Domains,
    ctx: ToolCallContext,
}

async fn setup(name: &str, var: &str, forge_timeout: Duration) -> Setup {
    let scratch = Scratch::new(name);
    let secret = token(var);
    let forge = StubForge::start(&secret).await;
    let repo = source_repo(&scratch);
    let mut config = config(&scratch);
    config.limits.forge_timeout = forge_timeout;
    let domains = Domains::new(&config).await;
    let ctx = ctx(Some(source(&repo)), None);
    Setup {
        _scratch: scratch,
        secret,
        forge,
        domains,
        ctx,
    }
}

fn ask() -> serde_json::Value {
    json!({ "title": "Fix the answer", "body": "It was 41.", "base": "main", "head": "agent/fix" })
}

#[tokio::test]
async fn git_pr_create_opens_one_pull_request_per_call_on_the_policys_forge() {
    let var = "RUNLEDGER_TEST_FORGE_TOKEN_OPEN";
    let Setup {
        _scratch,
        secret,
        forge,
        domains,
        ctx: c,
    } = setup("forge-open", var, Duration::from_secs(10)).await;

    // Without a policy: refused, nothing sent.
    refused(
        domains.call(&c, "git_pr_create", ask()).await,
        "git_policy_denied",
    );
    // A policy for other branches: refused, nothing sent.
    let mut other = c.clone();
    other.git_policy = Some(GitPolicy {
        branches: vec!["release/*".into()],
        ..policy(&forge, var)
    });
    refused(
        domains.call(&other, "git_pr_create", ask()).await,
        "git_policy_denied",
    );
    // A policy without a forge: a typed failure.
    let mut no_forge = c.clone();
    no_forge.git_policy = Some(GitPolicy {
        forge: None,
        ..policy(&forge, var)
    });
    assert_eq!(
        code(domains.call(&no_forge, "git_pr_create", ask()).await),
        "forge_not_configured"
    );
    assert_eq!(forge.posts(), 0);
    assert!(forge.seen.lock().unwrap().authorizations.is_empty());

    let mut allowed = c.clone();
    allowed.git_policy = Some(policy(&forge, var));
    let pr = domains
        .call(&allowed, "git_pr_create", ask())
        .await
        .unwrap();
    assert_eq!(pr["number"], 1, "{pr}");
    assert_eq!(pr["created"], true);
    assert_eq!(pr["head"], "agent/fix");
    assert_eq!(pr["base"], "main");
    assert!(
        pr["url"].as_str().unwrap().ends_with("/acme/demo/pull/1"),
        "{pr}"
    );
    {
        let seen = forge.seen.lock().unwrap();
        let sent = &seen.posts[0];
        assert_eq!(sent["title"], "Fix the answer");
        assert_eq!(sent["head"], "agent/fix");
        assert_eq!(sent["base"], "main");
        let body = sent["body"].as_str().unwrap();
        assert!(body.starts_with("It was 41.\n\n"), "{body}");
        assert!(
            body.contains(&format!(
                "<!-- runledger:pr_create {} -->",
                allowed.idempotency_key
            )),
            "{body}"
        );
        assert!(
            seen.authorizations
                .iter()
                .all(|a| a == &format!("Bearer {secret}"))
        );
    }
    assert!(!pr.to_string().contains(&secret));

    // The same call again (its process died before the result was recorded): the pull request
    // it opened is found by its key, none is opened again.
    let again = domains
        .call(&allowed, "git_pr_create", ask())
        .await
        .unwrap();
    assert_eq!(again["number"], 1, "{again}");
    assert_eq!(again["created"], false);
    assert_eq!(forge.posts(), 1, "one pull request for one idempotency key");
    assert_eq!(forge.seen.lock().unwrap().lists, 2);

    // Another call (another key) opens another (a real forge would refuse the same head).
    let mut next = allowed.clone();
    next.call_index = 1;
    next.idempotency_key = format!("{}:1:1", next.node_run_id);
    let second = domains.call(&next, "git_pr_create", ask()).await.unwrap();
    assert_eq!(second["number"], 2, "{second}");
    assert_eq!(forge.posts(), 2);
}

#[tokio::test]
async fn forge_errors_are_typed_and_never_carry_the_token() {
    let var = "RUNLEDGER_TEST_FORGE_TOKEN_ERRORS";
    let Setup {
        _scratch,
        secret,
        forge,
        domains,
        ctx: c,
    } = setup("forge-errors", var, Duration::from_millis(500)).await;
    let mut allowed = c.clone();
    allowed.git_policy = Some(policy(&forge, var));
    let no_token = |e: &ToolCallError| {
        assert!(!e.to_string().contains(&secret), "{e}");
    };

    // 422: the forge's message, scrubbed of the token it quoted.
    forge.answer(Answer::Status(
        422,
        json!({
            "message": "Validation Failed",
            "errors": [{ "message": format!("A pull request already exists for acme:agent/fix ({secret}).") }],
        }),
    ));
    let e = domains
        .call(&allowed, "git_pr_create", ask())
        .await
        .unwrap_err();
    assert_eq!(e.code(), "forge_invalid_request");
    assert!(
        e.to_string().contains(
            "Validation Failed; A pull request already exists for acme:agent/fix ([redacted])"
        ),
        "{e}"
    );
    assert!(!e.retryable());
    no_token(&e);

    // 403: a permission error naming the variable, not its value.
    forge.answer(Answer::Status(
        403,
        json!({ "message": format!("token {secret} may not") }),
    ));
    let e = domains
        .call(&allowed, "git_pr_create", ask())
        .await
        .unwrap_err();
    assert_eq!(e.code(), "forge_permission_denied");
    assert!(e.to_string().contains(var), "{e}");
    assert!(matches!(e, ToolCallError::Failed { .. }));
    no_token(&e);

    // 502 and a forge that does not answer in time: transient.
    forge.answer(Answer::Status(502, json!({ "message": "Bad gateway" })));
    let e = domains
        .call(&allowed, "git_pr_create", ask())
        .await
        .unwrap_err();
    assert_eq!(e.code(), "forge_unavailable");
    assert!(e.retryable(), "{e:?}");
    assert!(e.to_string().contains("HTTP 502: Bad gateway"), "{e}");
    forge.answer(Answer::Stall(Duration::from_secs(3)));
    let e = domains
        .call(&allowed, "git_pr_create", ask())
        .await
        .unwrap_err();
    assert_eq!(e.code(), "forge_unavailable");
    assert!(matches!(e, ToolCallError::Transient { .. }));
    no_token(&e);

    // A wrong token: the forge's 401 is a permission error too.
    let mut wrong = allowed.clone();
    let wrong_var = "RUNLEDGER_TEST_FORGE_TOKEN_WRONG";
    let wrong_secret = token(wrong_var);
    wrong.git_policy = Some(policy(&forge, wrong_var));
    let e = domains
        .call(&wrong, "git_pr_create", ask())
        .await
        .unwrap_err();
    assert_eq!(e.code(), "forge_permission_denied");
    assert!(!e.to_string().contains(&wrong_secret), "{e}");

    // No token in the environment: nothing is sent.
    let before = forge.seen.lock().unwrap().authorizations.len();
    let mut unset = allowed.clone();
    unset.git_policy = Some(policy(&forge, "RUNLEDGER_TEST_FORGE_TOKEN_NEVER_SET"));
    let e = domains
        .call(&unset, "git_pr_create", ask())
        .await
        .unwrap_err();
    assert_eq!(e.code(), "forge_credentials_missing");
    assert_eq!(forge.seen.lock().unwrap().authorizations.len(), before);

    // An unreachable forge: transient.
    let mut gone = allowed.clone();
    gone.git_policy = Some(GitPolicy {
        forge: Some(Forge {
            api_base: "http://127.0.0.1:9/api".into(),
            repo: "acme/demo".into(),
            token_env: var.into(),
        }),
        ..policy(&forge, var)
    });
    let e = domains
        .call(&gone, "git_pr_create", ask())
        .await
        .unwrap_err();
    assert_eq!(e.code(), "forge_unavailable");
    no_token(&e);
}
