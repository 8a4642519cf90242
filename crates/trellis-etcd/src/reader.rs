//! Reads of the store at one revision, as async calls: the follower's task awaits them (it runs
//! on the client's runtime, where nothing may block) and the store's blocking calls wait for
//! them from other threads.

use crate::layout::{Layout, Section, decode_index};
use etcd_client::{GetOptions, GetResponse, KeyValue, KvClient};
use serde::de::DeserializeOwned;
use std::time::Duration;
use trellis_catalog::{Indexed, KvSnapshot, Revisions};
use trellis_store::{Snapshot, StoreError};

/// Keys read per range request: well under gRPC's 4 MiB answer limit with kilobyte records.
const PAGE: i64 = 1000;

/// A client for reads, each request bounded by the store's timeout.
#[derive(Clone)]
pub(crate) struct Reader {
    pub(crate) kv: KvClient,
    pub(crate) timeout: Duration,
    pub(crate) endpoints: String,
}

/// Why a read failed.
pub(crate) enum ReadFailed {
    /// The revision asked for is older than etcd's compaction kept.
    Compacted,
    Other(StoreError),
}

impl From<ReadFailed> for StoreError {
    fn from(failed: ReadFailed) -> Self {
        match failed {
            ReadFailed::Compacted => StoreError::Remote(
                "etcd compacted the revision this read was made at; read again".into(),
            ),
            ReadFailed::Other(error) => error,
        }
    }
}

impl Reader {
    async fn get(
        &self,
        what: &str,
        key: impl Into<Vec<u8>>,
        options: Option<GetOptions>,
    ) -> Result<GetResponse, ReadFailed> {
        let mut kv = self.kv.clone();
        let failed = |reason: String| {
            ReadFailed::Other(StoreError::Remote(format!(
                "etcd at {}: {what}: {reason}",
                self.endpoints
            )))
        };
        match tokio::time::timeout(self.timeout, kv.get(key, options)).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(etcd_client::Error::GRpcStatus(status)))
                if status.code() == tonic::Code::OutOfRange =>
            {
                Err(ReadFailed::Compacted)
            }
            Ok(Err(error)) => Err(failed(explain(&error))),
            Err(_) => Err(failed(format!("no answer within {:?}", self.timeout))),
        }
    }

    /// The index stored at `key` (0 if none) and the revision it was read at.
    pub(crate) async fn index(&self, key: String) -> Result<(u64, i64), ReadFailed> {
        let answer = self.get("cannot read the index", key.clone(), None).await?;
        let revision = answer.header().map_or(0, |h| h.revision());
        let index = match answer.kvs().first() {
            Some(kv) => decode_index(kv.value()).ok_or_else(|| {
                ReadFailed::Other(StoreError::Corrupt {
                    key,
                    reason: format!("not an index: {:?}", String::from_utf8_lossy(kv.value())),
                })
            })?,
            None => 0,
        };
        Ok((index, revision))
    }

    /// `key` at `revision` (0: the newest), if it existed then.
    pub(crate) async fn key(
        &self,
        key: String,
        revision: i64,
    ) -> Result<Option<KeyValue>, ReadFailed> {
        let options = GetOptions::new().with_revision(revision);
        let mut answer = self.get("cannot read", key, Some(options)).await?;
        Ok(answer.take_kvs().into_iter().next())
    }

    /// Every key under `start` at `revision` (0: the newest), page by page.
    pub(crate) async fn range(
        &self,
        start: String,
        revision: i64,
    ) -> Result<Vec<KeyValue>, ReadFailed> {
        let end = prefix_end(start.as_bytes());
        let mut out = Vec::new();
        let mut from = start.into_bytes();
        loop {
            let options = GetOptions::new()
                .with_range(end.clone())
                .with_limit(PAGE)
                .with_revision(revision);
            let mut page = self.get("cannot read", from.clone(), Some(options)).await?;
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
    }

    /// The catalog's state and the revision it was read at: every section is read at the
    /// revision of the index read, so they agree. Its index is the revision of the last commit
    /// (the index key's), its records numbered with their keys' revisions.
    pub(crate) async fn snapshot(&self, layout: &Layout) -> Result<(Snapshot, i64), ReadFailed> {
        let answer = self
            .get("cannot read the index", layout.index_key(), None)
            .await?;
        let revision = answer.header().map_or(0, |h| h.revision());
        let index = answer.kvs().first().map_or(0, commit_revision);
        let read = |section| self.range(layout.section(section), revision);
        let snapshot = Snapshot {
            index,
            instances: decode(&read(Section::Instances).await?)?,
            checks: decode(&read(Section::Checks).await?)?,
            kv: KvSnapshot {
                entries: decode(&read(Section::Kv).await?)?,
                sessions: decode(&read(Section::Sessions).await?)?,
            },
            config_entries: decode(&read(Section::Config).await?)?,
        };
        Ok((snapshot, revision))
    }
}

fn decode<T: DeserializeOwned + Indexed>(kvs: &[KeyValue]) -> Result<Vec<T>, ReadFailed> {
    kvs.iter()
        .map(decode_numbered)
        .collect::<Result<_, _>>()
        .map_err(ReadFailed::Other)
}

/// The revision of the commit that last wrote the index key `kv`: the catalog's index. An
/// index key that still holds 0 was made when the first server connected, and has seen no
/// commit.
pub(crate) fn commit_revision(kv: &KeyValue) -> u64 {
    if decode_index(kv.value()) == Some(0) {
        return 0;
    }
    revisions(kv).modify
}

/// A key's create and mod revisions: its record's indexes.
pub(crate) fn revisions(kv: &KeyValue) -> Revisions {
    let revision = |r: i64| u64::try_from(r).unwrap_or_default();
    Revisions {
        create: revision(kv.create_revision()),
        modify: revision(kv.mod_revision()),
    }
}

/// One record, numbered with its key's revisions.
pub(crate) fn decode_numbered<T: DeserializeOwned + Indexed>(
    kv: &KeyValue,
) -> Result<T, StoreError> {
    let mut record: T = decode_record(kv)?;
    record.set_indexes(revisions(kv));
    Ok(record)
}

/// The end of the range of keys starting with `prefix`, as etcd's `--prefix` computes it.
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff (or empty): to the end of the keyspace.
    vec![0]
}

/// One record's JSON value, or why it is corrupt.
pub(crate) fn decode_record<T: DeserializeOwned>(kv: &KeyValue) -> Result<T, StoreError> {
    serde_json::from_slice(kv.value()).map_err(|e| StoreError::Corrupt {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        reason: e.to_string(),
    })
}

/// An etcd client error in one line: gRPC's status code and message, and the innermost cause
/// (a refused connection, say) rather than every layer between.
pub(crate) fn explain(error: &etcd_client::Error) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_end_of_a_prefix_range_is_its_successor() {
        assert_eq!(prefix_end(b"/trellis/kv/"), b"/trellis/kv0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }
}
