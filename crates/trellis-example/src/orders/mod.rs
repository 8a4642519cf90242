//! The orders service: list, filter, fetch and place orders. Placing one checks with the users
//! service (through the sidecar) that the user exists, then submits one two-phase-commit
//! transaction to the coordinator across this service (the order row, `/txn/order`) and the
//! inventory service (the stock): either the order is placed and the stock went down, or
//! neither.

mod branch;
mod coordinator;
mod outbound;
mod store;
mod users_client;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::header::LOCATION;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use reqwest::Url;
use serde_json::json;
use trellis_participant::SqliteParticipant;

use crate::api::{self, ApiError};
use crate::{Error, Order, Server, TXN_GID};
use branch::PlaceOrder;
use coordinator::{CoordinatorClient, NoOutcome, Outcome};
pub use coordinator::{INVENTORY_SERVICE, ORDER_PATH, ORDERS_SERVICE};
use store::{NewOrder, OrdersStore, Status};
use users_client::{Unavailable, UsersClient};

/// Longest accepted product name, in characters.
const MAX_PRODUCT_CHARS: usize = 200;
/// Accepted order quantities.
const QUANTITY: std::ops::RangeInclusive<i64> = 1..=1000;

/// Command-line arguments of one orders instance.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct OrdersArgs {
    /// Address to listen on, HOST:PORT (a host name is resolved at start).
    #[arg(long, value_parser = crate::server::listen_addr, default_value = "127.0.0.1:8082")]
    pub listen: SocketAddr,
    /// SQLite database file, created if missing; all instances of the service share it.
    #[arg(long)]
    pub db: PathBuf,
    /// Instance name, returned in `x-served-by` on every response.
    #[arg(long, default_value = "orders-1")]
    pub instance: String,
    /// Where this instance's spans go.
    #[command(flatten)]
    pub tracing: crate::TracingArgs,
    /// Base URL of the users service. The default is the service name, which the sidecar
    /// resolves.
    #[arg(long, default_value = "http://users")]
    pub users_url: Url,
    /// HTTP proxy for calls to users, normally the sidecar's outbound listener
    /// (e.g. http://127.0.0.1:15001). HTTP_PROXY is deliberately not read.
    #[arg(long)]
    pub proxy: Option<Url>,
    /// Total time allowed for one call to users, in milliseconds.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..))]
    pub users_timeout_ms: u64,
    /// The two-phase-commit coordinator (`trellis server`) that places each order as one
    /// transaction across orders and inventory.
    #[arg(long, default_value = "http://127.0.0.1:8500")]
    pub coordinator: Url,
    /// Access token for the coordinator, sent as X-Consul-Token: under ACL default deny,
    /// submitting a transaction needs `operator = "write"` [default: $TRELLIS_HTTP_TOKEN, else
    /// none]
    #[arg(
        long,
        env = "TRELLIS_HTTP_TOKEN",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    pub token: Option<String>,
}

impl OrdersArgs {
    /// These arguments as a command line (without the subcommand name) that parses back into
    /// an equal value.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            format!("--listen={}", self.listen),
            format!("--db={}", self.db.display()),
            format!("--instance={}", self.instance),
            format!("--users-url={}", self.users_url),
            format!("--users-timeout-ms={}", self.users_timeout_ms),
            format!("--coordinator={}", self.coordinator),
        ];
        if let Some(proxy) = &self.proxy {
            args.push(format!("--proxy={proxy}"));
        }
        if let Some(token) = &self.token {
            args.push(format!("--token={token}"));
        }
        args.extend(self.tracing.to_args());
        args
    }
}

/// What the orders handlers share: the database (read through its own connection, written only
/// by the participant), the users and coordinator clients, and this instance's name.
#[derive(Clone)]
pub struct OrdersState {
    store: OrdersStore,
    participant: SqliteParticipant<PlaceOrder>,
    users: UsersClient,
    coordinator: CoordinatorClient,
    instance: HeaderValue,
}

impl OrdersState {
    /// Validates the arguments, then opens (creating and seeding if needed) the database.
    pub async fn open(args: &OrdersArgs) -> Result<Self, Error> {
        let instance = api::instance_header(&args.instance)?;
        let timeout = Duration::from_millis(args.users_timeout_ms.max(1));
        let users = UsersClient::new(&args.users_url, args.proxy.as_ref(), timeout)?;
        let coordinator = CoordinatorClient::new(&args.coordinator, args.token.as_deref())?;
        let store = OrdersStore::open(&args.db).await?;
        let participant = crate::db::participant(&args.db, PlaceOrder).await?;
        Ok(Self {
            store,
            participant,
            users,
            coordinator,
            instance,
        })
    }
}

/// The orders service's routes, for serving or for driving in tests.
pub fn orders_router(state: OrdersState) -> Router {
    let participant = trellis_participant::router(state.participant.clone());
    let instance = state.instance.clone();
    let routes = Router::new()
        .route("/orders", get(list).post(create))
        .route("/orders/{id}", get(fetch))
        .route("/health", get(health))
        .with_state(state)
        .nest(ORDER_PATH, participant);
    api::service_router(routes, instance, ())
}

/// Opens the database and binds the listener; nothing is served yet.
pub async fn orders_server(args: &OrdersArgs) -> Result<Server, Error> {
    let state = OrdersState::open(args).await?;
    Server::bind(args.listen, orders_router(state)).await
}

