//! Phase messages to participants over HTTP: `POST <base>/prepare|commit|abort` with
//! `{gid, branch_id, payload}`, the base being an explicit URL or a healthy instance of a
//! registered service, and the answer mapped to what the engine understands.

use super::TraceContext;
use super::mesh::MeshClients;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::CONTENT_TYPE;
use hyper::{Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::Semaphore;
use trellis_balance::{Balancer, Policy};
use trellis_coordinator::{Message, Phase, Response, Target};

/// How long one phase message may take; a slower participant is retried later.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Phase messages on their way at once; the rest wait for a permit.
pub const MAX_CALLS: usize = 4_096;
/// Most of a refusal's reason kept.
const MAX_REASON: usize = 512;
/// Largest answer body read (the rest is not waited for; the connection is then dropped).
const MAX_ANSWER: usize = 64 * 1024;

/// An address to reach a service instance at.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    /// It takes only mutual TLS with a mesh certificate (a mesh sidecar registered it).
    pub meshed: bool,
}

/// Finds the passing instances of a service (the registry, in the server).
pub trait Resolve: Send + Sync {
    fn passing(&self, service: &str) -> Vec<Endpoint>;
}

/// Sends phase messages: hyper's pooled HTTP/1.1 client (keep-alive per participant), no more
/// (phase messages are plain `http://` POSTs, and this is the coordinator's hot path: reqwest's
/// URL handling and layers cost a third of a call's CPU here).
#[derive(Clone)]
pub struct Participants {
    client: Client<HttpConnector, Full<Bytes>>,
    resolve: Arc<dyn Resolve>,
    permits: Arc<Semaphore>,
    /// One balancer per service a branch names (few: the registry's services).
    balancers: Arc<Mutex<HashMap<String, Balancer<Endpoint>>>>,
    /// Clients for participants that take only mutual TLS.
    mesh: Option<Arc<MeshClients>>,
}

impl Participants {
    pub fn new(resolve: Arc<dyn Resolve>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_timer(TokioTimer::new())
            .build(connector);
        Self {
            client,
            resolve,
            permits: Arc::new(Semaphore::new(MAX_CALLS)),
            balancers: Arc::new(Mutex::new(HashMap::new())),
            mesh: None,
        }
    }

    /// Reaches participants that take only mutual TLS with the coordinator's mesh identity.
    pub fn with_mesh(mut self, mesh: Arc<MeshClients>) -> Self {
        self.mesh = Some(mesh);
        self
    }

    /// Sends `message` (with the transaction's trace context, if it has one) and says what the
    /// participant answered.
    pub async fn call(&self, message: &Message, trace: Option<&TraceContext>) -> Response {
        let Ok(_permit) = self.permits.acquire().await else {
            return Response::Failed("the coordinator is stopping".into());
        };
        let phase = message.phase.as_str();
        match &message.target {
            Target::Url(url) => {
                let url = format!("{}/{phase}", url.trim_end_matches('/'));
                send(&self.client, &url, message, trace).await
            }
            Target::Service { name, path } => {
                let Some(endpoint) = self.pick(name) else {
                    return Response::Failed(format!("no passing instance of service {name:?}"));
                };
                let host = if endpoint.host.contains(':') {
                    format!("[{}]", endpoint.host)
                } else {
                    endpoint.host.clone()
                };
                let path = path.trim_end_matches('/');
                let started = Instant::now();
                let response = if endpoint.meshed {
                    let url = format!("https://{host}:{}{path}/{phase}", endpoint.port);
                    let client = match &self.mesh {
                        Some(mesh) => mesh.client_for(name, SystemTime::now()),
                        None => Err("this coordinator has no mesh identity".to_owned()),
                    };
                    match client {
                        Ok(client) => send(&client, &url, message, trace).await,
                        Err(e) => Response::Failed(format!("{url}: mutual TLS: {e}")),
                    }
                } else {
                    let url = format!("http://{host}:{}{path}/{phase}", endpoint.port);
                    send(&self.client, &url, message, trace).await
                };
                let answered = !matches!(response, Response::Failed(_));
                self.picked_done(name, &endpoint, started, answered);
                response
            }
        }
    }

    /// A passing instance of `service`, chosen as the proxy chooses (peak-EWMA over outstanding
    /// calls, two random choices) among the registry's passing instances of the moment; the
    /// call counts as outstanding until [`Participants::picked_done`].
    fn pick(&self, service: &str) -> Option<Endpoint> {
        let passing = self.resolve.passing(service);
        let now = Instant::now();
        let mut balancers = self.balancers.lock();
        let balancer = balancers
            .entry(service.to_string())
            .or_insert_with(|| Balancer::new(Policy::default()));
        balancer.set_endpoints(passing.into_iter().map(trellis_balance::Endpoint::new), now);
        let picked = balancer.pick(&mut rand::rng(), now, None)?;
        balancer.on_start(&picked);
        Some(picked)
    }

    fn picked_done(&self, service: &str, endpoint: &Endpoint, started: Instant, answered: bool) {
        if let Some(balancer) = self.balancers.lock().get_mut(service) {
            balancer.on_end(endpoint, started.elapsed(), Instant::now(), answered);
        }
    }
}

