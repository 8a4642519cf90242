//! Error answers: a status and a short plain-text reason, as Consul answers; and how the
//! writer's and the catalog's refusals map to them.

use crate::queue::WriteError;
use crate::shared::Retired;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use trellis_catalog::CatalogError;

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    fn stopping() -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "server is shutting down")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, format!("{}\n", self.message)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
    }
}

impl From<trellis_types::InvalidInput> for ApiError {
    fn from(e: trellis_types::InvalidInput) -> Self {
        Self::bad_request(e.to_string())
    }
}

impl From<WriteError> for ApiError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Rejected(CatalogError::NotFound(m)) => Self::not_found(m),
            WriteError::Rejected(CatalogError::Invalid(m)) => Self::bad_request(m),
            // The cause is in the log; the client only learns that nothing was kept.
            WriteError::Storage => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "storage failure; the write was not applied",
            ),
            WriteError::Busy => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server busy: write queue full, retry later",
            ),
            WriteError::Stopped => Self::stopping(),
            // Consul's words for a server that cannot reach a leader.
            WriteError::NotLeader => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "No cluster leader: this server follows another; retry",
            ),
            WriteError::StoreUnreachable => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "No cluster leader: the store (etcd) cannot be reached; the write may not have been applied",
            ),
        }
    }
}

impl From<Retired> for ApiError {
    fn from(_: Retired) -> Self {
        Self::stopping()
    }
}
