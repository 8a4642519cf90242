//! Back-pressure of the OTLP receivers: a budget of request bytes in flight.
//!
//! What grows with load is not the span store (it evicts whole oldest traces and never holds
//! more than `--trace-store-bytes`) but the requests being worked on: bodies being received,
//! decompressed, decoded into OTLP messages, converted into spans and waiting for the store's
//! lock. Their working memory is a small multiple of their payload size, so the receivers bound
//! the payload bytes in flight: a request reserves its size (the declared `Content-Length`
//! before its body is read, else the body's size once read; grown to the decompressed size
//! when it was compressed) and gives it back when its spans are stored. A request that does
//! not fit is answered at once, without reading or decoding it, with HTTP 429 + `Retry-After`
//! or gRPC `RESOURCE_EXHAUSTED` + `RetryInfo`, which OTLP exporters retry after the delay.
//!
//! Inserts are not queued: each request inserts its own spans under the store's lock, so a
//! slow store (a long query holding the lock) makes requests wait while holding their
//! reservations, and newcomers are throttled instead of piling up. A request larger than the
//! whole budget is let in when nothing else is in flight, so that it can still be stored.

use prometheus_client::metrics::gauge::Gauge;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Default payload bytes in flight: 64 MiB, about 650 requests of 512 typical spans at once.
pub const DEFAULT_INFLIGHT_BYTES: usize = 64 << 20;

/// How long a throttled exporter is asked to wait: long enough for the requests in flight to
/// finish (milliseconds each), short enough that few spans queue up in the exporter.
pub const RETRY_DELAY: Duration = Duration::from_secs(1);

/// The budget shared by the HTTP and gRPC receivers.
#[derive(Debug)]
pub struct InFlight {
    used: AtomicUsize,
    limit: usize,
    /// `trellis_otlp_inflight_bytes`.
    gauge: Gauge,
}

impl InFlight {
    pub fn new(limit: usize, gauge: Gauge) -> Arc<Self> {
        Arc::new(InFlight {
            used: AtomicUsize::new(0),
            limit,
            gauge,
        })
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes reserved now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Reserves `bytes` if they fit in the budget, or if nothing else is in flight.
    pub fn try_acquire(self: &Arc<Self>, bytes: usize) -> Option<Permit> {
        let mut permit = Permit {
            inflight: self.clone(),
            bytes: 0,
        };
        permit.grow_to(bytes).then_some(permit)
    }

    fn add(&self, delta: usize, alone_at: usize) -> bool {
        let result = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                let fits = used.saturating_add(delta) <= self.limit || used == alone_at;
                fits.then_some(used + delta)
            });
        if result.is_ok() {
            self.gauge.inc_by(i64::try_from(delta).unwrap_or(i64::MAX));
        }
        result.is_ok()
    }

    fn sub(&self, delta: usize) {
        self.used.fetch_sub(delta, Ordering::AcqRel);
        self.gauge.dec_by(i64::try_from(delta).unwrap_or(i64::MAX));
    }
}

/// A reservation, given back when dropped.
#[derive(Debug)]
pub struct Permit {
    inflight: Arc<InFlight>,
    bytes: usize,
}

impl Permit {
    /// Grows the reservation to `bytes` (a body found bigger once decompressed); false if that
    /// does not fit, the reservation unchanged.
    pub fn grow_to(&mut self, bytes: usize) -> bool {
        if bytes <= self.bytes {
            return true;
        }
        // Alone in flight when everything reserved is this permit's.
        if !self.inflight.add(bytes - self.bytes, self.bytes) {
            return false;
        }
        self.bytes = bytes;
        true
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.inflight.sub(self.bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_admits_what_fits_and_one_oversized_request_alone() {
        let gauge = Gauge::default();
        let budget = InFlight::new(100, gauge.clone());
        let a = budget.try_acquire(60).unwrap();
        let mut b = budget.try_acquire(40).unwrap();
        assert!(budget.try_acquire(1).is_none(), "full");
        assert_eq!((budget.used(), gauge.get()), (100, 100));
        assert!(!b.grow_to(41), "no room to grow");
        assert_eq!(b.bytes(), 40);
        drop(a);
        assert!(b.grow_to(1000), "alone, it may grow past the limit");
        assert!(budget.try_acquire(1).is_none());
        drop(b);
        assert_eq!((budget.used(), gauge.get()), (0, 0));
        let big = budget.try_acquire(500).expect("an oversized request alone");
        assert!(budget.try_acquire(1).is_none());
        drop(big);
        assert!(budget.try_acquire(0).is_some());
        assert_eq!(budget.used(), 0);
    }
}