/// Posts `message` to `url` with `client` and says what the participant answered.
async fn send<C>(
    client: &Client<C, Full<Bytes>>,
    url: &str,
    message: &Message,
    trace: Option<&TraceContext>,
) -> Response
where
    C: Connect + Clone + Send + Sync + 'static,
{
    let uri: Uri = match url.parse() {
        Ok(uri) => uri,
        Err(error) => return Response::Failed(format!("{url}: {error}")),
    };
    let mut request = Request::post(uri).header(CONTENT_TYPE, "application/json");
    if let Some(trace) = trace {
        request = request.header("traceparent", trace.traceparent.clone());
        if let Some(state) = &trace.tracestate {
            request = request.header("tracestate", state.clone());
        }
    }
    let request = request.body(Full::new(Bytes::from(body(message))));
    let request = match request {
        Ok(request) => request,
        Err(error) => return Response::Failed(format!("{url}: {error}")),
    };
    let exchange = async {
        let response = client.request(request).await?;
        let status = response.status();
        // Read the answer to its end, so the connection goes back to the pool.
        let body = Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map(|collected| collected.to_bytes())
            .unwrap_or_default();
        Ok::<_, hyper_util::client::legacy::Error>((status, body))
    };
    let (status, text) = match tokio::time::timeout(CALL_TIMEOUT, exchange).await {
        Err(_) => return Response::Failed(format!("{url}: timed out")),
        Ok(Err(error)) => return Response::Failed(format!("{url}: {}", root_cause(&error))),
        Ok(Ok(answer)) => answer,
    };
    if status.is_success() {
        return Response::Ok;
    }
    classify(
        message.phase,
        status.as_u16(),
        url,
        &String::from_utf8_lossy(&text),
    )
}

/// `{"gid": ..., "branch_id": ..., "payload": <the payload's JSON text as given>}`.
fn body(message: &Message) -> String {
    let quote = |text: &str| serde_json::to_string(text).unwrap_or_else(|_| "\"\"".into());
    format!(
        r#"{{"gid":{},"branch_id":{},"payload":{}}}"#,
        quote(&message.gid),
        quote(&message.branch),
        message.payload
    )
}

/// A non-2xx answer: 409 to a prepare is a no vote; 425, 429, 503 and other 5xx are "try again";
/// any other 4xx to a prepare is a no vote too (a participant that cannot understand the
/// request will not prepare it, and retrying until the timeout would only delay the abort).
/// In phase 2 nothing is a refusal the coordinator may accept, so everything is retried.
fn classify(phase: Phase, status: u16, url: &str, text: &str) -> Response {
    let reason = reason(text);
    let described = if reason.is_empty() {
        format!("{url} answered {status}")
    } else {
        format!("{url} answered {status}: {reason}")
    };
    let transient = matches!(status, 425 | 429) || status >= 500;
    match phase {
        Phase::Prepare if status == 409 => {
            Response::Refused(if reason.is_empty() { described } else { reason })
        }
        Phase::Prepare if !transient && (400..500).contains(&status) => {
            Response::Refused(described)
        }
        _ => Response::Failed(described),
    }
}

/// The `reason` of a JSON error body, or the body's text, cut to [`MAX_REASON`] bytes.
fn reason(text: &str) -> String {
    let from_json = serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| {
            ["reason", "error", "message"]
                .iter()
                .find_map(|key| v.get(key).and_then(|r| r.as_str()).map(str::to_string))
        });
    let mut reason = from_json.unwrap_or_else(|| text.trim().to_string());
    if reason.len() > MAX_REASON {
        let mut cut = MAX_REASON;
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        reason.truncate(cut);
    }
    reason
}

/// The innermost cause ("Connection refused (os error 111)") instead of the chain's layers.
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_map_to_votes_and_retries() {
        let url = "http://x/prepare";
        assert_eq!(
            classify(
                Phase::Prepare,
                409,
                url,
                r#"{"reason":"insufficient funds"}"#
            ),
            Response::Refused("insufficient funds".into())
        );
        assert_eq!(
            classify(Phase::Prepare, 409, url, ""),
            Response::Refused("http://x/prepare answered 409".into())
        );
        assert_eq!(
            classify(Phase::Prepare, 404, url, "not found"),
            Response::Refused("http://x/prepare answered 404: not found".into())
        );
        for status in [425, 429, 500, 503] {
            assert!(matches!(
                classify(Phase::Prepare, status, url, "busy"),
                Response::Failed(_)
            ));
        }
        for status in [400, 409, 503] {
            assert!(matches!(
                classify(Phase::Commit, status, url, ""),
                Response::Failed(_)
            ));
        }
        assert_eq!(reason(&"é".repeat(600)).len(), MAX_REASON);
    }

    #[test]
    fn the_body_embeds_the_payload_as_given() {
        let message = Message {
            gid: Arc::from("g\"1"),
            branch: "b".into(),
            phase: Phase::Prepare,
            target: Target::Url("http://x".into()),
            payload: Arc::from(r#"{"amount": 5}"#),
            attempt: 1,
        };
        let parsed: serde_json::Value = serde_json::from_str(&body(&message)).expect("json");
        assert_eq!(
            parsed,
            serde_json::json!({"gid": "g\"1", "branch_id": "b", "payload": {"amount": 5}})
        );
    }
}
