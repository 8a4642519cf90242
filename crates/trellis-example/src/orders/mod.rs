//! The orders service: list, filter, fetch and create orders; creating one checks with the
//! users service (through the sidecar) that the user exists.

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

use crate::api::{self, ApiError};
use crate::{Error, Order, Server};
use store::{NewOrder, OrdersStore};
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
        ];
        if let Some(proxy) = &self.proxy {
            args.push(format!("--proxy={proxy}"));
        }
        args
    }
}

/// What the orders handlers share: the database, the users client and this instance's name.
#[derive(Clone)]
pub struct OrdersState {
    store: OrdersStore,
    users: UsersClient,
    instance: HeaderValue,
}

impl OrdersState {
    /// Validates the arguments, then opens (creating and seeding if needed) the database.
    pub async fn open(args: &OrdersArgs) -> Result<Self, Error> {
        let instance = api::instance_header(&args.instance)?;
        let timeout = Duration::from_millis(args.users_timeout_ms.max(1));
        let users = UsersClient::new(&args.users_url, args.proxy.as_ref(), timeout)?;
        let store = OrdersStore::open(&args.db).await?;
        Ok(Self {
            store,
            users,
            instance,
        })
    }
}

/// The orders service's routes, for serving or for driving in tests.
pub fn orders_router(state: OrdersState) -> Router {
    let routes = Router::new()
        .route("/orders", get(list).post(create))
        .route("/orders/{id}", get(fetch))
        .route("/health", get(health));
    api::service_router(routes, state.instance.clone(), state)
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
    Ok(Json(state.store.list(user_id).await?))
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
    let order = state.store.create(new).await?;
    tracing::info!(id = order.id, user_id = order.user_id, "order created");
    let location = [(LOCATION, format!("/orders/{}", order.id))];
    Ok((StatusCode::CREATED, location, Json(order)).into_response())
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
