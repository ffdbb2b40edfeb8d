//! The Studio console as the server serves it: HTML with its security headers, every file of
//! `studio/` embedded, ETag revalidation.

use reqwest::{Method, StatusCode};

use super::Backend;
use super::TestServer;
use crate::studio::{ASSETS, CSP};

async fn the_console_is_served_with_csp_and_its_files_revalidate_by_etag(backend: Backend) {
    let server = TestServer::start(backend).await;
    for page in [
        "/",
        "/runs",
        "/runs/0190f3a2-0000-7000-8000-000000000000",
        "/models/new",
        "/claims",
    ] {
        let r = server.get(page).await;
        assert_eq!(r.status, StatusCode::OK, "{page}");
        assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
        assert_eq!(r.header("content-security-policy"), Some(CSP));
        assert!(CSP.contains("script-src 'self'") && !CSP.contains("unsafe-inline"));
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        assert!(
            r.text
                .contains("<script type=\"module\" src=\"/studio/js/app.js\">"),
            "{page}"
        );
    }
    let js = server.get("/studio/js/app.js").await;
    assert_eq!(js.status, StatusCode::OK);
    assert_eq!(
        js.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(js.header("cache-control"), Some("no-cache"));
    let etag = js.header("etag").expect("an ETag").to_owned();
    let again = server
        .call(
            Method::GET,
            "/studio/js/app.js",
            None,
            &[("if-none-match", &etag)],
        )
        .await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);
    assert!(again.text.is_empty());
    assert_eq!(again.header("etag"), Some(etag.as_str()));
    let weak = format!("W/{etag}");
    let stale = server
        .call(
            Method::GET,
            "/studio/js/app.js",
            None,
            &[("if-none-match", "\"other\""), ("if-none-match", &weak)],
        )
        .await;
    assert_eq!(
        stale.status,
        StatusCode::NOT_MODIFIED,
        "weak comparison, several values"
    );
    let changed = server
        .call(
            Method::GET,
            "/studio/studio.css",
            None,
            &[("if-none-match", &etag)],
        )
        .await;
    assert_eq!(
        changed.status,
        StatusCode::OK,
        "another file's ETag does not match"
    );
    assert_eq!(
        changed.header("content-type"),
        Some("text/css; charset=utf-8")
    );
    server
        .get("/studio/js/nope.js")
        .await
        .assert_error(StatusCode::NOT_FOUND, "route_not_found");
    server
        .get("/studio/../Cargo.toml")
        .await
        .assert_error(StatusCode::NOT_FOUND, "route_not_found");
    server.finish().await;
}

/// Every file under `studio/` (but the browser tests) is embedded, so the binary serves the
/// whole console; a new file that is not listed in `ASSETS` fails here.
#[test]
fn every_console_file_is_embedded() {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../studio");
    let mut found = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            if rel == "tests" || rel == "README.md" {
                continue;
            }
            if path.is_dir() {
                dirs.push(path);
            } else {
                found.push(rel);
            }
        }
    }
    found.sort();
    let mut listed: Vec<String> = ASSETS.iter().map(|a| a.path.to_owned()).collect();
    listed.sort();
    assert_eq!(found, listed);
    for a in ASSETS {
        assert!(!a.bytes.is_empty(), "{} is empty", a.path);
    }
}

on_backends!(
    postgres: [the_console_is_served_with_csp_and_its_files_revalidate_by_etag],
    both: [],
);
