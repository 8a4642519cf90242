//! Rust SDK for the Trellis HTTP API (a Consul-compatible subset plus the streaming watch).

pub mod mesh;
pub mod probe;
pub mod tls;

pub use tls::TlsOptions;
mod connect;
pub use connect::{
    CaRoot, CaRoots, INTENTION_DEFAULT_HEADER, IntentionMatch, LeafCert, MatchedIntention,
};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};
use tokio_util::io::StreamReader;
use trellis_types::{
    AgentService, CatalogService, CheckStatus, HealthCheck, HealthEntry, KvPair,
    ServiceRegistration, WatchEvent,
};

/// Default address of the HTTP API.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8500";
/// The server's default and longest wait of a blocking query (Consul's).
const DEFAULT_WAIT: Duration = Duration::from_secs(300);
const MAX_WAIT: Duration = Duration::from_secs(600);
/// Largest watch event accepted, so a misbehaving server cannot make us buffer without bound.
const MAX_WATCH_LINE: usize = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request did not get an answer. The message carries the innermost cause once (the
    /// reqwest error is kept for inspection but not chained, so `{:#}` does not repeat it).
    #[error("cannot reach {url}: {}", describe(.cause))]
    Transport { url: String, cause: reqwest::Error },
    #[error("{method} {path} answered {status}: {body}")]
    Status {
        method: &'static str,
        path: String,
        status: u16,
        body: String,
    },
    #[error("unexpected response from {path}: {reason}")]
    Decode { path: String, reason: String },
    #[error("invalid address {0:?}")]
    Address(String),
    #[error("invalid token: it must be printable ASCII")]
    Token,
    /// The TLS options cannot be used: a file that cannot be read or holds no certificate, a
    /// key that does not match its certificate, a certificate without its key.
    #[error("invalid TLS settings: {0}")]
    Tls(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Nothing listens at the address (connection refused, no route, unknown host). A TLS
    /// handshake that failed is not this: something answered (see [`Error::is_tls`]).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Transport { cause, .. } if cause.is_connect()) && !self.is_tls()
    }

    /// The request failed in TLS: the server's certificate was not trusted or not for this
    /// host, the server refused the client's certificate (or its absence), or it does not
    /// speak TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self, Self::Transport { cause, .. } if tls::tls_failure(cause).is_some())
    }

    /// The server took longer than the request's timeout to answer.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Transport { cause, .. } if cause.is_timeout())
    }
}

/// How many times a request that was never written is sent again (see [`never_sent`]).
const RESENDS: usize = 2;

/// Whether hyper dropped the request before writing any of it, because its new connection
/// closed first: what a TLS 1.3 server that refuses the client's certificate does right after
/// the handshake, its alert then reaching nobody. Safe to send again, whatever the method; the
/// next attempt usually reads the alert and says what is wrong.
fn never_sent(error: &reqwest::Error) -> bool {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = next {
        if current
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_canceled)
        {
            return true;
        }
        next = current.source();
    }
    false
}

/// A transport failure in a few words: what went wrong and the innermost cause
/// ("connection refused (os error 111)"), instead of reqwest's four nested messages.
fn describe(error: &reqwest::Error) -> String {
    if let Some(failure) = tls::tls_failure(error) {
        return tls::explain_tls(failure);
    }
    let root = root_cause(error);
    let what = if error.is_connect() {
        "cannot connect"
    } else if error.is_timeout() {
        "timed out"
    } else if error.is_body() || error.is_decode() {
        "the response body failed"
    } else {
        "the request failed"
    };
    if std::ptr::addr_eq(root, error) {
        what.to_owned()
    } else {
        format!("{what}: {root}")
    }
}

/// The innermost error of `error`'s source chain (`error` itself when it has no source).
pub(crate) fn root_cause<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> &'a (dyn std::error::Error + 'static) {
    let mut root = error;
    while let Some(next) = root.source() {
        root = next;
    }
    root
}

/// A response value together with its `X-Consul-Index`.
#[derive(Debug, Clone)]
pub struct Indexed<T> {
    pub value: T,
    pub index: u64,
}

/// Parameters of a blocking query.
#[derive(Debug, Clone, Copy, Default)]
pub struct Blocking {
    pub index: u64,
    pub wait: Option<Duration>,
}

