//! Unit tests of the span store: ids, round trips, eviction, each query, and the size and
//! search-latency figures.

use std::sync::Arc;
use std::time::Instant;

use crate::model::{
    AttrValue, Event, ParseIdError, Resource, Span, SpanId, SpanKind, Status, StatusCode, TraceId,
};
use crate::query::{Dependency, Operation, Query, ServiceStats};
use crate::store::{Inserted, SpanStore};

const SEC: u64 = 1_000_000_000;
const MS: u64 = 1_000_000;
const T0: u64 = 1_750_000_000 * SEC;

fn tid(n: u64) -> TraceId {
    let mut b = [0u8; 16];
    b[0] = 0xab;
    b[8..].copy_from_slice(&n.to_be_bytes());
    TraceId(b)
}

fn sid(trace: u64, n: u64) -> SpanId {
    SpanId(((trace << 8) | n | (1 << 63)).to_be_bytes())
}

fn s(v: &str) -> Arc<str> {
    Arc::from(v)
}

fn resource(service: &str, instance: &str) -> Resource {
    Arc::from(vec![
        (s("service.name"), AttrValue::Str(s(service))),
        (s("service.instance.id"), AttrValue::Str(s(instance))),
    ])
}

#[allow(clippy::too_many_arguments)]
fn span(
    trace: u64,
    id: u64,
    parent: Option<u64>,
    service: &str,
    operation: &str,
    kind: SpanKind,
    start_ns: u64,
    duration_ns: u64,
) -> Span {
    Span {
        trace_id: tid(trace),
        span_id: sid(trace, id),
        parent_span_id: parent.map(|p| sid(trace, p)),
        service: s(service),
        operation: s(operation),
        kind,
        start_ns,
        duration_ns,
        status: Status::default(),
        attributes: Vec::new(),
        events: Vec::new(),
        resource: resource(service, "i-1"),
    }
}

/// A typical HTTP server span with 8 attributes.
fn http_span(trace: u64, id: u64, parent: Option<u64>, service: &str, start_ns: u64) -> Span {
    let mut sp = span(
        trace,
        id,
        parent,
        service,
        "GET /api/orders/{id}",
        SpanKind::Server,
        start_ns,
        12 * MS,
    );
    sp.attributes = vec![
        (s("http.request.method"), AttrValue::Str(s("GET"))),
        (s("http.route"), AttrValue::Str(s("/api/orders/{id}"))),
        (
            s("url.path"),
            AttrValue::Str(format!("/api/orders/{}", 100_000 + trace).into()),
        ),
        (s("http.response.status_code"), AttrValue::Int(200)),
        (s("server.address"), AttrValue::Str(s("orders.internal"))),
        (s("server.port"), AttrValue::Int(8080)),
        (s("network.protocol.version"), AttrValue::Str(s("1.1"))),
        (
            s("user_agent.original"),
            AttrValue::Str(s("Mozilla/5.0 (X11; Linux x86_64)")),
        ),
    ];
    sp
}

#[test]
fn ids_display_and_parse_round_trip() {
    let t = tid(0x0123_4567_89ab_cdef);
    let text = t.to_string();
    assert_eq!(text, "ab000000000000000123456789abcdef");
    assert_eq!(text.parse::<TraceId>(), Ok(t));
    assert_eq!(text.to_uppercase().parse::<TraceId>(), Ok(t));
    let sp = SpanId([0, 1, 2, 3, 0xfc, 0xfd, 0xfe, 0xff]);
    assert_eq!(sp.to_string(), "00010203fcfdfeff");
    assert_eq!("00010203fcfdfeff".parse::<SpanId>(), Ok(sp));

    assert_eq!(
        "abc".parse::<TraceId>(),
        Err(ParseIdError::Length {
            expected: 32,
            found: 3
        })
    );
    assert_eq!(
        text.parse::<SpanId>(),
        Err(ParseIdError::Length {
            expected: 16,
            found: 32
        })
    );
    assert_eq!(
        "00010203fcfdfefg".parse::<SpanId>(),
        Err(ParseIdError::NotHex)
    );
    assert_eq!(
        "0001020 fcfdfeff".parse::<SpanId>(),
        Err(ParseIdError::NotHex)
    );
    assert_eq!(
        "0".repeat(32).parse::<TraceId>(),
        Err(ParseIdError::AllZero)
    );
    assert_eq!("0".repeat(16).parse::<SpanId>(), Err(ParseIdError::AllZero));
    assert_eq!("é".repeat(8).parse::<SpanId>(), Err(ParseIdError::NotHex));
}

