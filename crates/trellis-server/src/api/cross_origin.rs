//! Refuses writes a browser sends on behalf of another site (cross-site request forgery): the
//! API has no cookies, but a page elsewhere could still make a visitor's browser POST to a
//! registry on localhost. Browsers say where a request comes from (`Sec-Fetch-Site`, or else
//! `Origin`); clients that are not browsers send neither and are not affected.

use super::error::ApiError;
use axum::extract::Request;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Lets reads through, and writes unless a browser says they come from another origin.
pub async fn refuse_cross_origin_writes(request: Request, next: Next) -> Response {
    let authority = request.uri().authority().map(|a| a.as_str());
    if is_cross_origin_write(request.method(), request.headers(), authority) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "cross-origin request refused: writes must come from this server's own pages",
        )
        .into_response();
    }
    next.run(request).await
}

/// `authority` is the request URI's, which HTTP/2 carries instead of a `Host` header.
fn is_cross_origin_write(method: &Method, headers: &HeaderMap, authority: Option<&str>) -> bool {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return false;
    }
    // Every current browser sends it; `none` is a user typing the URL or a bookmark.
    if let Some(site) = headers.get("sec-fetch-site") {
        return !matches!(site.as_bytes(), b"same-origin" | b"none");
    }
    // Older browsers: the Origin must name this host (and port).
    let Some(origin) = headers.get(header::ORIGIN) else {
        return false;
    };
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, host)| host);
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or(authority);
    match (origin_host, host) {
        (Some(origin), Some(host)) => !origin.eq_ignore_ascii_case(host),
        // `Origin: null` (a sandboxed frame, a file: page) or no Host: not this origin.
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(n, v)| {
                (
                    header::HeaderName::from_static(n),
                    HeaderValue::from_static(v),
                )
            })
            .collect()
    }

    #[test]
    fn reads_always_pass() {
        let h = headers(&[
            ("sec-fetch-site", "cross-site"),
            ("origin", "http://evil.test"),
        ]);
        assert!(!is_cross_origin_write(&Method::GET, &h, None));
        assert!(!is_cross_origin_write(&Method::HEAD, &h, None));
    }

    #[test]
    fn writes_from_other_sites_are_refused() {
        for site in ["cross-site", "same-site"] {
            let h = headers(&[("sec-fetch-site", site)]);
            assert!(is_cross_origin_write(&Method::PUT, &h, None), "{site}");
            assert!(is_cross_origin_write(&Method::POST, &h, None), "{site}");
        }
        let h = headers(&[("origin", "http://evil.test"), ("host", "127.0.0.1:8500")]);
        assert!(is_cross_origin_write(&Method::DELETE, &h, None));
        let h = headers(&[("origin", "null"), ("host", "127.0.0.1:8500")]);
        assert!(is_cross_origin_write(&Method::POST, &h, None));
        // Same host, another port: another origin.
        let h = headers(&[
            ("origin", "http://127.0.0.1:9999"),
            ("host", "127.0.0.1:8500"),
        ]);
        assert!(is_cross_origin_write(&Method::PUT, &h, None));
    }

    #[test]
    fn writes_from_this_origin_or_no_browser_pass() {
        let h = headers(&[
            ("sec-fetch-site", "same-origin"),
            ("origin", "http://127.0.0.1:8500"),
        ]);
        assert!(!is_cross_origin_write(&Method::PUT, &h, None));
        let h = headers(&[("sec-fetch-site", "none")]);
        assert!(!is_cross_origin_write(&Method::POST, &h, None));
        let h = headers(&[
            ("origin", "http://127.0.0.1:8500"),
            ("host", "127.0.0.1:8500"),
        ]);
        assert!(!is_cross_origin_write(&Method::PUT, &h, None));
        // curl, py-consul, the SDK: no browser headers at all.
        assert!(!is_cross_origin_write(
            &Method::PUT,
            &HeaderMap::new(),
            None
        ));
    }

    #[test]
    fn over_http2_the_uri_names_the_host() {
        let h = headers(&[("origin", "https://127.0.0.1:8500")]);
        assert!(!is_cross_origin_write(
            &Method::PUT,
            &h,
            Some("127.0.0.1:8500")
        ));
        assert!(is_cross_origin_write(
            &Method::PUT,
            &h,
            Some("10.0.0.1:8500")
        ));
        assert!(is_cross_origin_write(&Method::PUT, &h, None));
    }
}
