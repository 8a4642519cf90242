//! Consul's ACL API: `PUT /v1/acl/bootstrap`, tokens (`/v1/acl/token`, `/v1/acl/token/self`,
//! `/v1/acl/tokens`) and policies (`/v1/acl/policy`, `/v1/acl/policy/name/:name`,
//! `/v1/acl/policies`), in Consul's JSON shapes. Reads need `acl:read`, writes `acl:write`
//! (the management token has both); bootstrap needs nothing, once.
//!
//! Secrets are stored hashed, so a token's `SecretID` is shown when it is created (and by
//! bootstrap) and `<hidden>` afterwards; Consul shows it again to `acl:write` holders.

use super::authz::Authz;
use super::error::ApiError;
use super::respond::{json_response, to_json_bytes};
use crate::acl::AclWriteError;
use crate::ids::random_uuid;
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};
use std::time::{Duration, UNIX_EPOCH};
use trellis_acl::{AclError, Need, Policy, PolicyRef, PolicyWrite, Resource, Token, TokenWrite};

const HIDDEN: &str = "<hidden>";

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn acl_error(error: AclWriteError) -> ApiError {
    match error {
        AclWriteError::Refused(AclError::NotFound(_)) => {
            ApiError::new(StatusCode::FORBIDDEN, "ACL not found")
        }
        AclWriteError::Refused(AclError::AlreadyBootstrapped(index)) => ApiError::new(
            StatusCode::FORBIDDEN,
            format!("Permission denied: ACL bootstrap no longer allowed (reset index: {index})"),
        ),
        AclWriteError::Refused(AclError::Invalid(m) | AclError::Parse(m)) => {
            ApiError::bad_request(m)
        }
        AclWriteError::Storage(error) => {
            tracing::error!(%error, "ACL write failed");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "storage failure; the ACL change was not applied",
            )
        }
    }
}

/// Runs an ACL write (it fsyncs) off the async workers.
async fn write<T: Send + 'static>(
    state: &AppState,
    change: impl FnOnce(&mut trellis_acl::AclState) -> Result<T, AclError> + Send + 'static,
) -> Result<T, ApiError> {
    let acl = state.acl_handle();
    tokio::task::spawn_blocking(move || acl.write(change))
        .await
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "ACL write failed"))?
        .map_err(acl_error)
}

fn token_json(token: &Token, secret: Option<&str>) -> Value {
    json!({
        "AccessorID": token.accessor_id,
        "SecretID": secret.unwrap_or(HIDDEN),
        "Description": token.description,
        "Policies": token.policies.iter().map(|p| json!({"ID": p.id, "Name": p.name})).collect::<Vec<_>>(),
        "Local": token.local,
        "CreateTime": super::clock::rfc3339(UNIX_EPOCH + Duration::from_millis(token.create_time_ms)),
        "CreateIndex": token.create_index,
        "ModifyIndex": token.modify_index,
    })
}

fn policy_json(policy: &Policy, with_rules: bool) -> Value {
    let mut value = json!({
        "ID": policy.id,
        "Name": policy.name,
        "Description": policy.description,
        "Datacenters": policy.datacenters,
        "CreateIndex": policy.create_index,
        "ModifyIndex": policy.modify_index,
    });
    if with_rules {
        value["Rules"] = json!(policy.rules);
    }
    value
}

fn answer(state: &AppState, body: &Value) -> Response {
    json_response(state.acl().state().index(), to_json_bytes(body))
}

/// `PUT /v1/acl/bootstrap`: the first management token, once.
pub async fn bootstrap(State(state): State<AppState>) -> Result<Response, ApiError> {
    let (accessor, secret) = (random_uuid(), random_uuid());
    let secret_out = secret.clone();
    let token = write(&state, move |acl| {
        acl.bootstrap(&accessor, &secret, now_ms())
    })
    .await?;
    Ok(answer(&state, &token_json(&token, Some(&secret_out))))
}

/// A token as Consul's API takes it (PascalCase; what Trellis does not support is refused).
#[derive(Deserialize, Default)]
#[serde(default)]
struct TokenBody {
    #[serde(rename = "AccessorID", alias = "accessor_id")]
    accessor_id: Option<String>,
    #[serde(rename = "SecretID", alias = "secret_id")]
    secret_id: Option<String>,
    #[serde(rename = "Description", alias = "description")]
    description: String,
    #[serde(rename = "Policies", alias = "policies")]
    policies: Vec<LinkBody>,
    #[serde(rename = "Local", alias = "local")]
    local: bool,
    #[serde(rename = "Roles", alias = "roles")]
    roles: Vec<Value>,
    #[serde(rename = "ServiceIdentities", alias = "service_identities")]
    service_identities: Vec<Value>,
    #[serde(rename = "NodeIdentities", alias = "node_identities")]
    node_identities: Vec<Value>,
    #[serde(rename = "ExpirationTTL", alias = "expiration_ttl")]
    expiration_ttl: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct LinkBody {
    #[serde(rename = "ID", alias = "id")]
    id: Option<String>,
    #[serde(rename = "Name", alias = "name")]
    name: Option<String>,
}

fn parse<T: serde::de::DeserializeOwned + Default>(body: &[u8], what: &str) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("Failed to decode {what}: {e}")))
}

