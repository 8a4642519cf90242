//! Trellis's state in an etcd cluster, through etcd's v3 API (the `etcd-client` crate): the
//! catalog [`Store`](trellis_store::Store) under a key layout an operator can read with
//! `etcdctl` ([`Layout`]).

mod follow;
mod layout;
mod reader;
mod store;

pub use follow::Feed;
pub use layout::{Key, Layout, Section};
pub use store::{EtcdOptions, EtcdStore, Release};
#[cfg(feature = "testing")]
pub mod testing;
