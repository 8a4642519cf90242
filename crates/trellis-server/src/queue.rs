//! The writer's bounded queue: a cloneable handle to submit commands and the receiving end the
//! writer thread drains. Knows nothing of HTTP or of the server's state.

use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use tokio::sync::oneshot;
use trellis_catalog::{CatalogError, Command, Reply};

/// Why a command was not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// The catalog refused the command (unknown ID, invalid definition).
    #[error("{0}")]
    Rejected(CatalogError),
    /// The batch could not be made durable; nothing of it was kept.
    #[error("the batch could not be made durable")]
    Storage,
    /// The queue is full: the writer is behind.
    #[error("the write queue is full")]
    Busy,
    /// The writer has stopped (shutdown or a fatal storage failure).
    #[error("the writer has stopped")]
    Stopped,
    /// This server follows another that writes the shared store (it answers 503 and clients
    /// go to the leader; the HTTP API forwards its writes before they get here).
    #[error("this server is not the cluster leader")]
    NotLeader,
    /// This server shares a store it cannot reach (no quorum): nothing is written until it
    /// answers again; a commit under way may or may not have been kept.
    #[error("the store cannot be reached")]
    StoreUnreachable,
}

/// A queued command and where its answer goes.
pub struct Submission {
    pub command: Command,
    pub reply: oneshot::Sender<Result<Reply, WriteError>>,
}

/// What the writer drains: commands, and, on a server sharing an etcd store, the store's feed.
pub enum Queued {
    Command(Submission),
    Feed(trellis_etcd::Feed),
}

/// Submits commands to the writer. Cheap to clone; the writer stops once every handle is gone.
#[derive(Clone)]
pub struct WriterHandle {
    tx: SyncSender<Queued>,
}

/// Creates a queue holding at most `bound` commands.
pub fn channel(bound: usize) -> (WriterHandle, Receiver<Queued>) {
    let (tx, rx) = std::sync::mpsc::sync_channel(bound);
    (WriterHandle { tx }, rx)
}

impl WriterHandle {
    /// Queues a command and waits until it is applied (and durable, if it is a durable command).
    /// Never waits for queue space: a full queue is `Busy` at once.
    pub async fn submit(&self, command: Command) -> Result<Reply, WriteError> {
        let (reply, answer) = oneshot::channel();
        self.enqueue(Submission { command, reply })?;
        // A dropped reply means the writer went away with the command still queued.
        answer.await.unwrap_or(Err(WriteError::Stopped))
    }

    /// Queues `commands` at once (they may share a batch) and waits until all are applied; the
    /// first refusal, if any.
    pub async fn submit_all(&self, commands: Vec<Command>) -> Result<(), WriteError> {
        let answers =
            futures_util::future::join_all(commands.into_iter().map(|c| self.submit(c))).await;
        answers
            .into_iter()
            .find_map(Result::err)
            .map_or(Ok(()), Err)
    }

    /// Queues a command without waiting for its outcome (probe results: the next probe reports
    /// again, so a result lost to a full queue costs nothing).
    pub fn try_submit(&self, command: Command) -> Result<(), WriteError> {
        let (reply, _ignored) = oneshot::channel();
        self.enqueue(Submission { command, reply })
    }

    /// Hands the store's feed on in its order, waiting for queue space: a change of the store
    /// may not be dropped. Returns once the writer is gone.
    pub fn feed_from(&self, feed: std::sync::mpsc::Receiver<trellis_etcd::Feed>) {
        for item in feed {
            if self.tx.send(Queued::Feed(item)).is_err() {
                return;
            }
        }
    }

    fn enqueue(&self, submission: Submission) -> Result<(), WriteError> {
        self.tx
            .try_send(Queued::Command(submission))
            .map_err(|e| match e {
                TrySendError::Full(_) => WriteError::Busy,
                TrySendError::Disconnected(_) => WriteError::Stopped,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_queue_is_busy_and_a_gone_writer_is_stopped() {
        let (handle, rx) = channel(1);
        let command = || Command::Deregister {
            service_id: "x".into(),
        };
        handle.try_submit(command()).unwrap();
        assert_eq!(handle.try_submit(command()), Err(WriteError::Busy));
        assert_eq!(handle.submit(command()).await, Err(WriteError::Busy));
        drop(rx);
        assert_eq!(handle.submit(command()).await, Err(WriteError::Stopped));
    }

    #[tokio::test]
    async fn a_dropped_reply_is_stopped() {
        let (handle, rx) = channel(1);
        let writer = std::thread::spawn(move || drop(rx.recv()));
        let answer = handle
            .submit(Command::Deregister {
                service_id: "x".into(),
            })
            .await;
        assert_eq!(answer, Err(WriteError::Stopped));
        writer.join().unwrap();
    }
}
