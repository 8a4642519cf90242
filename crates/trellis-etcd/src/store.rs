//! The catalog's [`Store`] on an etcd cluster: each commit is one etcd transaction (acknowledged
//! by etcd only once a quorum has it), the state read back with paged ranges at one revision.

use crate::layout::{Layout, Section, decode_index, encode_index, transactions};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, KeyValue, KvClient, Txn, TxnOp,
};
use serde::de::DeserializeOwned;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;
use trellis_catalog::KvSnapshot;
use trellis_store::{Mutation, Snapshot, Store, StoreError};

/// Keys read per range request: well under gRPC's 4 MiB answer limit with kilobyte records.
const PAGE: i64 = 1000;

/// How to reach the cluster and where Trellis keeps its state in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdOptions {
    /// Client URLs of the members (`http://` or, with TLS, `https://`); the client fails over
    /// between them.
    pub endpoints: Vec<String>,
    /// Everything Trellis writes is under this prefix (see [`Layout`]).
    pub prefix: String,
    /// etcd's own authentication, if the cluster has it on.
    pub username: Option<String>,
    pub password: Option<String>,
    /// CA certificate (PEM) that the members' certificates are checked against.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM) for a cluster that requires them.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Most operations etcd takes in one transaction (its `--max-txn-ops`, 128 by default).
    pub max_txn_ops: usize,
    /// How long one request to etcd may take before the commit or load fails.
    pub timeout: Duration,
}

impl EtcdOptions {
    /// Options for `endpoints` with the defaults: prefix `/trellis/`, no authentication, no
    /// TLS, 128 operations per transaction, 5 s per request.
    pub fn new(endpoints: Vec<String>) -> Self {
        Self {
            endpoints,
            prefix: "/trellis/".into(),
            username: None,
            password: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
            max_txn_ops: 128,
            timeout: Duration::from_secs(5),
        }
    }
}

pub struct EtcdStore {
    /// The client's own runtime: the store is called from the writer's thread and at start-up
    /// from inside the server's runtime, where it may not `block_on`.
    runtime: Option<tokio::runtime::Runtime>,
    kv: KvClient,
    layout: Layout,
    max_txn_ops: usize,
    timeout: Duration,
    endpoints: String,
}

fn failure(endpoints: &str, what: &str, error: impl std::fmt::Display) -> StoreError {
    StoreError::Remote(format!("etcd at {endpoints}: {what}: {error}"))
}

