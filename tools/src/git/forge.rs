//! The forge client of `git_pr_create`: pull requests over the GitHub REST shape,
//! `POST {api_base}/repos/{owner}/{name}/pulls` with `{title, head, base, body}`, which Gitea
//! and Forgejo serve too under `/api/v1`. Where to open them is the git policy's `forge`
//! (`api_base`, `repo`, `token_env`); the token is read from the executor's environment
//! variable `token_env` names when the call is made.
//!
//! The token goes into the `Authorization` header (marked sensitive) and nowhere else: not into
//! the result, not into an error message (a forge's message is scrubbed of it, and the body of
//! a 401/403 is not kept), not into logs.
//!
//! **Idempotency.** The body of every pull request opened carries the call's idempotency key in
//! an HTML comment (`<!-- runledger:pr_create <key> -->`, invisible on the forge's page).
//! Before opening one, the open pull requests from `head` into `base` are listed (the first
//! page); one carrying the key is the pull request this call already opened (its process died
//! before the result was recorded), and is answered with `created: false` instead of opening a
//! second.
//!
//! Errors: 401/403 `forge_permission_denied`; 404 `forge_repo_not_found`; 422
//! `forge_invalid_request` with the forge's message; 429, 5xx, timeouts and unreachable forges
//! `forge_unavailable` (transient: [`ToolCallError::Transient`]); any other refusal
//! `forge_rejected`; a success the client cannot read `forge_bad_response`.

use std::time::Duration;

use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, HeaderValue};
use runledger_contracts::agent_tool::{Forge, ToolCallError};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::args::failed;
use crate::error::ToolsError;

/// Longest forge message kept in an error.
const MAX_FORGE_MESSAGE: usize = 500;

/// One HTTP client for every forge call of the process.
#[derive(Debug, Clone)]
pub struct ForgeClient {
    client: reqwest::Client,
    timeout: Duration,
}

/// What the model asks for.
pub struct PullRequestAsk<'a> {
    pub title: &'a str,
    pub body: &'a str,
    pub head: &'a str,
    pub base: &'a str,
    /// The call's idempotency key, written into the body.
    pub key: &'a str,
}

/// The part of a forge's pull request this client reads (GitHub, Gitea and Forgejo agree).
#[derive(Debug, Deserialize)]
struct PullRequest {
    number: u64,
    #[serde(default)]
    html_url: Option<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    head: Option<Branch>,
    #[serde(default)]
    base: Option<Branch>,
}

#[derive(Debug, Deserialize)]
struct Branch {
    #[serde(rename = "ref")]
    name: String,
}

/// The token read for one call; its value never leaves this module but in the header.
struct Token {
    var: String,
    value: String,
}

impl ForgeClient {
    /// A client whose requests each end after `timeout`.
    pub fn new(timeout: Duration) -> Result<Self, ToolsError> {
        crate::http::install_crypto_provider();
        let client = reqwest::Client::builder()
            .user_agent(concat!("runledger/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ToolsError::HttpClient {
                source: Box::new(e),
            })?;
        Ok(ForgeClient { client, timeout })
    }

    /// Opens the pull request, or finds the one this call (its idempotency key) already opened.
    pub async fn open(
        &self,
        forge: &Forge,
        ask: &PullRequestAsk<'_>,
    ) -> Result<Value, ToolCallError> {
        let token = token(forge)?;
        let pulls = format!(
            "{}/repos/{}/pulls",
            forge.api_base.trim_end_matches('/'),
            forge.repo
        );
        let marker = format!("<!-- runledger:pr_create {} -->", ask.key);
        if let Some(found) = self.find(&pulls, forge, ask, &marker, &token).await? {
            return Ok(answer(&found, ask, false));
        }
        let body = if ask.body.is_empty() {
            marker
        } else {
            format!("{}\n\n{marker}", ask.body)
        };
        let request =
            self.client.post(&pulls).headers(headers(&token)?).json(
                &json!({ "title": ask.title, "head": ask.head, "base": ask.base, "body": body }),
            );
        let created: PullRequest = self.send(request, forge, &token).await?;
        Ok(answer(&created, ask, true))
    }

    /// The open pull request from `head` into `base` whose body carries `marker`, if any.
    async fn find(
        &self,
        pulls: &str,
        forge: &Forge,
        ask: &PullRequestAsk<'_>,
        marker: &str,
        token: &Token,
    ) -> Result<Option<PullRequest>, ToolCallError> {
        let owner = forge.repo.split('/').next().unwrap_or_default();
        let head = format!("{owner}:{}", ask.head);
        // GitHub filters by `head` and `base` and pages by `per_page`; Gitea and Forgejo page
        // by `limit` and may ignore the filters: the answer is filtered here either way.
        let mut url = reqwest::Url::parse(pulls).map_err(|e| {
            failed(
                "forge_not_configured",
                format!(
                    "git_policy.forge.api_base `{}` is not a URL: {e}",
                    forge.api_base
                ),
            )
        })?;
        url.query_pairs_mut()
            .append_pair("state", "open")
            .append_pair("head", &head)
            .append_pair("base", ask.base)
            .append_pair("per_page", "100")
            .append_pair("limit", "50");
        let request = self.client.get(url).headers(headers(token)?);
        let open: Vec<PullRequest> = self.send(request, forge, token).await?;
        Ok(open.into_iter().find(|pr| {
            pr.head.as_ref().is_some_and(|b| b.name == ask.head)
                && pr.base.as_ref().is_some_and(|b| b.name == ask.base)
                && pr.body.as_deref().is_some_and(|b| b.contains(marker))
        }))
    }