#[test]
fn a_span_comes_back_as_it_went_in() {
    let mut store = SpanStore::new(1 << 20);
    let mut sp = http_span(1, 1, None, "orders", T0);
    sp.parent_span_id = Some(sid(1, 9));
    sp.kind = SpanKind::Client;
    sp.status = Status {
        code: StatusCode::Error,
        message: Some(s("boom")),
    };
    sp.attributes.push((s("ok"), AttrValue::Bool(true)));
    sp.attributes.push((s("neg"), AttrValue::Int(-42)));
    sp.attributes.push((s("ratio"), AttrValue::Double(0.25)));
    sp.attributes
        .push((s("list"), AttrValue::Array(s("[1,2]"))));
    sp.events = vec![
        Event {
            time_ns: T0 + 5,
            name: s("exception"),
            attributes: vec![(s("exception.message"), AttrValue::Str(s("x")))],
        },
        Event {
            time_ns: T0 - 5,
            name: s("before"),
            attributes: Vec::new(),
        },
    ];
    let mut plain = span(1, 2, Some(1), "orders", "db", SpanKind::Internal, T0 + 1, 3);
    plain.status = Status {
        code: StatusCode::Ok,
        message: Some(s("")),
    };
    let inserted = store.insert(vec![sp.clone(), plain.clone()]);
    assert_eq!(
        inserted,
        Inserted {
            accepted: 2,
            ..Inserted::default()
        }
    );
    assert_eq!(store.trace(tid(1)), Some(vec![sp, plain]));
    assert_eq!(store.trace(tid(2)), None);
    assert_eq!((store.span_count(), store.trace_count()), (2, 1));
}

#[test]
fn invalid_and_too_large_spans_are_rejected() {
    let mut store = SpanStore::new(4096);
    let mut big = span(1, 1, None, "a", "op", SpanKind::Server, T0, 1);
    big.attributes
        .push((s("blob"), AttrValue::Str("x".repeat(10_000).into())));
    let mut zero_trace = span(2, 1, None, "a", "op", SpanKind::Server, T0, 1);
    zero_trace.trace_id = TraceId([0; 16]);
    let mut zero_span = span(3, 1, None, "a", "op", SpanKind::Server, T0, 1);
    zero_span.span_id = SpanId([0; 8]);
    let ok = span(4, 1, None, "a", "op", SpanKind::Server, T0, 1);
    let inserted = store.insert(vec![big, zero_trace, zero_span, ok]);
    assert_eq!(
        inserted,
        Inserted {
            accepted: 1,
            rejected_too_large: 1,
            rejected_invalid: 2,
            evicted_traces: 0,
        }
    );
    assert_eq!(store.trace_count(), 1);
    assert!(store.trace(tid(4)).is_some());
}

#[test]
fn eviction_keeps_the_bound_and_evicts_oldest_traces_whole() {
    let max = 20_000;
    let mut store = SpanStore::new(max);
    let mut evicted = 0;
    // Trace 0 is the only one with service "early".
    store.insert(vec![span(
        0,
        1,
        None,
        "early",
        "old-op",
        SpanKind::Server,
        T0,
        1,
    )]);
    for t in 1..200u64 {
        // Each trace arrives in two batches, the second after the next trace began.
        evicted += store
            .insert(vec![
                http_span(t, 1, None, "frontend", T0 + t),
                http_span(t, 2, Some(1), "orders", T0 + t),
            ])
            .evicted_traces;
        if t > 1 {
            evicted += store
                .insert(vec![http_span(t - 1, 3, Some(2), "orders", T0 + t)])
                .evicted_traces;
        }
        assert!(store.bytes() <= max, "{} > {max}", store.bytes());
    }
    let kept: Vec<u64> = (0..200)
        .filter(|&t| store.trace(tid(t)).is_some())
        .collect();
    assert!(kept.len() > 5 && kept.len() < 150, "kept {}", kept.len());
    // A suffix of first-seen order survives, every trace whole.
    let first = kept[0];
    assert_eq!(kept, (first..200).collect::<Vec<_>>());
    for &t in &kept[..kept.len() - 1] {
        assert_eq!(store.trace(tid(t)).map(|sp| sp.len()), Some(3), "trace {t}");
    }
    assert_eq!(store.span_count(), 3 * (kept.len() - 1) + 2);
    assert_eq!(store.trace_count(), kept.len());
    assert_eq!(
        evicted,
        200 - kept.len(),
        "every trace not kept was counted evicted"
    );
    // The evicted-only service and its operations are gone from the indexes.
    assert_eq!(store.services(), vec![s("frontend"), s("orders")]);
    assert!(store.operations("early", None).is_empty());
    assert!(store.find_traces(&Query::service("early")).is_empty());
    let found = store.find_traces(&Query {
        limit: 1000,
        ..Query::service("frontend")
    });
    assert_eq!(found.len(), kept.len());
}

