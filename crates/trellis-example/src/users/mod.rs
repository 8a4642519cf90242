//! The users service: list, fetch and create users.

mod store;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::header::LOCATION;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::api::{self, ApiError};
use crate::{Error, Server, User};
use store::UsersStore;

/// Longest accepted user name, in characters.
const MAX_NAME_CHARS: usize = 100;

/// Command-line arguments of one users instance.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct UsersArgs {
    /// Address to listen on, HOST:PORT (a host name is resolved at start).
    #[arg(long, value_parser = crate::server::listen_addr, default_value = "127.0.0.1:8081")]
    pub listen: SocketAddr,
    /// SQLite database file, created if missing; all instances of the service share it.
    #[arg(long)]
    pub db: PathBuf,
    /// Instance name, returned in `x-served-by` on every response.
    #[arg(long, default_value = "users-1")]
    pub instance: String,
    /// Where this instance's spans go.
    #[command(flatten)]
    pub tracing: crate::TracingArgs,
}

impl UsersArgs {
    /// These arguments as a command line (without the subcommand name) that parses back into
    /// an equal value.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            format!("--listen={}", self.listen),
            format!("--db={}", self.db.display()),
            format!("--instance={}", self.instance),
        ];
        args.extend(self.tracing.to_args());
        args
    }
}

/// What the users handlers share: the database and this instance's name.
#[derive(Clone)]
pub struct UsersState {
    store: UsersStore,
    instance: HeaderValue,
}

impl UsersState {
    /// Validates the instance name, then opens (creating and seeding if needed) the database.
    pub async fn open(args: &UsersArgs) -> Result<Self, Error> {
        let instance = api::instance_header(&args.instance)?;
        let store = UsersStore::open(&args.db).await?;
        Ok(Self { store, instance })
    }
}

/// The users service's routes, for serving or for driving in tests.
pub fn users_router(state: UsersState) -> Router {
    let routes = Router::new()
        .route("/users", get(list).post(create))
        .route("/users/{id}", get(fetch))
        .route("/health", get(health));
    api::service_router(routes, state.instance.clone(), state)
}

/// Opens the database and binds the listener; nothing is served yet.
pub async fn users_server(args: &UsersArgs) -> Result<Server, Error> {
    let state = UsersState::open(args).await?;
    Server::bind(args.listen, users_router(state)).await
}

/// Runs one users instance until `shutdown` resolves, printing `listening on ADDR` once bound.
pub async fn run_users<F>(args: UsersArgs, shutdown: F) -> Result<(), Error>
where
    F: Future<Output = ()> + Send + 'static,
{
    users_server(&args)
        .await?
        .announce_and_serve("users", shutdown)
        .await
}

async fn list(State(state): State<UsersState>) -> Result<Json<Vec<User>>, ApiError> {
    Ok(Json(state.store.list().await?))
}

async fn fetch(
    State(state): State<UsersState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<User>, ApiError> {
    let id = api::path_id(path, "user")?;
    match state.store.get(id).await? {
        Some(user) => Ok(Json(user)),
        None => Err(ApiError::not_found(format!("user {id} not found"))),
    }
}

async fn create(
    State(state): State<UsersState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let fields = api::json_object(&headers, body)?;
    let name = api::text("name", fields.string("name")?, MAX_NAME_CHARS)?;
    let user = state.store.create(name).await?;
    tracing::info!(id = user.id, "user created");
    let location = [(LOCATION, format!("/users/{}", user.id))];
    Ok((StatusCode::CREATED, location, Json(user)).into_response())
}

async fn health(State(state): State<UsersState>) -> Response {
    api::health(state.store.db()).await
}
