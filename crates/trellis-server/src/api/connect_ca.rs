//! The built-in certificate authority's API, in Consul Connect's shapes:
//! `GET /v1/connect/ca/roots` (also under `/v1/agent/connect/ca/roots`) answers the trusted
//! roots; `GET /v1/agent/connect/ca/leaf/:service` issues a new key and leaf certificate for a
//! service (its token needs `service:write` on it), valid for `connect.leaf_cert_ttl`.

use super::clock::rfc3339;
use super::error::ApiError;
use super::respond::{json_response, to_json_bytes};
use crate::ca::CaError;
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;
use std::time::SystemTime;

pub async fn roots(State(state): State<AppState>) -> Result<Response, ApiError> {
    let ca = state.ca();
    let (not_before, not_after) = ca.root_validity();
    let body = json!({
        "ActiveRootID": ca.root_id(),
        "TrustDomain": ca.trust_domain(),
        "Roots": [{
            "ID": ca.root_id(),
            "Name": ca.root_name(),
            "SerialNumber": ca.root_serial(),
            "NotBefore": rfc3339(not_before),
            "NotAfter": rfc3339(not_after),
            "RootCert": ca.root_pem(),
            "IntermediateCerts": [],
            "Active": true,
            "PrivateKeyType": "ec",
            "PrivateKeyBits": 256,
            "CreateIndex": 1,
            "ModifyIndex": 1,
        }],
    });
    Ok(json_response(1, to_json_bytes(&body)))
}

pub async fn leaf(
    State(state): State<AppState>,
    Path(service): Path<String>,
) -> Result<Response, ApiError> {
    let dc = state.config().datacenter.clone();
    let ttl = state
        .config()
        .connect
        .leaf_ttl()
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let leaf = state
        .ca()
        .sign_leaf(&dc, &service, ttl, SystemTime::now())
        .map_err(|e| match e {
            CaError::Name(_) => ApiError::bad_request(e.to_string()),
            other => {
                tracing::error!(error = %other, "cannot issue a leaf certificate");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "cannot issue a certificate",
                )
            }
        })?;
    let body = json!({
        "SerialNumber": leaf.serial,
        "CertPEM": leaf.cert_pem,
        "PrivateKeyPEM": leaf.key_pem,
        "Service": leaf.service,
        "ServiceURI": leaf.uri,
        "ValidAfter": rfc3339(leaf.valid_after),
        "ValidBefore": rfc3339(leaf.valid_before),
        "CreateIndex": 1,
        "ModifyIndex": 1,
    });
    Ok(json_response(1, to_json_bytes(&body)))
}
