//! `trellis gateway`: the edge proxy, routing by longest path prefix to registry services.

use crate::admin::Admin;
use crate::body::Body;
use crate::client::UpstreamClient;
use crate::discovery::Discovery;
use crate::flags::PolicyArgs;
use crate::metrics::Metrics;
use crate::proxy::{Mode, Proxy};
use crate::runtime::{announce, block_on, signal};
use crate::server::{bind, local_addr, serve, shutdown_pair};
use crate::{Error, Result};
use hyper::Request;
use hyper::http::uri::PathAndQuery;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug, Clone, clap::Args)]
pub struct GatewayArgs {
    /// Registry HTTP address
    #[arg(
        long,
        env = "TRELLIS_HTTP_ADDR",
        default_value = "http://127.0.0.1:8500"
    )]
    pub registry: String,
    /// Address to accept client requests on
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub listen: String,
    /// Admin listener (/metrics, /ready, /live, /endpoints)
    #[arg(long, default_value = "127.0.0.1:15091")]
    pub admin: String,
    /// Route PREFIX=SERVICE (repeatable; the longest matching prefix wins)
    #[arg(long = "route", value_name = "PREFIX=SERVICE")]
    pub routes: Vec<String>,
    /// Forward the path unchanged instead of removing the matched prefix
    #[arg(long)]
    pub keep_prefix: bool,
    /// Runtime worker threads [default: number of cores]
    #[arg(long)]
    pub workers: Option<usize>,
    /// TOML config file ([defaults], [services.<name>], [routes])
    #[arg(long)]
    pub config: Option<String>,
    #[command(flatten)]
    pub policy: PolicyArgs,
}

/// The route table.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    /// Longest prefix first.
    routes: Vec<(String, String)>,
    keep_prefix: bool,
}

