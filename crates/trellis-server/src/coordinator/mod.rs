//! The two-phase-commit coordinator's runtime: the handle the HTTP handlers use, the published
//! (durable) view of every transaction they read, and the wiring of the driver thread
//! (`driver.rs`, which owns the pure engine and the decision log) and the participant calls
//! (`participants.rs`).

mod driver;
pub mod mesh;
mod participants;
mod resolver;

pub use driver::{Driver, DriverFailed, DriverParts};
pub use participants::{Endpoint, Participants, Resolve};
pub use resolver::RegistryResolver;

use parking_lot::RwLock;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use tokio::sync::{oneshot, watch};
use trellis_coordinator::{CoordinatorError, Phase, Response, Target, Txn};

/// Requests waiting for the driver beyond which new ones are refused (503).
pub const MAX_QUEUED: usize = 16_384;
/// Callers waiting for an outcome beyond which new ones are refused (503).
pub const MAX_OUTCOME_WAITERS: usize = 16_384;

/// A branch as a request adds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewBranch {
    pub id: String,
    pub target: Target,
    /// Validated JSON text.
    pub payload: Arc<str>,
}

/// The W3C trace context a request came with (`traceparent`, and `tracestate` if any), passed on
/// unchanged to the transaction's phase messages so the branches' spans join the caller's trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    pub traceparent: hyper::header::HeaderValue,
    pub tracestate: Option<hyper::header::HeaderValue>,
}

impl TraceContext {
    /// The trace ID of a well-formed `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`), lowercase;
    /// `None` for a malformed one or the all-zero (invalid) ID.
    pub fn trace_id(&self) -> Option<String> {
        let text = self.traceparent.to_str().ok()?;
        let mut parts = text.split('-');
        let (_version, id) = (parts.next()?, parts.next()?);
        let valid = id.len() == 32
            && id.bytes().all(|b| b.is_ascii_hexdigit())
            && id.bytes().any(|b| b != b'0');
        valid.then(|| id.to_ascii_lowercase())
    }

    /// The context in `headers`, if they carry a `traceparent`.
    pub fn from_headers(headers: &hyper::HeaderMap) -> Option<Self> {
        Some(Self {
            traceparent: headers.get("traceparent")?.clone(),
            tracestate: headers.get("tracestate").cloned(),
        })
    }
}

/// A change asked of the coordinator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Begins `gid` (idempotent), adds `branches`, and with `commit` starts the commit: the
    /// one-shot submit, or a plain begin with neither.
    Begin {
        gid: String,
        timeout_ms: Option<u64>,
        branches: Vec<NewBranch>,
        commit: bool,
    },
    AddBranch {
        gid: String,
        branch: NewBranch,
    },
    Commit {
        gid: String,
    },
    Abort {
        gid: String,
    },
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxnError {
    #[error("{0}")]
    Rejected(CoordinatorError),
    #[error("the transaction log could not be written; nothing of the request was kept")]
    Storage,
    #[error("the coordinator is overloaded; retry later")]
    Busy,
    #[error("the coordinator has stopped")]
    Stopped,
}

pub type Answer = Result<Arc<Txn>, TxnError>;

/// What the driver takes in.
pub(crate) enum Input {
    /// A request; answered once durable, or with `await_outcome` once the outcome is known.
    Request {
        request: Request,
        await_outcome: bool,
        reply: oneshot::Sender<Answer>,
        trace: Option<TraceContext>,
    },
    /// A participant's answer (or the failure to get one).
    Response {
        gid: Arc<str>,
        branch: String,
        phase: Phase,
        response: Response,
    },
    Stop,
}

/// The transactions as last made durable: what reads see. Nothing is shown before it is on
/// disk, so a participant in doubt that reads `committing` may commit.
pub struct Published {
    txns: RwLock<HashMap<Arc<str>, Arc<Txn>>>,
    index: watch::Sender<u64>,
}

impl Published {
    fn new() -> Self {
        Self {
            txns: RwLock::new(HashMap::new()),
            index: watch::channel(0).0,
        }
    }
}

/// Handles on the registered coordinator metrics.
#[derive(Clone)]
pub struct CoordinatorMetrics {
    pub begun: Counter,
    pub committed: Counter,
    pub aborted: Counter,
    pub phase2_retries: Counter,
    pub prepare_retries: Counter,
    pub in_doubt: Gauge,
    pub active: Gauge,
    pub prepare_seconds: Histogram,
    pub phase2_seconds: Histogram,
    pub log_commit_seconds: Histogram,
    pub log_batch_size: Histogram,
}

