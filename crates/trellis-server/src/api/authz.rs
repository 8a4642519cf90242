//! Access control on every request: the caller's token (`X-Consul-Token`, `Authorization:
//! Bearer`, or `?token=`) is resolved to its authorizer, the permission the route needs is
//! checked before the handler runs (403 `Permission denied` as Consul answers), and the
//! authorizer is left in the request for handlers that filter lists by what the token may read.
//!
//! What a route needs comes from its path alone (the table in [`requirement`]); routes whose
//! permission depends on the body, or that list many resources, check in their handlers through
//! [`Authz`].

use super::error::ApiError;
use crate::acl::Grant;
use crate::state::AppState;
use axum::extract::{FromRequestParts, MatchedPath, RawPathParams, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use trellis_acl::{Authorizer, Need, Resource};

/// What the caller's token may do, for handlers that check or filter by it.
#[derive(Clone)]
pub struct Authz(pub Arc<Grant>);

impl Authz {
    /// `Ok` if the token may `need` on `resource` `name`, else Consul's 403.
    pub fn require(&self, resource: Resource, name: &str, need: Need) -> Result<(), ApiError> {
        if self.0.authorizer.allows(resource, name, need) {
            Ok(())
        } else {
            Err(denied(resource, name, need))
        }
    }

    /// Whether the token may read `name` of `resource` (list filtering).
    pub fn can_read(&self, resource: Resource, name: &str) -> bool {
        self.0.unrestricted || self.0.authorizer.allows(resource, name, Need::Read)
    }

    /// Whether no rule restricts the token (lists need no filtering).
    pub fn unrestricted(&self) -> bool {
        self.0.unrestricted
    }

    pub fn authorizer(&self) -> &Authorizer {
        &self.0.authorizer
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Authz {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        // Every API route runs behind `authorize`, which always leaves one.
        parts.extensions.get::<Authz>().cloned().ok_or_else(|| {
            ApiError::new(
                StatusCode::FORBIDDEN,
                "Permission denied: no token resolved",
            )
        })
    }
}

/// Consul's answer to a token that lacks a permission.
pub fn denied(resource: Resource, name: &str, need: Need) -> ApiError {
    let need = match need {
        Need::Read => "read",
        Need::List => "list",
        Need::Write => "write",
    };
    ApiError::new(
        StatusCode::FORBIDDEN,
        format!("Permission denied: token lacks permission '{resource}:{need}' on {name:?}"),
    )
}

/// The secret a request carries: `X-Consul-Token`, else `Authorization: Bearer`, else
/// `?token=` (as Consul reads them).
pub fn secret_of(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    if let Some(token) = headers.get("x-consul-token").and_then(|v| v.to_str().ok()) {
        return Some(token.trim().to_owned());
    }
    if let Some(bearer) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return Some(bearer.trim().to_owned());
    }
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(name, _)| *name == "token")
        .map(|(_, value)| {
            percent_encoding::percent_decode_str(value)
                .decode_utf8_lossy()
                .into_owned()
        })
}

/// Resolves the token, checks the route's permission, and leaves the authorizer for the handler.
pub async fn authorize(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let secret = secret_of(request.headers(), request.uri().query());
    let grant = match state.acl().authorize(secret.as_deref()) {
        Ok(grant) => grant,
        Err(_) => return ApiError::new(StatusCode::FORBIDDEN, "ACL not found").into_response(),
    };
    let authz = Authz(grant);
    let (mut parts, body) = request.into_parts();
    let params = RawPathParams::from_request_parts(&mut parts, &())
        .await
        .ok();
    let route = parts
        .extensions
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    request = Request::from_parts(parts, body);
    if let Some(route) = route {
        let param = |name: &str| {
            params
                .as_ref()
                .and_then(|ps| {
                    ps.iter()
                        .find(|(n, _)| *n == name)
                        .map(|(_, v)| v.to_owned())
                })
                .unwrap_or_default()
        };
        for (resource, name, need) in requirement(&state, &route, request.method(), &param) {
            if let Err(error) = authz.require(resource, &name, need) {
                return error.into_response();
            }
        }
    }
    request.extensions_mut().insert(authz);
    next.run(request).await
}

