//! The intentions that apply to this sidecar's service, kept current with a blocking query on
//! the registry (`/v1/connect/intentions/match?by=destination`), so an allow or deny written
//! there applies to the next request, on connections already open too.

use crate::{Error, Result};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;
use trellis_client::{Blocking, Client, IntentionMatch};

pub struct Intentions {
    service: String,
    client: Client,
    current: RwLock<Arc<(IntentionMatch, u64)>>,
}

impl Intentions {
    /// Reads the intentions for `service`, retrying for up to `patience` (until they are read
    /// nobody is let in, so the sidecar does not start without them).
    pub async fn fetch(client: Client, service: &str, patience: Duration) -> Result<Arc<Self>> {
        let deadline = tokio::time::Instant::now() + patience;
        let first = loop {
            match client.intentions_for(service, None).await {
                Ok(answer) => break answer,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::warn!(error = %e, "cannot read the intentions yet; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(Error::config(format!("intentions: {e}"))),
            }
        };
        Ok(Arc::new(Self {
            service: service.to_owned(),
            client,
            current: RwLock::new(Arc::new((first.value, first.index))),
        }))
    }

    fn current(&self) -> Arc<(IntentionMatch, u64)> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether the intentions let `source` call this service.
    pub fn allows(&self, source: &str) -> bool {
        self.current().0.allows(source)
    }

    /// Follows changes until `self` is dropped.
    pub fn spawn_watch(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(watch(Arc::downgrade(self)))
    }
}

async fn watch(intentions: Weak<Intentions>) {
    let mut retry = Duration::from_millis(500);
    loop {
        // No strong reference across the wait, so dropping the proxy ends this task.
        let Some((client, service, index)) = intentions
            .upgrade()
            .map(|i| (i.client.clone(), i.service.clone(), i.current().1))
        else {
            return;
        };
        let started = tokio::time::Instant::now();
        let blocking = Blocking {
            index,
            wait: Some(Duration::from_secs(300)),
        };
        let answer = client.intentions_for(&service, Some(blocking)).await;
        let Some(intentions) = intentions.upgrade() else {
            return;
        };
        match answer {
            Ok(answer) if answer.index == index => {
                // The wait ended with nothing new (or the registry does not block): do not spin.
                drop(intentions);
                tokio::time::sleep_until(started + Duration::from_secs(1)).await;
            }
            Ok(answer) => {
                tracing::info!(
                    %service,
                    intentions = answer.value.intentions.len(),
                    default_allow = answer.value.default_allow,
                    "intentions changed"
                );
                *intentions
                    .current
                    .write()
                    .unwrap_or_else(|e| e.into_inner()) = Arc::new((answer.value, answer.index));
                retry = Duration::from_millis(500);
            }
            Err(e) => {
                // Keep deciding with what was last read.
                tracing::warn!(error = %e, "cannot watch the intentions; retrying");
                drop(intentions);
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(Duration::from_secs(10));
            }
        }
    }
}
