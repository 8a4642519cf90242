//! What one attempt's result means: the answer for the client, whether it counts as a success
//! for the load balancer and the outlier detector, and whether the request may be tried again.
//! Pure: the forwarding loop (`forward.rs`) feeds it and acts on the verdict.

use crate::config::ServicePolicy;
use crate::reject::Reject;

/// How one attempt ended.
#[derive(Debug)]
pub enum Attempted<R> {
    /// The upstream answered with a response head of this status.
    Answered { response: R, status: u16 },
    /// No connection could be made: nothing was sent.
    ConnectFailed,
    /// The connection broke after the request may have been sent.
    Reset,
    /// No response head within the attempt's time.
    TimedOut,
}

/// What the client gets if no further attempt is made.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome<R> {
    /// The upstream's answer, passed through (also a failure status that is not retried).
    Response(R),
    /// An answer the proxy generates, saying why.
    Failed(Reject),
}

/// The meaning of one attempt.
#[derive(Debug, PartialEq, Eq)]
pub struct Verdict<R> {
    pub outcome: Outcome<R>,
    /// Counts as a success for the balancer's latency estimate and the outlier detector.
    pub success: bool,
    /// Another attempt is allowed by the request's nature (still subject to the attempt
    /// count, the body being replayable and the retry budget).
    pub retryable: bool,
}

/// Classifies an attempt. `idempotent` is the method's idempotency, `deadline_passed` whether
/// the request's overall deadline had passed when the attempt ended.
///
/// - An answer is a success below 500; a status in `retry_statuses` is retried for idempotent
///   methods only, since the upstream may have acted on the request.
/// - A connect failure is retried for any method: nothing reached the upstream.
/// - A reset or a per-try timeout is retried for idempotent methods only.
/// - Nothing is retried once the deadline has passed; a timeout then reports the overall
///   timeout instead of the per-try one.
pub fn classify<R>(
    attempt: Attempted<R>,
    idempotent: bool,
    policy: &ServicePolicy,
    deadline_passed: bool,
) -> Verdict<R> {
    let (outcome, success, retryable) = match attempt {
        Attempted::Answered { response, status } => (
            Outcome::Response(response),
            status < 500,
            idempotent && policy.retry_statuses.contains(&status),
        ),
        Attempted::ConnectFailed => (Outcome::Failed(Reject::ConnectFailed), false, true),
        Attempted::Reset => (Outcome::Failed(Reject::UpstreamReset), false, idempotent),
        Attempted::TimedOut if deadline_passed => (Outcome::Failed(Reject::Timeout), false, false),
        Attempted::TimedOut => (Outcome::Failed(Reject::PerTryTimeout), false, idempotent),
    };
    Verdict {
        outcome,
        success,
        retryable: retryable && !deadline_passed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(status: u16) -> Attempted<u16> {
        Attempted::Answered {
            response: status,
            status,
        }
    }

    fn verdict(
        attempt: Attempted<u16>,
        idempotent: bool,
        late: bool,
    ) -> (Outcome<u16>, bool, bool) {
        let v = classify(attempt, idempotent, &ServicePolicy::default(), late);
        (v.outcome, v.success, v.retryable)
    }

    use Outcome::{Failed, Response};

    #[test]
    fn answers_pass_through_and_count_by_status() {
        for idempotent in [true, false] {
            assert_eq!(
                verdict(answered(200), idempotent, false),
                (Response(200), true, false)
            );
            assert_eq!(
                verdict(answered(404), idempotent, false),
                (Response(404), true, false)
            );
            assert_eq!(
                verdict(answered(429), idempotent, false),
                (Response(429), true, false)
            );
            // A 5xx the policy does not retry: passed through, counted as a failure.
            assert_eq!(
                verdict(answered(500), idempotent, false),
                (Response(500), false, false)
            );
        }
    }

    #[test]
    fn retry_statuses_are_retried_for_idempotent_methods_only() {
        for status in [502, 503, 504] {
            assert_eq!(
                verdict(answered(status), true, false),
                (Response(status), false, true)
            );
            assert_eq!(
                verdict(answered(status), false, false),
                (Response(status), false, false)
            );
        }
        let policy = ServicePolicy {
            retry_statuses: vec![409],
            ..ServicePolicy::default()
        };
        let v = classify(answered(409), true, &policy, false);
        assert!(
            v.success && v.retryable,
            "a retried status below 500 is not a failure"
        );
        assert!(!classify(answered(503), true, &policy, false).retryable);
    }

    #[test]
    fn connect_failures_are_retried_for_any_method() {
        for idempotent in [true, false] {
            assert_eq!(
                verdict(Attempted::ConnectFailed, idempotent, false),
                (Failed(Reject::ConnectFailed), false, true)
            );
        }
    }

    #[test]
    fn resets_and_per_try_timeouts_are_retried_for_idempotent_methods_only() {
        assert_eq!(
            verdict(Attempted::Reset, true, false),
            (Failed(Reject::UpstreamReset), false, true)
        );
        assert_eq!(
            verdict(Attempted::Reset, false, false),
            (Failed(Reject::UpstreamReset), false, false)
        );
        assert_eq!(
            verdict(Attempted::TimedOut, true, false),
            (Failed(Reject::PerTryTimeout), false, true)
        );
        assert_eq!(
            verdict(Attempted::TimedOut, false, false),
            (Failed(Reject::PerTryTimeout), false, false)
        );
    }

    #[test]
    fn nothing_is_retried_after_the_deadline() {
        assert_eq!(
            verdict(Attempted::TimedOut, true, true),
            (Failed(Reject::Timeout), false, false)
        );
        assert_eq!(
            verdict(Attempted::ConnectFailed, false, true),
            (Failed(Reject::ConnectFailed), false, false)
        );
        assert_eq!(
            verdict(Attempted::Reset, true, true),
            (Failed(Reject::UpstreamReset), false, false)
        );
        assert_eq!(
            verdict(answered(503), true, true),
            (Response(503), false, false)
        );
    }
}
