//! Health probes with Consul's rules, shared by the registry's checker and the sidecar: an HTTP
//! answer 2xx is passing, 429 warning, anything else critical; a TCP connection is passing.

use std::time::Duration;
use trellis_types::CheckStatus;

/// Most bytes of a response body kept in a check's output (Consul keeps 4 KiB).
pub const MAX_OUTPUT: usize = 4096;

/// Sends `request` (its timeout set by the caller) and classifies the answer; `label`, such as
/// `HTTP GET http://app/health`, starts the output.
pub async fn http(request: reqwest::RequestBuilder, label: &str) -> (CheckStatus, String) {
    match request.send().await {
        Ok(response) => {
            let code = response.status();
            let status = if code.is_success() {
                CheckStatus::Passing
            } else if code.as_u16() == 429 {
                CheckStatus::Warning
            } else {
                CheckStatus::Critical
            };
            let mut body = response
                .bytes()
                .await
                .map(|b| b.to_vec())
                .unwrap_or_default();
            body.truncate(MAX_OUTPUT);
            let output = format!("{label}: {code} Output: {}", String::from_utf8_lossy(&body));
            (status, output)
        }
        Err(error) => (
            CheckStatus::Critical,
            format!("{label}: {}", describe(&error)),
        ),
    }
}

fn describe(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        "request timed out".into()
    } else if error.is_connect() {
        "connection failed".into()
    } else if error.is_builder() && error.url().is_some_and(|u| u.scheme() == "https") {
        "https checks are not supported by this build".into()
    } else {
        error.to_string()
    }
}

/// Opens (and closes) a TCP connection to `address` within `timeout`.
pub async fn tcp(address: &str, timeout: Duration) -> (CheckStatus, String) {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(address)).await {
        Ok(Ok(_)) => (
            CheckStatus::Passing,
            format!("TCP connect {address}: Success"),
        ),
        Ok(Err(error)) => (
            CheckStatus::Critical,
            format!("dial tcp {address}: {error}"),
        ),
        Err(_) => (
            CheckStatus::Critical,
            format!("dial tcp {address}: i/o timeout"),
        ),
    }
}
