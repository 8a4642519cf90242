//! The few `google.rpc` messages OTLP answers carry: `Status` (the body of an OTLP/HTTP error
//! and gRPC's `grpc-status-details-bin`) and its `RetryInfo` detail, which tells an exporter
//! how long to wait before retrying a throttled request. Written out here rather than pulling
//! in a crate of all of Google's API protos for four small messages.

use prost::Message;
use serde_json::{Value, json};
use std::time::Duration;

/// `google.rpc.Status`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<ProtoAny>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProtoAny {
    #[prost(string, tag = "1")]
    pub type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// `google.rpc.RetryInfo`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    pub retry_delay: Option<ProtoDuration>,
}

/// `google.protobuf.Duration`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProtoDuration {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

pub const RETRY_INFO_TYPE: &str = "type.googleapis.com/google.rpc.RetryInfo";

/// gRPC's INVALID_ARGUMENT: a malformed request.
pub const INVALID_ARGUMENT: i32 = 3;
/// gRPC's RESOURCE_EXHAUSTED: throttled (with a `RetryInfo`) or too large (without).
pub const RESOURCE_EXHAUSTED: i32 = 8;

impl RpcStatus {
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        RpcStatus {
            code,
            message: message.into(),
            details: Vec::new(),
        }
    }

    /// RESOURCE_EXHAUSTED with a `RetryInfo` asking the exporter to come back after `delay`.
    pub fn retry_after(message: impl Into<String>, delay: Duration) -> Self {
        let info = RetryInfo {
            retry_delay: Some(ProtoDuration {
                seconds: i64::try_from(delay.as_secs()).unwrap_or(i64::MAX),
                nanos: i32::try_from(delay.subsec_nanos()).unwrap_or(0),
            }),
        };
        RpcStatus {
            code: RESOURCE_EXHAUSTED,
            message: message.into(),
            details: vec![ProtoAny {
                type_url: RETRY_INFO_TYPE.into(),
                value: info.encode_to_vec(),
            }],
        }
    }

    /// The retry delay of its `RetryInfo` detail, if it has one.
    pub fn retry_delay(&self) -> Option<Duration> {
        let detail = self
            .details
            .iter()
            .find(|d| d.type_url == RETRY_INFO_TYPE)?;
        let delay = RetryInfo::decode(detail.value.as_slice())
            .ok()?
            .retry_delay?;
        Some(Duration::new(
            u64::try_from(delay.seconds).ok()?,
            u32::try_from(delay.nanos).ok()?,
        ))
    }

    /// The proto3 JSON mapping, the body of an OTLP/HTTP error answered in JSON: the known
    /// `RetryInfo` detail rendered with its `@type`, its delay as `"1.5s"`.
    pub fn to_json(&self) -> Value {
        let details: Vec<Value> = self
            .details
            .iter()
            .filter(|d| d.type_url == RETRY_INFO_TYPE)
            .filter_map(|_| self.retry_delay())
            .map(|delay| {
                json!({
                    "@type": RETRY_INFO_TYPE,
                    "retryDelay": format!("{}s", delay.as_secs_f64()),
                })
            })
            .collect();
        let mut body = json!({"code": self.code, "message": self.message});
        if !details.is_empty() {
            body["details"] = Value::Array(details);
        }
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_info_round_trips() {
        let status = RpcStatus::retry_after("busy", Duration::from_millis(1500));
        let decoded = RpcStatus::decode(status.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded.code, RESOURCE_EXHAUSTED);
        assert_eq!(decoded.retry_delay(), Some(Duration::from_millis(1500)));
        assert_eq!(
            decoded.to_json(),
            json!({"code": 8, "message": "busy", "details": [
                {"@type": RETRY_INFO_TYPE, "retryDelay": "1.5s"}
            ]})
        );
        let plain = RpcStatus::new(INVALID_ARGUMENT, "bad");
        assert_eq!(plain.retry_delay(), None);
        assert_eq!(plain.to_json(), json!({"code": 3, "message": "bad"}));
    }
}