/// What a route needs, from its path: `(resource, name, need)` to check before the handler.
/// Routes not listed need nothing here: they are open (status, the dashboard's files), or their
/// handler checks what the body names or filters what it lists.
fn requirement(
    state: &AppState,
    route: &str,
    method: &Method,
    param: &dyn Fn(&str) -> String,
) -> Vec<(Resource, String, Need)> {
    let write = !matches!(*method, Method::GET | Method::HEAD);
    let need = if write { Need::Write } else { Need::Read };
    let node = || state.node().info().node.clone();
    // The service an instance ID belongs to (unknown IDs pass: the handler answers 404).
    let service_of_instance = |id: &str| -> Option<String> {
        let catalog = state.catalog().ok()?;
        catalog.instance(id).map(|i| i.registration.name.clone())
    };
    // A check's owner: its service, or this node for a node check (unknown IDs pass).
    let owner_of_check = |id: &str| -> Vec<(Resource, String, Need)> {
        let Ok(catalog) = state.catalog() else {
            return Vec::new();
        };
        match catalog.check(id).map(|c| c.service_name.clone()) {
            Some(Some(service)) => vec![(Resource::Service, service, Need::Write)],
            Some(None) => vec![(Resource::Node, node(), Need::Write)],
            None => Vec::new(),
        }
    };
    let one = |resource, name: String, need| vec![(resource, name, need)];
    match route {
        "/v1/agent/self" | "/v1/agent/members" | "/v1/agent/host" | "/v1/agent/metrics"
        | "/v1/agent/monitor" | "/metrics" => one(Resource::Agent, node(), Need::Read),
        "/v1/agent/reload" | "/v1/agent/leave" => one(Resource::Agent, node(), Need::Write),
        "/v1/agent/maintenance" => one(Resource::Node, node(), Need::Write),
        "/v1/agent/service/deregister/{id}"
        | "/v1/agent/service/maintenance/{id}"
        | "/v1/agent/service/{id}"
        | "/v1/agent/health/service/id/{id}" => match service_of_instance(&param("id")) {
            Some(service) => one(Resource::Service, service, need),
            None => Vec::new(),
        },
        "/v1/agent/check/pass/{id}"
        | "/v1/agent/check/warn/{id}"
        | "/v1/agent/check/fail/{id}"
        | "/v1/agent/check/update/{id}"
        | "/v1/agent/check/deregister/{id}" => owner_of_check(&param("id")),
        "/v1/agent/health/service/name/{name}"
        | "/v1/catalog/service/{name}"
        | "/v1/health/service/{name}"
        | "/v1/health/checks/{name}"
        | "/v1/trellis/watch/{name}" => one(Resource::Service, param("name"), Need::Read),
        "/v1/catalog/node/{node}"
        | "/v1/catalog/node-services/{node}"
        | "/v1/health/node/{node}"
        | "/v1/coordinate/node/{node}" => one(Resource::Node, param("node"), Need::Read),
        "/v1/coordinate/update" => one(Resource::Node, node(), Need::Write),
        "/v1/event/fire/{name}" => one(Resource::Event, param("name"), Need::Write),
        // A service's certificate is its identity: only who may write the service gets one.
        "/v1/agent/connect/ca/leaf/{service}" => {
            one(Resource::Service, param("service"), Need::Write)
        }
        // Every session belongs to this node.
        "/v1/session/create" | "/v1/session/destroy/{id}" | "/v1/session/renew/{id}" => {
            one(Resource::Session, node(), Need::Write)
        }
        "/v1/session/info/{id}" | "/v1/session/list" | "/v1/session/node/{node}" => {
            one(Resource::Session, node(), Need::Read)
        }
        "/v1/catalog/nodes" => one(Resource::Node, node(), Need::Read),
        "/v1/operator/raft/configuration" | "/v1/operator/autopilot/health" => {
            one(Resource::Operator, String::new(), Need::Read)
        }
        // Reading the CA's settings is an operator's; changing them rotates the mesh's root.
        "/v1/connect/ca/configuration" => one(Resource::Operator, String::new(), need),
        "/v1/trellis/txn"
        | "/v1/trellis/txn/{gid}"
        | "/v1/trellis/txn/{gid}/branches"
        | "/v1/trellis/txn/{gid}/commit"
        | "/v1/trellis/txn/{gid}/abort" => one(Resource::Operator, String::new(), need),
        // Traces cross services: reading them is an operator's right.
        "/api/services"
        | "/api/services/{service}/operations"
        | "/api/operations"
        | "/api/traces"
        | "/api/traces/{trace_id}"
        | "/api/dependencies"
        | "/v1/trellis/traces/dependencies"
        | "/v1/trellis/traces/services" => one(Resource::Operator, String::new(), Need::Read),
        // Config entries: stricter than Consul (which lets service:write write a
        // service-defaults entry): operator rights for every kind.
        "/v1/config" => one(Resource::Operator, String::new(), Need::Write),
        "/v1/config/"
        | "/v1/config/{kind}"
        | "/v1/config/{kind}/"
        | "/v1/config/{kind}/{*name}" => one(Resource::Operator, String::new(), need),
        // Intentions name their services in the query or the body, a read is allowed by
        // either end, and lists are filtered: `api/intentions.rs` checks `intentions:read|write`
        // (match, exact, by ID), `service:read` (check) and `service:write` (authorize).
        "/v1/connect/intentions"
        | "/v1/connect/intentions/exact"
        | "/v1/connect/intentions/match"
        | "/v1/connect/intentions/check"
        | "/v1/connect/intentions/{id}"
        | "/v1/agent/connect/authorize" => Vec::new(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn the_secret_comes_from_the_header_then_bearer_then_query() {
        let mut headers = HeaderMap::new();
        assert_eq!(
            secret_of(&headers, Some("a=1&token=q%2Fx")),
            Some("q/x".into())
        );
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer b"));
        assert_eq!(secret_of(&headers, Some("token=q")), Some("b".into()));
        headers.insert("x-consul-token", HeaderValue::from_static("h"));
        assert_eq!(secret_of(&headers, Some("token=q")), Some("h".into()));
        assert_eq!(secret_of(&HeaderMap::new(), None), None);
    }
}