impl CoordinatorMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            begun: Counter::default(),
            committed: Counter::default(),
            aborted: Counter::default(),
            phase2_retries: Counter::default(),
            prepare_retries: Counter::default(),
            in_doubt: Gauge::default(),
            active: Gauge::default(),
            prepare_seconds: Histogram::new(exponential_buckets(0.000_1, 2.0, 18)),
            phase2_seconds: Histogram::new(exponential_buckets(0.000_1, 2.0, 18)),
            log_commit_seconds: Histogram::new(exponential_buckets(0.000_1, 2.0, 14)),
            log_batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
        };
        let r = registry;
        r.register("txn_begun", "Transactions begun", metrics.begun.clone());
        r.register(
            "txn_committed",
            "Transactions decided commit",
            metrics.committed.clone(),
        );
        r.register(
            "txn_aborted",
            "Transactions decided abort",
            metrics.aborted.clone(),
        );
        r.register(
            "txn_phase2_retries",
            "Commit or abort messages sent again after a failure",
            metrics.phase2_retries.clone(),
        );
        r.register(
            "txn_prepare_retries",
            "Prepare messages sent again after a failure",
            metrics.prepare_retries.clone(),
        );
        r.register(
            "txn_in_doubt_branches",
            "Branches prepared and not yet told the outcome",
            metrics.in_doubt.clone(),
        );
        r.register(
            "txn_active",
            "Transactions not finished (open, preparing, or in phase 2)",
            metrics.active.clone(),
        );
        r.register(
            "txn_prepare_duration_seconds",
            "From the commit request to the decision (phase 1)",
            metrics.prepare_seconds.clone(),
        );
        r.register(
            "txn_phase2_duration_seconds",
            "From the decision to every branch's acknowledgement (phase 2)",
            metrics.phase2_seconds.clone(),
        );
        r.register(
            "txn_log_commit_duration_seconds",
            "Time to make one batch of the decision log durable (fsync included)",
            metrics.log_commit_seconds.clone(),
        );
        r.register(
            "txn_log_batch_size",
            "Transactions written per decision-log commit",
            metrics.log_batch_size.clone(),
        );
        metrics
    }
}

/// The handlers' access to the coordinator. Cheap to clone.
#[derive(Clone)]
pub struct Coordinator {
    inner: Arc<Shared>,
}

struct Shared {
    tx: Sender<Input>,
    queued: Arc<AtomicUsize>,
    published: Arc<Published>,
}

impl Coordinator {
    pub(crate) fn new(
        tx: Sender<Input>,
        queued: Arc<AtomicUsize>,
        published: Arc<Published>,
    ) -> Self {
        Self {
            inner: Arc::new(Shared {
                tx,
                queued,
                published,
            }),
        }
    }

    /// Submits a request and waits until it is durable (or, with `await_outcome`, until the
    /// transaction's outcome is known: every branch acknowledged, or phase 2 is being retried).
    /// The transaction's phase messages carry `trace`, the latest a request about it came with.
    pub async fn request(
        &self,
        request: Request,
        await_outcome: bool,
        trace: Option<TraceContext>,
    ) -> Answer {
        if self.inner.queued.fetch_add(1, Ordering::AcqRel) >= MAX_QUEUED {
            self.inner.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(TxnError::Busy);
        }
        let (reply, answer) = oneshot::channel();
        let sent = self
            .inner
            .tx
            .send(Input::Request {
                request,
                await_outcome,
                reply,
                trace,
            })
            .is_ok();
        if !sent {
            self.inner.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(TxnError::Stopped);
        }
        answer.await.unwrap_or(Err(TxnError::Stopped))
    }

    /// Asks the driver to stop (on shutdown); unfinished transactions resume at the next start.
    pub fn stop(&self) {
        let _ = self.inner.tx.send(Input::Stop);
    }

    pub fn get(&self, gid: &str) -> Option<Arc<Txn>> {
        self.inner.published.txns.read().get(gid).cloned()
    }

    /// Every transaction the coordinator still holds, by creation, filtered by `keep`.
    pub fn list(&self, keep: impl Fn(&Txn) -> bool) -> Vec<Arc<Txn>> {
        let mut txns: Vec<Arc<Txn>> = self
            .inner
            .published
            .txns
            .read()
            .values()
            .filter(|txn| keep(txn))
            .cloned()
            .collect();
        txns.sort_by_key(|txn| txn.create_index);
        txns
    }

    /// The index of the last durable change, and its changes (what blocking reads wait on).
    pub fn changed(&self) -> watch::Receiver<u64> {
        self.inner.published.index.subscribe()
    }
}
