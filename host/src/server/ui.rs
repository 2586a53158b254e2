//! The web page at `/ui`: triggers, their runs and each run's way through the
//! engine, live. Three static files embedded in the binary (no CDN, no
//! fonts, no build step); everything they show comes from `/api/v1` with
//! the API token the person types in (kept in session storage, sent as a
//! bearer header, never in a URL). Run data is written into the page as
//! text only, never as markup, so an event cannot inject script.
//!
//! Every response carries a strict content security policy (scripts and
//! styles from this origin only, no inline script or style, no framing),
//! `nosniff` and no referrer.

use hyper::{Response, StatusCode};

use super::{Body, full};

const INDEX: &str = include_str!("../../ui/index.html");
const SCRIPT: &str = include_str!("../../ui/app.js");
const STYLE: &str = include_str!("../../ui/app.css");

/// The page's content security policy.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `/` leads to the page.
pub(super) fn redirect() -> Response<Body> {
    Response::builder()
        .status(StatusCode::FOUND)
        .header("location", "/ui/")
        .body(full(""))
        .unwrap_or_default()
}

/// One of the page's files, with the security headers.
pub(super) fn asset(path: &str) -> Response<Body> {
    let (content_type, body) = match path {
        "/ui" | "/ui/" | "/ui/index.html" => ("text/html; charset=utf-8", INDEX),
        "/ui/app.js" => ("text/javascript; charset=utf-8", SCRIPT),
        "/ui/app.css" => ("text/css; charset=utf-8", STYLE),
        _ => return super::error(StatusCode::NOT_FOUND, "no such page"),
    };
    Response::builder()
        .header("content-type", content_type)
        .header("content-security-policy", CSP)
        .header("x-frame-options", "DENY")
        .header("x-content-type-options", "nosniff")
        .header("referrer-policy", "no-referrer")
        .header("cross-origin-opener-policy", "same-origin")
        .header("cache-control", "no-cache")
        .body(full(body))
        .unwrap_or_default()
}