    /// Sends one request and reads its JSON answer; every failure typed (see the module's doc).
    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        forge: &Forge,
        token: &Token,
    ) -> Result<T, ToolCallError> {
        let unavailable =
            |reason: String, source: Option<reqwest::Error>| ToolCallError::Transient {
                code: "forge_unavailable",
                message: format!(
                    "the forge at {} is unavailable: {reason}; the same call may succeed later",
                    forge.api_base
                ),
                source: source.map(|e| Box::new(e) as _),
            };
        let response = match request.timeout(self.timeout).send().await {
            Ok(response) => response,
            Err(e) if e.is_timeout() => {
                let reason = format!("no answer within {} s", self.timeout.as_secs());
                return Err(unavailable(reason, Some(e)));
            }
            Err(e) => return Err(unavailable(scrub(&e.to_string(), token), Some(e))),
        };
        let status = response.status().as_u16();
        if status == 401 || status == 403 {
            // The body of an auth failure may quote the token: it is not read.
            return Err(failed(
                "forge_permission_denied",
                format!(
                    "the forge refused the token from `{}` for {} (HTTP {status}): it is invalid or may not open pull requests there",
                    token.var, forge.repo
                ),
            ));
        }
        let bytes = match response.bytes().await {
            Ok(bytes) => bytes,
            Err(e) if e.is_timeout() => {
                let reason = format!("no answer within {} s", self.timeout.as_secs());
                return Err(unavailable(reason, Some(e)));
            }
            Err(e) => return Err(unavailable(scrub(&e.to_string(), token), Some(e))),
        };
        let message = || forge_message(&bytes, token);
        match status {
            200..=299 => serde_json::from_slice(&bytes).map_err(|e| {
                failed(
                    "forge_bad_response",
                    format!("the forge's answer (HTTP {status}) is not a pull request as the GitHub REST API describes it: {e}"),
                )
            }),
            404 => Err(failed(
                "forge_repo_not_found",
                format!(
                    "the forge at {} has no repository {} (or the token from `{}` cannot see it)",
                    forge.api_base, forge.repo, token.var
                ),
            )),
            422 => Err(failed(
                "forge_invalid_request",
                format!("the forge refused the pull request (HTTP 422): {}", message()),
            )),
            429 => Err(unavailable("rate limited (HTTP 429)".into(), None)),
            500..=599 => Err(unavailable(format!("HTTP {status}: {}", message()), None)),
            _ => Err(failed(
                "forge_rejected",
                format!("the forge refused the request (HTTP {status}): {}", message()),
            )),
        }
    }
}

/// The token from the variable the forge names, read now.
fn token(forge: &Forge) -> Result<Token, ToolCallError> {
    match std::env::var(&forge.token_env) {
        Ok(value) if !value.trim().is_empty() => Ok(Token {
            var: forge.token_env.clone(),
            value: value.trim().to_owned(),
        }),
        _ => Err(failed(
            "forge_credentials_missing",
            format!(
                "the environment variable `{}` (git_policy.forge.token_env) is not set on this executor",
                forge.token_env
            ),
        )),
    }
}

fn headers(token: &Token) -> Result<HeaderMap, ToolCallError> {
    let mut auth = HeaderValue::from_str(&format!("Bearer {}", token.value)).map_err(|_| {
        failed(
            "forge_credentials_missing",
            format!(
                "the value of `{}` cannot be sent in an HTTP header",
                token.var
            ),
        )
    })?;
    auth.set_sensitive(true);
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, auth);
    headers.insert(
        ACCEPT,
        HeaderValue::from_static("application/vnd.github+json"),
    );
    headers.insert(
        "X-GitHub-Api-Version",
        HeaderValue::from_static("2022-11-28"),
    );
    Ok(headers)
}

/// What the model reads of a pull request.
fn answer(pr: &PullRequest, ask: &PullRequestAsk<'_>, created: bool) -> Value {
    json!({
        "number": pr.number,
        "url": pr.html_url,
        "api_url": pr.url,
        "state": pr.state,
        "head": ask.head,
        "base": ask.base,
        "created": created,
    })
}

/// The forge's explanation: `message` and each `errors[].message` (GitHub, Gitea), else the
/// start of the body; scrubbed of the token and bounded.
fn forge_message(bytes: &[u8], token: &Token) -> String {
    let text = match serde_json::from_slice::<Value>(bytes) {
        Ok(body) => {
            let mut parts: Vec<String> = Vec::new();
            if let Some(m) = body.get("message").and_then(Value::as_str) {
                parts.push(m.to_owned());
            }
            for e in body
                .get("errors")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                match e.get("message").and_then(Value::as_str) {
                    Some(m) => parts.push(m.to_owned()),
                    None => parts.push(e.to_string()),
                }
            }
            if parts.is_empty() {
                body.to_string()
            } else {
                parts.join("; ")
            }
        }
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    };
    let text = scrub(text.trim(), token);
    if text.chars().count() > MAX_FORGE_MESSAGE {
        let cut: String = text.chars().take(MAX_FORGE_MESSAGE).collect();
        format!("{cut}...")
    } else if text.is_empty() {
        "(no message)".into()
    } else {
        text
    }
}

/// `text` with every occurrence of the token replaced.
fn scrub(text: &str, token: &Token) -> String {
    text.replace(&token.value, "[redacted]")
}