/// Runs one orders instance until `shutdown` resolves, printing `listening on ADDR` once bound.
pub async fn run_orders<F>(args: OrdersArgs, shutdown: F) -> Result<(), Error>
where
    F: Future<Output = ()> + Send + 'static,
{
    orders_server(&args)
        .await?
        .announce_and_serve("orders", shutdown)
        .await
}

async fn list(
    State(state): State<OrdersState>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Vec<Order>>, ApiError> {
    let Query(query) = query.map_err(|_| ApiError::bad_request("invalid query string"))?;
    let user_id = match query.get("user_id") {
        None => None,
        Some(raw) => Some(
            api::positive_id(raw)
                .ok_or_else(|| ApiError::bad_request("user_id must be a positive integer"))?,
        ),
    };
    let status = match query.get("status") {
        None => Status::Placed,
        Some(raw) => Status::parse(raw)
            .ok_or_else(|| ApiError::bad_request("status must be placed or pending"))?,
    };
    Ok(Json(state.store.list(user_id, status).await?))
}

async fn fetch(
    State(state): State<OrdersState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Order>, ApiError> {
    let id = api::path_id(path, "order")?;
    match state.store.get(id).await? {
        Some(order) => Ok(Json(order)),
        None => Err(ApiError::not_found(format!("order {id} not found"))),
    }
}

async fn create(
    State(state): State<OrdersState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let new = parse_new_order(&headers, body)?;
    // Validation first, so a bad request never costs a call to users.
    match state.users.exists(new.user_id, &headers).await {
        Ok(true) => {}
        Ok(false) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("user {} does not exist", new.user_id),
            ));
        }
        Err(Unavailable(reason)) => {
            return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, reason));
        }
    }
    let gid = new_gid();
    let outcome = state.coordinator.place(&gid, &new, &headers).await;
    let mut response = answer(&state, &gid, outcome)
        .await
        .unwrap_or_else(IntoResponse::into_response);
    if let Ok(value) = HeaderValue::from_str(&gid) {
        response.headers_mut().insert(TXN_GID, value);
    }
    Ok(response)
}

/// The answer to `POST /orders` once the transaction `gid` has (or has not) an outcome.
async fn answer(
    state: &OrdersState,
    gid: &str,
    outcome: Result<Outcome, NoOutcome>,
) -> Result<Response, ApiError> {
    let by_gid = |gid: &str| state.store.by_gid(gid.to_owned());
    Ok(match outcome {
        Ok(Outcome::Committed) => match by_gid(gid).await? {
            Some(order) => {
                tracing::info!(id = order.id, user_id = order.user_id, %gid, "order placed");
                let location = [(LOCATION, format!("/orders/{}", order.id))];
                (StatusCode::CREATED, location, Json(order)).into_response()
            }
            None => {
                tracing::error!(%gid, "the transaction committed but its order is missing");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
            }
        },
        Ok(Outcome::Committing) => {
            let order = by_gid(gid).await?;
            tracing::info!(%gid, "order decided; a participant has not committed yet");
            accepted(gid, "committing", order)
        }
        Ok(Outcome::Undecided(txn_state)) => {
            let order = by_gid(gid).await?;
            tracing::warn!(%gid, state = %txn_state, "the coordinator answered before deciding");
            accepted(gid, &txn_state, order)
        }
        Ok(Outcome::Aborted(reason)) => {
            tracing::info!(%gid, %reason, "order not placed: its transaction aborted");
            ApiError::new(StatusCode::CONFLICT, reason).into_response()
        }
        Err(NoOutcome(status, reason)) => ApiError::new(status, reason).into_response(),
    })
}

/// 202: the transaction is decided to commit (or not decided yet) and the order will be placed
/// once every participant has it: `{"gid": ..., "state": ..., "order": {...} | null}`.
fn accepted(gid: &str, state: &str, order: Option<Order>) -> Response {
    let location = order
        .as_ref()
        .map(|order| [(LOCATION, format!("/orders/{}", order.id))]);
    let body = Json(json!({ "gid": gid, "state": state, "order": order }));
    match location {
        Some(location) => (StatusCode::ACCEPTED, location, body).into_response(),
        None => (StatusCode::ACCEPTED, body).into_response(),
    }
}

/// A new transaction ID: `order-` and 128 random bits in hex.
fn new_gid() -> String {
    format!("order-{:032x}", rand::random::<u128>())
}

fn parse_new_order(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<NewOrder, ApiError> {
    let fields = api::json_object(headers, body)?;
    let user_id = fields.integer("user_id")?;
    if user_id < 1 {
        return Err(ApiError::bad_request("user_id must be a positive integer"));
    }
    let product = api::text("product", fields.string("product")?, MAX_PRODUCT_CHARS)?;
    let quantity = fields.integer("quantity")?;
    if !QUANTITY.contains(&quantity) {
        return Err(ApiError::bad_request(format!(
            "quantity must be between {} and {}",
            QUANTITY.start(),
            QUANTITY.end()
        )));
    }
    Ok(NewOrder {
        user_id,
        product,
        quantity,
    })
}

async fn health(State(state): State<OrdersState>) -> Response {
    api::health(state.store.db()).await
}
