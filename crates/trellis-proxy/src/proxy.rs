//! The engine: turns a request arriving on a listener into a forwarded request (or a response
//! explaining why not), for each of the three kinds of listener.

use crate::body::Body;
use crate::client::UpstreamClient;
use crate::discovery::Discovery;
use crate::exporter::Tracer;
use crate::forward::forward;
use crate::headers::{REQUEST_ID, ensure_request_id, ensure_trace_context, strip_hop_by_hop};
use crate::intentions::Intentions;
use crate::mesh_tls::{PEER_HEADER, PEER_URI_HEADER, PeerIdentity};
use crate::metrics::{Direction, Metrics, RequestMetrics};
use crate::reject::{ERROR_HEADER, Reject};
use crate::routes::Routes;
use crate::server::Peer;
use crate::spans::{AttemptLog, HopRecord};
use crate::trace_context::{HopSpans, SpanIds, TRACESTATE};
use crate::upstream::Upstream;
use hyper::HeaderMap;
use hyper::header::{HOST, HeaderValue};
use hyper::http::uri::PathAndQuery;
use hyper::{Request, Response, Uri};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime};

/// What a listener does with requests.
pub enum Mode {
    /// The app's outgoing calls: the service is the request's host (absolute-form URI or Host).
    Outbound,
    /// Calls to this instance: everything goes to the local app.
    Inbound(Arc<Upstream>),
    /// Edge routing by longest path prefix.
    Gateway(Routes),
}

/// One listener's request handler; cheap to share between connections.
pub struct Proxy {
    mode: Mode,
    discovery: Arc<Discovery>,
    client: UpstreamClient,
    metrics: Metrics,
    /// Metrics of requests that name no valid service.
    unknown: OnceLock<RequestMetrics>,
    /// Span recording and context propagation; without it the proxy only makes sure a
    /// `traceparent` is present.
    tracer: Option<Arc<Tracer>>,
    /// On a mutual-TLS inbound listener: the intentions every caller's identity is checked
    /// against.
    intentions: Option<Arc<Intentions>>,
}

/// A routed request: its upstream, the request rewritten for it, and the gateway route.
type Routed<'a> = (Arc<Upstream>, Request<Body>, Option<&'a Arc<str>>);

/// Label used when a request names no valid service, so bad input cannot add label values.
const UNKNOWN: &str = "unknown";

impl Proxy {
    pub fn new(
        mode: Mode,
        discovery: Arc<Discovery>,
        client: UpstreamClient,
        metrics: Metrics,
    ) -> Self {
        Self {
            mode,
            discovery,
            client,
            metrics,
            unknown: OnceLock::new(),
            tracer: None,
            intentions: None,
        }
    }

    /// Requires every caller of this (inbound) listener to prove a mesh identity that
    /// `intentions` allow.
    pub fn with_intentions(mut self, intentions: Arc<Intentions>) -> Self {
        self.intentions = Some(intentions);
        self
    }

    /// Records spans and propagates trace context through `tracer`.
    pub fn with_tracer(mut self, tracer: Arc<Tracer>) -> Self {
        self.tracer = Some(tracer);
        self
    }

    /// The spans this listener records for a request.
    fn hop(&self) -> HopSpans {
        match self.mode {
            Mode::Outbound => HopSpans {
                server: false,
                client: true,
            },
            Mode::Inbound(_) => HopSpans {
                server: true,
                client: false,
            },
            Mode::Gateway(_) => HopSpans {
                server: true,
                client: true,
            },
        }
    }

    fn direction(&self) -> Direction {
        match self.mode {
            Mode::Outbound => Direction::Outbound,
            Mode::Inbound(_) => Direction::Inbound,
            Mode::Gateway(_) => Direction::Gateway,
        }
    }

    /// Handles one request end to end.
    pub async fn handle(&self, request: Request<Body>) -> Response<Body> {
        self.handle_from(request, None).await
    }

    /// Handles one request from `peer` (its address is recorded in the spans, its identity
    /// checked on a mutual-TLS inbound listener).
    pub async fn handle_from(
        &self,
        mut request: Request<Body>,
        peer: Option<Peer>,
    ) -> Response<Body> {
        let identity = peer.as_ref().and_then(|p| p.identity.clone());
        let peer = peer.map(|p| p.addr);
        let start = Instant::now();
        let (request_id, mut record) = match &self.tracer {
            None => (ensure_trace_context(request.headers_mut()), None),
            Some(tracer) => {
                let ids = tracer.begin(request.headers_mut(), self.hop());
                let record = ids.map(|ids| self.start_record(ids, &request, start, peer));
                (ensure_request_id(request.headers_mut()), record)
            }
        };
        strip_hop_by_hop(request.headers_mut());
        let (metrics, mut response) = match self.route(request, identity.as_deref()) {
            Ok((upstream, request, route)) => {
                let log = match &mut record {
                    Some(record) => {
                        record.route = route.cloned();
                        record.service = Some(upstream.name().clone());
                        record.forwarded_path = request.uri().path_and_query().cloned();
                        record.call_start = Some(Instant::now());
                        Some(&mut record.log)
                    }
                    None => None,
                };
                // Boxed: the forwarding future is large, and hyper moves the handler's future
                // around by value a few times per request; a pointer moves for free.
                let response = Box::pin(forward(&self.client, &upstream, request, log)).await;
                (Some(upstream), response)
            }
            Err((reject, subject)) => (None, reject.response(&subject)),
        };
        strip_hop_by_hop(response.headers_mut());
        response
            .headers_mut()
            .entry(REQUEST_ID)
            .or_insert(request_id);
        let direction = self.direction();
        let metrics = match &metrics {
            Some(upstream) => upstream.request_metrics(direction),
            None => self.unknown.get_or_init(|| {
                self.metrics
                    .request_metrics(direction, &Arc::new(UNKNOWN.to_owned()))
            }),
        };
        let end = Instant::now();
        metrics.record(response.status().as_u16(), end - start);
        if let (Some(mut record), Some(tracer)) = (record, &self.tracer) {
            record.end = end;
            record.status = response.status().as_u16();
            record.proxy_error = response.headers().get(ERROR_HEADER).cloned();
            tracer.finish(record);
        }
        response
    }

