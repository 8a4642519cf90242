//! Span export that never blocks the request path: a request hands its [`HopRecord`] to a
//! bounded queue (one short lock; dropped and counted when the queue is full), and a background
//! task turns queued records into OTLP spans, encodes them (protobuf) and POSTs them in batches
//! to the collector with a short timeout. A failed batch is counted and dropped, not retried.

use crate::metrics::SpanMetrics;
use crate::spans::{Encoder, HopRecord};
use crate::trace_context::{HopSpans, Sampler, SpanIds, propagate};
use hyper::HeaderMap;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// Spans per OTLP request, and the queue depth that wakes the exporter before its interval.
pub const BATCH_SPANS: usize = 512;
/// Records (one or two spans each) the queue holds before it drops.
pub const QUEUE_RECORDS: usize = 8192;
/// The longest a span waits in the queue when traffic is light.
pub const EXPORT_INTERVAL: Duration = Duration::from_secs(1);
/// Time allowed for one export request.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(2);

/// How spans are exported.
#[derive(Debug, Clone)]
pub struct ExportConfig {
    /// OTLP/HTTP traces URL (`http://host:4318/v1/traces`).
    pub endpoint: String,
    /// Resource attributes: `service.name` first.
    pub service: String,
    /// `service.instance.id`, for a sidecar.
    pub instance: Option<String>,
    pub queue_records: usize,
    pub batch_spans: usize,
    pub interval: Duration,
    pub timeout: Duration,
}

impl ExportConfig {
    pub fn new(endpoint: &str, service: &str) -> Self {
        Self {
            endpoint: endpoint.to_owned(),
            service: service.to_owned(),
            instance: None,
            queue_records: QUEUE_RECORDS,
            batch_spans: BATCH_SPANS,
            interval: EXPORT_INTERVAL,
            timeout: EXPORT_TIMEOUT,
        }
    }
}

/// Records are boxed on the request path (the handler's future holds a pointer, not the
/// record), and the queue keeps the boxes it is given rather than moving them again.
#[allow(clippy::vec_box)]
struct Pending {
    records: Vec<Box<HopRecord>>,
    spans: usize,
    closed: bool,
}

/// The queue between the request path and the export task.
pub struct SpanQueue {
    pending: Mutex<Pending>,
    /// Wakes the task when a batch is ready (or at shutdown).
    ready: Notify,
    capacity: usize,
    batch: usize,
    metrics: SpanMetrics,
}

