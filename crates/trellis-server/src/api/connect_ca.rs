//! The certificate authority's API, in Consul Connect's shapes:
//! `GET /v1/connect/ca/roots` (also under `/v1/agent/connect/ca/roots`) answers every trusted
//! root, the active one marked, and blocks with `?index=` until the roots change (a rotation,
//! a retirement); `GET /v1/agent/connect/ca/leaf/:service` issues a new key and leaf certificate
//! for a service, signed by the active root (its token needs `service:write` on it), and blocks
//! the same way; `GET`/`PUT /v1/connect/ca/configuration` read the CA's configuration and
//! change it: a new root (given as `RootCert` and `PrivateKey`, or made here without them) and
//! the leaf lifetime.

use super::blocking::block_on;
use super::error::ApiError;
use super::params::QueryParams;
use super::respond::{add_index_headers, json_response, to_json_bytes};
use crate::ca::{CaError, CaState, KeyKind, LeafTtl, NewRoot, OperatorRoot, Source, Update};
use crate::state::AppState;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::SystemTime;

type Q = Query<Vec<(String, String)>>;

/// How long roots made here are valid, as Consul's `RootCertTTL` shows it.
const ROOT_CERT_TTL: &str = "87600h";

/// The current CA state, or the next one once the roots move past the client's `?index=`.
async fn blocking_state(state: &AppState, query: &QueryParams) -> Result<Arc<CaState>, ApiError> {
    block_on(state, state.ca().subscribe(), query.blocking()?, |ca| {
        ca.roots_index()
    })
    .await
}

pub async fn roots(State(state): State<AppState>, Query(q): Q) -> Result<Response, ApiError> {
    let query = QueryParams::new(q);
    query.check_common(state.node())?;
    let ca = blocking_state(&state, &query).await?;
    if query.flag("pem")? {
        let chain: String = ca.roots().iter().map(|r| r.pem.as_str()).collect();
        let mut response = chain.into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/pem-certificate-chain"),
        );
        add_index_headers(headers, ca.roots_index());
        return Ok(response);
    }
    let active = ca.active();
    let roots: Vec<Value> = ca
        .roots()
        .into_iter()
        .map(|root| {
            json!({
                "ID": root.id,
                "Name": root.name,
                "SerialNumber": root.serial,
                "SigningKeyID": root.signing_key_id,
                "ExternalTrustDomain": ca.cluster_id(),
                "NotBefore": super::clock::rfc3339(root.not_before),
                "NotAfter": super::clock::rfc3339(root.not_after),
                "RootCert": root.pem,
                "IntermediateCerts": [],
                "Active": root.id == active.id,
                "PrivateKeyType": root.key_type,
                "PrivateKeyBits": root.key_bits,
                "CreateIndex": root.create_index,
                "ModifyIndex": root.modify_index,
            })
        })
        .collect();
    let body = json!({
        "ActiveRootID": active.id,
        "TrustDomain": ca.trust_domain(),
        "Roots": roots,
    });
    Ok(json_response(ca.roots_index(), to_json_bytes(&body)))
}

/// A fresh leaf for `service` from the active root. With `?index=` equal to the roots' index it
/// waits until the roots change (so a sidecar can hold one open to learn of a rotation at
/// once), then signs with the new active root.
pub async fn leaf(
    State(state): State<AppState>,
    Path(service): Path<String>,
    Query(q): Q,
) -> Result<Response, ApiError> {
    let query = QueryParams::new(q);
    query.check_common(state.node())?;
    let ca = blocking_state(&state, &query).await?;
    let dc = state.config().datacenter.clone();
    let leaf = ca
        .sign_leaf(&dc, &service, SystemTime::now())
        .map_err(|e| ca_error(e, "cannot issue a certificate"))?;
    let index = ca.roots_index();
    let body = json!({
        "SerialNumber": leaf.serial,
        "CertPEM": leaf.cert_pem,
        "PrivateKeyPEM": leaf.key_pem,
        "Service": leaf.service,
        "ServiceURI": leaf.uri,
        "ValidAfter": super::clock::rfc3339(leaf.valid_after),
        "ValidBefore": super::clock::rfc3339(leaf.valid_before),
        "CreateIndex": index,
        "ModifyIndex": index,
    });
    Ok(json_response(index, to_json_bytes(&body)))
}

/// `GET /v1/connect/ca/configuration` (operator:read). The private key is never shown.
pub async fn get_configuration(
    State(state): State<AppState>,
    Query(q): Q,
) -> Result<Response, ApiError> {
    let query = QueryParams::new(q);
    query.check_common(state.node())?;
    let ca = state.ca().current();
    let active = ca.active();
    let body = json!({
        "Provider": "consul",
        "Config": {
            "LeafCertTTL": ca.leaf_ttl().text,
            "RootCertTTL": ROOT_CERT_TTL,
            "PrivateKeyType": active.key_type,
            "PrivateKeyBits": active.key_bits,
        },
        "State": null,
        "ForceWithoutCrossSigning": false,
        "CreateIndex": ca.config_create_index(),
        "ModifyIndex": ca.config_modify_index(),
    });
    Ok(json_response(
        ca.config_modify_index(),
        to_json_bytes(&body),
    ))
}

