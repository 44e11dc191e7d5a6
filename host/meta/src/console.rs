//! The operator console at `/ui`: plain HTML, CSS and JavaScript from
//! `host/meta/ui/`, embedded in the binary (no build step, nothing fetched
//! from elsewhere, works on a closed network) and served by every member on
//! its API listener (over TLS with `meta.tls`).
//!
//! Where it sits: beside the JSON API ([`crate::api`]), outside it. The page
//! does everything through the public API in the browser (`/v1/...`, the
//! watches `/v1/raft/watch` and `/v1/watch`), the way `shardgate ctl` does;
//! writes carry the `meta.admin_token` the operator typed, so
//! [`crate::auth::require_admin`] judges them like any other client's.
//!
//! Every answer carries a strict Content-Security-Policy (only this
//! origin's scripts, styles, images and connections; no inline script or
//! style, no framing), `X-Content-Type-Options: nosniff` and `no-cache`. An
//! unknown asset is 404 and a method other than GET or HEAD 405, both with
//! the API's JSON error body.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::error::ApiError;

/// The Content-Security-Policy of every console answer.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The console's files: (name under `/ui/`, content type, bytes).
const ASSETS: &[(&str, &str, &[u8])] = &[
    ("app.js", "text/javascript; charset=utf-8", include_bytes!("../ui/app.js")),
    ("chart.js", "text/javascript; charset=utf-8", include_bytes!("../ui/chart.js")),
    ("style.css", "text/css; charset=utf-8", include_bytes!("../ui/style.css")),
    ("icon.svg", "image/svg+xml", include_bytes!("../ui/icon.svg")),
];

const INDEX: &[u8] = include_bytes!("../ui/index.html");

/// The routes, merged into the member's router by [`crate::server`].
pub fn console_routes() -> Router {
    Router::new().route("/ui", get(index)).route("/ui/{asset}", get(asset))
}

fn serve(content_type: &'static str, bytes: &'static [u8]) -> Response {
    let mut resp = bytes.into_response();
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

async fn index() -> Response {
    serve("text/html; charset=utf-8", INDEX)
}

async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, bytes)) => serve(content_type, bytes),
        None => {
            let shown: String = name.chars().take(64).collect();
            ApiError::NotFound(format!("no console asset {shown:?}; the console is at /ui")).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_assets_that_exist_and_nothing_inline() {
        let html = std::str::from_utf8(INDEX).unwrap();
        for (attr, close) in [("src=\"", '"'), ("href=\"", '"')] {
            for part in html.split(attr).skip(1) {
                let url = &part[..part.find(close).unwrap()];
                if url.starts_with('#') {
                    continue; // the page's own views
                }
                let name = url.strip_prefix("/ui/").unwrap_or_else(|| panic!("{url} is not under /ui/"));
                assert!(ASSETS.iter().any(|(n, _, _)| *n == name), "{url} is not an asset");
            }
        }
        // The CSP allows no inline script, style or event handler.
        assert!(!html.contains("<script>") && !html.contains("style=") && !html.contains(" onclick="), "inline code in index.html");
    }
}
