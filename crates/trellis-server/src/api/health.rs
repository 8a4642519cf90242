//! `/v1/health/...` and `/v1/catalog/service(s)`: the discovery reads, served from the
//! published per-service views, blocking until the service changes. A `?filter=` is part of the
//! rendering's key, so readers and waiters with the same filter share one rendering too.

use super::authz::Authz;
use super::blocking::block_on;
use super::error::ApiError;
use super::params::QueryParams;
use super::respond::{json_response, to_json_bytes};
use crate::published::{
    CONSUL_SERVICE, Published, RenderKey, ServiceNodeFields, consul_service, filter_key,
    shows_consul_instance,
};
use crate::state::{AppState, ServicesRendering};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use trellis_acl::Resource;
use trellis_filter::{Filter, schema};
use trellis_types::registration::service_key;

/// The published view of `name`, after blocking if asked to.
async fn service_view(
    state: &AppState,
    name: &str,
    query: &QueryParams,
) -> Result<Arc<Published>, ApiError> {
    let blocking = query.blocking()?;
    // The first read of a service creates its slot; from then on every read and waiter shares
    // the slot's rendered views.
    let slot = state.slot(name)?;
    let rx = slot.tx.subscribe();
    block_on(state, rx, blocking, |p| p.index()).await
}

pub async fn health_service(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let query = QueryParams::new(q);
    let filter = query.filter(&schema::HEALTH_SERVICE)?;
    let key = RenderKey::Health {
        passing: query.flag("passing")?,
        tags: query.all("tag"),
        filter: filter_key(filter.as_ref()),
    };
    instances(state, name, query, key, filter).await
}

pub async fn catalog_service(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let query = QueryParams::new(q);
    let filter = query.filter(&schema::CATALOG_SERVICE)?;
    let key = RenderKey::Catalog {
        tags: query.all("tag"),
        filter: filter_key(filter.as_ref()),
    };
    instances(state, name, query, key, filter).await
}

/// The instances of a service rendered as `key` (which carries `filter`'s key), after blocking
/// if asked to. A filter does not change what wakes a waiter: any change of the service does,
/// as in Consul.
async fn instances(
    state: AppState,
    name: String,
    query: QueryParams,
    key: RenderKey,
    filter: Option<Filter>,
) -> Result<Response, ApiError> {
    query.check_dc(state.node())?;
    let meta_ok = query.node_meta_matches(state.node())? && query.local_peer();
    let published = service_view(&state, &name, &query).await?;
    let body = if meta_ok {
        published.render(key, filter.as_ref(), state.node())
    } else {
        Bytes::from_static(b"[]")
    };
    Ok(json_response(published.index(), body))
}

pub async fn health_checks(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let query = QueryParams::new(q);
    let filter = query.filter(&schema::HEALTH_CHECKS)?;
    query.check_dc(state.node())?;
    let published = service_view(&state, &name, &query).await?;
    let key = RenderKey::Checks {
        filter: filter_key(filter.as_ref()),
    };
    let body = if query.local_peer() {
        published.render(key, filter.as_ref(), state.node())
    } else {
        Bytes::from_static(b"[]")
    };
    Ok(json_response(published.index(), body))
}

/// `GET /v1/catalog/services`: names and tags, rendered once per services index. With a
/// filter, Consul filters the instances (`ServiceNode`s) and lists the names and tags of those
/// that match; that is rendered per request.
pub async fn catalog_services(
    State(state): State<AppState>,
    authz: Authz,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let query = QueryParams::new(q);
    let filter = query.filter(&schema::CATALOG_SERVICES)?;
    query.check_dc(state.node())?;
    let meta_ok = query.node_meta_matches(state.node())? && query.local_peer();
    let rx = state.services_changed();
    let index = block_on(&state, rx, query.blocking()?, |i| *i).await?;
    if !meta_ok {
        return Ok(json_response(index, Bytes::from_static(b"{}")));
    }
    // A filter: this request's own list, from the instances. Otherwise the rendering shared
    // by every reader, whole or, for a token that may not read everything, the services it
    // may read.
    if filter.is_some() {
        let catalog = state.catalog()?;
        let node = state.node().info();
        let consul = shows_consul_instance(&catalog).then(consul_service);
        let mut names: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        let listed = catalog.instances().map(|i| &i.registration);
        for service in consul.iter().chain(listed) {
            if authz.can_read(Resource::Service, &service.name)
                && filter
                    .as_ref()
                    .is_none_or(|f| f.matches(&ServiceNodeFields { node, service }))
            {
                names
                    .entry(&service.name)
                    .or_default()
                    .extend(service.tags.iter().map(String::as_str));
            }
        }
        return Ok(json_response(
            catalog.services_index(),
            to_json_bytes(&names),
        ));
    }
    let (index, rendering) = state.services_rendering(index, |catalog| {
        let mut names: BTreeMap<String, Vec<String>> = catalog
            .service_names()
            .into_iter()
            .map(|(name, tags)| (name, tags.into_iter().collect()))
            .collect();
        // This server's own `consul` service (see `published::shows_consul_instance`).
        if shows_consul_instance(catalog) && !names.keys().any(|n| service_key(n) == CONSUL_SERVICE)
        {
            names.insert(CONSUL_SERVICE.to_owned(), Vec::new());
        }
        ServicesRendering::new(names)
    })?;
    let body = if authz.unrestricted() {
        rendering.body
    } else {
        let mut memo = authz.0.services_list.lock();
        match &*memo {
            Some((memo_index, body)) if *memo_index == index => body.clone(),
            _ => {
                let body = rendering.only(|name| authz.can_read(Resource::Service, name));
                *memo = Some((index, body.clone()));
                body
            }
        }
    };
    Ok(json_response(index, body))
}
