//! Holding a blocking query or watch stream open: the bounded waiter permits and the generic
//! wait on a change signal (`block_on`).

use super::error::ApiError;
use super::params::Blocking;
use crate::state::AppState;
use axum::http::StatusCode;
use tokio::sync::OwnedSemaphorePermit;

/// A permit to hold a blocking query or watch stream open; 429 when all are taken.
pub fn waiter_permit(state: &AppState) -> Result<OwnedSemaphorePermit, ApiError> {
    state.waiter_permit().ok_or_else(|| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too many blocking queries; retry later",
        )
    })
}

/// Waits on a watch channel until `current(value)` differs from the client's index or the
/// wait ends; answers the value to show (on timeout, the same index).
pub async fn block_on<T: Clone>(
    state: &AppState,
    mut rx: tokio::sync::watch::Receiver<T>,
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
    let deadline = blocking.deadline();
    let mut closing = state.closing();
    loop {
        tokio::select! {
            _ = closing.changed() => return Ok(rx.borrow().clone()),
            changed = rx.changed() => {
                if changed.is_err() {
                    return Ok(rx.borrow().clone());
                }
                let value = rx.borrow_and_update().clone();
                if index_of(&value) != blocking.index {
                    return Ok(value);
                }
            }
            () = tokio::time::sleep_until(deadline) => return Ok(rx.borrow().clone()),
        }
    }
}