/// A trace search ([`Client::trace_search`]), in the terms of Jaeger's query API.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceQuery {
    /// The service that must have a span in the trace (required by the API).
    pub service: String,
    /// The operation (span name) of that span.
    pub operation: Option<String>,
    /// Shortest matching span, a Go duration such as `10ms`.
    pub min_duration: Option<String>,
    /// Longest matching span, a Go duration.
    pub max_duration: Option<String>,
    /// Only traces with a span marked as an error.
    pub errors_only: bool,
    /// How far back to look, e.g. `1h` or `2d` (the server's default: everything it holds).
    pub lookback: Option<String>,
    /// Most traces answered.
    pub limit: Option<usize>,
}

/// A client of the registry: one server, or several (`a,b,c`) that it fails over between.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    /// Base URLs of the registry's servers, in the order given.
    bases: Arc<[String]>,
    /// The one requests go to: the last that took a connection. Shared by clones, so one
    /// failover serves every user of the client.
    current: Arc<AtomicUsize>,
}

/// How a [`Client`] talks to the registry: the access token it sends and its TLS settings.
/// The default sends no token and verifies an `https://` registry against the system's trust
/// store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientOptions {
    /// Sent as `X-Consul-Token` with every request (`None` or empty: the anonymous token).
    pub token: Option<String>,
    pub tls: TlsOptions,
}

impl ClientOptions {
    /// The token and TLS settings from the environment ([`token_from_env`],
    /// [`TlsOptions::from_env`]).
    pub fn from_env() -> Self {
        Self {
            token: token_from_env(),
            tls: TlsOptions::from_env(),
        }
    }
}

/// The registry's address from the environment: `TRELLIS_HTTP_ADDR`, else `CONSUL_HTTP_ADDR`,
/// else [`DEFAULT_ADDR`]; a variable that is set but blank counts as unset.
pub fn addr_from_env() -> String {
    ["TRELLIS_HTTP_ADDR", "CONSUL_HTTP_ADDR"]
        .into_iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
        .unwrap_or_else(|| DEFAULT_ADDR.to_owned())
}

/// The access token from the environment: `TRELLIS_HTTP_TOKEN`, else `CONSUL_HTTP_TOKEN`; a
/// variable that is set but blank counts as unset.
pub fn token_from_env() -> Option<String> {
    ["TRELLIS_HTTP_TOKEN", "CONSUL_HTTP_TOKEN"]
        .into_iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
        .map(|v| v.trim().to_owned())
}

/// Turns a comma-separated list of registry addresses (one is a list too) into base URLs: a
/// [`Client`] of several fails over between them.
pub fn normalise_addrs(addrs: &str) -> Result<Vec<String>> {
    addrs.split(',').map(normalise_addr).collect()
}

/// Turns `host:port`, `http://host:port` or `https://...` into a base URL without trailing '/'.
pub fn normalise_addr(addr: &str) -> Result<String> {
    let addr = addr.trim().trim_end_matches('/');
    if addr.is_empty() {
        return Err(Error::Address(addr.to_owned()));
    }
    if addr.starts_with("http://") || addr.starts_with("https://") {
        Ok(addr.to_owned())
    } else if addr.contains("://") {
        Err(Error::Address(addr.to_owned()))
    } else {
        Ok(format!("http://{addr}"))
    }
}

impl Client {
    /// A client of the registry at `addr`, sending no token (the anonymous token).
    pub fn new(addr: &str) -> Result<Self> {
        Self::with_token(addr, None)
    }

    /// A client that sends `token` as `X-Consul-Token` with every request.
    pub fn with_token(addr: &str, token: Option<&str>) -> Result<Self> {
        Self::with_options(
            addr,
            &ClientOptions {
                token: token.map(str::to_owned),
                tls: TlsOptions::default(),
            },
        )
    }

