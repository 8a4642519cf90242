//! Rust SDK for the Trellis HTTP API (a Consul-compatible subset plus the streaming watch).

pub mod probe;

use bytes::BytesMut;
use futures_util::{Stream, StreamExt};
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::time::Duration;
use trellis_types::{
    AgentService, CatalogService, CheckStatus, HealthCheck, HealthEntry, KvPair,
    ServiceRegistration, WatchEvent,
};

/// Default address of the HTTP API.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8500";
/// The server's default and longest wait of a blocking query (Consul's).
const DEFAULT_WAIT: Duration = Duration::from_secs(300);
const MAX_WAIT: Duration = Duration::from_secs(600);
/// Largest watch event accepted, so a misbehaving server cannot make us buffer without bound.
const MAX_WATCH_LINE: usize = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot reach {url}: {source}")]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{method} {path} answered {status}: {body}")]
    Status {
        method: &'static str,
        path: String,
        status: u16,
        body: String,
    },
    #[error("unexpected response from {path}: {reason}")]
    Decode { path: String, reason: String },
    #[error("invalid address {0:?}")]
    Address(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// A response value together with its `X-Consul-Index`.
#[derive(Debug, Clone)]
pub struct Indexed<T> {
    pub value: T,
    pub index: u64,
}

/// Parameters of a blocking query.
#[derive(Debug, Clone, Copy, Default)]
pub struct Blocking {
    pub index: u64,
    pub wait: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
}

/// Turns `host:port`, `http://host:port` or `https://...` into a base URL without trailing '/'.
pub fn normalise_addr(addr: &str) -> Result<String> {
    let addr = addr.trim().trim_end_matches('/');
    if addr.is_empty() {
        return Err(Error::Address(addr.to_owned()));
    }
    if addr.starts_with("http://") || addr.starts_with("https://") {
        Ok(addr.to_owned())
    } else if addr.contains("://") {
        Err(Error::Address(addr.to_owned()))
    } else {
        Ok(format!("http://{addr}"))
    }
}

impl Client {
    pub fn new(addr: &str) -> Result<Self> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|source| Error::Transport {
                url: addr.to_owned(),
                source,
            })?;
        Ok(Self {
            http,
            base: normalise_addr(addr)?,
        })
    }

    /// `TRELLIS_HTTP_ADDR`, else `CONSUL_HTTP_ADDR`, else the default address.
    pub fn from_env() -> Result<Self> {
        let addr = std::env::var("TRELLIS_HTTP_ADDR")
            .or_else(|_| std::env::var("CONSUL_HTTP_ADDR"))
            .unwrap_or_else(|_| DEFAULT_ADDR.to_owned());
        Self::new(&addr)
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    async fn send(
        &self,
        method: &'static str,
        path: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response> {
        let response = self.transmit(path, request).await?;
        Self::successful(method, path, response).await
    }

    async fn transmit(
        &self,
        path: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response> {
        request.send().await.map_err(|source| Error::Transport {
            url: format!("{}{}", self.base, path),
            source,
        })
    }

    /// The response if it is a success, else its status and body as an error.
    async fn successful(
        method: &'static str,
        path: &str,
        response: reqwest::Response,
    ) -> Result<reqwest::Response> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.text().await.unwrap_or_default();
        Err(Error::Status {
            method,
            path: path.to_owned(),
            status: status.as_u16(),
            body: body.trim().to_owned(),
        })
    }

    /// A GET, blocking if asked to; a blocking read is bounded by the server's longest wait
    /// plus its jitter and a margin, so a silently dead connection cannot hang it forever.
    fn get_request(
        &self,
        path: &str,
        query: &[(&str, String)],
        blocking: Option<Blocking>,
    ) -> reqwest::RequestBuilder {
        let mut query = query.to_vec();
        let mut request = self.http.get(format!("{}{}", self.base, path));
        if let Some(b) = blocking {
            query.push(("index", b.index.to_string()));
            let wait = b.wait.unwrap_or(DEFAULT_WAIT).min(MAX_WAIT);
            query.push(("wait", format!("{}ms", wait.as_millis())));
            request = request.timeout(wait + wait / 16 + Duration::from_secs(5));
        }
        request.query(&query)
    }

    async fn decode<T: DeserializeOwned>(
        path: &str,
        response: reqwest::Response,
    ) -> Result<Indexed<T>> {
        let index = index_of(&response);
        let bytes = response.bytes().await.map_err(|source| Error::Transport {
            url: path.to_owned(),
            source,
        })?;
        let value = serde_json::from_slice(&bytes).map_err(|e| Error::Decode {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(Indexed { value, index })
    }

    async fn get_json<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
        blocking: Option<Blocking>,
    ) -> Result<Indexed<T>> {
        let response = self
            .send("GET", path, self.get_request(path, query, blocking))
            .await?;
        Self::decode(path, response).await
    }

    async fn put_json(
        &self,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<reqwest::Response> {
        let mut request = self.http.put(format!("{}{}", self.base, path));
        if let Some(body) = body {
            request = request.json(&body);
        }
        self.send("PUT", path, request).await
    }

    pub async fn register(&self, registration: &ServiceRegistration) -> Result<()> {
        self.put_json("/v1/agent/service/register", Some(registration.to_json()))
            .await
            .map(drop)
    }

    pub async fn deregister(&self, service_id: &str) -> Result<()> {
        self.put_json(
            &format!("/v1/agent/service/deregister/{}", encode(service_id)),
            None,
        )
        .await
        .map(drop)
    }

    /// Sets a TTL check's status and output (`PUT /v1/agent/check/update/:id`).
    pub async fn update_check(
        &self,
        check_id: &str,
        status: CheckStatus,
        output: &str,
    ) -> Result<()> {
        self.put_json(
            &format!("/v1/agent/check/update/{}", encode(check_id)),
            Some(serde_json::json!({"Status": status, "Output": output})),
        )
        .await
        .map(drop)
    }

    /// Service names and their tags.
    pub async fn services(&self) -> Result<Indexed<BTreeMap<String, Vec<String>>>> {
        self.get_json("/v1/catalog/services", &[], None).await
    }

    pub async fn agent_services(&self) -> Result<BTreeMap<String, AgentService>> {
        Ok(self.get_json("/v1/agent/services", &[], None).await?.value)
    }

    pub async fn catalog_service(&self, name: &str) -> Result<Indexed<Vec<CatalogService>>> {
        self.get_json(&format!("/v1/catalog/service/{}", encode(name)), &[], None)
            .await
    }

    pub async fn health_service(
        &self,
        name: &str,
        passing: bool,
        blocking: Option<Blocking>,
    ) -> Result<Indexed<Vec<HealthEntry>>> {
        let query = if passing {
            vec![("passing", "true".to_owned())]
        } else {
            vec![]
        };
        self.get_json(
            &format!("/v1/health/service/{}", encode(name)),
            &query,
            blocking,
        )
        .await
    }

    pub async fn health_checks(&self, name: &str) -> Result<Vec<HealthCheck>> {
        Ok(self
            .get_json(&format!("/v1/health/checks/{}", encode(name)), &[], None)
            .await?
            .value)
    }

    /// One key, or `None` when it does not exist.
    pub async fn kv_get(
        &self,
        key: &str,
        blocking: Option<Blocking>,
    ) -> Result<Indexed<Option<KvPair>>> {
        let path = format!("/v1/kv/{}", encode_key(key));
        let response = self
            .transmit(&path, self.get_request(&path, &[], blocking))
            .await?;
        // A missing key still carries the index to block on next.
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(Indexed {
                value: None,
                index: index_of(&response),
            });
        }
        let response = Self::successful("GET", &path, response).await?;
        let Indexed { value, index } = Self::decode::<Vec<KvPair>>(&path, response).await?;
        Ok(Indexed {
            value: value.into_iter().next(),
            index,
        })
    }

    /// Every pair under a prefix.
    pub async fn kv_list(&self, prefix: &str) -> Result<Vec<KvPair>> {
        match self
            .get_json::<Vec<KvPair>>(
                &format!("/v1/kv/{}", encode_key(prefix)),
                &[("recurse", "true".to_owned())],
                None,
            )
            .await
        {
            Ok(found) => Ok(found.value),
            Err(Error::Status { status: 404, .. }) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// Writes a value; with `cas`, only if the key's ModifyIndex still equals it (0 = create only).
    pub async fn kv_put(&self, key: &str, value: &[u8], cas: Option<u64>) -> Result<bool> {
        let path = format!("/v1/kv/{}", encode_key(key));
        let mut request = self
            .http
            .put(format!("{}{}", self.base, path))
            .body(value.to_vec());
        if let Some(cas) = cas {
            request = request.query(&[("cas", cas.to_string())]);
        }
        let response = self.send("PUT", &path, request).await?;
        bool_body(&path, response).await
    }

    pub async fn kv_delete(&self, key: &str, recurse: bool) -> Result<bool> {
        let path = format!("/v1/kv/{}", encode_key(key));
        let mut request = self.http.delete(format!("{}{}", self.base, path));
        if recurse {
            request = request.query(&[("recurse", "true")]);
        }
        let response = self.send("DELETE", &path, request).await?;
        bool_body(&path, response).await
    }

    /// Streams the routable instance set of a service: the current set first, then one event per
    /// change. The stream ends when the connection does; callers reconnect.
    pub async fn watch(&self, service: &str) -> Result<WatchStream> {
        let path = format!("/v1/trellis/watch/{}", encode(service));
        let request = self
            .http
            .get(format!("{}{}", self.base, path))
            .header("accept", "application/x-ndjson");
        let response = self.send("GET", &path, request).await?;
        let state = LineReader {
            body: Box::pin(response.bytes_stream()),
            buffer: BytesMut::new(),
            path,
            done: false,
        };
        Ok(Box::pin(futures_util::stream::unfold(
            state,
            LineReader::next_event,
        )))
    }
}

/// A stream of watch events.
pub type WatchStream = std::pin::Pin<Box<dyn Stream<Item = Result<WatchEvent>> + Send>>;

/// Splits a streamed NDJSON body into events.
struct LineReader {
    body: std::pin::Pin<Box<dyn Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buffer: BytesMut,
    path: String,
    done: bool,
}

impl LineReader {
    async fn next_event(mut self) -> Option<(Result<WatchEvent>, Self)> {
        loop {
            if self.done {
                return None;
            }
            if let Some(pos) = self.buffer.iter().position(|b| *b == b'\n') {
                let line = self.buffer.split_to(pos + 1);
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let event =
                    serde_json::from_slice::<WatchEvent>(&line).map_err(|e| Error::Decode {
                        path: self.path.clone(),
                        reason: e.to_string(),
                    });
                return Some((event, self));
            }
            if self.buffer.len() > MAX_WATCH_LINE {
                self.done = true;
                let error = Error::Decode {
                    path: self.path.clone(),
                    reason: "watch event too large".into(),
                };
                return Some((Err(error), self));
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.buffer.extend_from_slice(&chunk),
                Some(Err(source)) => {
                    self.done = true;
                    let error = Error::Transport {
                        url: self.path.clone(),
                        source,
                    };
                    return Some((Err(error), self));
                }
                None => return None,
            }
        }
    }
}

fn index_of(response: &reqwest::Response) -> u64 {
    response
        .headers()
        .get("x-consul-index")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn bool_body(path: &str, response: reqwest::Response) -> Result<bool> {
    let text = response.text().await.map_err(|source| Error::Transport {
        url: path.to_owned(),
        source,
    })?;
    match text.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(Error::Decode {
            path: path.to_owned(),
            reason: format!("expected true or false, got {other:?}"),
        }),
    }
}

/// Percent-encodes one path segment.
fn encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Percent-encodes a KV key, keeping its '/' separators.
fn encode_key(key: &str) -> String {
    key.split('/').map(encode).collect::<Vec<_>>().join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_normalised() {
        assert_eq!(
            normalise_addr("127.0.0.1:8500").unwrap(),
            "http://127.0.0.1:8500"
        );
        assert_eq!(normalise_addr("http://h:1/").unwrap(), "http://h:1");
        assert!(normalise_addr("ftp://h").is_err());
        assert!(normalise_addr("").is_err());
    }

    #[test]
    fn keys_keep_slashes() {
        assert_eq!(encode_key("a/b c/d"), "a/b%20c/d");
    }
}
