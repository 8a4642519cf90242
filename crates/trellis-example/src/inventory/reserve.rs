//! The inventory's branch of an order's transaction, payload `{"product": "...", "quantity": N}`:
//! prepare reserves the quantity (or votes no when too few are left), commit takes it out of
//! stock, abort releases it. Each runs inside the participant library's local transaction.

use rusqlite::Transaction;
use serde::Deserialize;
use trellis_participant::{Branch, BranchError, SqliteBranch};

use super::store::{self, Short};

/// Largest quantity one reservation may hold.
const MAX_QUANTITY: i64 = 1_000_000;

/// The exit status of an instance started with `--crash-before-commit` when the commit comes.
pub const CRASH_EXIT_CODE: i32 = 3;

/// A reservation's payload.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Reservation {
    product: String,
    quantity: i64,
}

impl Reservation {
    /// The branch's payload, or a no vote saying why it is not one.
    fn of(branch: &Branch) -> Result<Self, BranchError> {
        let reservation: Reservation = branch.payload_as()?;
        if reservation.product.trim().is_empty() {
            return Err(BranchError::no("product must not be empty"));
        }
        if !(1..=MAX_QUANTITY).contains(&reservation.quantity) {
            return Err(BranchError::no(format!(
                "quantity must be between 1 and {MAX_QUANTITY}"
            )));
        }
        Ok(reservation)
    }
}

/// The service's side of the protocol.
pub(crate) struct Reserve {
    /// Fault injection: exit without committing when a commit for this product arrives.
    pub(crate) crash_before_commit: Option<String>,
}

impl SqliteBranch for Reserve {
    fn prepare(&self, tx: &Transaction<'_>, branch: &Branch) -> Result<(), BranchError> {
        let r = Reservation::of(branch)?;
        match store::reserve(tx, &r.product, r.quantity)? {
            Ok(()) => {
                tracing::info!(gid = %branch.gid, product = %r.product, quantity = r.quantity,
                    "stock reserved");
                Ok(())
            }
            Err(Short::UnknownProduct) => Err(BranchError::no(format!(
                "{} is not in the inventory",
                r.product
            ))),
            Err(Short::Only(left)) => Err(BranchError::no(format!(
                "only {left} of {} left",
                r.product
            ))),
        }
    }

    fn commit(&self, tx: &Transaction<'_>, branch: &Branch) -> Result<(), BranchError> {
        let r = Reservation::of(branch)?;
        if self.crash_before_commit.as_deref() == Some(r.product.as_str()) {
            // The local transaction is left unfinished, so nothing of the commit is kept: the
            // reservation stays, as after a crash between prepare and commit.
            tracing::error!(gid = %branch.gid, product = %r.product,
                "--crash-before-commit: exiting before the commit, as a crash would");
            std::process::exit(CRASH_EXIT_CODE);
        }
        if !store::take(tx, &r.product, r.quantity)? {
            return Err(BranchError::failed(format!(
                "{} vanished from the inventory while reserved",
                r.product
            )));
        }
        tracing::info!(gid = %branch.gid, product = %r.product, quantity = r.quantity,
            "stock taken");
        Ok(())
    }

    fn abort(&self, tx: &Transaction<'_>, branch: &Branch) -> Result<(), BranchError> {
        let r = Reservation::of(branch)?;
        if !store::release(tx, &r.product, r.quantity)? {
            return Err(BranchError::failed(format!(
                "{} vanished from the inventory while reserved",
                r.product
            )));
        }
        tracing::info!(gid = %branch.gid, product = %r.product, quantity = r.quantity,
            "reservation released");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn nonsense_payloads_are_no_votes() {
        for payload in [
            json!({"product": "Product A", "quantity": 0}),
            json!({"product": "Product A", "quantity": -1}),
            json!({"product": "Product A", "quantity": MAX_QUANTITY + 1}),
            json!({"product": "Product A", "quantity": 1.5}),
            json!({"product": " ", "quantity": 1}),
            json!({"product": "Product A"}),
            json!({"product": "Product A", "quantity": 1, "extra": true}),
            json!(null),
        ] {
            let branch = Branch::new("g", "stock", payload.clone());
            assert!(
                matches!(Reservation::of(&branch), Err(BranchError::No(_))),
                "{payload}"
            );
        }
        let branch = Branch::new("g", "stock", json!({"product": "Product A", "quantity": 2}));
        let r = Reservation::of(&branch).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((r.product.as_str(), r.quantity), ("Product A", 2));
    }
}
