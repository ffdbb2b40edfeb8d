//! The Studio web console: static files from `studio/` at the workspace root, embedded into
//! the binary at compile time (`include_bytes!`), so `cargo build` alone gives a binary that
//! serves it: no Node toolchain, no build step, no CDN (docs/adr/0004-studio-assets.md).
//!
//! The console's pages (`/`, `/runs/...`, `/artifacts/...`, ...) all answer the same
//! `index.html`: its ES modules route in the browser (History API), so a reload or a shared
//! link of any page works. Files are under `/studio/`. Every answer carries a strong `ETag`
//! (blake3 of the bytes) and `Cache-Control: no-cache`, so a browser revalidates and gets
//! `304 Not Modified` while the binary is unchanged; and a Content-Security-Policy that allows
//! only this origin's scripts, styles and API (no inline script, no third party).

use std::sync::OnceLock;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::error::ApiError;
use crate::state::ApiState;

/// What the console's pages may load and do: only this origin; no inline script or style,
/// no framing, no `<base>` tricks, forms post only here.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

/// One embedded file.
pub struct Asset {
    /// Path under `/studio/`.
    pub path: &'static str,
    pub content_type: &'static str,
    pub bytes: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $type:expr) => {
        Asset {
            path: $path,
            content_type: $type,
            bytes: include_bytes!(concat!("../../studio/", $path)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file of the console (a test checks that each file in `studio/` is listed here).
pub const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("studio.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
    asset!("js/app.js", JS),
    asset!("js/api.js", JS),
    asset!("js/dom.js", JS),
    asset!("js/format.js", JS),
    asset!("js/live.js", JS),
    asset!("js/graph.js", JS),
    asset!("js/layout.js", JS),
    asset!("js/login.js", JS),
    asset!("js/pages/runs.js", JS),
    asset!("js/pages/run.js", JS),
    asset!("js/pages/inspector.js", JS),
    asset!("js/pages/controls.js", JS),
    asset!("js/pages/artifacts.js", JS),
    asset!("js/pages/claims.js", JS),
    asset!("js/pages/models.js", JS),
    asset!("js/pages/flowcharts.js", JS),
    asset!("js/pages/routing.js", JS),
];

/// The pages the console routes in the browser; each answers `index.html`.
const PAGES: &[&str] = &[
    "/",
    "/runs",
    "/runs/{id}",
    "/artifacts",
    "/artifacts/{id}",
    "/claims",
    "/models",
    "/models/{name}",
    "/flowcharts",
    "/flowcharts/{name}",
    "/flowcharts/{name}/{version}",
    "/validate",
];

fn etags() -> &'static Vec<String> {
    static ETAGS: OnceLock<Vec<String>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| format!("\"{}\"", &blake3::hash(a.bytes).to_hex()[..32]))
            .collect()
    })
}

/// The console's routes, merged into the API's router.
pub fn routes() -> Router<ApiState> {
    let mut router = Router::new().route("/studio/{*path}", get(file));
    for page in PAGES {
        router = router.route(page, get(index));
    }
    router
}

async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers).unwrap_or_else(IntoResponse::into_response)
}

async fn file(Path(path): Path<String>, headers: HeaderMap) -> Response {
    serve(&path, &headers).unwrap_or_else(IntoResponse::into_response)
}

fn serve(path: &str, headers: &HeaderMap) -> Result<Response, ApiError> {
    let (i, asset) = ASSETS
        .iter()
        .enumerate()
        .find(|(_, a)| a.path == path)
        .ok_or_else(|| {
            ApiError::not_found("route_not_found", "no such Studio file; see /openapi.json")
        })?;
    let etag = &etags()[i];
    let matches = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag);
    let mut response = if matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = asset.bytes.into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        );
        r
    };
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    Ok(response)
}

/// Whether `path` is the console's (served without a token: the pages hold no data; the
/// data comes from the API, which asks for the token).
pub fn is_studio_path(path: &str) -> bool {
    if path.starts_with("/studio/") || path == "/" {
        return true;
    }
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    [
        "runs",
        "artifacts",
        "claims",
        "models",
        "flowcharts",
        "validate",
    ]
    .contains(&first)
}
