//! The orders service's own branch of an order's transaction, payload `{"user_id": N,
//! "product": "...", "quantity": N}`: prepare writes the order as pending, keyed by the
//! transaction's gid; commit places it; abort deletes it. Each runs inside the participant
//! library's local transaction.

use rusqlite::Transaction;
use trellis_participant::{Branch, BranchError, SqliteBranch};

use super::store::{self, NewOrder};

/// The service's side of the protocol.
pub(crate) struct PlaceOrder;

impl SqliteBranch for PlaceOrder {
    fn prepare(&self, tx: &Transaction<'_>, branch: &Branch) -> Result<(), BranchError> {
        let new: NewOrder = branch.payload_as()?;
        if new.user_id < 1 || new.quantity < 1 || new.product.trim().is_empty() {
            return Err(BranchError::no("not an order"));
        }
        let id = store::insert_pending(tx, &branch.gid, &new)?;
        tracing::info!(id, gid = %branch.gid, "order pending");
        Ok(())
    }

    fn commit(&self, tx: &Transaction<'_>, branch: &Branch) -> Result<(), BranchError> {
        if !store::place(tx, &branch.gid)? {
            return Err(BranchError::failed(format!(
                "no pending order for transaction {}",
                branch.gid
            )));
        }
        tracing::info!(gid = %branch.gid, "order placed");
        Ok(())
    }

    fn abort(&self, tx: &Transaction<'_>, branch: &Branch) -> Result<(), BranchError> {
        if !store::discard(tx, &branch.gid)? {
            return Err(BranchError::failed(format!(
                "no pending order for transaction {}",
                branch.gid
            )));
        }
        tracing::info!(gid = %branch.gid, "pending order discarded");
        Ok(())
    }
}