fn token_write(body: TokenBody, accessor_id: String) -> Result<TokenWrite, ApiError> {
    for (given, what) in [
        (!body.roles.is_empty(), "Roles"),
        (!body.service_identities.is_empty(), "ServiceIdentities"),
        (!body.node_identities.is_empty(), "NodeIdentities"),
        (body.expiration_ttl.is_some(), "ExpirationTTL"),
    ] {
        if given {
            return Err(ApiError::bad_request(format!(
                "{what} are not supported by Trellis: link policies to the token"
            )));
        }
    }
    let policies = body
        .policies
        .into_iter()
        .map(|link| match (link.id, link.name) {
            (Some(id), _) if !id.is_empty() => Ok(PolicyRef::Id(id)),
            (_, Some(name)) if !name.is_empty() => Ok(PolicyRef::Name(name)),
            _ => Err(ApiError::bad_request("a policy link needs an ID or a Name")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(TokenWrite {
        accessor_id,
        secret: body.secret_id,
        description: body.description,
        policies,
        local: body.local,
    })
}

/// `PUT /v1/acl/token`: creates a token; its secret is answered this once.
pub async fn create_token(
    State(state): State<AppState>,
    authz: Authz,
    body: Bytes,
) -> Result<Response, ApiError> {
    authz.require(Resource::Acl, "", Need::Write)?;
    let mut body: TokenBody = parse(&body, "token")?;
    let accessor = body
        .accessor_id
        .take()
        .filter(|a| !a.is_empty())
        .unwrap_or_else(random_uuid);
    let secret = body
        .secret_id
        .take()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(random_uuid);
    body.secret_id = Some(secret.clone());
    let request = token_write(body, accessor.clone())?;
    // Checked under the write lock: a create never turns into an update.
    let token = write(&state, move |acl| {
        if acl.token(&accessor).is_some() {
            return Err(AclError::Invalid(format!(
                "Invalid Token: AccessorID {accessor:?} is already in use"
            )));
        }
        acl.upsert_token(request, now_ms())
    })
    .await?;
    Ok(answer(&state, &token_json(&token, Some(&secret))))
}

/// `PUT /v1/acl/token/:accessor`: updates a token's description and policies.
pub async fn update_token(
    State(state): State<AppState>,
    authz: Authz,
    Path(accessor): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    authz.require(Resource::Acl, "", Need::Write)?;
    let body: TokenBody = parse(&body, "token")?;
    if body
        .accessor_id
        .as_deref()
        .is_some_and(|a| !a.is_empty() && a != accessor)
    {
        return Err(ApiError::bad_request(
            "Token Accessor ID in URL and payload do not match",
        ));
    }
    if body.secret_id.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::bad_request("Cannot change a token's SecretID"));
    }
    let request = token_write(body, accessor.clone())?;
    // Checked under the write lock: an update never recreates a token deleted meanwhile.
    let token = write(&state, move |acl| {
        if acl.token(&accessor).is_none() {
            return Err(AclError::NotFound(accessor));
        }
        acl.upsert_token(request, now_ms())
    })
    .await?;
    Ok(answer(&state, &token_json(&token, None)))
}

/// `GET /v1/acl/token/:accessor`.
pub async fn read_token(
    State(state): State<AppState>,
    authz: Authz,
    Path(accessor): Path<String>,
) -> Result<Response, ApiError> {
    authz.require(Resource::Acl, "", Need::Read)?;
    let acl = state.acl().state();
    let token = acl
        .token(&accessor)
        .ok_or_else(|| ApiError::new(StatusCode::FORBIDDEN, "ACL not found"))?;
    Ok(answer(&state, &token_json(token, None)))
}

/// `GET /v1/acl/token/self`: the token the request carries.
pub async fn token_self(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    let secret = super::authz::secret_of(&headers, uri.query()).filter(|s| !s.is_empty());
    let acl = state.acl().state();
    let token = match secret.as_deref() {
        Some(secret) => acl.token_by_secret(secret),
        None => acl.token(trellis_acl::ANONYMOUS_ACCESSOR_ID),
    }
    .ok_or_else(|| ApiError::new(StatusCode::FORBIDDEN, "ACL not found"))?;
    Ok(answer(&state, &token_json(token, secret.as_deref())))
}

/// `DELETE /v1/acl/token/:accessor` → `true`.
pub async fn delete_token(
    State(state): State<AppState>,
    authz: Authz,
    Path(accessor): Path<String>,
) -> Result<Response, ApiError> {
    authz.require(Resource::Acl, "", Need::Write)?;
    write(&state, move |acl| acl.delete_token(&accessor)).await?;
    Ok(answer(&state, &json!(true)))
}

/// `GET /v1/acl/tokens`.
pub async fn list_tokens(
    State(state): State<AppState>,
    authz: Authz,
) -> Result<Response, ApiError> {
    authz.require(Resource::Acl, "", Need::Read)?;
    let acl = state.acl().state();
    let tokens: Vec<Value> = acl.tokens().map(|t| token_json(t, None)).collect();
    Ok(answer(&state, &json!(tokens)))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PolicyBody {
    #[serde(rename = "ID", alias = "id")]
    id: Option<String>,
    #[serde(rename = "Name", alias = "name")]
    name: String,
    #[serde(rename = "Description", alias = "description")]
    description: String,
    #[serde(rename = "Rules", alias = "rules")]
    rules: String,
    #[serde(rename = "Datacenters", alias = "datacenters")]
    datacenters: Vec<String>,
}

fn policy_write(body: PolicyBody, id: String) -> PolicyWrite {
    PolicyWrite {
        id,
        name: body.name,
        description: body.description,
        rules: body.rules,
        datacenters: body.datacenters,
    }
}

/// `PUT /v1/acl/policy`: creates a policy.
pub async fn create_policy(
    State(state): State<AppState>,
    authz: Authz,
    body: Bytes,
) -> Result<Response, ApiError> {
    authz.require(Resource::Acl, "", Need::Write)?;
    let body: PolicyBody = parse(&body, "policy")?;
    if body.id.as_deref().is_some_and(|id| !id.is_empty()) {
        return Err(ApiError::bad_request(
            "Cannot specify an ID when creating a policy: PUT /v1/acl/policy/:id updates one",
        ));
    }
    // A fresh ID: the state refuses a name already taken.
    let request = policy_write(body, random_uuid());
    let policy = write(&state, move |acl| acl.upsert_policy(request)).await?;
    Ok(answer(&state, &policy_json(&policy, true)))
}

/// `PUT /v1/acl/policy/:id`: updates a policy.
pub async fn update_policy(
    State(state): State<AppState>,
    authz: Authz,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    authz.require(Resource::Acl, "", Need::Write)?;
    let body: PolicyBody = parse(&body, "policy")?;
    if body
        .id
        .as_deref()
        .is_some_and(|given| !given.is_empty() && given != id)
    {
        return Err(ApiError::bad_request(
            "Policy ID in URL and payload do not match",
        ));
    }
    let request = policy_write(body, id);
    let policy = write(&state, move |acl| {
        if acl.policy(&request.id).is_none() {
            return Err(AclError::NotFound(request.id.clone()));
        }
        acl.upsert_policy(request)
    })
    .await?;
    Ok(answer(&state, &policy_json(&policy, true)))
}

/// `GET /v1/acl/policy/:id`.
pub async fn read_policy(
    State(state): State<AppState>,
    authz: Authz,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    authz.require(Resource::Acl, "", Need::Read)?;
    let acl = state.acl().state();
    let policy = acl
        .policy(&id)
        .ok_or_else(|| ApiError::new(StatusCode::FORBIDDEN, "ACL not found"))?;
    Ok(answer(&state, &policy_json(policy, true)))
}

/// `GET /v1/acl/policy/name/:name`.
pub async fn read_policy_by_name(
    State(state): State<AppState>,
    authz: Authz,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    authz.require(Resource::Acl, "", Need::Read)?;
    let acl = state.acl().state();
    let policy = acl
        .policy_by_name(&name)
        .ok_or_else(|| ApiError::new(StatusCode::FORBIDDEN, "ACL not found"))?;
    Ok(answer(&state, &policy_json(policy, true)))
}

/// `DELETE /v1/acl/policy/:id` → `true`.
pub async fn delete_policy(
    State(state): State<AppState>,
    authz: Authz,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    authz.require(Resource::Acl, "", Need::Write)?;
    write(&state, move |acl| acl.delete_policy(&id)).await?;
    Ok(answer(&state, &json!(true)))
}

/// `GET /v1/acl/policies`: stubs, without the rules (as Consul lists them).
pub async fn list_policies(
    State(state): State<AppState>,
    authz: Authz,
) -> Result<Response, ApiError> {
    authz.require(Resource::Acl, "", Need::Read)?;
    let acl = state.acl().state();
    let policies: Vec<Value> = acl.policies().map(|p| policy_json(p, false)).collect();
    Ok(answer(&state, &json!(policies)))
}
