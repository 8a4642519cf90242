//! A bank branch's payload, `{"account": "a1", "delta": -5}`: a debit (negative) or a credit
//! (positive) of one account, checked before either database sees it.

use serde::Deserialize;
use trellis_participant::{Branch, BranchError};

/// Largest amount one branch may move, so that no sum of balances can overflow.
pub(crate) const MAX_AMOUNT: i64 = 1_000_000_000_000;

/// One account's side of a transfer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Transfer {
    pub(crate) account: String,
    pub(crate) delta: i64,
}

impl Transfer {
    /// The branch's payload, or a no vote saying why it is not one.
    pub(crate) fn of(branch: &Branch) -> Result<Self, BranchError> {
        let transfer: Transfer = branch.payload_as()?;
        if transfer.delta == 0 {
            return Err(BranchError::no("delta must not be 0"));
        }
        if transfer.delta.unsigned_abs() > MAX_AMOUNT.unsigned_abs() {
            return Err(BranchError::no(format!(
                "delta must be at most {MAX_AMOUNT} either way"
            )));
        }
        Ok(transfer)
    }

    /// The amount taken out, for a debit; `None` for a credit.
    pub(crate) fn debit(&self) -> Option<i64> {
        (self.delta < 0).then(|| -self.delta)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn branch(payload: serde_json::Value) -> Branch {
        Branch::new("g", "b", payload)
    }

    #[test]
    fn debits_and_credits() {
        let debit = Transfer::of(&branch(json!({"account": "a1", "delta": -5}))).unwrap();
        assert_eq!(debit.debit(), Some(5));
        let credit = Transfer::of(&branch(json!({"account": "a1", "delta": 5}))).unwrap();
        assert_eq!(credit.debit(), None);
    }

    #[test]
    fn nonsense_is_a_no_vote() {
        for payload in [
            json!({"account": "a1", "delta": 0}),
            json!({"account": "a1", "delta": i64::MIN}),
            json!({"account": "a1", "delta": MAX_AMOUNT + 1}),
            json!({"account": "a1", "delta": 1.5}),
            json!({"account": "a1"}),
            json!({"account": "a1", "delta": 1, "extra": true}),
            json!(null),
        ] {
            assert!(
                matches!(
                    Transfer::of(&branch(payload.clone())),
                    Err(BranchError::No(_))
                ),
                "{payload}"
            );
        }
    }
}
