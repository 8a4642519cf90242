//! The single writer: drains queued commands in batches, applies them to the catalog, makes the
//! batch durable with one commit (group commit), then publishes views and answers every request.

use crate::published::Published;
use crate::state::AppState;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use trellis_catalog::{Catalog, CatalogError, Command, Effects, Reply, Write};
use trellis_store::{Mutation, Store};
use trellis_types::registration::service_key;

/// Most commands applied in one batch; bounds the latency a batch adds to its first request.
const MAX_BATCH: usize = 4096;
/// How often time-driven changes (TTL expiry, the reaper) are evaluated.
const TICK: Duration = Duration::from_millis(250);
/// How often empty, unwatched service slots are dropped.
const SLOT_GC: Duration = Duration::from_secs(10);

/// Why a command was not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteError {
    Catalog(CatalogError),
    /// The batch could not be made durable; nothing of it was kept.
    Storage,
}

/// A check whose probing must restart or stop: its ID and, if it is an HTTP or TCP check that
/// still exists, its current definition.
pub type CheckChange = (String, Option<Arc<trellis_catalog::Check>>);

pub struct Submission {
    pub command: Command,
    pub reply: oneshot::Sender<Result<Reply, WriteError>>,
}

/// Runs the writer on the current thread until every sender is gone.
pub fn run(
    state: AppState,
    store: Box<dyn Store>,
    queue: Receiver<Submission>,
    clock: Instant,
    checks_changed: mpsc::UnboundedSender<CheckChange>,
) {
    let mut last_tick = Duration::ZERO;
    let mut last_gc = Duration::ZERO;
    loop {
        let wait = TICK.saturating_sub(clock.elapsed().saturating_sub(last_tick));
        let mut batch = Vec::new();
        match queue.recv_timeout(wait) {
            Ok(first) => batch.push(first),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let now = clock.elapsed();
        let mut fx = Effects::default();
        let mut catalog = state.catalog.write();
        let mut replies = Vec::with_capacity(batch.len());
        let size = batch.len();
        for Submission { command, reply } in batch {
            let result = catalog
                .apply(command, now, &mut fx)
                .map_err(WriteError::Catalog);
            replies.push((reply, result));
        }
        if now.saturating_sub(last_tick) >= TICK {
            catalog.tick(now, &mut fx);
            last_tick = now;
        }
        let mutations: Vec<Mutation> = fx.writes.iter().map(|w| mutation(&catalog, w)).collect();
        let committed = if mutations.is_empty() {
            Ok(())
        } else {
            let started = Instant::now();
            let result = store.commit(catalog.index(), &mutations);
            state
                .metrics
                .commit_seconds
                .observe(started.elapsed().as_secs_f64());
            state.metrics.batch_size.observe(size as f64);
            result
        };
        match committed {
            Ok(()) => {
                publish(&state, &catalog, &fx, &checks_changed);
                drop(catalog);
                for (reply, result) in replies {
                    let _ = reply.send(result);
                }
            }
            Err(error) => {
                tracing::error!(%error, "commit failed; reloading the catalog from the store");
                // Every check the checker may be probing, before and after the reload.
                let mut checks: BTreeSet<String> =
                    catalog.checks().map(|c| c.id().to_owned()).collect();
                match store.load() {
                    Ok(s) => *catalog = Catalog::restore(s.index, s.instances, s.checks, s.kv, now),
                    Err(error) => {
                        tracing::error!(%error, "cannot reload the store; exiting");
                        std::process::exit(1);
                    }
                }
                checks.extend(catalog.checks().map(|c| c.id().to_owned()));
                // Every slot readers hold is republished from the reloaded catalog.
                let everything = Effects {
                    services: state.slots.iter().map(|slot| slot.key().clone()).collect(),
                    services_list: true,
                    kv: true,
                    checks,
                    ..Effects::default()
                };
                publish(&state, &catalog, &everything, &checks_changed);
                drop(catalog);
                for (reply, _) in replies {
                    let _ = reply.send(Err(WriteError::Storage));
                }
            }
        }
        if now.saturating_sub(last_gc) >= SLOT_GC {
            last_gc = now;
            // A slot nobody holds or watches and with no instances carries nothing a reader
            // could not recompute; dropping it bounds memory against many distinct names.
            state.slots.retain(|_, slot| {
                !(slot.current().view.instances.is_empty()
                    && Arc::strong_count(slot) == 1
                    && slot.tx.receiver_count() == 0)
            });
        }
    }
}

fn mutation(catalog: &Catalog, write: &Write) -> Mutation {
    match write {
        Write::Instance(id) => match catalog.instance(id) {
            Some(record) => Mutation::PutInstance(record.as_ref().clone()),
            None => Mutation::DeleteInstance(id.clone()),
        },
        Write::Check { id, owner } => match catalog.check_record(id) {
            Some(record) if record.definition.service_id == *owner => Mutation::PutCheck(record),
            _ => Mutation::DeleteCheck {
                id: id.clone(),
                owner: owner.clone(),
            },
        },
        Write::Kv(key) => match catalog.kv_get(key) {
            Some(entry) => Mutation::PutKv(entry.clone()),
            None => Mutation::DeleteKv(key.clone()),
        },
    }
}

/// Makes a durable batch visible: new views per changed service, then the list and KV signals.
fn publish(
    state: &AppState,
    catalog: &Catalog,
    fx: &Effects,
    checks_changed: &mpsc::UnboundedSender<CheckChange>,
) {
    // Only services somebody has read or watched have a slot; the others get one, built from
    // the catalog, on their first read. Registrations nobody looks at cost no view and no memory.
    for name in &fx.services {
        if let Some(slot) = state.slots.get(service_key(name).as_ref()) {
            slot.tx
                .send_replace(Arc::new(Published::new(catalog.service_view(name))));
        }
    }
    if fx.services_list {
        state
            .services_changed
            .send_replace(catalog.services_index());
    }
    if fx.kv {
        state.kv_changed.send_replace(catalog.kv_store_index());
    }
    for check_id in &fx.checks {
        // The writer hands over the check itself: the checker must not take the catalog lock,
        // which the writer holds through every commit, from a runtime worker thread.
        let active = catalog.check(check_id).filter(|c| c.is_active()).cloned();
        let _ = checks_changed.send((check_id.clone(), active));
    }
}
