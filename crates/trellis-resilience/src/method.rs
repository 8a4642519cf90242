//! Which requests may be retried after they reached an upstream.

/// Whether a request with this method may be retried after it reached the upstream: the
/// methods RFC 9110 defines as idempotent. Methods are case-sensitive, so `get` is not `GET`
/// (and an unknown method is never retried).
pub fn is_idempotent_method(method: &str) -> bool {
    matches!(
        method,
        "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotent_methods() {
        for m in ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"] {
            assert!(is_idempotent_method(m), "{m}");
        }
        for m in ["POST", "PATCH", "CONNECT", "get", "PROPFIND", ""] {
            assert!(!is_idempotent_method(m), "{m}");
        }
    }
}
