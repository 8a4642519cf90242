//! The orders service's view of the users service: "does user N exist?", asked over HTTP
//! through the sidecar's outbound proxy.

use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use reqwest::{Proxy, Url};
use tracing::Instrument;

use super::outbound::{check_http, forward};
use crate::{Error, User};

/// Set by the Trellis proxy on responses it generates itself; such a 404 means "no route to
/// users", not "no such user".
const PROXY_ERROR: &str = "x-trellis-error";

/// Why the users service could not answer the question.
#[derive(Debug)]
pub(crate) struct Unavailable(pub String);

#[derive(Clone)]
pub(crate) struct UsersClient {
    http: reqwest::Client,
    /// Base URL without a trailing slash, e.g. `http://users`.
    base: String,
    timeout: Duration,
}

impl UsersClient {
    pub(crate) fn new(base: &Url, proxy: Option<&Url>, timeout: Duration) -> Result<Self, Error> {
        check_http("users URL", base)?;
        if base.query().is_some() || base.fragment().is_some() {
            return Err(Error::Config(format!(
                "users URL {base} must not have a query or fragment"
            )));
        }
        let builder = reqwest::Client::builder().timeout(timeout);
        let builder = match proxy {
            Some(proxy) => {
                check_http("proxy URL", proxy)?;
                builder.proxy(Proxy::all(proxy.as_str()).map_err(Error::Client)?)
            }
            // Without an explicit proxy, never pick one up from HTTP_PROXY: the sidecar is
            // configured on purpose, not inherited by accident.
            None => builder.no_proxy(),
        };
        Ok(Self {
            http: builder.build().map_err(Error::Client)?,
            base: base.as_str().trim_end_matches('/').to_owned(),
            timeout,
        })
    }

    /// Asks for `/users/{id}`, as a CLIENT span of the current request. `Ok(false)` only for
    /// a 404 from the users service itself.
    pub(crate) async fn exists(&self, id: i64, incoming: &HeaderMap) -> Result<bool, Unavailable> {
        let url = format!("{}/users/{id}", self.base);
        let span = crate::telemetry::client_span("GET", "users /users/{id}", "users", &url);
        let request = forward(self.http.get(&url), &span, incoming);
        let response = async {
            let answer = request.send().await;
            match &answer {
                Ok(response) => {
                    let code = response.status().as_u16();
                    crate::telemetry::record_status(&span, code, code >= 400);
                }
                Err(e) => crate::telemetry::record_failure(&span, e),
            }
            answer
        }
        .instrument(span.clone())
        .await
        .map_err(|e| self.failure(&e))?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND && !response.headers().contains_key(PROXY_ERROR) {
            return Ok(false);
        }
        if status != StatusCode::OK {
            tracing::warn!(user_id = id, %status, "users service answered an error");
            return Err(Unavailable(format!(
                "users service answered {}",
                status.as_u16()
            )));
        }
        // A 200 from something that is not the users service (a misrouted proxy, a captive
        // portal) must not let an order through.
        match response.json::<User>().await {
            Ok(user) if user.id == id => Ok(true),
            Ok(_) => Err(Unavailable(
                "users service answered for another user".into(),
            )),
            Err(e) if e.is_timeout() => Err(self.failure(&e)),
            Err(e) => {
                tracing::warn!(user_id = id, error = %e, "unexpected answer from users service");
                Err(Unavailable("unexpected answer from users service".into()))
            }
        }
    }

    fn failure(&self, err: &reqwest::Error) -> Unavailable {
        tracing::warn!(error = %err, "users service unreachable");
        if err.is_timeout() {
            Unavailable(format!(
                "users service did not answer within {} ms",
                self.timeout.as_millis()
            ))
        } else if err.is_connect() {
            Unavailable("cannot connect to users service".into())
        } else {
            Unavailable("request to users service failed".into())
        }
    }
}