#[test]
fn eviction_releases_resource_sets() {
    let mut store = SpanStore::new(3000);
    for t in 1..100u64 {
        let mut sp = span(t, 1, None, "svc", "op", SpanKind::Server, T0 + t, 1);
        sp.resource = resource("svc", &format!("i-{t}"));
        store.insert(vec![sp]);
        assert!(store.bytes() <= 3000);
    }
    assert!(store.trace_count() < 99);
    assert!(store.trace(tid(99)).is_some());
}

#[test]
fn the_byte_count_is_consistent_through_inserts_and_evictions() {
    let mut store = SpanStore::new(50_000);
    for t in 1..500u64 {
        let mut batch = http_trace(t, T0 + t * MS);
        // Each trace in two batches.
        let rest = batch.split_off(2);
        store.insert(batch);
        store.insert(rest);
        assert_eq!(store.span_bytes(), store.recount_span_bytes());
        assert!(store.bytes() <= 50_000);
    }
    let indexed: usize = store.services.values().map(|i| i.by_start.len()).sum();
    assert_eq!(indexed, store.span_count());
    let counted: u32 = store
        .services
        .values()
        .flat_map(|i| i.operations.values())
        .sum();
    assert_eq!(counted as usize, store.span_count());
}

fn search_fixture() -> SpanStore {
    let mut store = SpanStore::new(1 << 24);
    // Trace t: frontend server span, its client span, orders server span (child), db span.
    for t in 1..=10u64 {
        let start = T0 + t * SEC;
        let mut root = span(
            t,
            1,
            None,
            "frontend",
            "GET /",
            SpanKind::Server,
            start,
            t * MS,
        );
        root.attributes.push((
            s("http.response.status_code"),
            AttrValue::Int(if t == 7 { 500 } else { 200 }),
        ));
        root.attributes
            .push((s("customer"), AttrValue::Str(format!("c{}", t % 3).into())));
        if t == 4 {
            root.status.code = StatusCode::Error;
        }
        let client = span(
            t,
            2,
            Some(1),
            "frontend",
            "call orders",
            SpanKind::Client,
            start + 1,
            MS,
        );
        let mut server = span(
            t,
            3,
            Some(2),
            "orders",
            "POST /orders",
            SpanKind::Server,
            start + 2,
            MS / 2,
        );
        server.resource = resource("orders", if t % 2 == 0 { "even" } else { "odd" });
        if t == 9 {
            server.status.code = StatusCode::Error;
        }
        let db = span(
            t,
            4,
            Some(3),
            "orders",
            "INSERT",
            SpanKind::Client,
            start + 3,
            10,
        );
        store.insert(vec![root, client, server, db]);
    }
    store
}

fn ids(ts: &[u64]) -> Vec<TraceId> {
    ts.iter().map(|&t| tid(t)).collect()
}

#[test]
fn services_and_operations() {
    let store = search_fixture();
    assert_eq!(store.services(), vec![s("frontend"), s("orders")]);
    assert_eq!(
        store.operations("frontend", None),
        vec![
            Operation {
                name: s("GET /"),
                span_kind: SpanKind::Server
            },
            Operation {
                name: s("call orders"),
                span_kind: SpanKind::Client
            },
        ]
    );
    assert_eq!(
        store.operations("orders", Some(SpanKind::Client)),
        vec![Operation {
            name: s("INSERT"),
            span_kind: SpanKind::Client
        }]
    );
    assert!(store.operations("nope", None).is_empty());
}

