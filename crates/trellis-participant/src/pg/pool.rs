//! A small pool of PostgreSQL connections for the participant: each call needs a session of its
//! own until its transaction is prepared, so one connection would make a prepare that waits for
//! a lock hold up every other branch.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{Client, Socket};

use crate::Error;

type Connecting =
    Pin<Box<dyn Future<Output = Result<Client, tokio_postgres::Error>> + Send + 'static>>;

/// How the participant opens a PostgreSQL connection.
#[derive(Clone)]
pub struct Connector {
    connect: Arc<dyn Fn() -> Connecting + Send + Sync>,
}

impl Connector {
    /// Connects with `config` and `tls` (`tokio_postgres::NoTls`, or a TLS connector), running
    /// each connection on a task of its own.
    pub fn new<T>(config: tokio_postgres::Config, tls: T) -> Self
    where
        T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
        T::Stream: Send + 'static,
        T::TlsConnect: Send,
        <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
    {
        let config = Arc::new(config);
        Self::from_fn(move || {
            let config = Arc::clone(&config);
            let tls = tls.clone();
            async move {
                let (client, connection) = config.connect(tls).await?;
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(error = %e, "2pc participant: connection closed");
                    }
                });
                Ok(client)
            }
        })
    }

    /// Connects with a function of the service's own, which must also drive the connection
    /// (spawn it), as [`Connector::new`] does.
    pub fn from_fn<F, Fut>(connect: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Client, tokio_postgres::Error>> + Send + 'static,
    {
        Self {
            connect: Arc::new(move || Box::pin(connect()) as Connecting),
        }
    }
}

pub(crate) struct Pool {
    connector: Connector,
    /// Run on every new connection.
    setup: String,
    idle: Mutex<Vec<Client>>,
    permits: Semaphore,
    /// Prepares may hold only some of the connections: a prepare can wait on a row lock that a
    /// prepared branch holds until its commit or abort, and if prepares held every connection
    /// that commit or abort could never run (the pool would starve itself until `lock_timeout`).
    prepare_permits: Semaphore,
    acquire_timeout: Duration,
}

/// How many of `max` connections prepares may hold at once: three quarters, keeping at least
/// one for commits and aborts when there are two or more.
fn prepare_share(max: usize) -> usize {
    let max = max.max(1);
    if max == 1 {
        return 1;
    }
    (max * 3 / 4).clamp(1, max - 1)
}

impl Pool {
    pub(crate) fn new(
        connector: Connector,
        setup: String,
        max: usize,
        acquire_timeout: Duration,
    ) -> Self {
        Self {
            connector,
            setup,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(max.max(1)),
            prepare_permits: Semaphore::new(prepare_share(max)),
            acquire_timeout,
        }
    }

    /// A connection, waiting at most the acquire timeout for one to be free and connected.
    pub(crate) async fn get(&self) -> Result<PooledClient<'_>, Error> {
        let timeout = self.acquire_timeout;
        tokio::time::timeout(timeout, self.get_unbounded())
            .await
            .map_err(|_| Error::PoolTimeout(timeout))?
    }

    /// A connection for a prepare: like [`Pool::get`], within the prepares' share of the pool.
    pub(crate) async fn get_for_prepare(&self) -> Result<PooledClient<'_>, Error> {
        let timeout = self.acquire_timeout;
        tokio::time::timeout(timeout, async {
            let share = self
                .prepare_permits
                .acquire()
                .await
                .expect("the pool's semaphores are never closed");
            let mut client = self.get_unbounded().await?;
            client._prepare_permit = Some(share);
            Ok(client)
        })
        .await
        .map_err(|_| Error::PoolTimeout(timeout))?
    }

    async fn get_unbounded(&self) -> Result<PooledClient<'_>, Error> {
        let permit = self
            .permits
            .acquire()
            .await
            .expect("the pool's semaphore is never closed");
        loop {
            let Some(client) = self.idle.lock().pop() else {
                break;
            };
            if !client.is_closed() {
                return Ok(PooledClient::new(self, client, permit));
            }
        }
        let client = (self.connector.connect)().await?;
        client.batch_execute(&self.setup).await?;
        Ok(PooledClient::new(self, client, permit))
    }
}

/// A connection of the participant's pool (a [`Client`] through `Deref`), back in the pool
/// when dropped unless [`PooledClient::discard`]ed. Leave it outside any transaction.
pub struct PooledClient<'a> {
    client: Option<Client>,
    pool: &'a Pool,
    _permit: SemaphorePermit<'a>,
    /// Held by a prepare's connection (see `Pool::prepare_permits`).
    _prepare_permit: Option<SemaphorePermit<'a>>,
}

impl<'a> PooledClient<'a> {
    fn new(pool: &'a Pool, client: Client, permit: SemaphorePermit<'a>) -> Self {
        Self {
            client: Some(client),
            pool,
            _permit: permit,
            _prepare_permit: None,
        }
    }

    /// Closes the connection instead of putting it back: after a failure its session state
    /// is unknown.
    pub fn discard(mut self) {
        self.client = None;
    }
}

impl std::ops::Deref for PooledClient<'_> {
    type Target = Client;

    fn deref(&self) -> &Client {
        self.client
            .as_ref()
            .expect("a PooledClient holds its client until dropped")
    }
}

impl std::ops::DerefMut for PooledClient<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        self.client
            .as_mut()
            .expect("a PooledClient holds its client until dropped")
    }
}

impl Drop for PooledClient<'_> {
    fn drop(&mut self) {
        if let Some(client) = self.client.take()
            && !client.is_closed()
        {
            self.pool.idle.lock().push(client);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::prepare_share;

    #[test]
    fn prepares_leave_room_for_commits() {
        assert_eq!(prepare_share(0), 1);
        assert_eq!(prepare_share(1), 1);
        assert_eq!(prepare_share(2), 1);
        assert_eq!(prepare_share(4), 3);
        assert_eq!(prepare_share(8), 6);
        assert_eq!(prepare_share(32), 24);
    }
}
