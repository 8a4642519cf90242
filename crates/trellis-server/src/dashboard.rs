//! The dashboard's files at `/ui/`: the copy embedded at build time (see `build.rs`), or a
//! directory read on every request (`ui_dir`, for working on the dashboard), with the headers
//! that keep a page which shows user-supplied names inert (a strict Content-Security-Policy).
//!
//! `/ui/assets/<path>` is the file `<path>` of the dashboard; every other path under `/ui/` is
//! `index.html`, which routes in the browser, so each page's URL can be shared and reloaded.

use crate::api::accepts_gzip;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use std::io::Write;
use std::path::{Component, PathBuf};
use std::sync::{Arc, OnceLock};

/// Every file under `crates/trellis-server/ui/`: (path relative to it, content, ETag).
static EMBEDDED: &[(&str, &[u8], &str)] = include!(concat!(env!("OUT_DIR"), "/ui_assets.rs"));

/// No inline script or style, nothing from another origin: even if some text were ever
/// inserted as markup, it could not run.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; font-src 'self'; manifest-src 'self'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

const INDEX: &str = "index.html";

/// Where the files come from.
#[derive(Clone)]
enum Source {
    Embedded,
    Directory(Arc<PathBuf>),
}

/// The dashboard's routes; `dir` serves the files from disk instead of the embedded copy.
pub fn router(dir: Option<PathBuf>) -> Router {
    let source = match dir {
        Some(dir) => Source::Directory(Arc::new(dir)),
        None => Source::Embedded,
    };
    Router::new()
        .route("/", get(|| async { Redirect::temporary("/ui/") }))
        .route("/ui", get(|| async { Redirect::temporary("/ui/") }))
        .route("/ui/assets/{*path}", get(asset))
        .route("/ui/", get(page))
        .route("/ui/{*route}", get(page))
        .with_state(source)
}

async fn page(State(source): State<Source>, headers: HeaderMap) -> Response {
    serve(&source, INDEX, &headers).await
}

async fn asset(
    State(source): State<Source>,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> Response {
    serve(&source, &path, &headers).await
}

async fn serve(source: &Source, path: &str, headers: &HeaderMap) -> Response {
    let mut response = match source {
        Source::Embedded => embedded(path, headers),
        Source::Directory(dir) => from_directory(dir, path).await,
    };
    let h = response.headers_mut();
    for (name, value) in [
        ("content-security-policy", CONTENT_SECURITY_POLICY),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "same-origin"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    response
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "no such dashboard file").into_response()
}

/// An embedded file, gzip-compressed when the client takes it, 304 when its ETag matches.
/// Browsers revalidate every time (`no-cache`): a new binary's dashboard is never mixed with
/// the old one's cached files, and an unchanged file costs one 304.
fn embedded(path: &str, headers: &HeaderMap) -> Response {
    let Some(position) = EMBEDDED.iter().position(|(name, _, _)| *name == path) else {
        return not_found();
    };
    let (name, content, etag) = EMBEDDED[position];
    let mut response = if headers.get(header::IF_NONE_MATCH).is_some_and(|tags| {
        tags.as_bytes()
            .split(|b| *b == b',')
            .any(|t| t.trim_ascii() == etag.as_bytes())
    }) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let gzip = accepts_gzip(headers)
            .then(|| compressed()[position].clone())
            .flatten();
        let mut response = match gzip {
            Some(body) => {
                let mut response = Response::new(Body::from(body));
                response
                    .headers_mut()
                    .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                response
            }
            None => Response::new(Body::from(Bytes::from_static(content))),
        };
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(content_type(name)),
        );
        response
    };
    let h = response.headers_mut();
    h.insert(header::ETAG, HeaderValue::from_static(etag));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    response
}

/// The gzip copy of each embedded text file (`None` for images and the like), made once.
fn compressed() -> &'static [Option<Bytes>] {
    static COMPRESSED: OnceLock<Vec<Option<Bytes>>> = OnceLock::new();
    COMPRESSED.get_or_init(|| {
        EMBEDDED
            .iter()
            .map(|(name, content, _)| {
                if !content_type(name).starts_with("text/") && !name.ends_with(".svg") {
                    return None;
                }
                let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
                encoder.write_all(content).ok()?;
                encoder.finish().ok().map(Bytes::from)
            })
            .collect()
    })
}

/// A file of the dashboard directory, read now; never cached, so an edit shows on reload.
async fn from_directory(dir: &std::path::Path, path: &str) -> Response {
    // Only plain names below the directory: no `..`, no absolute path, no drive prefix.
    let relative = std::path::Path::new(path);
    if !relative
        .components()
        .all(|c| matches!(c, Component::Normal(_)))
    {
        return not_found();
    }
    match tokio::fs::read(dir.join(relative)).await {
        Ok(content) => (
            [
                (header::CONTENT_TYPE, content_type(path)),
                (header::CACHE_CONTROL, "no-store"),
            ],
            content,
        )
            .into_response(),
        Err(_) => not_found(),
    }
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map_or("", |(_, ext)| ext) {
        "html" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dashboard_is_embedded() {
        assert!(EMBEDDED.iter().any(|(name, _, _)| *name == INDEX));
        assert!(EMBEDDED.iter().all(|(_, _, etag)| etag.len() == 18));
    }
}
