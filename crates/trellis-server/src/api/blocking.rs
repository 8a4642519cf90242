//! Holding a blocking query or watch stream open: the bounded waiter permits, the wait on a
//! change signal (`wait_for`), and the two ways a read blocks on it: by the signal's own value
//! (`block_on`) or by an index the read computes again on each signal (`block_while`).

use super::error::ApiError;
use super::params::Blocking;
use crate::state::AppState;
use axum::http::StatusCode;
use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::watch::Receiver;
use tokio::time::Instant;

/// A permit to hold a blocking query or watch stream open; 429 when all are taken.
pub fn waiter_permit(state: &AppState) -> Result<OwnedSemaphorePermit, ApiError> {
    state.waiter_permit().ok_or_else(|| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too many blocking queries; retry later",
        )
    })
}

/// Waits on `signal` until `moved()`, asked after each change of it, says the read moved;
/// `false` if the deadline passed, the signal closed or the server started shutting down first.
/// Subscribe to `signal` before reading what `moved` compares with, so no change is missed.
pub async fn wait_for<T>(
    state: &AppState,
    mut signal: Receiver<T>,
    deadline: Instant,
    mut moved: impl FnMut() -> Result<bool, ApiError>,
) -> Result<bool, ApiError> {
    let mut closing = state.closing();
    if *closing.borrow_and_update() {
        return Ok(false);
    }
    loop {
        tokio::select! {
            _ = closing.changed() => return Ok(false),
            () = tokio::time::sleep_until(deadline) => return Ok(false),
            changed = signal.changed() => {
                // A closed channel means the server is going away: stop waiting on it.
                if changed.is_err() {
                    return Ok(false);
                }
                if moved()? {
                    return Ok(true);
                }
            }
        }
    }
}

/// Waits on a watch channel until `index_of(value)` differs from the client's index or the
/// wait ends; answers the value to show (on timeout, the same index).
pub async fn block_on<T: Clone>(
    state: &AppState,
    mut rx: Receiver<T>,
    blocking: Option<Blocking>,
    index_of: impl Fn(&T) -> u64,
) -> Result<T, ApiError> {
    let current = rx.borrow_and_update().clone();
    let Some(blocking) = blocking else {
        return Ok(current);
    };
    if index_of(&current) != blocking.index {
        return Ok(current);
    }
    let _permit = waiter_permit(state)?;
    let waiting = rx.clone();
    wait_for(state, waiting, blocking.deadline(), || {
        Ok(index_of(&rx.borrow()) != blocking.index)
    })
    .await?;
    Ok(rx.borrow().clone())
}

/// For a read whose index is not the signal's value (a KV key or prefix, the sessions, the
/// event list): holds the request while `index()`, asked again after each change of `signal`,
/// is the client's, up to the wait. The caller reads afterwards.
pub async fn block_while<T>(
    state: &AppState,
    signal: Receiver<T>,
    blocking: Option<Blocking>,
    mut index: impl FnMut() -> Result<u64, ApiError>,
) -> Result<(), ApiError> {
    let Some(blocking) = blocking else {
        return Ok(());
    };
    if index()? != blocking.index {
        return Ok(());
    }
    let _permit = waiter_permit(state)?;
    wait_for(state, signal, blocking.deadline(), || {
        Ok(index()? != blocking.index)
    })
    .await?;
    Ok(())
}