/// `PUT /v1/connect/ca/configuration` (operator:write): rotates to the `RootCert` and
/// `PrivateKey` given (nothing rotates if that is the active root), or, without them, to a new
/// root made here; `LeafCertTTL` sets the leaf lifetime. The old root stays trusted until the
/// last leaf it signed has expired, so nothing is cross-signed and
/// `ForceWithoutCrossSigning` changes nothing.
pub async fn set_configuration(
    State(state): State<AppState>,
    Query(q): Q,
    body: Bytes,
) -> Result<Response, ApiError> {
    let query = QueryParams::new(q);
    query.check_common(state.node())?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("Request decoding failed: EOF"));
    }
    let raw: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("Request decoding failed: {e}")))?;
    let update = decode_update(&raw)?;
    let ca = state.ca().clone();
    let next = tokio::task::spawn_blocking(move || ca.update(update, SystemTime::now()))
        .await
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "CA update failed"))?
        .map_err(|e| ca_error(e, "cannot change the CA configuration"))?;
    tracing::info!(active_root = %next.active().id, "CA configuration changed");
    let mut response = StatusCode::OK.into_response();
    add_index_headers(response.headers_mut(), next.config_modify_index());
    Ok(response)
}

/// The request's fault as a 400 with its reason; anything else a 500 whose detail goes to the
/// log only.
fn ca_error(error: CaError, what: &'static str) -> ApiError {
    match error {
        CaError::Name(_) | CaError::Invalid(_) => ApiError::bad_request(error.to_string()),
        other => {
            tracing::error!(error = %other, "{what}");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, what)
        }
    }
}

/// Consul's `CAConfiguration` body: `Provider` (`consul` only), `Config` with `PrivateKey`
/// and `RootCert` (together), `LeafCertTTL`, `PrivateKeyType`/`PrivateKeyBits` for a root made
/// here. Consul's other settings (`RotationPeriod`, `IntermediateCertTTL`, ...) have nothing
/// to act on here and are ignored.
fn decode_update(raw: &Value) -> Result<Update, ApiError> {
    let bad = |message: String| ApiError::bad_request(message);
    let Value::Object(body) = raw else {
        return Err(bad(
            "Request decoding failed: the body is not a JSON object".into(),
        ));
    };
    match body.get("Provider") {
        None | Some(Value::Null) => {}
        Some(Value::String(p)) if p == "consul" || p.is_empty() => {}
        Some(Value::String(p)) => {
            return Err(bad(format!(
                "CA provider {p:?} is not supported: only \"consul\" (the built-in CA)"
            )));
        }
        Some(_) => return Err(bad("Provider must be a string".into())),
    }
    let empty = serde_json::Map::new();
    let config = match body.get("Config") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(config)) => config,
        Some(_) => return Err(bad("Config must be an object".into())),
    };
    let text = |key: &str| -> Result<Option<String>, ApiError> {
        match config.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(bad(format!("Config.{key} must be a string"))),
        }
    };
    let bits = match config.get("PrivateKeyBits") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.parse().ok(),
        Some(_) => None,
    };
    if config.get("PrivateKeyBits").is_some_and(|v| !v.is_null()) && bits.is_none() {
        return Err(bad("Config.PrivateKeyBits must be a whole number".into()));
    }
    let root = match (text("RootCert")?, text("PrivateKey")?) {
        (Some(cert_pem), Some(key_pem)) => NewRoot::Operator(OperatorRoot {
            cert_pem,
            key_pem,
            source: Source::Api,
        }),
        (None, None) => NewRoot::Generate(
            KeyKind::from_consul(text("PrivateKeyType")?.as_deref(), bits)
                .map_err(|e| bad(e.to_string()))?,
        ),
        (Some(_), None) => return Err(bad("Config.RootCert needs Config.PrivateKey".into())),
        (None, Some(_)) => return Err(bad("Config.PrivateKey needs Config.RootCert".into())),
    };
    let leaf_ttl = text("LeafCertTTL")?
        .map(|text| {
            crate::config::parse_leaf_ttl(&text)
                .map(|duration| LeafTtl {
                    duration,
                    text: text.clone(),
                })
                .map_err(|e| bad(format!("Config.LeafCertTTL {text:?}: {e}")))
        })
        .transpose()?;
    Ok(Update { root, leaf_ttl })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(body: Value) -> String {
        match decode_update(&body) {
            Ok(update) => panic!("accepted {body}: {update:?}"),
            Err(error) => format!("{error:?}"),
        }
    }

    #[test]
    fn a_configuration_body_decodes_as_consul_writes_it() {
        let update = decode_update(&json!({"Provider": "consul", "Config": {
            "LeafCertTTL": "72h", "RotationPeriod": "2160h", "PrivateKeyType": "ec",
            "PrivateKeyBits": "384"}}))
        .unwrap();
        assert!(matches!(update.root, NewRoot::Generate(KeyKind::EcP384)));
        assert_eq!(update.leaf_ttl.unwrap().text, "72h");
        // Empty strings are absent, as Go's zero values.
        let update = decode_update(&json!({"Config": {"RootCert": "", "PrivateKey": ""}})).unwrap();
        assert!(matches!(update.root, NewRoot::Generate(KeyKind::EcP256)));
        assert!(update.leaf_ttl.is_none());
        let given =
            decode_update(&json!({"Config": {"RootCert": "c", "PrivateKey": "k"}})).unwrap();
        assert!(matches!(given.root, NewRoot::Operator(ref op) if op.source == Source::Api));

        assert!(refused(json!([])).contains("not a JSON object"));
        assert!(refused(json!({"Provider": "vault"})).contains("not supported"));
        assert!(refused(json!({"Config": {"PrivateKey": "k"}})).contains("needs Config.RootCert"));
        assert!(refused(json!({"Config": {"LeafCertTTL": 5}})).contains("must be a string"));
        assert!(refused(json!({"Config": {"PrivateKeyBits": "many"}})).contains("whole number"));
        assert!(refused(json!({"Config": {"PrivateKeyType": "rsa"}})).contains("not supported"));
    }
}