#[test]
fn search_is_newest_first_and_limited() {
    let store = search_fixture();
    assert_eq!(
        store.find_traces(&Query::service("frontend")),
        ids(&[10, 9, 8, 7, 6, 5, 4, 3, 2, 1])
    );
    assert_eq!(
        store.find_traces(&Query {
            limit: 3,
            ..Query::service("orders")
        }),
        ids(&[10, 9, 8])
    );
    assert!(store.find_traces(&Query::service("nope")).is_empty());

    let mut many = SpanStore::new(1 << 24);
    for t in 1..=30u64 {
        many.insert(vec![span(
            t,
            1,
            None,
            "a",
            "op",
            SpanKind::Server,
            T0 + (t % 7) * SEC + t,
            1,
        )]);
    }
    let found = many.find_traces(&Query::service("a"));
    assert_eq!(found.len(), 20, "the default limit");
    let mut expected: Vec<u64> = (1..=30).collect();
    expected.sort_by_key(|&t| std::cmp::Reverse(T0 + (t % 7) * SEC + t));
    assert_eq!(found, ids(&expected[..20]));
}

#[test]
fn search_filters() {
    let store = search_fixture();
    let q = |f: fn(&mut Query)| {
        let mut q = Query::service("frontend");
        f(&mut q);
        store.find_traces(&q)
    };
    // Operation.
    assert_eq!(q(|q| q.operation = Some("call orders".into())).len(), 10);
    assert!(
        q(|q| q.operation = Some("POST /orders".into())).is_empty(),
        "another service's operation"
    );
    assert!(q(|q| q.operation = Some("never".into())).is_empty());
    // Tags: typed span attributes, strings, the error status, all conditions on one span.
    assert_eq!(
        q(|q| q.tags = vec![("http.response.status_code".into(), "500".into())]),
        ids(&[7])
    );
    assert_eq!(
        q(|q| q.tags = vec![("customer".into(), "c1".into())]),
        ids(&[10, 7, 4, 1])
    );
    assert_eq!(
        q(|q| q.tags = vec![("error".into(), "true".into())]),
        ids(&[4])
    );
    assert_eq!(
        q(|q| q.tags = vec![
            ("customer".into(), "c1".into()),
            ("http.response.status_code".into(), "200".into())
        ]),
        ids(&[10, 4, 1])
    );
    assert!(
        q(|q| {
            q.operation = Some("call orders".into());
            q.tags = vec![("customer".into(), "c1".into())];
        })
        .is_empty(),
        "conditions must hold on one span"
    );
    assert!(q(|q| q.tags = vec![("unknown.key".into(), "x".into())]).is_empty());
    // Resource attributes, and the error status on another service.
    let orders = |tags: Vec<(String, String)>| {
        store.find_traces(&Query {
            tags,
            ..Query::service("orders")
        })
    };
    assert_eq!(
        orders(vec![("service.instance.id".into(), "even".into())]),
        ids(&[10, 8, 6, 4, 2])
    );
    assert_eq!(orders(vec![("error".into(), "true".into())]), ids(&[9]));
    // Durations: the root of trace t lasts t ms.
    assert_eq!(
        q(|q| {
            q.min_duration_ns = Some(3 * MS);
            q.max_duration_ns = Some(5 * MS);
            q.operation = Some("GET /".into());
        }),
        ids(&[5, 4, 3])
    );
    assert_eq!(q(|q| q.min_duration_ns = Some(9 * MS)), ids(&[10, 9]));
    // Window on span start (trace t starts at T0 + t s).
    assert_eq!(
        q(|q| {
            q.start_ns = T0 + 3 * SEC;
            q.end_ns = T0 + 5 * SEC;
        }),
        ids(&[5, 4, 3]),
        "both ends inclusive"
    );
    assert_eq!(
        q(|q| {
            q.start_ns = T0 + 3 * SEC + 2;
            q.end_ns = T0 + 5 * SEC - 1;
        }),
        ids(&[4]),
        "trace 3's frontend spans start at T0 + 3 s and 3 s + 1 ns"
    );
    assert!(
        q(|q| {
            q.start_ns = T0 + 5 * SEC;
            q.end_ns = T0 + 4 * SEC;
        })
        .is_empty()
    );
}