impl Routes {
    /// Builds the table from `PREFIX=SERVICE` pairs.
    pub fn new<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
        keep_prefix: bool,
    ) -> Result<Self> {
        let mut routes = Vec::new();
        for (prefix, service) in pairs {
            if !prefix.starts_with('/') {
                return Err(Error::config(format!(
                    "route prefix {prefix:?} must start with '/'"
                )));
            }
            trellis_types::registration::validate_service_name(service)
                .map_err(|e| Error::config(format!("route {prefix}: {e}")))?;
            let prefix = match prefix.trim_end_matches('/') {
                "" => "/".to_owned(),
                trimmed => trimmed.to_owned(),
            };
            if routes.iter().any(|(p, _)| *p == prefix) {
                return Err(Error::config(format!(
                    "route prefix {prefix:?} given twice"
                )));
            }
            routes.push((prefix, service.to_owned()));
        }
        routes.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        Ok(Self {
            routes,
            keep_prefix,
        })
    }

    /// Parses `--route` values.
    pub fn parse(specs: &[String], keep_prefix: bool) -> Result<Self> {
        let pairs = specs
            .iter()
            .map(|spec| {
                spec.split_once('=')
                    .ok_or_else(|| Error::config(format!("route {spec:?} is not PREFIX=SERVICE")))
            })
            .collect::<Result<Vec<_>>>()?;
        Self::new(pairs, keep_prefix)
    }

    /// The service for `path` and the path to send it, or `None` when no route matches.
    /// Prefixes match whole segments: `/orders` matches `/orders` and `/orders/1`, not
    /// `/ordersx`.
    pub fn resolve(&self, path: &PathAndQuery) -> Option<(&str, PathAndQuery)> {
        let p = path.path();
        let (prefix, service) = self.routes.iter().find(|(prefix, _)| {
            prefix == "/"
                || p == prefix
                || (p.starts_with(prefix.as_str()) && p.as_bytes().get(prefix.len()) == Some(&b'/'))
        })?;
        if self.keep_prefix || prefix == "/" {
            return Some((service, path.clone()));
        }
        let rest = &p[prefix.len()..];
        let rest = if rest.is_empty() { "/" } else { rest };
        let rewritten = match path.query() {
            Some(q) => format!("{rest}?{q}"),
            None => rest.to_owned(),
        };
        Some((service, rewritten.parse().ok()?))
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

/// Runs the gateway until SIGINT/SIGTERM.
pub fn run_gateway(args: GatewayArgs) -> Result<()> {
    // Everything is validated before a port is bound.
    let (file, policies) = args.policy.load(args.config.as_deref())?;
    let mut specs: Vec<String> = file
        .routes
        .iter()
        .map(|(p, s)| format!("{p}={s}"))
        .collect();
    specs.extend(args.routes.iter().cloned());
    let routes = Routes::parse(&specs, args.keep_prefix)?;
    if routes.is_empty() {
        return Err(Error::config("no routes: give --route PREFIX=SERVICE"));
    }
    let metrics = Metrics::new();
    let discovery = Discovery::new(&args.registry, policies, metrics.clone())?;
    block_on(args.workers, async move {
        let listener = bind(&args.listen).await?;
        let admin_listener = bind(&args.admin).await?;
        let discovery = Arc::new(discovery);
        let client = UpstreamClient::new(args.policy.pool());
        let proxy = Arc::new(Proxy::new(
            Mode::Gateway(routes),
            discovery.clone(),
            client,
            metrics.clone(),
        ));
        let ready = Arc::new(AtomicBool::new(true));
        let admin = Arc::new(Admin {
            metrics,
            discovery,
            inbound: None,
            ready: ready.clone(),
        });
        let (trigger, shutdown) = shutdown_pair();
        announce("gateway", local_addr(&listener)?);
        announce("admin", local_addr(&admin_listener)?);
        let drain = args.policy.drain_timeout;
        let main = tokio::spawn(serve(
            listener,
            move |request: Request<Body>| {
                let proxy = proxy.clone();
                async move { proxy.handle(request).await }
            },
            shutdown.clone(),
            drain,
        ));
        let admin_task = tokio::spawn(serve(
            admin_listener,
            move |request: Request<Body>| {
                let admin = admin.clone();
                async move { admin.handle(&request) }
            },
            shutdown,
            drain,
        ));
        signal().await;
        tracing::info!("shutting down: draining in-flight requests");
        ready.store(false, Ordering::Relaxed);
        trigger.trigger();
        let _ = main.await;
        let _ = admin_task.await;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pq(s: &str) -> PathAndQuery {
        s.parse().unwrap()
    }

    #[test]
    fn longest_prefix_wins_and_is_stripped() {
        let routes = Routes::parse(
            &[
                "/api=web".into(),
                "/api/orders/=orders".into(),
                "/users=users".into(),
            ],
            false,
        )
        .unwrap();
        let (svc, path) = routes.resolve(&pq("/api/orders/7?x=1")).unwrap();
        assert_eq!((svc, path.as_str()), ("orders", "/7?x=1"));
        let (svc, path) = routes.resolve(&pq("/api/orders")).unwrap();
        assert_eq!((svc, path.as_str()), ("orders", "/"));
        let (svc, path) = routes.resolve(&pq("/api/other")).unwrap();
        assert_eq!((svc, path.as_str()), ("web", "/other"));
        assert!(
            routes.resolve(&pq("/usersx")).is_none(),
            "whole segments only"
        );
        assert!(routes.resolve(&pq("/")).is_none());
    }

    #[test]
    fn keep_prefix_and_root_route() {
        let routes = Routes::parse(&["/=web".into(), "/orders=orders".into()], true).unwrap();
        let (svc, path) = routes.resolve(&pq("/orders/1")).unwrap();
        assert_eq!((svc, path.as_str()), ("orders", "/orders/1"));
        let (svc, path) = routes.resolve(&pq("/anything")).unwrap();
        assert_eq!((svc, path.as_str()), ("web", "/anything"));
    }

    #[test]
    fn bad_routes_are_rejected() {
        assert!(Routes::parse(&["orders=orders".into()], false).is_err());
        assert!(Routes::parse(&["/o".into()], false).is_err());
        assert!(Routes::parse(&["/o=bad name".into()], false).is_err());
        assert!(Routes::parse(&["/o=a".into(), "/o/=b".into()], false).is_err());
    }
}
