//! HTTP plumbing shared by both services: JSON errors, request parsing, `x-served-by`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::{BODY_LIMIT, Error, SERVED_BY};

/// An answer that is not a success: a status and a short reason, sent as `{"error": ...}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
}

impl From<Error> for ApiError {
    /// Internal failures are logged in full but answered with a generic reason, so that paths
    /// and SQL never reach a client.
    fn from(err: Error) -> Self {
        if err.is_busy() {
            tracing::warn!(error = %err, "database busy");
            Self::new(StatusCode::SERVICE_UNAVAILABLE, "database busy, try again")
        } else {
            tracing::error!(error = %err, "request failed");
            Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

/// Stamps every response, errors and fallbacks included, with the instance name.
pub(crate) async fn served_by(
    State(instance): State<HeaderValue>,
    request: Request,
    next: Next,
) -> Response {
    let mut response = next.run(request).await;
    response.headers_mut().insert(SERVED_BY, instance);
    response
}

/// Checks the instance name once at start-up, since it becomes a header value.
pub(crate) fn instance_header(instance: &str) -> Result<HeaderValue, Error> {
    let valid = !instance.is_empty() && instance.bytes().all(|b| b.is_ascii_graphic());
    match HeaderValue::from_str(instance) {
        Ok(value) if valid => Ok(value),
        _ => Err(Error::Config(format!(
            "instance name {instance:?} must be non-empty printable ASCII without spaces"
        ))),
    }
}

/// Finishes a service's routes with what every example service shares: `/metrics`, JSON 404
/// and 405 answers, the body limit, request metrics, a span per request, and `x-served-by` on
/// every response.
pub(crate) fn service_router<S: Clone + Send + Sync + 'static>(
    routes: axum::Router<S>,
    instance: HeaderValue,
    state: S,
) -> axum::Router {
    let metrics = crate::metrics::Metrics::new();
    let render = metrics.clone();
    routes
        .with_state(state)
        .route(
            "/metrics",
            axum::routing::get(move || async move { render.render() }),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(crate::BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            crate::metrics::observe,
        ))
        .layer(axum::middleware::from_fn_with_state(instance, served_by))
        .layer(axum::middleware::from_fn(crate::telemetry::trace_request))
}

pub(crate) async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
}

/// Parses a path id such as the `7` in `/users/7`.
pub(crate) fn path_id(
    path: Result<axum::extract::Path<String>, PathRejection>,
    what: &str,
) -> Result<i64, ApiError> {
    let axum::extract::Path(raw) = path.map_err(|_| ApiError::bad_request("invalid path"))?;
    positive_id(&raw)
        .ok_or_else(|| ApiError::bad_request(format!("{what} id must be a positive integer")))
}

pub(crate) fn positive_id(raw: &str) -> Option<i64> {
    raw.parse::<i64>().ok().filter(|id| *id >= 1)
}

/// Reads a JSON object body. Parsing into a `Value` first (instead of a typed struct) lets
/// every reason name the offending field in plain words.
pub(crate) fn json_object(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Fields, ApiError> {
    if let Some(content_type) = headers.get(CONTENT_TYPE) {
        // No content type is accepted so that `curl -d` style clients work; a declared
        // non-JSON one is almost certainly a client bug.
        let is_json = content_type
            .to_str()
            .map(|ct| {
                let essence = ct
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                essence == "application/json" || essence.ends_with("+json")
            })
            .unwrap_or(false);
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "content-type must be application/json",
            ));
        }
    }
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body larger than {} KiB", BODY_LIMIT / 1024),
            )
        } else {
            ApiError::bad_request("could not read request body")
        }
    })?;
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(map)) => Ok(Fields(map)),
        Ok(_) => Err(ApiError::bad_request("body must be a JSON object")),
        Err(e) => Err(ApiError::bad_request(format!("malformed JSON: {e}"))),
    }
}

/// The fields of a JSON object body.
pub(crate) struct Fields(Map<String, Value>);

impl Fields {
    pub(crate) fn string(&self, key: &str) -> Result<&str, ApiError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Err(ApiError::bad_request(format!("{key} is required"))),
            Some(Value::String(s)) => Ok(s),
            Some(_) => Err(ApiError::bad_request(format!("{key} must be a string"))),
        }
    }

    pub(crate) fn integer(&self, key: &str) -> Result<i64, ApiError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Err(ApiError::bad_request(format!("{key} is required"))),
            Some(Value::Number(n)) => n
                .as_i64()
                .ok_or_else(|| ApiError::bad_request(format!("{key} must be an integer"))),
            Some(_) => Err(ApiError::bad_request(format!("{key} must be an integer"))),
        }
    }
}

/// Checks a free-text field: trimmed, non-empty, bounded, printable. Returns the trimmed text.
pub(crate) fn text(key: &str, value: &str, max_chars: usize) -> Result<String, ApiError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(ApiError::bad_request(format!("{key} must not be empty")));
    }
    if value.chars().count() > max_chars {
        return Err(ApiError::bad_request(format!(
            "{key} must be at most {max_chars} characters"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "{key} must not contain control characters"
        )));
    }
    Ok(value.to_owned())
}

/// `GET /health`: passing only if this instance can still reach its database. It does not
/// look at other services, so that one failing service does not take its callers' health
/// (and so their traffic) down with it.
pub(crate) async fn health(db: &crate::db::Db) -> Response {
    match db
        .call(crate::db::Query::new("SELECT", "health"), |conn| {
            conn.query_row("SELECT 1", [], |_| Ok(()))
        })
        .await
    {
        Ok(()) => Json(json!({ "status": "ok" })).into_response(),
        Err(err) => {
            tracing::warn!(error = %err, "health check failed");
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "database unavailable").into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_must_be_positive_integers() {
        assert_eq!(positive_id("7"), Some(7));
        for bad in ["0", "-1", "", "1.0", " 1", "abc", "99999999999999999999"] {
            assert_eq!(positive_id(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn text_is_trimmed_and_bounded_in_characters() {
        assert_eq!(text("name", "  Ann ", 3).ok().as_deref(), Some("Ann"));
        assert_eq!(text("name", "ééé", 3).ok().as_deref(), Some("ééé"));
        assert!(text("name", "éééé", 3).is_err());
        assert!(text("name", " \n ", 3).is_err());
        assert!(text("name", "a\u{7}b", 3).is_err());
    }

    #[test]
    fn instance_names_must_be_header_safe() {
        assert!(instance_header("users-1").is_ok());
        for bad in ["", "users 1", "users\n1", "üsers"] {
            assert!(instance_header(bad).is_err(), "{bad:?}");
        }
    }
}