#[test]
fn dependencies_count_calls_across_services() {
    let store = search_fixture();
    // Every orders server span takes half a millisecond.
    let dep = |p: &str, c: &str, calls, errors| Dependency {
        parent: s(p),
        child: s(c),
        call_count: calls,
        error_count: errors,
        p50_ns: MS / 2,
        p99_ns: MS / 2,
    };
    assert_eq!(
        store.dependencies(T0 + 100 * SEC, 100 * SEC),
        vec![dep("frontend", "orders", 10, 1)]
    );
    // Only children that started in the window: traces 8..=10 (T0 + 8 s + 2 ns onwards).
    assert_eq!(
        store.dependencies(T0 + 11 * SEC, 3 * SEC),
        vec![dep("frontend", "orders", 3, 1)]
    );
    assert_eq!(
        store.dependencies(T0 + 11 * SEC, 2 * SEC),
        vec![dep("frontend", "orders", 2, 1)]
    );
    assert_eq!(
        store.dependencies(T0 + 11 * SEC, SEC),
        vec![dep("frontend", "orders", 1, 0)]
    );
    assert!(store.dependencies(T0, SEC).is_empty());

    // A second edge, and a parent that arrives in a later batch.
    let mut store = search_fixture();
    store.insert(vec![span(
        1,
        5,
        Some(4),
        "postgres",
        "query",
        SpanKind::Server,
        T0 + SEC + 4,
        5,
    )]);
    assert_eq!(
        store.dependencies(T0 + 100 * SEC, 100 * SEC),
        vec![
            dep("frontend", "orders", 10, 1),
            Dependency {
                p50_ns: 5,
                p99_ns: 5,
                ..dep("orders", "postgres", 1, 0)
            }
        ]
    );
}

#[test]
fn dependencies_carry_error_rates_and_latency_percentiles() {
    // 200 calls gateway -> users, taking 1..=200 ms, every tenth failing; the gateway's own
    // child span (same service) and a span whose parent is unknown are no calls.
    let mut store = SpanStore::new(1 << 24);
    for t in 1..=200u64 {
        let start = T0 + t * MS;
        let root = span(
            t,
            1,
            None,
            "gateway",
            "GET /u",
            SpanKind::Server,
            start,
            SEC,
        );
        let local = span(
            t,
            2,
            Some(1),
            "gateway",
            "route",
            SpanKind::Internal,
            start,
            1,
        );
        let mut call = span(
            t,
            3,
            Some(2),
            "users",
            "GET /u",
            SpanKind::Server,
            start + 1,
            t * MS,
        );
        if t % 10 == 0 {
            call.status.code = StatusCode::Error;
        }
        let orphan = span(t, 4, Some(99), "users", "x", SpanKind::Server, start + 2, 1);
        store.insert(vec![root, local, call, orphan]);
    }
    let deps = store.dependencies(T0 + SEC, SEC);
    assert_eq!(
        deps,
        vec![Dependency {
            parent: s("gateway"),
            child: s("users"),
            call_count: 200,
            error_count: 20,
            p50_ns: 100 * MS,
            p99_ns: 198 * MS,
        }]
    );
    assert!((deps[0].error_rate() - 0.1).abs() < 1e-9);
    // A window holding only the first 10 calls (started at T0 + 1..=10 ms, plus 1 ns).
    let early = store.dependencies(T0 + 10 * MS + 1, 10 * MS);
    assert_eq!(early[0].call_count, 10);
    assert_eq!((early[0].p50_ns, early[0].p99_ns), (5 * MS, 10 * MS));
    assert_eq!(early[0].error_count, 1);
    assert!(store.dependencies(T0 - SEC, SEC).is_empty());
}

/// A trace of 5 typical HTTP spans across 3 services.
fn http_trace(t: u64, start: u64) -> Vec<Span> {
    let mut spans = vec![
        http_span(t, 1, None, "frontend", start),
        http_span(t, 2, Some(1), "frontend", start + 100),
        http_span(t, 3, Some(2), "orders", start + 200),
        http_span(t, 4, Some(3), "orders", start + 300),
        http_span(t, 5, Some(4), "inventory", start + 400),
    ];
    spans[1].kind = SpanKind::Client;
    spans[1].operation = s("GET orders");
    spans[3].kind = SpanKind::Client;
    spans[3].operation = s("GET inventory");
    spans[4].operation = s("GET /api/stock/{sku}");
    for (i, sp) in spans.iter_mut().enumerate() {
        sp.duration_ns = (t * 7919 + i as u64 * 104_729) % (500 * MS);
        if t.is_multiple_of(97) {
            sp.attributes[3].1 = AttrValue::Int(500);
            sp.status.code = StatusCode::Error;
        }
        sp.resource = resource(&sp.service.clone(), &format!("pod-{}", t % 4));
    }
    spans
}

#[test]
fn bytes_per_typical_http_span() {
    let mut store = SpanStore::new(usize::MAX);
    for t in 1..=20_000u64 {
        store.insert(http_trace(t, T0 + t * MS));
    }
    assert_eq!(store.span_count(), 100_000);
    let per_span = store.bytes() as f64 / store.span_count() as f64;
    println!(
        "bytes per typical HTTP span (8 attributes): {per_span:.1} ({} bytes for {} spans)",
        store.bytes(),
        store.span_count()
    );
    assert!(per_span <= 300.0, "{per_span}");
}

