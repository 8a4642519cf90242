//! The gateway's route table: path prefixes to service names, longest prefix first.

use crate::{Error, Result};
use hyper::http::uri::PathAndQuery;
use std::sync::Arc;

/// The route table.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    /// Longest prefix first.
    routes: Vec<(Arc<str>, String)>,
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
            if routes
                .iter()
                .any(|(p, _): &(Arc<str>, String)| **p == *prefix)
            {
                return Err(Error::config(format!(
                    "route prefix {prefix:?} given twice"
                )));
            }
            routes.push((Arc::from(prefix), service.to_owned()));
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
        self.resolve_route(path)
            .map(|(_, service, path)| (service, path))
    }

    /// Like [`Routes::resolve`], with the prefix that matched first.
    pub fn resolve_route(&self, path: &PathAndQuery) -> Option<(&Arc<str>, &str, PathAndQuery)> {
        let p = path.path();
        let (prefix, service) = self.routes.iter().find(|(prefix, _)| {
            &**prefix == "/"
                || p == &**prefix
                || (p.starts_with(&**prefix) && p.as_bytes().get(prefix.len()) == Some(&b'/'))
        })?;
        if self.keep_prefix || &**prefix == "/" {
            return Some((prefix, service, path.clone()));
        }
        let rest = &p[prefix.len()..];
        let rest = if rest.is_empty() { "/" } else { rest };
        let rewritten = match path.query() {
            Some(q) => format!("{rest}?{q}"),
            None => rest.to_owned(),
        };
        Some((prefix, service, rewritten.parse().ok()?))
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
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