impl EtcdStore {
    /// Connects to the cluster (failing if no member answers within the timeout) and makes sure
    /// the index key exists.
    pub fn connect(options: &EtcdOptions) -> Result<Self, StoreError> {
        let endpoints = options.endpoints.join(",");
        if options.endpoints.is_empty() {
            return Err(StoreError::Remote(
                "no etcd endpoint given: pass --etcd URL[,URL...]".into(),
            ));
        }
        let layout = Layout::new(&options.prefix).map_err(StoreError::Remote)?;
        let connect = connect_options(options).map_err(StoreError::Remote)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("etcd-client")
            .enable_all()
            .build()
            .map_err(|e| failure(&endpoints, "cannot start its runtime", e))?;
        let urls = options.endpoints.clone();
        let client = run_on(&runtime, options.timeout, async move {
            Client::connect(urls, Some(connect)).await
        })
        .map_err(|e| failure(&endpoints, "cannot connect", e))?;
        let store = Self {
            runtime: Some(runtime),
            kv: client.kv_client(),
            layout,
            max_txn_ops: options.max_txn_ops,
            timeout: options.timeout,
            endpoints,
        };
        // The index key exists from the start, so commits can compare against its value.
        let index_key = store.layout.index_key();
        let create = Txn::new()
            .when([Compare::create_revision(
                index_key.clone(),
                CompareOp::Equal,
                0,
            )])
            .and_then([TxnOp::put(index_key, encode_index(0), None)]);
        // The client connects lazily: this first request is where an unreachable cluster shows.
        store.txn(create, "cannot connect")?;
        Ok(store)
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    fn block_on<T>(
        &self,
        what: &str,
        future: impl Future<Output = Result<T, etcd_client::Error>> + Send + 'static,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
    {
        let runtime = self.runtime.as_ref().ok_or_else(|| {
            StoreError::Remote(format!("etcd at {}: the client is closed", self.endpoints))
        })?;
        run_on(runtime, self.timeout, async move {
            future.await.map_err(|e| explain(&e))
        })
        .map_err(|e| failure(&self.endpoints, what, e))
    }

    fn txn(&self, txn: Txn, what: &str) -> Result<bool, StoreError> {
        let mut kv = self.kv.clone();
        self.block_on(what, async move { Ok(kv.txn(txn).await?.succeeded()) })
    }

    /// Every key under `section` at `revision` (0: the newest), page by page.
    fn read_section(&self, section: Section, revision: i64) -> Result<Vec<KeyValue>, StoreError> {
        let start = self.layout.section(section);
        let end = prefix_end(start.as_bytes());
        let mut kv = self.kv.clone();
        self.block_on("cannot read", async move {
            let mut out = Vec::new();
            let mut from = start.into_bytes();
            loop {
                let options = GetOptions::new()
                    .with_range(end.clone())
                    .with_limit(PAGE)
                    .with_revision(revision);
                let mut page = kv.get(from.clone(), Some(options)).await?;
                let more = page.more();
                let kvs = page.take_kvs();
                if let Some(last) = kvs.last() {
                    from = last.key().to_vec();
                    from.push(0);
                }
                out.extend(kvs);
                if !more {
                    return Ok(out);
                }
            }
        })
    }
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        // Dropping a runtime inside another blocks and panics; this one owes nothing.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Runs `future` on `runtime` from any thread, inside a runtime or not, waiting for it at
/// most `timeout`.
fn run_on<T, E>(
    runtime: &tokio::runtime::Runtime,
    timeout: Duration,
    future: impl Future<Output = Result<T, E>> + Send + 'static,
) -> Result<T, String>
where
    T: Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let (done, outcome) = std::sync::mpsc::sync_channel(1);
    runtime.spawn(async move {
        let result = match tokio::time::timeout(timeout, future).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!("no answer within {timeout:?}")),
        };
        let _ = done.send(result);
    });
    outcome
        .recv()
        .unwrap_or_else(|_| Err("the client's runtime stopped".into()))
}

/// An etcd client error in one line: gRPC's status code and message, and the innermost cause
/// (a refused connection, say) rather than every layer between.
fn explain(error: &etcd_client::Error) -> String {
    match error {
        etcd_client::Error::GRpcStatus(status) => {
            let mut innermost: &dyn std::error::Error = status;
            while let Some(source) = innermost.source() {
                innermost = source;
            }
            let cause = innermost.to_string();
            if status.message().is_empty() || status.message() == cause {
                format!("{:?}: {cause}", status.code())
            } else {
                format!("{:?}: {} ({cause})", status.code(), status.message())
            }
        }
        other => other.to_string(),
    }
}

/// The first key after every key that starts with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn connect_options(options: &EtcdOptions) -> Result<ConnectOptions, String> {
    let mut connect = ConnectOptions::new()
        .with_connect_timeout(options.timeout)
        .with_timeout(options.timeout)
        .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
    match (&options.username, &options.password) {
        (Some(user), Some(password)) => connect = connect.with_user(user, password),
        (None, None) => {}
        _ => return Err("etcd authentication needs both a user name and a password".into()),
    }
    let tls_wanted = options.ca_file.is_some()
        || options.cert_file.is_some()
        || options.endpoints.iter().any(|e| e.starts_with("https://"));
    if tls_wanted {
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
        };
        let mut tls = etcd_client::TlsOptions::new();
        if let Some(ca) = &options.ca_file {
            tls = tls.ca_certificate(etcd_client::Certificate::from_pem(read(ca)?));
        }
        match (&options.cert_file, &options.key_file) {
            (Some(cert), Some(key)) => {
                tls = tls.identity(etcd_client::Identity::from_pem(read(cert)?, read(key)?));
            }
            (None, None) => {}
            _ => return Err("an etcd client certificate needs both its file and its key".into()),
        }
        connect = connect.with_tls(tls);
    }
    Ok(connect)
}