/// The process's resident set size, from `/proc/self/statm` (Linux only; a test-only check of
/// the byte estimate against the allocator's reality).
fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[test]
#[ignore = "a timing run: cargo test --release -p trellis-traces -- --ignored --nocapture"]
fn search_over_a_million_spans() {
    let rss_before = rss_bytes();
    let mut store = SpanStore::new(usize::MAX);
    let started = Instant::now();
    let traces = 200_000u64;
    for t in 1..=traces {
        store.insert(http_trace(t, T0 + t * MS));
    }
    println!(
        "inserted {} spans in {:?}; {} bytes ({:.1} per span)",
        store.span_count(),
        started.elapsed(),
        store.bytes(),
        store.bytes() as f64 / store.span_count() as f64
    );
    if let (Some(before), Some(after)) = (rss_before, rss_bytes()) {
        println!(
            "resident set grew by {} bytes ({:.1} per span)",
            after.saturating_sub(before),
            after.saturating_sub(before) as f64 / store.span_count() as f64
        );
    }
    let services = ["frontend", "orders", "inventory"];
    let mut times = Vec::new();
    let mut total_found = 0;
    for i in 0..100u64 {
        let mut q = Query::service(services[(i % 3) as usize]);
        match i % 5 {
            0 => {}
            1 => q.tags = vec![("http.response.status_code".into(), "500".into())],
            2 => {
                q.min_duration_ns = Some(490 * MS);
                // Each service's second operation (half of frontend's and orders' spans).
                let ops = ["GET orders", "GET inventory", "GET /api/stock/{sku}"];
                q.operation = Some(ops[(i % 3) as usize].into());
            }
            3 => {
                q.tags = vec![
                    ("error".into(), "true".into()),
                    ("service.instance.id".into(), "pod-1".into()),
                ]
            }
            _ => {
                // A window in the middle of the stored hour, and a value no span has.
                q.start_ns = T0 + (i * 1000) * MS;
                q.end_ns = q.start_ns + 60 * SEC;
                q.tags = vec![("user_agent.original".into(), "curl/8".into())];
            }
        }
        let started = Instant::now();
        let found = store.find_traces(&q);
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        total_found += found.len();
    }
    times.sort_by(f64::total_cmp);
    println!(
        "100 searches over {} spans: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms ({total_found} traces found)",
        store.span_count(),
        percentile(&times, 0.50),
        percentile(&times, 0.99),
        times[times.len() - 1]
    );
    let started = Instant::now();
    let deps = store.dependencies(T0 + traces * MS, traces * MS);
    println!(
        "dependencies over all spans: {:?} ({deps:?})",
        started.elapsed()
    );
}

#[test]
fn service_stats_count_the_spans_that_enter_each_service() {
    // gateway's root (1 s) calls users 10 times through an internal span; every other users
    // call fails; a users span whose parent was not stored enters users too; the gateway's
    // internal span is no request.
    let mut store = SpanStore::new(1 << 24);
    for t in 1..=10u64 {
        let start = T0 + t * MS;
        let root = span(
            t,
            1,
            None,
            "gateway",
            "GET /u",
            SpanKind::Server,
            start,
            SEC,
        );
        let local = span(
            t,
            2,
            Some(1),
            "gateway",
            "route",
            SpanKind::Internal,
            start,
            1,
        );
        let mut call = span(
            t,
            3,
            Some(2),
            "users",
            "GET /u",
            SpanKind::Server,
            start,
            t * MS,
        );
        if t % 2 == 0 {
            call.status.code = StatusCode::Error;
        }
        store.insert(vec![root, local, call]);
    }
    let orphan = span(
        11,
        4,
        Some(99),
        "users",
        "x",
        SpanKind::Server,
        T0 + 11 * MS,
        20 * MS,
    );
    store.insert(vec![orphan]);
    let stats = store.service_stats(T0 + SEC, SEC);
    assert_eq!(
        stats,
        vec![
            ServiceStats {
                service: s("gateway"),
                call_count: 10,
                error_count: 0,
                p50_ns: SEC,
                p99_ns: SEC,
            },
            ServiceStats {
                service: s("users"),
                call_count: 11,
                error_count: 5,
                p50_ns: 6 * MS,
                p99_ns: 20 * MS,
            },
        ]
    );
    // Outside the window: nothing.
    assert!(store.service_stats(T0, MS / 2).is_empty());
}
