//! The inventory service: stock per product, and the participant of an order's two-phase-commit
//! transaction that reserves it (`/txn/reserve/prepare|commit|abort`).

mod reserve;
mod store;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::HeaderValue;
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use trellis_participant::SqliteParticipant;

use crate::api::{self, ApiError};
use crate::{Error, Server, Stock};
pub use reserve::CRASH_EXIT_CODE;
use reserve::Reserve;
use store::InventoryStore;

/// The path prefix under which the inventory serves its branch of an order's transaction.
pub const RESERVE_PATH: &str = "/txn/reserve";

/// Command-line arguments of one inventory instance.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct InventoryArgs {
    /// Address to listen on, HOST:PORT (a host name is resolved at start).
    #[arg(long, value_parser = crate::server::listen_addr, default_value = "127.0.0.1:8084")]
    pub listen: SocketAddr,
    /// SQLite database file, created if missing; all instances of the service share it.
    #[arg(long)]
    pub db: PathBuf,
    /// Instance name, returned in `x-served-by` on every response.
    #[arg(long, default_value = "inventory-1")]
    pub instance: String,
    /// Where this instance's spans go.
    #[command(flatten)]
    pub tracing: crate::TracingArgs,
    /// Fault injection (for the demo): when the commit of a reservation of PRODUCT arrives,
    /// exit at once with status 3 without committing it, as if the process crashed between
    /// prepare and commit. Start the instance again without this flag to let the
    /// coordinator's retry commit it.
    #[arg(long, value_name = "PRODUCT")]
    pub crash_before_commit: Option<String>,
}

impl InventoryArgs {
    /// These arguments as a command line (without the subcommand name) that parses back into
    /// an equal value.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            format!("--listen={}", self.listen),
            format!("--db={}", self.db.display()),
            format!("--instance={}", self.instance),
        ];
        if let Some(product) = &self.crash_before_commit {
            args.push(format!("--crash-before-commit={product}"));
        }
        args.extend(self.tracing.to_args());
        args
    }
}

/// What the inventory handlers share: the database (read through its own connection, written
/// only by the participant) and this instance's name.
#[derive(Clone)]
pub struct InventoryState {
    store: InventoryStore,
    participant: SqliteParticipant<Reserve>,
    instance: HeaderValue,
}

impl InventoryState {
    /// Validates the instance name, then opens (creating and seeding if needed) the database.
    pub async fn open(args: &InventoryArgs) -> Result<Self, Error> {
        let instance = api::instance_header(&args.instance)?;
        let store = InventoryStore::open(&args.db).await?;
        let reserve = Reserve {
            crash_before_commit: args.crash_before_commit.clone(),
        };
        let participant = crate::db::participant(&args.db, reserve).await?;
        if let Some(product) = &args.crash_before_commit {
            tracing::warn!(%product, "this instance exits on the commit of a reservation of {product:?}");
        }
        Ok(Self {
            store,
            participant,
            instance,
        })
    }
}

/// The inventory service's routes, for serving or for driving in tests.
pub fn inventory_router(state: InventoryState) -> Router {
    let participant = trellis_participant::router(state.participant.clone());
    let instance = state.instance.clone();
    let routes = Router::new()
        .route("/stock", get(list))
        .route("/stock/{product}", get(fetch))
        .route("/health", get(health))
        .with_state(state)
        .nest(RESERVE_PATH, participant);
    api::service_router(routes, instance, ())
}

/// Opens the database and binds the listener; nothing is served yet.
pub async fn inventory_server(args: &InventoryArgs) -> Result<Server, Error> {
    let state = InventoryState::open(args).await?;
    Server::bind(args.listen, inventory_router(state)).await
}

/// Runs one inventory instance until `shutdown` resolves, printing `listening on ADDR` once
/// bound.
pub async fn run_inventory<F>(args: InventoryArgs, shutdown: F) -> Result<(), Error>
where
    F: Future<Output = ()> + Send + 'static,
{
    inventory_server(&args)
        .await?
        .announce_and_serve("inventory", shutdown)
        .await
}

async fn list(State(state): State<InventoryState>) -> Result<Json<Vec<Stock>>, ApiError> {
    Ok(Json(state.store.list().await?))
}

async fn fetch(
    State(state): State<InventoryState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Stock>, ApiError> {
    let Path(product) = path.map_err(|_| ApiError::bad_request("invalid path"))?;
    match state.store.get(product.clone()).await? {
        Some(stock) => Ok(Json(stock)),
        None => Err(ApiError::not_found(format!(
            "{product} is not in the inventory"
        ))),
    }
}

async fn health(State(state): State<InventoryState>) -> Response {
    api::health(state.store.db()).await
}