fn decode<T: DeserializeOwned>(kvs: &[KeyValue]) -> Result<Vec<T>, StoreError> {
    kvs.iter()
        .map(|kv| {
            serde_json::from_slice(kv.value()).map_err(|e| StoreError::Corrupt {
                key: String::from_utf8_lossy(kv.key()).into_owned(),
                reason: e.to_string(),
            })
        })
        .collect()
}

impl Store for EtcdStore {
    fn load(&self) -> Result<Snapshot, StoreError> {
        let index_key = self.layout.index_key();
        let mut kv = self.kv.clone();
        // Every section is read at the revision of the index read, so they agree.
        let (index, revision) = self.block_on("cannot read the index", async move {
            let answer = kv.get(index_key, None).await?;
            let revision = answer.header().map_or(0, |h| h.revision());
            let index = answer.kvs().first().map(|kv| kv.value().to_vec());
            Ok((index, revision))
        })?;
        let index = match index {
            Some(bytes) => decode_index(&bytes).ok_or_else(|| StoreError::Corrupt {
                key: self.layout.index_key(),
                reason: format!("not an index: {:?}", String::from_utf8_lossy(&bytes)),
            })?,
            None => 0,
        };
        let read = |section| self.read_section(section, revision);
        Ok(Snapshot {
            index,
            instances: decode(&read(Section::Instances)?)?,
            checks: decode(&read(Section::Checks)?)?,
            kv: KvSnapshot {
                entries: decode(&read(Section::Kv)?)?,
                sessions: decode(&read(Section::Sessions)?)?,
            },
            config_entries: decode(&read(Section::Config)?)?,
        })
    }

    fn commit(&self, index: u64, mutations: &[Mutation]) -> Result<(), StoreError> {
        let writes: Vec<TxnOp> = self
            .layout
            .final_writes(mutations)?
            .into_iter()
            .map(|(key, value)| match value {
                Some(value) => TxnOp::put(key, value, None),
                None => TxnOp::delete(key, None),
            })
            .collect();
        let txns = transactions(&writes, self.max_txn_ops);
        let split = txns.len().saturating_sub(1);
        // A batch larger than one transaction goes in several, the index with the last: the
        // batch is answered only after all of them, but a crash between two leaves the first
        // ones applied (see the README's note on etcd's --max-txn-ops).
        for chunk in &txns[..split] {
            self.txn(Txn::new().and_then(chunk.to_vec()), "cannot commit")?;
        }
        let last: &[TxnOp] = txns.get(split).copied().unwrap_or_default();
        // The index only goes up: it is written only if the stored one is lower.
        let index_key = self.layout.index_key();
        let encoded = encode_index(index);
        let mut raise = last.to_vec();
        raise.push(TxnOp::put(index_key.clone(), encoded.clone(), None));
        let txn = Txn::new()
            .when([Compare::value(index_key, CompareOp::Less, encoded)])
            .and_then(raise)
            .or_else(last.to_vec());
        self.txn(txn, "cannot commit")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_end_of_a_prefix_range_is_its_successor() {
        assert_eq!(prefix_end(b"/trellis/kv/"), b"/trellis/kv0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }

    #[test]
    fn half_given_credentials_are_refused() {
        let mut options = EtcdOptions::new(vec!["http://127.0.0.1:2379".into()]);
        options.username = Some("trellis".into());
        assert!(connect_options(&options).unwrap_err().contains("both"));
        options.username = None;
        options.cert_file = Some("client.pem".into());
        assert!(connect_options(&options).unwrap_err().contains("both"));
    }
}
