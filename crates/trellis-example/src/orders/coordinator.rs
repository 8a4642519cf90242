//! Placing an order as one two-phase-commit transaction: the one-shot submit to the coordinator
//! in `trellis server` (`POST /v1/trellis/txn`) with two branches, the order itself (this
//! service, `/txn/order`) and its stock (the inventory service, `/txn/reserve`), both named by
//! service so that the coordinator reaches a healthy instance of each through its sidecar.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use reqwest::Url;
use serde_json::{Value, json};
use tracing::Instrument;

use super::outbound::{check_http, forward};
use super::store::NewOrder;
use crate::Error;

/// The service the coordinator calls for the order's own branch.
pub const ORDERS_SERVICE: &str = "orders";
/// The path prefix under which the orders service serves its branch.
pub const ORDER_PATH: &str = "/txn/order";
/// The service the coordinator calls for the stock's branch.
pub const INVENTORY_SERVICE: &str = "inventory";

/// The header the registry reads a token's secret from (Consul's).
const TOKEN_HEADER: &str = "x-consul-token";

/// Time from the submit to the decision, after which the coordinator aborts.
const TXN_TIMEOUT: &str = "10s";
/// How long the submit may take: the decision (at most [`TXN_TIMEOUT`]) and the first commit
/// or abort messages.
const SUBMIT_TIMEOUT: Duration = Duration::from_secs(30);

/// What the coordinator decided.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Every branch committed.
    Committed,
    /// Decided commit; a branch has not acknowledged yet (the coordinator keeps retrying).
    Committing,
    /// Decided abort (every branch aborted, or is being told so), with the cause's reason.
    Aborted(String),
    /// No decision yet (the coordinator's state: `open` or `preparing`).
    Undecided(String),
}

/// Why no outcome came back: the status to answer with and the reason.
#[derive(Debug)]
pub(crate) struct NoOutcome(pub StatusCode, pub String);

#[derive(Clone)]
pub(crate) struct CoordinatorClient {
    http: reqwest::Client,
    submit: String,
}

impl CoordinatorClient {
    /// A client of the coordinator at `base`, sending `token` (if any, and not empty) as
    /// `X-Consul-Token` with every submit.
    pub(crate) fn new(base: &Url, token: Option<&str>) -> Result<Self, Error> {
        check_http("coordinator URL", base)?;
        let mut headers = HeaderMap::new();
        if let Some(token) = token.map(str::trim).filter(|t| !t.is_empty()) {
            let mut value = HeaderValue::from_str(token).map_err(|_| {
                Error::Config("--token must be printable ASCII (a token's SecretID)".into())
            })?;
            // Kept out of debug output.
            value.set_sensitive(true);
            headers.insert(TOKEN_HEADER, value);
        }
        let http = reqwest::Client::builder()
            .timeout(SUBMIT_TIMEOUT)
            // The coordinator is the registry, reached directly, like the sidecars reach it.
            .no_proxy()
            .default_headers(headers)
            .build()
            .map_err(Error::Client)?;
        Ok(Self {
            http,
            submit: format!("{}/v1/trellis/txn", base.as_str().trim_end_matches('/')),
        })
    }

    /// Submits the order's transaction under `gid` and waits for the outcome.
    pub(crate) async fn place(
        &self,
        gid: &str,
        order: &NewOrder,
        incoming: &HeaderMap,
    ) -> Result<Outcome, NoOutcome> {
        let body = json!({
            "gid": gid,
            "timeout": TXN_TIMEOUT,
            "commit": true,
            "branches": [
                {
                    "branch_id": "order",
                    "service": ORDERS_SERVICE,
                    "path": ORDER_PATH,
                    "payload": order,
                },
                {
                    "branch_id": "stock",
                    "service": INVENTORY_SERVICE,
                    "path": crate::RESERVE_PATH,
                    "payload": {"product": order.product, "quantity": order.quantity},
                },
            ],
        });
        let span = crate::telemetry::client_span(
            "POST",
            "coordinator /v1/trellis/txn",
            "trellis-coordinator",
            &self.submit,
        );
        tracing_opentelemetry::OpenTelemetrySpanExt::set_attribute(
            &span,
            "trellis.txn.gid",
            gid.to_owned(),
        );
        let request = forward(self.http.post(&self.submit).json(&body), &span, incoming);
        let (status, text) = async {
            let response = request.send().await;
            let response = match response {
                Ok(response) => response,
                Err(e) => {
                    crate::telemetry::record_failure(&span, &e);
                    return Err(e);
                }
            };
            let status = response.status();
            // 409 is an answer here (the transaction aborted), not a failed call.
            let code = status.as_u16();
            crate::telemetry::record_status(&span, code, code >= 400 && code != 409);
            Ok((status, response.text().await?))
        }
        .instrument(span.clone())
        .await
        .map_err(|e| failure(gid, &e))?;
        let txn: Option<Value> = serde_json::from_str(&text).ok();
        let state = txn
            .as_ref()
            .and_then(|t| t["state"].as_str())
            .filter(|_| matches!(status.as_u16(), 200 | 202 | 409));
        let Some(state) = state else {
            tracing::warn!(%gid, %status, body = %text, "the coordinator refused the transaction");
            return Err(NoOutcome(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("transaction coordinator answered {}", status.as_u16()),
            ));
        };
        Ok(match state {
            "committed" => Outcome::Committed,
            "committing" => Outcome::Committing,
            "aborted" | "aborting" => {
                let cause = txn.as_ref().map(|t| &t["cause"]);
                let reason = cause
                    .and_then(|c| c["reason"].as_str())
                    .unwrap_or("the transaction aborted");
                Outcome::Aborted(reason.to_owned())
            }
            other => Outcome::Undecided(other.to_owned()),
        })
    }
}

fn failure(gid: &str, err: &reqwest::Error) -> NoOutcome {
    tracing::warn!(%gid, error = %err, "transaction coordinator unreachable");
    if err.is_timeout() {
        NoOutcome(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "transaction coordinator did not answer within {} s; transaction {gid} may still complete",
                SUBMIT_TIMEOUT.as_secs()
            ),
        )
    } else if err.is_connect() {
        NoOutcome(
            StatusCode::SERVICE_UNAVAILABLE,
            "cannot connect to the transaction coordinator".into(),
        )
    } else {
        NoOutcome(
            StatusCode::SERVICE_UNAVAILABLE,
            "request to the transaction coordinator failed".into(),
        )
    }
}