    /// A client with a token and TLS settings. The TLS files are read here, so a file that
    /// cannot be used is an error now rather than at the first request; an `http://` registry
    /// with no TLS options set builds no TLS settings at all.
    ///
    /// `addr` may list several servers of one registry, comma-separated: a request that cannot
    /// connect to the current one (so was not sent) is sent to the next, which stays current.
    pub fn with_options(addr: &str, options: &ClientOptions) -> Result<Self> {
        let bases = normalise_addrs(addr)?;
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = options.token.as_deref().filter(|t| !t.is_empty()) {
            let mut value =
                reqwest::header::HeaderValue::from_str(token).map_err(|_| Error::Token)?;
            value.set_sensitive(true);
            headers.insert("x-consul-token", value);
        }
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .default_headers(headers)
            .connect_timeout(Duration::from_secs(5));
        // reqwest is built with no root certificates of its own: an https registry needs
        // these settings even when no option is set (the system's trust store).
        if bases.iter().any(|b| b.starts_with("https://")) || !options.tls.is_empty() {
            builder = builder
                .use_preconfigured_tls(tls::client_config(&options.tls).map_err(Error::Tls)?);
        }
        let http = builder.build().map_err(|cause| Error::Transport {
            url: addr.to_owned(),
            cause,
        })?;
        Ok(Self {
            http,
            bases: bases.into(),
            current: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// The server requests go to now.
    pub fn base_url(&self) -> &str {
        &self.bases[self.current.load(Ordering::Relaxed) % self.bases.len()]
    }

    /// Every server of the registry this client knows, in the order given.
    pub fn base_urls(&self) -> &[String] {
        &self.bases
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }

    async fn send(
        &self,
        method: &'static str,
        path: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response> {
        let response = self.transmit(path, request).await?;
        Self::successful(method, path, response).await
    }

    /// Sends `request`; if no connection to the current server can be made, sends it to the
    /// next server, and so on once round the list.
    async fn transmit(
        &self,
        path: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response> {
        let transport = |base: &str, cause| Error::Transport {
            url: format!("{base}{path}"),
            cause,
        };
        let mut at = self.current.load(Ordering::Relaxed) % self.bases.len();
        let mut request = request
            .build()
            .map_err(|cause| transport(&self.bases[at], cause))?;
        let (mut tried, mut resent) = (1, 0);
        loop {
            // A body that cannot be cloned (a stream) is sent once, without failover.
            let again = request.try_clone();
            let cause = match self.http.execute(request).await {
                Ok(response) => return Ok(response),
                Err(cause) => cause,
            };
            if never_sent(&cause)
                && resent < RESENDS
                && let Some(same) = again.as_ref().and_then(reqwest::Request::try_clone)
            {
                resent += 1;
                request = same;
                continue;
            }
            let Some(mut next_request) =
                again.filter(|_| cause.is_connect() && tried < self.bases.len())
            else {
                return Err(transport(&self.bases[at], cause));
            };
            let next = (at + 1) % self.bases.len();
            // Unless another request already moved on.
            let _ = self
                .current
                .compare_exchange(at, next, Ordering::Relaxed, Ordering::Relaxed);
            rebase(next_request.url_mut(), &self.bases[next]);
            request = next_request;
            at = next;
            tried += 1;
        }
    }

    /// The response if it is a success, else its status and body as an error.
    async fn successful(
        method: &'static str,
        path: &str,
        response: reqwest::Response,
    ) -> Result<reqwest::Response> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.text().await.unwrap_or_default();
        Err(Error::Status {
            method,
            path: path.to_owned(),
            status: status.as_u16(),
            body: body.trim().to_owned(),
        })
    }

    /// A GET, blocking if asked to; a blocking read is bounded by the server's longest wait
    /// plus its jitter and a margin, so a silently dead connection cannot hang it forever.
    fn get_request(
        &self,
        path: &str,
        query: &[(&str, String)],
        blocking: Option<Blocking>,
    ) -> reqwest::RequestBuilder {
        let mut query = query.to_vec();
        let mut request = self.http.get(self.url(path));
        if let Some(b) = blocking {
            query.push(("index", b.index.to_string()));
            let wait = b.wait.unwrap_or(DEFAULT_WAIT).min(MAX_WAIT);
            query.push(("wait", format!("{}ms", wait.as_millis())));
            request = request.timeout(wait + wait / 16 + Duration::from_secs(5));
        }
        request.query(&query)
    }

    async fn decode<T: DeserializeOwned>(
        path: &str,
        response: reqwest::Response,
    ) -> Result<Indexed<T>> {
        let index = index_of(&response);
        let bytes = response.bytes().await.map_err(|cause| Error::Transport {
            url: path.to_owned(),
            cause,
        })?;
        let value = serde_json::from_slice(&bytes).map_err(|e| Error::Decode {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(Indexed { value, index })
    }

    async fn get_json<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
        blocking: Option<Blocking>,
    ) -> Result<Indexed<T>> {
        let response = self
            .send("GET", path, self.get_request(path, query, blocking))
            .await?;
        Self::decode(path, response).await
    }

    async fn put_json(
        &self,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<reqwest::Response> {
        let mut request = self.http.put(self.url(path));
        if let Some(body) = body {
            request = request.json(&body);
        }
        self.send("PUT", path, request).await
    }

    pub async fn register(&self, registration: &ServiceRegistration) -> Result<()> {
        self.put_json("/v1/agent/service/register", Some(registration.to_json()))
            .await
            .map(drop)
    }

    pub async fn deregister(&self, service_id: &str) -> Result<()> {
        self.put_json(
            &format!("/v1/agent/service/deregister/{}", encode(service_id)),
            None,
        )
        .await
        .map(drop)
    }

    /// Sets a TTL check's status and output (`PUT /v1/agent/check/update/:id`).
    pub async fn update_check(
        &self,
        check_id: &str,
        status: CheckStatus,
        output: &str,
    ) -> Result<()> {
        self.put_json(
            &format!("/v1/agent/check/update/{}", encode(check_id)),
            Some(serde_json::json!({"Status": status, "Output": output})),
        )
        .await
        .map(drop)
    }

    /// Service names and their tags.
    pub async fn services(&self) -> Result<Indexed<BTreeMap<String, Vec<String>>>> {
        self.get_json("/v1/catalog/services", &[], None).await
    }

    pub async fn agent_services(&self) -> Result<BTreeMap<String, AgentService>> {
        Ok(self.get_json("/v1/agent/services", &[], None).await?.value)
    }

    pub async fn catalog_service(&self, name: &str) -> Result<Indexed<Vec<CatalogService>>> {
        self.get_json(&format!("/v1/catalog/service/{}", encode(name)), &[], None)
            .await
    }

    pub async fn health_service(
        &self,
        name: &str,
        passing: bool,
        blocking: Option<Blocking>,
    ) -> Result<Indexed<Vec<HealthEntry>>> {
        let query = if passing {
            vec![("passing", "true".to_owned())]
        } else {
            vec![]
        };
        self.get_json(
            &format!("/v1/health/service/{}", encode(name)),
            &query,
            blocking,
        )
        .await
    }

    pub async fn health_checks(&self, name: &str) -> Result<Vec<HealthCheck>> {
        Ok(self
            .get_json(&format!("/v1/health/checks/{}", encode(name)), &[], None)
            .await?
            .value)
    }

    /// One key, or `None` when it does not exist.
    pub async fn kv_get(
        &self,
        key: &str,
        blocking: Option<Blocking>,
    ) -> Result<Indexed<Option<KvPair>>> {
        let path = format!("/v1/kv/{}", encode_key(key));
        let response = self
            .transmit(&path, self.get_request(&path, &[], blocking))
            .await?;
        // A missing key still carries the index to block on next.
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(Indexed {
                value: None,
                index: index_of(&response),
            });
        }
        let response = Self::successful("GET", &path, response).await?;
        let Indexed { value, index } = Self::decode::<Vec<KvPair>>(&path, response).await?;
        Ok(Indexed {
            value: value.into_iter().next(),
            index,
        })
    }

    /// Every pair under a prefix.
    pub async fn kv_list(&self, prefix: &str) -> Result<Vec<KvPair>> {
        match self
            .get_json::<Vec<KvPair>>(
                &format!("/v1/kv/{}", encode_key(prefix)),
                &[("recurse", "true".to_owned())],
                None,
            )
            .await
        {
            Ok(found) => Ok(found.value),
            Err(Error::Status { status: 404, .. }) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// Writes a value; with `cas`, only if the key's ModifyIndex still equals it (0 = create only).
    pub async fn kv_put(&self, key: &str, value: &[u8], cas: Option<u64>) -> Result<bool> {
        let path = format!("/v1/kv/{}", encode_key(key));
        let mut request = self.http.put(self.url(&path)).body(value.to_vec());
        if let Some(cas) = cas {
            request = request.query(&[("cas", cas.to_string())]);
        }
        let response = self.send("PUT", &path, request).await?;
        bool_body(&path, response).await
    }

    pub async fn kv_delete(&self, key: &str, recurse: bool) -> Result<bool> {
        let path = format!("/v1/kv/{}", encode_key(key));
        let mut request = self.http.delete(self.url(&path));
        if recurse {
            request = request.query(&[("recurse", "true")]);
        }
        let response = self.send("DELETE", &path, request).await?;
        bool_body(&path, response).await
    }

    /// A two-phase-commit transaction (`GET /v1/trellis/txn/:gid`), `None` if the coordinator
    /// does not know it (never begun, or finished and forgotten: presumed abort).
    pub async fn txn_get(&self, gid: &str) -> Result<Option<serde_json::Value>> {
        self.get_json_or_none(&format!("/v1/trellis/txn/{}", encode_key(gid)))
            .await
    }

    /// `GET path` as JSON, `None` on 404.
    async fn get_json_or_none(&self, path: &str) -> Result<Option<serde_json::Value>> {
        let response = self
            .transmit(path, self.get_request(path, &[], None))
            .await?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let response = Self::successful("GET", path, response).await?;
        Ok(Some(Self::decode(path, response).await?.value))
    }

    /// Every transaction the coordinator holds (all pages), optionally in one state.
    pub async fn txn_list(&self, state: Option<&str>) -> Result<Vec<serde_json::Value>> {
        let path = "/v1/trellis/txn";
        let mut all = Vec::new();
        let mut after = 0u64;
        loop {
            let mut query = vec![("after", after.to_string()), ("limit", "1000".to_string())];
            if let Some(state) = state {
                query.push(("state", state.to_string()));
            }
            let page: serde_json::Value = self.get_json(path, &query, None).await?.value;
            if let Some(txns) = page["transactions"].as_array() {
                all.extend(txns.iter().cloned());
            }
            match page["next"].as_u64() {
                Some(next) if next > after => after = next,
                _ => return Ok(all),
            }
        }
    }

    /// Submits a transaction (`POST /v1/trellis/txn`; with `"commit": true` the one-shot
    /// submit) and answers the transaction as the coordinator left it: an aborted outcome is
    /// an answer (`state` says it), not an error.
    pub async fn txn_submit(&self, body: &serde_json::Value) -> Result<serde_json::Value> {
        self.txn_post("/v1/trellis/txn", body).await
    }

    /// Aborts a transaction not yet decided (`POST /v1/trellis/txn/:gid/abort`).
    pub async fn txn_abort(&self, gid: &str) -> Result<serde_json::Value> {
        let path = format!("/v1/trellis/txn/{}/abort", encode_key(gid));
        self.txn_post(&path, &serde_json::json!({})).await
    }

    async fn txn_post(&self, path: &str, body: &serde_json::Value) -> Result<serde_json::Value> {
        let request = self.http.post(self.url(path)).json(body);
        let response = self.transmit(path, request).await?;
        // 409 with a transaction body is an aborted outcome; 409 with a reason is a refusal.
        let response = if response.status() == reqwest::StatusCode::CONFLICT {
            let text = response.text().await.unwrap_or_default();
            return match serde_json::from_str::<serde_json::Value>(&text) {
                Ok(txn) if txn.get("gid").is_some() => Ok(txn),
                _ => Err(Error::Status {
                    method: "POST",
                    path: path.to_owned(),
                    status: 409,
                    body: text.trim().to_owned(),
                }),
            };
        } else {
            Self::successful("POST", path, response).await?
        };
        Ok(Self::decode(path, response).await?.value)
    }

    /// Searches the trace collector (Jaeger's `GET /api/traces`): the traces in which
    /// `query.service` has a matching span, each in Jaeger's JSON shape (`traceID`, `spans`,
    /// `processes`), newest first as the server answers them.
    pub async fn trace_search(&self, query: &TraceQuery) -> Result<Vec<serde_json::Value>> {
        let path = "/api/traces";
        let mut params = vec![("service", query.service.clone())];
        if let Some(operation) = &query.operation {
            params.push(("operation", operation.clone()));
        }
        if let Some(min) = &query.min_duration {
            params.push(("minDuration", min.clone()));
        }
        if let Some(max) = &query.max_duration {
            params.push(("maxDuration", max.clone()));
        }
        if query.errors_only {
            params.push(("tags", r#"{"error":"true"}"#.to_owned()));
        }
        if let Some(lookback) = &query.lookback {
            params.push(("lookback", lookback.clone()));
        }
        if let Some(limit) = query.limit {
            params.push(("limit", limit.to_string()));
        }
        let page: serde_json::Value = self.get_json(path, &params, None).await?.value;
        match page["data"].as_array() {
            Some(traces) => Ok(traces.clone()),
            None if page["data"].is_null() => Ok(Vec::new()),
            None => Err(Error::Decode {
                path: path.to_owned(),
                reason: "`data` is not an array of traces".to_owned(),
            }),
        }
    }

    /// One trace by id (Jaeger's `GET /api/traces/:traceID`), `None` if the collector does
    /// not hold it (never received, or evicted).
    pub async fn trace_get(&self, trace_id: &str) -> Result<Option<serde_json::Value>> {
        let page = self
            .get_json_or_none(&format!("/api/traces/{}", encode(trace_id)))
            .await?;
        Ok(page.and_then(|page| page["data"].get(0).cloned()))
    }

    /// Streams the routable instance set of a service: the current set first, then one event per
    /// change. The stream ends when the connection does; callers reconnect.
    pub async fn watch(&self, service: &str) -> Result<WatchStream> {
        let path = format!("/v1/trellis/watch/{}", encode(service));
        let request = self
            .http
            .get(self.url(&path))
            .header("accept", "application/x-ndjson");
        let response = self.send("GET", &path, request).await?;
        Ok(watch_events(response.bytes_stream(), path))
    }
}

/// `url` sent to the server at `base` instead: its scheme, host and port.
fn rebase(url: &mut reqwest::Url, base: &str) {
    if let Ok(base) = reqwest::Url::parse(base) {
        let _ = url.set_scheme(base.scheme());
        let _ = url.set_host(base.host_str());
        let _ = url.set_port(base.port());
    }
}

/// A stream of watch events.
pub type WatchStream = std::pin::Pin<Box<dyn Stream<Item = Result<WatchEvent>> + Send>>;

/// Splits a streamed NDJSON body into watch events: one JSON event per line, blank (keep-alive)
/// lines skipped, lines longer than [`MAX_WATCH_LINE`] refused. A line that is not an event is a
/// decode error and the stream goes on; a transport error or a line too long is the last item.
/// An unterminated last line at the end of the body is parsed like the others.
fn watch_events<S>(body: S, path: String) -> WatchStream
where
    S: Stream<Item = reqwest::Result<Bytes>> + Send + 'static,
{
    // StreamReader wants io errors; the reqwest error rides inside and is taken back out below.
    let reader = StreamReader::new(body.map(|chunk| chunk.map_err(std::io::Error::other)));
    let lines = FramedRead::new(reader, LinesCodec::new_with_max_length(MAX_WATCH_LINE));
    let events = lines.filter_map(move |line| {
        let event = match line {
            Ok(line) if line.bytes().all(|b| b.is_ascii_whitespace()) => None,
            Ok(line) => {
                Some(
                    serde_json::from_str::<WatchEvent>(&line).map_err(|e| Error::Decode {
                        path: path.clone(),
                        reason: e.to_string(),
                    }),
                )
            }
            Err(error) => Some(Err(line_error(&path, error))),
        };
        std::future::ready(event)
    });
    // FramedRead ends after an error but would read on if polled again; fused, it stays ended.
    Box::pin(events.fuse())
}

/// A line that could not be read: the connection failed, the line is too long, or it is not
/// UTF-8 (then it cannot be JSON either).
fn line_error(path: &str, error: LinesCodecError) -> Error {
    match error {
        LinesCodecError::MaxLineLengthExceeded => Error::Decode {
            path: path.to_owned(),
            reason: "watch event too large".into(),
        },
        LinesCodecError::Io(error) => {
            let reason = error.to_string();
            match error
                .into_inner()
                .map(|inner| inner.downcast::<reqwest::Error>())
            {
                Some(Ok(cause)) => Error::Transport {
                    url: path.to_owned(),
                    cause: *cause,
                },
                _ => Error::Decode {
                    path: path.to_owned(),
                    reason,
                },
            }
        }
    }
}

fn index_of(response: &reqwest::Response) -> u64 {
    response
        .headers()
        .get("x-consul-index")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn bool_body(path: &str, response: reqwest::Response) -> Result<bool> {
    let text = response.text().await.map_err(|cause| Error::Transport {
        url: path.to_owned(),
        cause,
    })?;
    match text.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(Error::Decode {
            path: path.to_owned(),
            reason: format!("expected true or false, got {other:?}"),
        }),
    }
}

/// What a path segment keeps as is: the unreserved characters of RFC 3986 (ASCII letters and
/// digits, `-`, `_`, `.`, `~`). Every other byte, including each byte of a non-ASCII character,
/// is percent-encoded.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// A KV key keeps its `/` separators as well.
const KV_KEY: &AsciiSet = &SEGMENT.remove(b'/');

/// Percent-encodes one path segment.
fn encode(segment: &str) -> String {
    utf8_percent_encode(segment, SEGMENT).to_string()
}

/// Percent-encodes a KV key, keeping its '/' separators.
fn encode_key(key: &str) -> String {
    utf8_percent_encode(key, KV_KEY).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unreachable_registry_is_one_message_naming_the_cause_once() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let client = Client::new(&format!("127.0.0.1:{port}")).unwrap();
        let error = client.services().await.unwrap_err();
        assert!(error.is_unreachable());
        let text = error.to_string();
        assert!(
            text.starts_with(&format!(
                "cannot reach http://127.0.0.1:{port}/v1/catalog/services: cannot connect"
            )),
            "{text}"
        );
        assert_eq!(text.matches("os error").count(), 1, "{text}");
        assert!(
            std::error::Error::source(&error).is_none(),
            "not chained again"
        );
    }

    /// A loopback port nothing listens on.
    fn closed_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port()
    }

    /// A server that answers every request `200 {body}` and counts the requests.
    async fn answering(body: &'static str) -> (u16, Arc<AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let served = Arc::new(AtomicUsize::new(0));
        let count = served.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let count = count.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    // One request per connection is enough here: answer and close.
                    let _ = stream.read(&mut buf).await;
                    count.fetch_add(1, Ordering::SeqCst);
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-consul-index: 7\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(answer.as_bytes()).await;
                });
            }
        });
        (port, served)
    }

    #[tokio::test]
    async fn a_list_of_servers_fails_over_to_one_that_answers_and_stays_there() {
        let dead = closed_port();
        let (live, served) = answering("true").await;
        let client = Client::new(&format!("127.0.0.1:{dead}, http://127.0.0.1:{live}")).unwrap();
        assert_eq!(client.base_urls().len(), 2);
        assert_eq!(client.base_url(), format!("http://127.0.0.1:{dead}"));
        // A write (its body sent again) and a read both reach the live server.
        assert!(client.kv_put("k", b"v", None).await.unwrap());
        assert_eq!(client.base_url(), format!("http://127.0.0.1:{live}"));
        let clone = client.clone();
        assert!(clone.kv_put("k", b"w", None).await.unwrap());
        assert_eq!(served.load(Ordering::SeqCst), 2);

        // None answers: the error names the last one tried.
        let other = closed_port();
        let client = Client::new(&format!("127.0.0.1:{dead},127.0.0.1:{other}")).unwrap();
        let error = client.services().await.unwrap_err();
        assert!(error.is_unreachable());
        assert!(error.to_string().contains(&format!(":{other}/")), "{error}");
        assert!(Client::new("127.0.0.1:1,").is_err(), "an empty entry");
    }

    #[test]
    fn addresses_are_normalised() {
        assert_eq!(
            normalise_addr("127.0.0.1:8500").unwrap(),
            "http://127.0.0.1:8500"
        );
        assert_eq!(normalise_addr("http://h:1/").unwrap(), "http://h:1");
        assert!(normalise_addr("ftp://h").is_err());
        assert!(normalise_addr("").is_err());
    }

    #[test]
    fn keys_keep_slashes() {
        assert_eq!(encode_key("a/b c/d"), "a/b%20c/d");
        assert_eq!(encode_key("/a//b/"), "/a//b/");
        assert_eq!(encode("a/b"), "a%2Fb", "outside keys '/' is data");
    }

    /// The hand-written encoder the `percent-encoding` sets replaced.
    fn reference_encode(segment: &str) -> String {
        let mut out = String::new();
        for byte in segment.bytes() {
            if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
                out.push(byte as char);
            } else {
                out.push_str(&format!("%{byte:02X}"));
            }
        }
        out
    }

    #[test]
    fn encoding_matches_the_hand_written_one() {
        let mut samples: Vec<String> = (0u8..128).map(|b| char::from(b).to_string()).collect();
        samples.extend(
            [
                "é",
                "ü/ß",
                "日本",
                "a b?c#d%e&f=g+h",
                "x\u{7f}y",
                "~user/.cfg",
                "💡/x",
            ]
            .map(String::from),
        );
        for sample in &samples {
            assert_eq!(encode(sample), reference_encode(sample), "{sample:?}");
            let reference_key = sample
                .split('/')
                .map(reference_encode)
                .collect::<Vec<_>>()
                .join("/");
            assert_eq!(encode_key(sample), reference_key, "{sample:?}");
        }
        assert_eq!(encode("é ~"), "%C3%A9%20~");
    }

    fn event_line(index: u64, service: &str) -> String {
        format!(r#"{{"Index":{index},"Service":"{service}","Instances":[]}}"#)
    }

    /// Feeds `chunks` through the same splitting as [`Client::watch`].
    async fn split(chunks: Vec<reqwest::Result<Bytes>>) -> Vec<Result<WatchEvent>> {
        watch_events(futures_util::stream::iter(chunks), "/w".into())
            .collect()
            .await
    }

    fn chunked(body: &[u8], size: usize) -> Vec<reqwest::Result<Bytes>> {
        body.chunks(size)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect()
    }

    #[tokio::test]
    async fn watch_lines_split_anywhere_make_the_same_events() {
        let body = format!(
            "\n{}\n \r\n{}\r\n\n{}\n",
            event_line(1, "web"),
            event_line(2, "café"),
            event_line(3, "web"),
        );
        // Every chunk size, down to one byte: lines (and the two-byte 'é') split mid-way.
        for size in 1..=body.len() {
            let events: Vec<WatchEvent> = split(chunked(body.as_bytes(), size))
                .await
                .into_iter()
                .map(|e| e.expect("an event"))
                .collect();
            let seen: Vec<(u64, &str)> = events
                .iter()
                .map(|e| (e.index, e.service.as_str()))
                .collect();
            assert_eq!(
                seen,
                [(1, "web"), (2, "café"), (3, "web")],
                "chunks of {size}"
            );
        }
    }

    #[tokio::test]
    async fn a_bad_line_is_a_decode_error_and_the_stream_goes_on() {
        let body = format!("not json\n{}\n", event_line(7, "web"));
        let items = split(chunked(body.as_bytes(), 3)).await;
        assert_eq!(items.len(), 2);
        assert!(matches!(&items[0], Err(Error::Decode { path, .. }) if path == "/w"));
        assert_eq!(items[1].as_ref().expect("an event").index, 7);
    }

    #[tokio::test]
    async fn a_line_too_long_ends_the_stream() {
        let mut body = event_line(1, "web").into_bytes();
        body.push(b'\n');
        body.extend(std::iter::repeat_n(b' ', MAX_WATCH_LINE + 1));
        body.extend_from_slice(b"\n");
        body.extend_from_slice(event_line(2, "web").as_bytes());
        body.push(b'\n');
        let items = split(chunked(&body, 64 * 1024)).await;
        assert_eq!(items.len(), 2, "the event, then the error, then nothing");
        assert_eq!(items[0].as_ref().expect("an event").index, 1);
        assert!(matches!(
            &items[1],
            Err(Error::Decode { reason, .. }) if reason == "watch event too large"
        ));
    }

    #[tokio::test]
    async fn a_line_at_the_bound_is_accepted() {
        let event = event_line(5, "web");
        let mut line = event.clone();
        line.push_str(&" ".repeat(MAX_WATCH_LINE - event.len()));
        line.push('\n');
        let items = split(chunked(line.as_bytes(), 1 << 20)).await;
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].as_ref().expect("an event").index, 5);
    }

