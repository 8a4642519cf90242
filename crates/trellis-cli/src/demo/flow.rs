//! The demo's client flow: start everything, call the services through the gateway, place
//! orders as transactions (committed, aborted, and one whose participant crashes between
//! prepare and commit), inject a fault, and report what a person should see at each step.
//! With `--secure`, the system is secured first and what it refuses is shown after the fault.

use super::plan::{CRASH_PRODUCT, Instance, Plan, kill_instance, restart_app, start_instance};
use super::processes::{Processes, REGISTRY};
use super::report::{Report, percentile};
use super::security::{self, Tokens};
use crate::traces_cmd::waterfall::{Trace, waterfall};
use anyhow::{Context, bail};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Requests sent while an instance is dead.
const FAULT_REQUESTS: usize = 200;
/// Of those, how many are in flight at once.
const FAULT_CONCURRENCY: usize = 4;

/// What the client saw through the gateway.
#[derive(Default)]
struct Stats {
    requests: usize,
    successes: usize,
    latencies: Vec<Duration>,
    served_by: BTreeSet<String>,
}

struct Answer {
    status: u16,
    served_by: String,
    /// The transaction that placed (or did not place) an order, from `x-trellis-gid`.
    gid: String,
    body: Value,
}

impl Stats {
    fn record(&mut self, elapsed: Duration, result: &anyhow::Result<Answer>) {
        self.requests += 1;
        self.latencies.push(elapsed);
        if let Ok(answer) = result {
            if answer.status < 500 {
                self.successes += 1;
            }
            if !answer.served_by.is_empty() {
                self.served_by.insert(answer.served_by.clone());
            }
        }
    }
}

async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> anyhow::Result<Answer> {
    call_traced(http, method, url, body, None).await
}

/// [`call`], as part of the trace `traceparent` names when given.
async fn call_traced(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
    traceparent: Option<&str>,
) -> anyhow::Result<Answer> {
    let mut request = http.request(method, url);
    if let Some(traceparent) = traceparent {
        request = request.header("traceparent", traceparent);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("{url} unreachable"))?;
    let status = response.status().as_u16();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let served_by = header("x-served-by");
    let gid = header(trellis_example::TXN_GID);
    let text = response.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok(Answer {
        status,
        served_by,
        gid,
        body,
    })
}

struct Client {
    http: reqwest::Client,
    gateway: String,
    stats: Stats,
}