    /// What a recorded request's spans need from the request as it arrived.
    fn start_record(
        &self,
        ids: SpanIds,
        request: &Request<Body>,
        start: Instant,
        peer: Option<SocketAddr>,
    ) -> Box<HopRecord> {
        let headers = request.headers();
        let start_unix_nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        let host = headers.get(HOST).cloned().or_else(|| {
            request
                .uri()
                .authority()
                .and_then(|a| a.as_str().parse().ok())
        });
        Box::new(HopRecord {
            ids,
            direction: self.direction(),
            tracestate: headers.get(TRACESTATE).cloned(),
            start,
            start_unix_nanos,
            end: start,
            method: request.method().clone(),
            path: request
                .uri()
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
            version: request.version(),
            host,
            peer,
            route: None,
            service: None,
            forwarded_path: None,
            call_start: None,
            status: 0,
            proxy_error: None,
            log: AttemptLog::default(),
        })
    }

    /// Finds the upstream and rewrites the request to origin form for it; also answers the
    /// gateway route that matched.
    fn route(
        &self,
        mut request: Request<Body>,
        identity: Option<&PeerIdentity>,
    ) -> Result<Routed<'_>, (Reject, String)> {
        let path = request
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let (upstream, path, route) = match &self.mode {
            Mode::Inbound(app) => {
                self.admit(request.headers_mut(), identity)?;
                (app.clone(), path, None)
            }
            Mode::Outbound => {
                let Some(service) = target_service(&request) else {
                    return Err((Reject::BadTarget, String::new()));
                };
                let upstream = self
                    .discovery
                    .upstream(&service)
                    .map_err(|reject| (reject, service.clone()))?;
                (upstream, path, None)
            }
            Mode::Gateway(routes) => {
                let Some((prefix, service, rewritten)) = routes.resolve_route(&path) else {
                    return Err((Reject::NoRoute, path.path().to_owned()));
                };
                let upstream = self
                    .discovery
                    .upstream(service)
                    .map_err(|reject| (reject, service.to_owned()))?;
                (upstream, rewritten, Some(prefix))
            }
        };
        // Keep the authority the client used as the Host header: the upstream may care, and an
        // HTTP/2 request carries it only in the URI.
        if !request.headers().contains_key(HOST)
            && let Some(authority) = request.uri().authority()
            && let Ok(value) = authority.as_str().parse()
        {
            request.headers_mut().insert(HOST, value);
        }
        *request.uri_mut() = Uri::from(path);
        Ok((upstream, request, route))
    }
}

impl Proxy {
    /// The inbound side's check of the caller: what the caller says of itself is dropped, and
    /// with mutual TLS its verified identity must be allowed by the intentions and is passed on.
    fn admit(
        &self,
        headers: &mut HeaderMap,
        identity: Option<&PeerIdentity>,
    ) -> Result<(), (Reject, String)> {
        headers.remove(PEER_HEADER);
        headers.remove(PEER_URI_HEADER);
        let Some(intentions) = &self.intentions else {
            return Ok(());
        };
        let Some(identity) = identity else {
            return Err((Reject::MtlsRequired, String::new()));
        };
        if !intentions.allows(&identity.service) {
            return Err((Reject::IntentionDenied, identity.service.clone()));
        }
        if let (Ok(service), Ok(uri)) = (
            HeaderValue::from_str(&identity.service),
            HeaderValue::from_str(&identity.uri),
        ) {
            headers.insert(PEER_HEADER, service);
            headers.insert(PEER_URI_HEADER, uri);
        }
        Ok(())
    }
}

/// The service an outbound request is for: the host of an absolute-form URI, else the Host
/// header, without port, lower-cased, with a `.service.consul` suffix removed.
pub fn target_service<B>(request: &Request<B>) -> Option<String> {
    let host = match request.uri().host() {
        Some(host) => host.to_owned(),
        None => {
            let value = request.headers().get(HOST)?.to_str().ok()?;
            value
                .parse::<hyper::http::uri::Authority>()
                .ok()?
                .host()
                .to_owned()
        }
    };
    let host = host.to_ascii_lowercase();
    let name = host
        .strip_suffix(".service.consul")
        .or_else(|| host.strip_suffix(".service.trellis"))
        .unwrap_or(&host);
    (!name.is_empty()).then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::empty;

    fn request(uri: &str, host: Option<&str>) -> Request<Body> {
        let mut b = Request::builder().uri(uri);
        if let Some(h) = host {
            b = b.header(HOST, h);
        }
        b.body(empty()).unwrap()
    }

    #[test]
    fn outbound_target_from_absolute_uri_or_host() {
        assert_eq!(
            target_service(&request("http://orders/x", Some("ignored"))).unwrap(),
            "orders"
        );
        assert_eq!(
            target_service(&request("/x", Some("Users:8080"))).unwrap(),
            "users"
        );
        assert_eq!(
            target_service(&request("/x", Some("orders.service.consul"))).unwrap(),
            "orders"
        );
        assert!(target_service(&request("/x", None)).is_none());
    }
}