    #[tokio::test]
    async fn a_transport_error_is_the_last_item() {
        let broken = reqwest::Client::new()
            .get("not a url")
            .build()
            .expect_err("a request error");
        let mut chunks = chunked(format!("{}\n{{\"Ind", event_line(1, "web")).as_bytes(), 5);
        chunks.push(Err(broken));
        chunks.push(Ok(Bytes::from(format!("{}\n", event_line(2, "web")))));
        let items = split(chunks).await;
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].as_ref().expect("an event").index, 1);
        assert!(matches!(&items[1], Err(Error::Transport { url, .. }) if url == "/w"));
    }

    #[tokio::test]
    async fn invalid_utf8_is_a_decode_error() {
        let items = split(vec![Ok(Bytes::from_static(b"\xff\xfe\n"))]).await;
        assert_eq!(items.len(), 1);
        assert!(matches!(&items[0], Err(Error::Decode { .. })));
    }

    #[tokio::test]
    async fn an_unterminated_last_line_is_parsed() {
        let items = split(chunked(event_line(4, "web").as_bytes(), 7)).await;
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].as_ref().expect("an event").index, 4);
        let items = split(chunked(b"{\"Index\":4,", 7)).await;
        assert!(
            matches!(&items[..], [Err(Error::Decode { .. })]),
            "cut mid-event"
        );
    }
}