impl Client {
    async fn send(
        &mut self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Answer> {
        self.send_traced(method, path, body, None).await
    }

    async fn send_traced(
        &mut self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        traceparent: Option<&str>,
    ) -> anyhow::Result<Answer> {
        let started = Instant::now();
        let url = format!("{}{path}", self.gateway);
        let result = call_traced(&self.http, method, &url, body, traceparent).await;
        self.stats.record(started.elapsed(), &result);
        result
    }

    async fn get(&mut self, path: &str) -> anyhow::Result<Answer> {
        self.send(reqwest::Method::GET, path, None).await
    }

    async fn order(
        &mut self,
        user_id: i64,
        product: &str,
        quantity: i64,
    ) -> anyhow::Result<Answer> {
        self.order_traced(user_id, product, quantity, None).await
    }

    /// Places an order as part of the trace `traceparent` names.
    async fn order_traced(
        &mut self,
        user_id: i64,
        product: &str,
        quantity: i64,
        traceparent: Option<&str>,
    ) -> anyhow::Result<Answer> {
        let body = json!({"user_id": user_id, "product": product, "quantity": quantity});
        self.send_traced(reqwest::Method::POST, "/orders", Some(body), traceparent)
            .await
    }

    /// `(stock, reserved)` of `product`, through the gateway.
    async fn stock(&mut self, product: &str) -> anyhow::Result<(i64, i64)> {
        let answer = self
            .get(&format!("/stock/{}", product.replace(' ', "%20")))
            .await?;
        match (
            answer.body["stock"].as_i64(),
            answer.body["reserved"].as_i64(),
        ) {
            (Some(stock), Some(reserved)) if answer.status == 200 => Ok((stock, reserved)),
            _ => bail!(
                "GET /stock/{product} answered {} {}",
                answer.status,
                answer.body
            ),
        }
    }

    /// The ids of the placed orders and of the pending ones.
    async fn order_ids(&mut self) -> anyhow::Result<(Vec<i64>, Vec<i64>)> {
        let ids = |body: &Value| -> Vec<i64> {
            body.as_array()
                .map(|items| items.iter().filter_map(|o| o["id"].as_i64()).collect())
                .unwrap_or_default()
        };
        let placed = self.get("/orders").await?;
        let pending = self.get("/orders?status=pending").await?;
        if placed.status != 200 || pending.status != 200 {
            bail!(
                "listing orders answered {} and {}",
                placed.status,
                pending.status
            );
        }
        Ok((ids(&placed.body), ids(&pending.body)))
    }
}

/// Polls `probe` every 100 ms until it answers `Some`, or fails after `timeout`.
async fn wait_for<T, F, Fut>(
    timeout: Duration,
    what: &str,
    procs: &mut Processes,
    mut probe: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return Ok(value);
        }
        procs.check_alive()?;
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn passing_ids(
    http: &reqwest::Client,
    plan: &Plan,
    service: &str,
) -> Option<BTreeSet<String>> {
    let url = format!(
        "{}/v1/health/service/{service}?passing",
        plan.registry_url()
    );
    let entries: Vec<Value> = http.get(url).send().await.ok()?.json().await.ok()?;
    Some(
        entries
            .iter()
            .filter_map(|e| e["Service"]["ID"].as_str().map(str::to_owned))
            .collect(),
    )
}

async fn registered(http: &reqwest::Client, plan: &Plan, id: &str) -> Option<bool> {
    let url = format!("{}/v1/agent/service/{id}", plan.registry_url());
    let status = http.get(url).send().await.ok()?.status();
    Some(status.is_success())
}

/// Sums every sample of a counter in Prometheus text.
async fn counter_sum(http: &reqwest::Client, url: &str, name: &str) -> f64 {
    let Ok(response) = http.get(url).send().await else {
        return 0.0;
    };
    let text = response.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Sends `n` GETs at once; answers each one's latency and result.
async fn concurrent_gets(
    http: &reqwest::Client,
    url: &str,
    n: usize,
) -> Vec<(Duration, anyhow::Result<Answer>)> {
    let calls = (0..n).map(|_| async move {
        let started = Instant::now();
        let result = call(http, reqwest::Method::GET, url, None).await;
        (started.elapsed(), result)
    });
    futures_util::future::join_all(calls).await
}

/// The coordinator's view of transaction `gid`.
async fn transaction(http: &reqwest::Client, plan: &Plan, gid: &str) -> Option<Value> {
    let url = format!("{}/v1/trellis/txn/{gid}", plan.registry_url());
    let response = http.get(url).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.json().await.ok()
}

/// `order committed, stock committing (attempt 3: ...)`: each branch's state.
fn branch_states(txn: &Value) -> String {
    txn["branches"]
        .as_array()
        .map(|branches| {
            branches
                .iter()
                .map(|b| {
                    let mut text = format!(
                        "{} {}",
                        b["branch_id"].as_str().unwrap_or("?"),
                        b["state"].as_str().unwrap_or("?")
                    );
                    if let Some(error) = b["last_error"].as_str() {
                        text.push_str(&format!(
                            " (attempt {}: {error})",
                            b["attempts"].as_u64().unwrap_or(0)
                        ));
                    }
                    text
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

fn names(body: &Value, field: &str) -> Vec<String> {
    body.as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i[field].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The flow's shared state: where everything is, the children, the report, and what the
/// client saw.
struct Flow<'a> {
    plan: &'a Plan,
    procs: &'a mut Processes,
    report: &'a mut Report,
    /// For the gateway, the sidecars' admin listeners and anonymous registry calls: no token.
    http: reqwest::Client,
    /// For the registry: with `--secure`, it carries the management token.
    registry: reqwest::Client,
    /// With `--secure`, the components' tokens, once made.
    tokens: Option<Tokens>,
    /// The step that placed the order whose trace ends the demo.
    order_step: usize,
    client: Client,
    /// The trace id of the first order placed, whose waterfall ends the demo, and the trace as
    /// read back while that order's instances were all alive.
    order_trace: Option<(String, Option<Trace>)>,
}

/// A fresh W3C trace id (32 hex digits), random enough to be unique among the demo's traces.
fn new_trace_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let half = |salt: u64| {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(salt);
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        hasher.finish()
    };
    format!("{:016x}{:016x}", half(1), half(2))
}

/// Runs every step in order; the first step that cannot continue ends the flow with its error.
pub async fn run(plan: &Plan, procs: &mut Processes, report: &mut Report) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .context("cannot build an HTTP client")?;
    let client = Client {
        http: http.clone(),
        gateway: plan.gateway_url(),
        stats: Stats::default(),
    };
    let registry = registry_client(plan.management.as_deref())?;
    let mut flow = Flow {
        plan,
        procs,
        report,
        http,
        registry,
        tokens: None,
        order_step: 0,
        client,
        order_trace: None,
    };
    flow.start_registry().await?;
    if plan.secure() {
        flow.secure().await?;
    }
    flow.start_instances_and_gateway().await?;
    flow.list_through_the_gateway().await?;
    flow.place_orders().await?;
    flow.abort_for_short_stock().await?;
    flow.crash_between_prepare_and_commit().await?;
    let victim = flow.kill_an_instance_under_load().await?;
    flow.restart(&victim).await?;
    if plan.secure() {
        flow.show_refusals().await?;
    }
    flow.summary().await;
    flow.show_the_order_trace().await;
    Ok(())
}

/// The demo's client of the registry: it sends `management`, when given, as its token.
fn registry_client(management: Option<&str>) -> anyhow::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(secret) = management {
        let mut value = reqwest::header::HeaderValue::from_str(secret)
            .context("the management token's secret is not a valid header value")?;
        value.set_sensitive(true);
        headers.insert("x-consul-token", value);
    }
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .default_headers(headers)
        .build()
        .context("cannot build an HTTP client")
}

impl Flow<'_> {
    async fn wait_for<T, F, Fut>(
        &mut self,
        timeout: Duration,
        what: &str,
        probe: F,
    ) -> anyhow::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        wait_for(timeout, what, self.procs, probe).await
    }

    fn gateway_metrics(&self) -> String {
        format!("http://{}/metrics", self.plan.gateway_admin)
    }

    async fn start_registry(&mut self) -> anyhow::Result<()> {
        self.report.step("Start the registry");
        self.procs.spawn(REGISTRY, &self.plan.server_args())?;
        let leader_url = format!("{}/v1/status/leader", self.plan.registry_url());
        let http = self.registry.clone();
        self.wait_for(Duration::from_secs(20), "the registry", || async {
            http.get(&leader_url)
                .send()
                .await
                .ok()
                .filter(|r| r.status().is_success())
                .map(drop)
        })
        .await?;
        self.report.ok(&format!(
            "registry answering on {}",
            self.plan.registry_url()
        ));
        self.report.info(&format!(
            "dashboard: {}/ui/ (open it now to watch the traffic, failover and transactions)",
            self.plan.registry_url()
        ));
        Ok(())
    }

    /// `--secure`: a token for each component and the intentions, made through the registry's
    /// API with the management token, before anything that needs them starts.
    async fn secure(&mut self) -> anyhow::Result<()> {
        self.report.step(
            "Secure the system: deny by default, a least-privilege token for each component, mutual TLS, intentions",
        );
        let tokens = security::set_up(self.plan, &self.registry, self.procs, self.report).await?;
        self.tokens = Some(tokens);
        Ok(())
    }

    /// `--secure`: calls that no intention allows, and registry writes that no token allows,
    /// are refused.
    async fn show_refusals(&mut self) -> anyhow::Result<()> {
        self.report
            .step("Security at work: what no intention or token allows is refused");
        let tokens = self
            .tokens
            .clone()
            .context("no tokens were made: the system was not secured")?;
        security::show_refusals(self.plan, &tokens, &self.http, &self.registry, self.report).await
    }

    async fn start_instances_and_gateway(&mut self) -> anyhow::Result<()> {
        let plan = self.plan;
        self.report.step(
            "Start two users, two orders and one inventory instance, each with its own sidecar, and the gateway",
        );
        for instance in &plan.instances {
            start_instance(self.procs, plan, instance)?;
        }
        self.procs.spawn("gateway", &plan.gateway_args())?;
        let (http, registry) = (self.http.clone(), self.registry.clone());
        for service in ["users", "orders", "inventory"] {
            let count = plan.count(service);
            let ids = self
                .wait_for(
                    Duration::from_secs(30),
                    &format!("{count} passing {service} instance(s)"),
                    || async {
                        passing_ids(&registry, plan, service)
                            .await
                            .filter(|ids| ids.len() == count)
                    },
                )
                .await?;
            for i in plan.instances.iter().filter(|i| i.service == service) {
                self.report.check(
                    ids.contains(&i.name),
                    &format!(
                        "{} passing: app {}, sidecar inbound {}, outbound {}",
                        i.name, i.app, i.inbound, i.outbound
                    ),
                );
            }
        }
        // The crash comes four steps on: listing, placing, the abort, then the crash.
        let crash_step = self.report.step_number() + 4;
        self.report.info(&format!(
            "inventory-1 is started with --crash-before-commit \"{CRASH_PRODUCT}\" (fault injection, step {crash_step})"
        ));
        for route in ["/users", "/orders", "/stock"] {
            let url = format!("{}{route}", plan.gateway_url());
            self.wait_for(
                Duration::from_secs(20),
                &format!("the gateway to route {route}"),
                || async {
                    call(&http, reqwest::Method::GET, &url, None)
                        .await
                        .ok()
                        .filter(|a| a.status == 200)
                        .map(drop)
                },
            )
            .await?;
        }
        self.report.ok(&format!(
            "gateway routing /users, /orders and /stock on {}",
            plan.gateway_url()
        ));
        Ok(())
    }

    async fn list_through_the_gateway(&mut self) -> anyhow::Result<()> {
        self.report
            .step("List the users, the orders and the stock through the gateway");
        let users = self.client.get("/users").await?;
        let user_names = names(&users.body, "name");
        self.report.check(
            users.status == 200
                && user_names.contains(&"John".into())
                && user_names.contains(&"Jane".into()),
            &format!(
                "GET /users → {} (served by {})",
                user_names.join(", "),
                users.served_by
            ),
        );
        let orders = self.client.get("/orders").await?;
        let products = names(&orders.body, "product");
        self.report.check(
            orders.status == 200
                && products.contains(&"Product A".into())
                && products.contains(&"Product B".into()),
            &format!(
                "GET /orders → {} (served by {})",
                products.join(", "),
                orders.served_by
            ),
        );
        let stock = self.client.get("/stock").await?;
        let items: Vec<String> = stock
            .body
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|i| format!("{} {}", i["product"].as_str().unwrap_or("?"), i["stock"]))
                    .collect()
            })
            .unwrap_or_default();
        self.report.check(
            stock.status == 200 && items.iter().any(|i| i == "Limited edition 1"),
            &format!(
                "GET /stock → {} (served by {})",
                items.join(", "),
                stock.served_by
            ),
        );
        // Eight at a time: the default balancer (peak-EWMA) weighs latency by requests in
        // flight, so concurrent load spreads while a strictly sequential client may stick to
        // the fastest.
        let url = format!("{}/users/1", self.plan.gateway_url());
        let mut seen = BTreeSet::new();
        for _ in 0..5 {
            for (elapsed, result) in concurrent_gets(&self.http, &url, 8).await {
                if let Ok(answer) = &result {
                    seen.insert(answer.served_by.clone());
                }
                self.client.stats.record(elapsed, &result);
            }
        }
        self.report.check(
            seen.contains("users-1") && seen.contains("users-2"),
            &format!(
                "40 × GET /users/1, 8 at a time, load-balanced across {}",
                seen.iter().cloned().collect::<Vec<_>>().join(", ")
            ),
        );
        Ok(())
    }

    async fn place_orders(&mut self) -> anyhow::Result<()> {
        self.report.step(
            "Place an order: orders checks the user through its sidecar, then one transaction places the order and takes the stock",
        );
        self.order_step = self.report.step_number();
        let product = "Product C";
        let (before, _) = self.client.stock(product).await?;
        // The demo's client starts the trace (sampled), so it knows the trace id to show.
        let trace_id = new_trace_id();
        let traceparent = format!("00-{trace_id}-{}-01", &new_trace_id()[..16]);
        let created = self
            .client
            .order_traced(1, product, 2, Some(&traceparent))
            .await?;
        // Read back now, while every process that served it is alive: the SIGKILL of step 7
        // loses the spans a process has not exported yet.
        let seen = self
            .order_trace_spans(&trace_id, Duration::from_secs(15))
            .await
            .ok()
            .flatten();
        self.order_trace = Some((trace_id, seen));
        self.report.check(
            created.status == 201,
            &format!(
                "POST /orders for John, 2 × {product} → {} order {} (served by {}), transaction committed",
                created.status, created.body["id"], created.served_by
            ),
        );
        self.report.info(&format!(
            "transaction {} across orders (the order row) and inventory (the stock), both reached through their sidecars",
            created.gid
        ));
        let (after, reserved) = self.client.stock(product).await?;
        self.report.check(
            after == before - 2 && reserved == 0,
            &format!("{product} stock {before} → {after} ({reserved} reserved): the order and its stock changed together"),
        );
        let rejected = self.client.order(999, "Product D", 1).await?;
        self.report.check(
            rejected.status == 422,
            &format!(
                "POST /orders for unknown user 999 → {} {}",
                rejected.status,
                rejected.body["error"].as_str().unwrap_or_default()
            ),
        );
        Ok(())
    }

    /// An order for more than is left: inventory votes no, the transaction aborts, and neither
    /// database keeps anything of it.
    async fn abort_for_short_stock(&mut self) -> anyhow::Result<()> {
        let product = "Limited edition";
        self.report.step(&format!(
            "A transaction that aborts: an order for 2 × {product}, of which 1 is left"
        ));
        let (orders_before, pending_before) = self.client.order_ids().await?;
        let stock_before = self.client.stock(product).await?;
        self.report.info(&format!(
            "before: {} orders placed, {} pending; {product} stock {}, {} reserved",
            orders_before.len(),
            pending_before.len(),
            stock_before.0,
            stock_before.1
        ));
        let refused = self.client.order(2, product, 2).await?;
        let reason = refused.body["error"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        self.report.check(
            refused.status == 409 && reason.contains("only 1 of"),
            &format!(
                "POST /orders for Jane, 2 × {product} → {} {reason}",
                refused.status
            ),
        );
        if let Some(txn) = transaction(&self.registry, self.plan, &refused.gid).await {
            self.report.info(&format!(
                "transaction {} {}: {}",
                refused.gid,
                txn["state"].as_str().unwrap_or("?"),
                branch_states(&txn)
            ));
        }
        // The abort of the order's pending row may still be on its way if the coordinator
        // answered "aborting"; give it a moment.
        let deadline = Instant::now() + Duration::from_secs(10);
        let (orders_after, pending_after) = loop {
            let ids = self.client.order_ids().await?;
            if ids.1 == pending_before || Instant::now() >= deadline {
                break ids;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        self.report.check(
            orders_after == orders_before && pending_after == pending_before,
            &format!(
                "orders: still {} placed, {} pending: no order row left behind",
                orders_after.len(),
                pending_after.len()
            ),
        );
        let stock_after = self.client.stock(product).await?;
        self.report.check(
            stock_after == stock_before,
            &format!(
                "{product} stock {}, {} reserved: no reservation left behind",
                stock_after.0, stock_after.1
            ),
        );
        Ok(())
    }

    /// inventory-1 exits on the commit of CRASH_PRODUCT (its `--crash-before-commit`): the order
    /// is decided but its stock not yet taken. Restarted without the flag, the coordinator's
    /// retry commits it.
    async fn crash_between_prepare_and_commit(&mut self) -> anyhow::Result<()> {
        let product = CRASH_PRODUCT;
        self.report.step(&format!(
            "A participant crashes between prepare and commit: inventory-1 exits on the commit of {product}"
        ));
        let victim = self
            .plan
            .instance("inventory-1")
            .context("inventory-1 is in the plan")?
            .clone();
        let (before, _) = self.client.stock(product).await?;
        let accepted = self.client.order(1, product, 1).await?;
        let state = accepted.body["state"].as_str().unwrap_or_default();
        self.report.check(
            accepted.status == 202 && state == "committing",
            &format!(
                "POST /orders for John, 1 × {product} → {} {}: decided to commit, inventory has not acknowledged",
                accepted.status,
                if state.is_empty() { accepted.body.to_string() } else { state.to_owned() }
            ),
        );
        let gid = accepted.body["gid"]
            .as_str()
            .unwrap_or(&accepted.gid)
            .to_owned();
        let id = accepted.body["order"]["id"].as_i64();
        let status = self
            .procs
            .wait_exit(&victim.name, Duration::from_secs(10))?;
        self.report.check(
            status.code() == Some(trellis_example::CRASH_EXIT_CODE),
            &format!("inventory-1 exited ({status}) on receiving the commit, before committing"),
        );
        if let Some(txn) = transaction(&self.registry, self.plan, &gid).await {
            self.report.info(&format!(
                "transaction {gid} {}: {}",
                txn["state"].as_str().unwrap_or("?"),
                branch_states(&txn)
            ));
        }
        restart_app(self.procs, self.plan, &victim)?;
        let restarted = Instant::now();
        self.report
            .ok("inventory-1 restarted without --crash-before-commit (its sidecar kept running)");
        let (http, registry, plan) = (self.http.clone(), self.registry.clone(), self.plan);
        let txn = self
            .wait_for(
                Duration::from_secs(30),
                &format!("transaction {gid} to commit"),
                || async {
                    transaction(&registry, plan, &gid)
                        .await
                        .filter(|t| t["state"] == "committed")
                },
            )
            .await?;
        let attempts = txn["branches"]
            .as_array()
            .and_then(|b| b.iter().find(|b| b["branch_id"] == "stock"))
            .and_then(|b| b["attempts"].as_u64())
            .unwrap_or(0);
        self.report.ok(&format!(
            "transaction committed {:.1} s after the restart: the coordinator's retry landed (stock commit attempt {attempts})",
            restarted.elapsed().as_secs_f64()
        ));
        let order = match id {
            Some(id) => self.client.get(&format!("/orders/{id}")).await?,
            None => bail!("the 202 answer carried no order: {}", accepted.body),
        };
        self.report.check(
            order.status == 200 && order.body["product"] == product,
            &format!(
                "GET /orders/{} → {} {} × {product}: the order is placed",
                id.unwrap_or(0),
                order.status,
                order.body["quantity"]
            ),
        );
        // The gateway may take a moment to route to the restarted instance again.
        let url = format!("{}/stock", plan.gateway_url());
        self.wait_for(
            Duration::from_secs(15),
            "the gateway to route /stock again",
            || async {
                call(&http, reqwest::Method::GET, &url, None)
                    .await
                    .ok()
                    .filter(|a| a.status == 200)
                    .map(drop)
            },
        )
        .await?;
        let stock = self.client.stock(product).await?;
        self.report.check(
            stock == (before - 1, 0),
            &format!(
                "{product} stock {before} → {} ({} reserved): the stock went down exactly once",
                stock.0, stock.1
            ),
        );
        Ok(())
    }

    /// SIGKILLs users-1 and keeps calling: every request must still succeed, the gateway must
    /// eject the dead endpoint, and the registry must drop it. Answers the killed instance.
    async fn kill_an_instance_under_load(&mut self) -> anyhow::Result<Instance> {
        self.report
            .step("Fault tolerance: SIGKILL users-1 (app and sidecar) and keep calling");
        let victim = self
            .plan
            .instance("users-1")
            .context("users-1 is in the plan")?
            .clone();
        let metrics = self.gateway_metrics();
        let ejections_before = counter_sum(&self.http, &metrics, "trellis_ejections_total").await;
        let retries_before = counter_sum(&self.http, &metrics, "trellis_retries_total").await;
        kill_instance(self.procs, &victim)?;
        let killed_at = Instant::now();
        self.report.ok("users-1 killed with SIGKILL");
        let (succeeded, failures) = self.calls_while_dead().await;
        self.report.check(
            succeeded == FAULT_REQUESTS,
            &format!("{succeeded}/{FAULT_REQUESTS} requests succeeded while users-1 was dead"),
        );
        for failure in failures.iter().take(3) {
            self.report.info(&format!("failed: {failure}"));
        }
        let ejections =
            counter_sum(&self.http, &metrics, "trellis_ejections_total").await - ejections_before;
        let retries =
            counter_sum(&self.http, &metrics, "trellis_retries_total").await - retries_before;
        // A request that reaches the dead endpoint fails to connect and is retried; with no
        // retry at all, the balancer never picked it (peak-EWMA had already scored it slow),
        // which is as good as ejecting it.
        self.report.check(
            ejections >= 1.0 || retries == 0.0,
            &if ejections >= 1.0 {
                format!("the gateway ejected the dead endpoint ({ejections} ejection(s))")
            } else {
                "the gateway never picked the dead endpoint (no retry, nothing to eject)".into()
            },
        );
        let (registry, plan) = (self.registry.clone(), self.plan);
        self.wait_for(
            Duration::from_secs(30),
            "users-1 to leave the registry",
            || async {
                registered(&registry, plan, "users-1")
                    .await
                    .filter(|r| !r)
                    .map(drop)
            },
        )
        .await?;
        self.report.ok(&format!(
            "users-1 removed from the registry {:.1} s after the kill (TTL expired, then deregistered)",
            killed_at.elapsed().as_secs_f64()
        ));
        Ok(victim)
    }

    /// Sends FAULT_REQUESTS GETs, FAULT_CONCURRENCY at a time; answers the successes and a
    /// description of each failure.
    async fn calls_while_dead(&mut self) -> (usize, Vec<String>) {
        let url = format!("{}/users/1", self.plan.gateway_url());
        let mut succeeded = 0;
        let mut failures = Vec::new();
        let mut remaining = FAULT_REQUESTS;
        while remaining > 0 {
            let batch = remaining.min(FAULT_CONCURRENCY);
            remaining -= batch;
            for (elapsed, result) in concurrent_gets(&self.http, &url, batch).await {
                match &result {
                    Ok(a) if a.status == 200 => succeeded += 1,
                    Ok(a) => failures.push(format!("{} {}", a.status, a.body)),
                    Err(e) => failures.push(format!("{e:#}")),
                }
                self.client.stats.record(elapsed, &result);
            }
        }
        (succeeded, failures)
    }

    async fn restart(&mut self, victim: &Instance) -> anyhow::Result<()> {
        self.report
            .step("Restart users-1; it registers again and rejoins");
        start_instance(self.procs, self.plan, victim)?;
        let (registry, plan) = (self.registry.clone(), self.plan);
        self.wait_for(Duration::from_secs(30), "users-1 passing again", || async {
            passing_ids(&registry, plan, "users")
                .await
                .filter(|ids| ids.contains("users-1"))
                .map(drop)
        })
        .await?;
        self.report.ok("users-1 passing in the registry again");
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut rejoined = false;
        while Instant::now() < deadline && !rejoined {
            rejoined = self
                .client
                .get("/users/1")
                .await
                .is_ok_and(|a| a.served_by == "users-1");
        }
        self.report
            .check(rejoined, "users-1 serves traffic through the gateway again");
        Ok(())
    }

    async fn summary(&mut self) {
        self.report.step("Summary");
        let metrics = self.gateway_metrics();
        let retries = counter_sum(&self.http, &metrics, "trellis_retries_total").await;
        let ejections = counter_sum(&self.http, &metrics, "trellis_ejections_total").await;
        let stats = &self.client.stats;
        let mut latencies = stats.latencies.clone();
        latencies.sort();
        self.report.table(&[
            ("requests through the gateway", stats.requests.to_string()),
            (
                "successes",
                format!(
                    "{} ({:.1}%)",
                    stats.successes,
                    100.0 * stats.successes as f64 / stats.requests.max(1) as f64
                ),
            ),
            (
                "instances seen",
                stats
                    .served_by
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            ("retries (gateway)", format!("{retries}")),
            ("ejections (gateway)", format!("{ejections}")),
            (
                "latency p50 / p99",
                format!(
                    "{:.1} ms / {:.1} ms",
                    ms(percentile(&latencies, 50.0)),
                    ms(percentile(&latencies, 99.0))
                ),
            ),
        ]);
    }
}

impl Flow<'_> {
    /// The services the order's trace crosses.
    fn order_trace_services() -> Vec<&'static str> {
        vec!["gateway", "orders", "users"]
    }

    /// Trace `trace_id` from the registry's collector once it has spans from every service it
    /// crosses (each process exports its batches about a second apart), or as it is after
    /// `timeout`.
    async fn order_trace_spans(
        &self,
        trace_id: &str,
        timeout: Duration,
    ) -> anyhow::Result<Option<Trace>> {
        let client = trellis_client::Client::with_token(
            &self.plan.registry_url(),
            self.plan.management.as_deref(),
        )?;
        crate::traces_cmd::wait_for_trace(&client, trace_id, &Self::order_trace_services(), timeout)
            .await
    }

    /// The waterfall of the order placed in [`Flow::place_orders`], read back from the registry's trace
    /// collector: the gateway, orders checking the user with users, and the transaction.
    async fn show_the_order_trace(&mut self) {
        let Some((trace_id, seen)) = self.order_trace.clone() else {
            return;
        };
        let services = Self::order_trace_services();
        self.report.step(&format!(
            "The trace of the order of step {}: {}",
            self.order_step,
            services.join(" → ")
        ));
        let complete = |t: &Trace| services.iter().all(|s| t.services().contains(s));
        // Read again for spans that came later (the coordinator's retries, say); what was read
        // when the order was placed stands if this has less.
        let wait = if seen.as_ref().is_some_and(complete) {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(15)
        };
        let again = self.order_trace_spans(&trace_id, wait).await;
        let best = match (again, seen) {
            (Ok(Some(now)), Some(before)) if complete(&before) && !complete(&now) => Some(before),
            (Ok(Some(now)), Some(before)) if now.spans.len() < before.spans.len() => Some(before),
            (Ok(Some(now)), _) => Some(now),
            (Ok(None), seen) => seen,
            (Err(e), seen) => {
                self.report
                    .info(&format!("cannot read the trace again: {e:#}"));
                seen
            }
        };
        match best {
            Some(trace) if complete(&trace) => {
                self.report.ok(&format!(
                    "trace id {trace_id}: {} spans from {}",
                    trace.spans.len(),
                    trace.services().into_iter().collect::<Vec<_>>().join(", ")
                ));
                self.report.block(&waterfall(&trace, 30));
                self.report.info(&format!(
                    "again: {} traces show {trace_id} --addr {}",
                    super::processes::this_binary(),
                    self.plan.registry
                ));
            }
            partial => {
                let got = partial.as_ref().map_or_else(String::new, |t| {
                    let got: Vec<&str> = t.services().into_iter().collect();
                    format!(" (only from {})", got.join(", "))
                });
                self.report.fail(&format!(
                    "trace {trace_id} did not reach the collector with spans from {}{got}",
                    services.join(", ")
                ));
                if let Some(trace) = partial {
                    self.report.block(&waterfall(&trace, 30));
                }
            }
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
