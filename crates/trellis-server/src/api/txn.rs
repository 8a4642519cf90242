//! `PUT /v1/txn`: KV operations applied all or nothing, as Consul answers them: `Results` with
//! 200, or `Errors` (each with its `OpIndex`) with 409 when an operation failed; 400 for a body
//! that does not parse, 413 beyond 128 operations. A transaction of reads only runs on the
//! catalog's read lock, without the writer; any write goes to the writer as one command, so it
//! is applied at one index and made durable in one commit.

use super::authz::Authz;
use super::error::ApiError;
use super::kv::pair;
use super::params::QueryParams;
use super::respond::{add_leader_headers, to_json_bytes};
use crate::state::AppState;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use trellis_acl::{Need, Resource};
use trellis_catalog::{Command, Reply, TxnOutcome};
use trellis_types::txn::{
    KvOp, KvVerb, TxnError, TxnInputError, TxnResponse, TxnResult, parse_txn,
};

pub async fn txn(
    State(state): State<AppState>,
    authz: Authz,
    Query(q): Query<Vec<(String, String)>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    QueryParams::new(q).check_common(state.node())?;
    let ops = parse_txn(&body).map_err(|e| match e {
        TxnInputError::TooManyOps(_) | TxnInputError::ValueTooLarge { .. } => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, e.to_string())
        }
        TxnInputError::Parse(_) | TxnInputError::Unsupported(_) => {
            ApiError::bad_request(e.to_string())
        }
    })?;
    // Every operation is checked before any runs, as Consul vets a transaction: one denied
    // operation fails the whole transaction with an error naming it.
    let denied: Vec<TxnError> = ops
        .iter()
        .enumerate()
        .filter(|(_, op)| !permitted(&authz, op))
        .map(|(op_index, _)| TxnError {
            op_index,
            what: "Permission denied".to_owned(),
        })
        .collect();
    if !denied.is_empty() {
        return Ok(answer(
            TxnOutcome {
                results: Vec::new(),
                errors: denied,
            },
            false,
        ));
    }
    let writes = ops.iter().any(|op| op.verb.is_write());
    let outcome = if writes {
        match state.submit(Command::Txn { ops }).await? {
            Reply::Txn(outcome) => outcome,
            other => {
                tracing::error!(?other, "the writer answered a transaction with no outcome");
                return Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "transaction outcome lost",
                ));
            }
        }
    } else {
        state.catalog()?.txn_read(&ops)
    };
    Ok(answer(outcome, !writes))
}

/// Whether the token may run `op`: reads need read on the key (a tree read, list on the
/// prefix), writes write on it, a tree delete write on the whole prefix.
fn permitted(authz: &Authz, op: &KvOp) -> bool {
    let need = match op.verb {
        KvVerb::Get
        | KvVerb::GetOrEmpty
        | KvVerb::CheckIndex
        | KvVerb::CheckSession
        | KvVerb::CheckNotExists => Need::Read,
        KvVerb::GetTree => Need::List,
        KvVerb::DeleteTree => {
            return authz.unrestricted() || authz.authorizer().key_write_prefix(&op.key);
        }
        KvVerb::Set
        | KvVerb::Cas
        | KvVerb::Lock
        | KvVerb::Unlock
        | KvVerb::Delete
        | KvVerb::DeleteCas => Need::Write,
        // Fails on its own, with Consul's error for an unknown verb.
        KvVerb::Unknown(_) => return true,
    };
    authz.require(Resource::Key, &op.key, need).is_ok()
}

fn answer(outcome: TxnOutcome, read_only: bool) -> Response {
    let failed = !outcome.errors.is_empty();
    let body = if failed {
        TxnResponse {
            results: None,
            errors: Some(outcome.errors),
        }
    } else {
        TxnResponse {
            results: Some(
                outcome
                    .results
                    .iter()
                    .map(|entry| TxnResult { kv: pair(entry) })
                    .collect(),
            ),
            errors: None,
        }
    };
    let status = if failed {
        StatusCode::CONFLICT
    } else {
        StatusCode::OK
    };
    let mut response = (status, to_json_bytes(&body)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if read_only {
        // A read-only transaction is a read: Consul adds its leader headers (not an index).
        add_leader_headers(headers);
    }
    response
}
