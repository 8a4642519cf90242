//! Blocking on resources that have no per-resource signal: reads that span the whole catalog
//! (`/v1/health/state`, `/v1/health/node`) block by the global index, and the agent's listings
//! block the way Consul blocks agent-local state, by a hash of the content (`?hash=H&wait=D`,
//! answered with `X-Consul-ContentHash`).
//!
//! Both wait on a signal the publisher sends after each durable batch: the services index for
//! the list of instances, the global index for anything in the catalog (a probe result or a TTL
//! running out included). Neither takes the catalog lock to wait.

use super::blocking::{block_on, wait_for, waiter_permit};
use super::error::ApiError;
use super::params::{Blocking, DEFAULT_WAIT, QueryParams, deadline_after};
use crate::state::AppState;
use axum::http::{HeaderMap, HeaderValue};
use bytes::Bytes;
use std::time::Duration;

/// The header that carries the content hash of a hash-blocking answer.
pub const CONTENT_HASH: &str = "x-consul-contenthash";

/// What a waiter waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// The list of instances (any registration or deregistration): the services index.
    Services,
    /// Anything in the catalog, checks included: the global index.
    Catalog,
}

fn receiver(state: &AppState, signal: Signal) -> tokio::sync::watch::Receiver<u64> {
    match signal {
        Signal::Services => state.services_changed(),
        Signal::Catalog => state.catalog_changed(),
    }
}

/// For an index-based blocking read of the whole catalog: holds the request while the global
/// index is the client's, up to the wait. The caller reads the catalog afterwards.
pub async fn block_on_catalog(
    state: &AppState,
    blocking: Option<Blocking>,
) -> Result<(), ApiError> {
    block_on(state, state.catalog_changed(), blocking, |index| *index).await?;
    Ok(())
}

/// `?hash=H` (with `?wait=D`): the client saw content with hash H and wants to wait for a change.
#[derive(Debug, Clone)]
pub struct HashWait {
    pub hash: String,
    pub wait: Duration,
}

/// The hash-based blocking parameters, if the request has a `hash` (Consul ignores `index`
/// on these endpoints, and so does this server).
pub fn hash_wait(query: &QueryParams) -> Result<Option<HashWait>, ApiError> {
    let Some(hash) = query.get("hash").filter(|h| !h.is_empty()) else {
        return Ok(None);
    };
    // Unlike an index-based wait, a zero wait is the default one.
    let wait = query.wait()?;
    let wait = if wait.is_zero() { DEFAULT_WAIT } else { wait };
    Ok(Some(HashWait {
        hash: hash.to_owned(),
        wait,
    }))
}

/// A rendering of agent-local content: its body, the index to report and its content hash.
pub struct Hashed {
    pub index: u64,
    pub hash: String,
    pub body: Bytes,
}

/// Hash-based blocking: renders, and while the rendering's hash is the client's, waits for
/// `signal` to change and renders again, until the wait ends (then answers the same content).
pub async fn block_on_hash(
    state: &AppState,
    query: &QueryParams,
    signal: Signal,
    render: impl Fn() -> Result<Hashed, ApiError>,
) -> Result<Hashed, ApiError> {
    let wait = hash_wait(query)?;
    // Subscribe before rendering, so a change in between is seen as a change.
    let signal = receiver(state, signal);
    let mut rendered = render()?;
    let Some(wait) = wait else {
        return Ok(rendered);
    };
    if rendered.hash != wait.hash {
        return Ok(rendered);
    }
    let _permit = waiter_permit(state)?;
    let deadline = deadline_after(wait.wait);
    wait_for(state, signal, deadline, || {
        rendered = render()?;
        Ok(rendered.hash != wait.hash)
    })
    .await?;
    Ok(rendered)
}

/// A content hash as Consul prints it: 64 bits in lower-case hex. FNV-1a: stable across
/// restarts and builds, so a client's hash stays meaningful after the server restarts.
pub fn content_hash(bytes: &[u8]) -> String {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:x}")
}

/// Adds `X-Consul-ContentHash`.
pub fn add_content_hash(headers: &mut HeaderMap, hash: &str) {
    if let Ok(value) = HeaderValue::from_str(hash) {
        headers.insert(CONTENT_HASH, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::params::MAX_WAIT;

    #[test]
    fn content_hash_is_stable_hex() {
        assert_eq!(content_hash(b""), "cbf29ce484222325");
        assert_eq!(content_hash(b"a"), content_hash(b"a"));
        assert_ne!(content_hash(b"a"), content_hash(b"b"));
    }

    #[test]
    fn hash_wait_needs_a_hash_and_bounds_the_wait() {
        let q = |pairs: &[(&str, &str)]| {
            QueryParams::new(
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            )
        };
        assert!(hash_wait(&q(&[("index", "5")])).unwrap().is_none());
        assert!(hash_wait(&q(&[("hash", "")])).unwrap().is_none());
        let w = hash_wait(&q(&[("hash", "ab")])).unwrap().unwrap();
        assert_eq!(w.wait, DEFAULT_WAIT);
        let w = hash_wait(&q(&[("hash", "ab"), ("wait", "1h")]))
            .unwrap()
            .unwrap();
        assert_eq!(w.wait, MAX_WAIT);
        let w = hash_wait(&q(&[("hash", "ab"), ("wait", "2s")]))
            .unwrap()
            .unwrap();
        assert_eq!(w.wait, Duration::from_secs(2));
        assert!(hash_wait(&q(&[("hash", "ab"), ("wait", "soon")])).is_err());
    }
}