impl SpanQueue {
    pub fn new(capacity: usize, batch: usize, metrics: SpanMetrics) -> Self {
        Self {
            pending: Mutex::new(Pending {
                records: Vec::with_capacity(capacity.min(1024)),
                spans: 0,
                closed: false,
            }),
            ready: Notify::new(),
            capacity,
            batch: batch.max(1),
            metrics,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        // Only pushes and swaps happen under the lock: a panic cannot leave it inconsistent.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `record`; never waits. A full (or closed) queue drops it and counts its spans.
    pub fn push(&self, record: Box<HopRecord>) {
        let spans = record.span_count();
        let mut pending = self.lock();
        if pending.closed || pending.records.len() >= self.capacity {
            drop(pending);
            self.metrics.dropped_queue_full(spans);
            return;
        }
        pending.records.push(record);
        let before = pending.spans;
        pending.spans += spans;
        let wake = before < self.batch && pending.spans >= self.batch;
        drop(pending);
        if wake {
            self.ready.notify_one();
        }
    }

    /// Takes everything queued, leaving `spare` (emptied) in its place.
    #[allow(clippy::vec_box)]
    fn take(&self, spare: &mut Vec<Box<HopRecord>>) -> Vec<Box<HopRecord>> {
        spare.clear();
        let mut pending = self.lock();
        pending.spans = 0;
        std::mem::replace(&mut pending.records, std::mem::take(spare))
    }

    /// Takes everything queued (what the export task does; for tests and tools).
    #[allow(clippy::vec_box)]
    pub fn drain(&self) -> Vec<Box<HopRecord>> {
        self.take(&mut Vec::new())
    }

    fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
    }

    fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Records waiting.
    pub fn len(&self) -> usize {
        self.lock().records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The request path's handle: the sampling decision, the context written onward, and the
/// queue a recorded request's spans go to. Without an exporter (`--otlp-endpoint off`) context
/// still propagates and nothing is recorded.
pub struct Tracer {
    sampler: Sampler,
    queue: Option<Arc<SpanQueue>>,
}

/// A command's tracing from its flags: the exporter (started when `endpoint`, the validated
/// `--otlp-endpoint`, is given) and the tracer that feeds it. `service` names the spans unless
/// `--trace-service` does.
pub fn start_tracing(
    args: &crate::flags::TracingArgs,
    endpoint: Option<&str>,
    service: &str,
    instance: Option<String>,
    metrics: SpanMetrics,
) -> crate::Result<(Option<Exporter>, Arc<Tracer>)> {
    let exporter = match endpoint {
        Some(endpoint) => {
            let service = args.trace_service.as_deref().unwrap_or(service);
            let mut config = ExportConfig::new(endpoint, service);
            config.instance = instance;
            Some(Exporter::start(config, metrics)?)
        }
        None => None,
    };
    let tracer = Tracer::new(
        Sampler::new(args.trace_sample),
        exporter.as_ref().map(Exporter::queue),
    );
    Ok((exporter, Arc::new(tracer)))
}

impl Tracer {
    pub fn new(sampler: Sampler, queue: Option<Arc<SpanQueue>>) -> Self {
        Self { sampler, queue }
    }

    /// Propagates the context of a request about to be forwarded; the span ids if it is to be
    /// recorded.
    pub fn begin(&self, headers: &mut HeaderMap, hop: HopSpans) -> Option<SpanIds> {
        propagate(
            headers,
            &self.sampler,
            self.queue.is_some(),
            hop,
            &mut rand::rng(),
        )
    }

    /// Hands a finished record to the exporter.
    pub fn finish(&self, record: Box<HopRecord>) {
        if let Some(queue) = &self.queue {
            queue.push(record);
        }
    }
}

/// The export task and its queue.
pub struct Exporter {
    queue: Arc<SpanQueue>,
    task: tokio::task::JoinHandle<()>,
}

impl Exporter {
    /// Starts the export task (on the current runtime).
    pub fn start(config: ExportConfig, metrics: SpanMetrics) -> crate::Result<Self> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(config.timeout)
            .build()
            .map_err(|e| crate::Error::config(format!("cannot build the span exporter: {e}")))?;
        let queue = Arc::new(SpanQueue::new(
            config.queue_records,
            config.batch_spans,
            metrics.clone(),
        ));
        let task = tokio::spawn(run(queue.clone(), config, http, metrics));
        Ok(Self { queue, task })
    }

    pub fn queue(&self) -> Arc<SpanQueue> {
        self.queue.clone()
    }

    /// Stops taking spans, sends what is queued (within `wait`) and ends the task.
    pub async fn shutdown(self, wait: Duration) {
        self.queue.close();
        let mut task = self.task;
        if tokio::time::timeout(wait, &mut task).await.is_err() {
            task.abort();
        }
    }
}

/// Export requests in flight at once: the next batch is encoded and sent while a slow
/// collector answers the previous one, so the queue keeps draining.
const IN_FLIGHT: usize = 4;

async fn run(
    queue: Arc<SpanQueue>,
    config: ExportConfig,
    http: reqwest::Client,
    metrics: SpanMetrics,
) {
    let config = Arc::new(config);
    let mut spare = Vec::new();
    let mut encoder = Encoder::default();
    let failing = Arc::new(AtomicBool::new(false));
    let mut sending = tokio::task::JoinSet::new();
    loop {
        let closed = queue.is_closed();
        if !closed {
            tokio::select! {
                () = queue.ready.notified() => {}
                () = tokio::time::sleep(config.interval) => {}
            }
        }
        let records = queue.take(&mut spare);
        for record in &records {
            record.write_spans(&mut encoder);
            if encoder.len() >= config.batch_spans {
                send(
                    &mut sending,
                    &mut encoder,
                    &http,
                    &config,
                    &metrics,
                    &failing,
                )
                .await;
            }
        }
        if !encoder.is_empty() {
            send(
                &mut sending,
                &mut encoder,
                &http,
                &config,
                &metrics,
                &failing,
            )
            .await;
        }
        spare = records;
        // Reap finished sends without waiting.
        while sending.try_join_next().is_some() {}
        // A closed queue takes nothing more: what was taken after closing was the last of it.
        if closed {
            while sending.join_next().await.is_some() {}
            return;
        }
    }
}

/// Encodes what `encoder` holds and sends it on its own task, once fewer than [`IN_FLIGHT`]
/// sends are running.
async fn send(
    sending: &mut tokio::task::JoinSet<()>,
    encoder: &mut Encoder,
    http: &reqwest::Client,
    config: &Arc<ExportConfig>,
    metrics: &SpanMetrics,
    failing: &Arc<AtomicBool>,
) {
    while sending.len() >= IN_FLIGHT {
        sending.join_next().await;
    }
    let count = encoder.len();
    let body = encode(config, encoder);
    let (http, config, metrics, failing) = (
        http.clone(),
        config.clone(),
        metrics.clone(),
        failing.clone(),
    );
    sending.spawn(async move { export(&http, &config, body, count, &metrics, &failing).await });
}

/// The request body for the spans `encoder` holds, under this proxy's resource.
pub fn encode(config: &ExportConfig, encoder: &mut Encoder) -> Vec<u8> {
    let version = env!("CARGO_PKG_VERSION");
    let mut resource = vec![
        ("service.name", config.service.as_str()),
        ("telemetry.sdk.name", "trellis-proxy"),
        ("telemetry.sdk.language", "rust"),
        ("telemetry.sdk.version", version),
    ];
    if let Some(instance) = &config.instance {
        resource.push(("service.instance.id", instance));
    }
    encoder.finish(&resource, ("trellis-proxy", version))
}

/// Sends one batch of `count` spans and counts the outcome; a failure is logged once per
/// streak of failures, not per batch.
async fn export(
    http: &reqwest::Client,
    config: &ExportConfig,
    body: Vec<u8>,
    count: usize,
    metrics: &SpanMetrics,
    failing: &AtomicBool,
) {
    let sent = http
        .post(&config.endpoint)
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .await;
    let failure = match sent {
        Ok(response) if response.status().is_success() => {
            let rejected = match response.bytes().await {
                Ok(bytes) => ExportTraceServiceResponse::decode(bytes)
                    .ok()
                    .and_then(|r| r.partial_success)
                    .map_or(0, |p| usize::try_from(p.rejected_spans).unwrap_or(count)),
                Err(_) => 0,
            };
            let rejected = rejected.min(count);
            metrics.exported(count - rejected);
            metrics.dropped_rejected(rejected);
            if failing.swap(false, Ordering::Relaxed) {
                tracing::info!(endpoint = %config.endpoint, "span export works again");
            }
            return;
        }
        Ok(response) => format!("the collector answered {}", response.status()),
        Err(e) if e.is_timeout() => "timed out".to_owned(),
        Err(e) if e.is_connect() => "cannot connect".to_owned(),
        Err(e) => e.to_string(),
    };
    metrics.dropped_export_failed(count);
    if failing.swap(true, Ordering::Relaxed) {
        tracing::debug!(endpoint = %config.endpoint, error = %failure, spans = count, "span export failed");
    } else {
        tracing::warn!(endpoint = %config.endpoint, error = %failure, spans = count,
            "span export failed; spans are dropped until the collector answers");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Direction, Metrics};
    use crate::spans::AttemptLog;
    use hyper::Method;
    use hyper::http::uri::PathAndQuery;
    use std::time::Instant;

    fn record() -> Box<HopRecord> {
        let start = Instant::now();
        Box::new(HopRecord {
            ids: SpanIds {
                trace_id: 1,
                parent_id: 0,
                server_id: 2,
                client_id: 3,
            },
            direction: Direction::Gateway,
            tracestate: None,
            start,
            start_unix_nanos: 1,
            end: start,
            method: Method::GET,
            path: PathAndQuery::from_static("/"),
            version: hyper::Version::HTTP_11,
            host: None,
            peer: None,
            route: None,
            service: None,
            forwarded_path: None,
            call_start: None,
            status: 200,
            proxy_error: None,
            log: AttemptLog::default(),
        })
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_waiting() {
        let metrics = Metrics::new();
        let queue = SpanQueue::new(3, 4, metrics.spans());
        let start = Instant::now();
        for _ in 0..10 {
            queue.push(record());
        }
        assert!(start.elapsed() < Duration::from_millis(100), "never blocks");
        assert_eq!(queue.len(), 3);
        let text = metrics.encode();
        // 7 records of 2 spans dropped.
        assert!(
            text.contains(r#"trellis_spans_dropped_total{reason="queue_full"} 14"#),
            "{text}"
        );
        // Taking the queue frees it.
        let mut spare = Vec::new();
        assert_eq!(queue.take(&mut spare).len(), 3);
        queue.push(record());
        assert_eq!(queue.len(), 1);
        queue.close();
        queue.push(record());
        assert_eq!(queue.len(), 1, "a closed queue takes nothing");
    }

    #[tokio::test]
    async fn a_batch_wakes_the_task_and_export_failures_are_counted() {
        // Nothing listens on this port: every export fails fast and is counted, once per span.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let metrics = Metrics::new();
        let mut config = ExportConfig::new(&format!("http://127.0.0.1:{port}/v1/traces"), "t");
        config.batch_spans = 4;
        config.interval = Duration::from_secs(3600);
        let exporter = Exporter::start(config, metrics.spans()).unwrap();
        let queue = exporter.queue();
        queue.push(record());
        queue.push(record());
        let deadline = Instant::now() + Duration::from_secs(10);
        while !metrics
            .encode()
            .contains(r#"trellis_spans_dropped_total{reason="export_failed"} 4"#)
        {
            assert!(Instant::now() < deadline, "{}", metrics.encode());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Shutdown sends what is left (one record, failing too) and stops.
        queue.push(record());
        exporter.shutdown(Duration::from_secs(5)).await;
        assert!(
            metrics
                .encode()
                .contains(r#"trellis_spans_dropped_total{reason="export_failed"} 6"#),
            "{}",
            metrics.encode()
        );
    }

    #[test]
    fn batches_encode_as_otlp_with_the_service_name() {
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
        use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
        let text = |key: &str, value: &str| KeyValue {
            key: key.to_owned(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(value.to_owned())),
            }),
            ..KeyValue::default()
        };
        let mut encoder = Encoder::default();
        record().write_spans(&mut encoder);
        record().write_spans(&mut encoder);
        let mut config = ExportConfig::new("http://x/v1/traces", "gateway");
        config.instance = Some("gw-1".into());
        let body = encode(&config, &mut encoder);
        let decoded = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
        let resource = decoded.resource_spans[0].resource.as_ref().unwrap();
        assert_eq!(resource.attributes[0], text("service.name", "gateway"));
        assert!(
            resource
                .attributes
                .contains(&text("service.instance.id", "gw-1"))
        );
        let scope = &decoded.resource_spans[0].scope_spans[0];
        assert_eq!(scope.scope.as_ref().unwrap().name, "trellis-proxy");
        assert_eq!(scope.spans.len(), 4);
        // The encoder is reusable: the next batch holds only its own spans.
        record().write_spans(&mut encoder);
        let body = encode(&config, &mut encoder);
        let decoded = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
        assert_eq!(decoded.resource_spans[0].scope_spans[0].spans.len(), 2);
    }
}
