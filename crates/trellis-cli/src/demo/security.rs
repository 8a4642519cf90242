//! `trellis demo --secure`: the registry denies what no token allows, each component carries a
//! token whose policy allows only what it does, sidecars and the gateway speak mutual TLS with
//! certificates from the registry's CA, and intentions allow exactly the calls the example
//! makes; then calls that nothing allows are shown refused.

use super::plan::{ORDERS_CALLS, Plan, REGISTRY_CONFIG, ROUTES};
use super::processes::Processes;
use super::report::Report;
use anyhow::{Context, bail};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;
use trellis_example::{INVENTORY_SERVICE, ORDERS_SERVICE};
use trellis_proxy::config::KV_PREFIX;
use trellis_proxy::gateway::GATEWAY_SERVICE;
use trellis_server::coordinator::mesh::COORDINATOR_IDENTITY;

/// One rule of a policy: `service "users" { policy = "write" }`, or `operator = "write"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    kind: &'static str,
    /// `None` for a rule without a name (`operator`).
    name: Option<String>,
    level: &'static str,
}

impl Rule {
    fn named(kind: &'static str, name: &str, level: &'static str) -> Self {
        Self {
            kind,
            name: Some(name.to_owned()),
            level,
        }
    }

    /// The rule in Consul's policy language (HCL).
    pub fn hcl(&self) -> String {
        match &self.name {
            Some(name) => format!("{} {name:?} {{ policy = \"{}\" }}", self.kind, self.level),
            None => format!("{} = \"{}\"", self.kind, self.level),
        }
    }

    /// The rule in a few words, for the report: `service "users" write`.
    fn short(&self) -> String {
        match &self.name {
            Some(name) => format!("{} {name:?} {}", self.kind, self.level),
            None => format!("{} {}", self.kind, self.level),
        }
    }
}

/// A token the demo makes: its policy, who carries it and the processes started with it.
#[derive(Debug, Clone)]
pub struct Grant {
    /// The policy's name, which also names the token in the report.
    pub policy: String,
    /// Who carries it, for the token's description and the report.
    pub holder: String,
    pub rules: Vec<Rule>,
    /// The child processes started with this token.
    pub children: Vec<String>,
}

impl Grant {
    /// The policy's rules in Consul's policy language, one a line.
    pub fn hcl(&self) -> String {
        self.rules
            .iter()
            .map(Rule::hcl)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The services whose app calls `service` makes through its sidecar.
fn calls_of(service: &str) -> &'static [&'static str] {
    if service == ORDERS_SERVICE {
        &[ORDERS_CALLS]
    } else {
        &[]
    }
}

/// Reading the proxy policy a sidecar or the gateway follows for `service` (KV).
fn policy_key(service: &str) -> Rule {
    Rule::named("key", &format!("{KV_PREFIX}{service}"), "read")
}

/// The services the plan runs, in the order of their first instance.
fn services(plan: &Plan) -> Vec<&'static str> {
    let mut services: Vec<&'static str> = Vec::new();
    for i in &plan.instances {
        if !services.contains(&i.service) {
            services.push(i.service);
        }
    }
    services
}

/// Every token the demo makes, least privilege each:
///
/// - a service's sidecars: `service:write` on it (registering the instance, its TTL check,
///   its certificate, reading its intentions), `service:read` on what its app calls (watching
///   the endpoints), and reading the proxy policies of both;
/// - the gateway: `service:write` on its own identity (its certificate only: it registers
///   nothing), `service:read` on the services it routes to and their proxy policies;
/// - the orders app: submitting transactions to the coordinator, which the registry grants
///   with `operator` write.
pub fn grants(plan: &Plan) -> Vec<Grant> {
    let mut grants = Vec::new();
    for service in services(plan) {
        let instances: Vec<String> = plan
            .instances
            .iter()
            .filter(|i| i.service == service)
            .map(|i| i.name.clone())
            .collect();
        let mut rules = vec![Rule::named("service", service, "write")];
        rules.extend(
            calls_of(service)
                .iter()
                .map(|called| Rule::named("service", called, "read")),
        );
        rules.push(policy_key(service));
        rules.extend(calls_of(service).iter().map(|called| policy_key(called)));
        grants.push(Grant {
            policy: format!("{service}-sidecar"),
            holder: format!(
                "the {service} sidecar{}",
                if instances.len() == 1 { "" } else { "s" }
            ),
            rules,
            children: instances.iter().map(|i| format!("{i}-sidecar")).collect(),
        });
    }
    let mut rules = vec![Rule::named("service", GATEWAY_SERVICE, "write")];
    rules.extend(
        ROUTES
            .iter()
            .map(|(_, service)| Rule::named("service", service, "read")),
    );
    rules.extend(ROUTES.iter().map(|(_, service)| policy_key(service)));
    grants.push(Grant {
        policy: "gateway".to_owned(),
        holder: "the gateway".to_owned(),
        rules,
        children: vec!["gateway".to_owned()],
    });
    grants.push(Grant {
        policy: "orders-app".to_owned(),
        holder: "the orders app".to_owned(),
        rules: vec![Rule {
            kind: "operator",
            name: None,
            level: "write",
        }],
        children: plan
            .instances
            .iter()
            .filter(|i| i.service == ORDERS_SERVICE)
            .map(|i| i.name.clone())
            .collect(),
    });
    grants
}

/// Every call the demo's system makes, as `(source, destination)`: the gateway to each service
/// it routes to, each app to what it calls through its sidecar, and the transaction
/// coordinator to each participant.
pub fn intentions(plan: &Plan) -> Vec<(&'static str, &'static str)> {
    let mut pairs: Vec<(&'static str, &'static str)> = ROUTES
        .iter()
        .map(|(_, service)| (GATEWAY_SERVICE, *service))
        .collect();
    for service in services(plan) {
        pairs.extend(calls_of(service).iter().map(|called| (service, *called)));
    }
    for participant in [ORDERS_SERVICE, INVENTORY_SERVICE] {
        pairs.push((COORDINATOR_IDENTITY, participant));
    }
    pairs
}

/// The secret of the registry's initial management token, written to its configuration file
/// in `data_dir` (readable by this user only). A secret an earlier `--secure` run left there
/// is kept: the registry's ACL state lives in the same directory, and once it has a management
/// token it takes no new initial one.
pub fn prepare_management(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join(REGISTRY_CONFIG);
    let earlier = match std::fs::read_to_string(&path) {
        Ok(text) => saved_secret(&text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let secret = match earlier {
        Some(secret) => secret,
        None => random_secret()?,
    };
    let text = format!(
        "# Written by `trellis demo --secure`: the secret of the registry's first management token.\n\
         [acl.tokens]\ninitial_management = \"{secret}\"\n"
    );
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let mut options = std::fs::File::options();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(&path)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(secret)
}

/// The `initial_management` secret of a configuration this module wrote.
fn saved_secret(text: &str) -> Option<String> {
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("initial_management"))
        .filter_map(|rest| rest.trim_start().strip_prefix('='))
        .map(|value| value.trim().trim_matches('"').to_owned())
        .find(|secret| {
            !secret.is_empty() && secret.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
        })
}

/// A fresh secret in Consul's shape (a UUID), from the system's random source.
fn random_secret() -> anyhow::Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut bytes))
        .context("cannot read /dev/urandom for the management token's secret")?;
    // Version 4, variant 1, as a random UUID.
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    ))
}

/// The tokens made, by policy name.
#[derive(Debug, Default, Clone)]
pub struct Tokens {
    by_policy: BTreeMap<String, String>,
}

impl Tokens {
    fn get(&self, policy: &str) -> anyhow::Result<&str> {
        self.by_policy
            .get(policy)
            .map(String::as_str)
            .with_context(|| format!("no token with policy {policy}"))
    }
}

/// `method url` with `body` through `registry` (which carries the management token); the
/// answer's JSON, or an error naming the request and the registry's answer.
async fn send(
    registry: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> anyhow::Result<(u16, Value)> {
    let mut request = registry.request(method.clone(), url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("{method} {url}: the registry is unreachable"))?;
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok((status, body))
}

/// Like [`send`], failing unless the registry answers 200.
async fn expect_ok(
    registry: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let (status, answer) = send(registry, method.clone(), url, body).await?;
    if status != 200 {
        bail!("{method} {url} answered {status}: {answer}");
    }
    Ok(answer)
}

/// The IDs of the policies the registry has, by name.
async fn policy_ids(
    registry: &reqwest::Client,
    base: &str,
) -> anyhow::Result<BTreeMap<String, String>> {
    let url = format!("{base}/v1/acl/policies");
    let list = expect_ok(registry, reqwest::Method::GET, &url, None).await?;
    Ok(list
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p["Name"].as_str()?.to_owned(), p["ID"].as_str()?.to_owned())))
        .collect())
}

/// Creates `grant`'s policy, or updates the one an earlier run with the same data directory
/// made (`existing`: the policies' IDs by name).
async fn put_policy(
    registry: &reqwest::Client,
    base: &str,
    grant: &Grant,
    existing: &BTreeMap<String, String>,
) -> anyhow::Result<()> {
    let body = json!({
        "Name": grant.policy,
        "Description": format!("trellis demo: {}", grant.holder),
        "Rules": grant.hcl(),
    });
    let url = match existing.get(&grant.policy) {
        Some(id) => format!("{base}/v1/acl/policy/{id}"),
        None => format!("{base}/v1/acl/policy"),
    };
    expect_ok(registry, reqwest::Method::PUT, &url, Some(body)).await?;
    Ok(())
}

/// Sets up the secured system's access control through the registry's API, with the
/// management token `registry` carries: a policy and a token for each component (handed to its
/// processes), and the intentions. Reports what it made.
pub async fn set_up(
    plan: &Plan,
    registry: &reqwest::Client,
    procs: &mut Processes,
    report: &mut Report,
) -> anyhow::Result<Tokens> {
    let base = plan.registry_url();
    report.ok(&format!(
        "the registry denies what no token allows (--acl-default-policy deny); the demo itself uses the initial management token in {}",
        plan.registry_config().display()
    ));
    let mut tokens = Tokens::default();
    let existing = policy_ids(registry, &base).await?;
    for grant in grants(plan) {
        put_policy(registry, &base, &grant, &existing).await?;
        let token = expect_ok(
            registry,
            reqwest::Method::PUT,
            &format!("{base}/v1/acl/token"),
            Some(json!({
                "Description": format!("trellis demo: {}", grant.holder),
                "Policies": [{"Name": grant.policy}],
            })),
        )
        .await?;
        let secret = token["SecretID"].as_str().with_context(|| {
            format!(
                "the new token for {} has no SecretID: {token}",
                grant.holder
            )
        })?;
        for child in &grant.children {
            procs.give_token(child, secret);
        }
        tokens
            .by_policy
            .insert(grant.policy.clone(), secret.to_owned());
        // The processes that carry it, unless the holder already says (the gateway).
        let carried_by = if grant.children == [grant.policy.clone()] {
            String::new()
        } else {
            format!(" ({})", grant.children.join(", "))
        };
        report.ok(&format!(
            "token for {}{carried_by}, policy {}: {}",
            grant.holder,
            grant.policy,
            grant
                .rules
                .iter()
                .map(Rule::short)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let pairs = intentions(plan);
    for (source, destination) in &pairs {
        expect_ok(
            registry,
            reqwest::Method::PUT,
            &format!(
                "{base}/v1/connect/intentions/exact?source={source}&destination={destination}"
            ),
            Some(json!({"SourceType": "consul", "Action": "allow"})),
        )
        .await?;
    }
    report.ok(&format!(
        "intentions allow {}; every other call is denied",
        pairs
            .iter()
            .map(|(s, d)| format!("{s} → {d}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    report.info(
        "every sidecar and the gateway start with --mtls and their token (in TRELLIS_HTTP_TOKEN): certificates from the registry's CA, each call checked against the intentions",
    );
    Ok(tokens)
}

/// What the secured system refuses, each shown as a check: a mesh caller that no intention
/// allows, a caller without a mesh certificate, and registry writes without a token or with a
/// token that does not allow them.
pub async fn show_refusals(
    plan: &Plan,
    tokens: &Tokens,
    anonymous: &reqwest::Client,
    registry: &reqwest::Client,
    report: &mut Report,
) -> anyhow::Result<()> {
    let orders = plan
        .instance("orders-1")
        .context("orders-1 is in the plan")?;
    let users_token = tokens.get("users-sidecar")?;

    // What a compromised users instance could do: get users' certificate with its sidecar's
    // token and call orders directly. No intention allows users → orders.
    let mesh = mesh_client(plan, users_token, "users", ORDERS_SERVICE).await?;
    let url = format!("https://{}/orders", orders.inbound);
    match mesh.get(&url).send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            let error = response
                .headers()
                .get("x-trellis-error")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            report.check(
                status == 403 && error == "intention denied",
                &format!(
                    "users' mesh certificate (its sidecar's token gets one) calling orders-1's sidecar → {status} {error}: no intention allows users → orders"
                ),
            );
        }
        Err(e) => {
            report.fail(&format!(
                "users' mesh certificate calling orders-1's sidecar: {}",
                causes(&e)
            ));
        }
    }

    // Without a certificate, the sidecar's inbound listener takes no call at all.
    let plain = format!("http://{}/orders", orders.inbound);
    match anonymous.get(&plain).send().await {
        Ok(response) => {
            let status = response.status();
            let error = response
                .headers()
                .get("x-trellis-error")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            report.check(
                !status.is_success(),
                &format!(
                    "plain HTTP to orders-1's sidecar (no mesh certificate) → {} {error}",
                    status.as_u16()
                ),
            )
        }
        Err(_) => report.check(
            true,
            "plain HTTP to orders-1's sidecar (no mesh certificate) → refused: its inbound listener speaks only mutual TLS",
        ),
    };

    // An impostor orders instance, registered without a token and with users' token.
    let register = format!("{}/v1/agent/service/register", plan.registry_url());
    let impostor = json!({
        "ID": "orders-impostor",
        "Name": ORDERS_SERVICE,
        "Address": "127.0.0.1",
        "Port": orders.app.port(),
    });
    let with_users_token = bearer_client(users_token)?;
    for (who, client) in [
        ("without a token", anonymous),
        ("with the users sidecars' token", &with_users_token),
    ] {
        let (status, answer) = send(
            client,
            reqwest::Method::PUT,
            &register,
            Some(impostor.clone()),
        )
        .await?;
        let reason = answer.as_str().unwrap_or_default().trim().to_owned();
        report.check(
            status == 403,
            &format!("registering an orders instance {who} → {status} {reason}"),
        );
        if status == 200 {
            // Not left in the catalog for the rest of the flow to find.
            let deregister = format!(
                "{}/v1/agent/service/deregister/orders-impostor",
                plan.registry_url()
            );
            send(registry, reqwest::Method::PUT, &deregister, None).await?;
        }
    }
    Ok(())
}

/// A registry client sending `secret` as its token.
fn bearer_client(secret: &str) -> anyhow::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    let mut value = reqwest::header::HeaderValue::from_str(secret)
        .context("a token's secret is not a valid header value")?;
    value.set_sensitive(true);
    headers.insert("x-consul-token", value);
    reqwest::Client::builder()
        .no_proxy()
        .default_headers(headers)
        .timeout(Duration::from_secs(10))
        .build()
        .context("cannot build an HTTP client")
}

/// An error and its causes, on one line (reqwest's own text hides what went wrong).
fn causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// An HTTPS client presenting a certificate for `identity` (fetched with `token`, which must
/// allow writing that service, from the registry's CA), that talks only to a server proving it
/// is `destination`.
async fn mesh_client(
    plan: &Plan,
    token: &str,
    identity: &str,
    destination: &str,
) -> anyhow::Result<reqwest::Client> {
    let registry = trellis_client::Client::with_token(&plan.registry_url(), Some(token))?;
    let roots = registry
        .ca_roots(None)
        .await
        .context("cannot read the mesh's roots")?;
    let leaf = registry
        .leaf_cert(identity)
        .await
        .with_context(|| format!("cannot get a certificate for {identity}"))?;
    let mesh =
        trellis_client::mesh::MeshTls::new(&roots.value, &leaf.cert_pem, &leaf.private_key_pem)?;
    let config = mesh.client_for(destination, vec![b"http/1.1".to_vec()])?;
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .use_preconfigured_tls((*config).clone())
        .build()
        .context("cannot build the mesh client")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn plan() -> Plan {
        Plan::new(9500, PathBuf::from("/tmp")).unwrap()
    }

    #[test]
    fn each_component_gets_only_what_it_does() {
        let grants = grants(&plan());
        let rules = |policy: &str| {
            grants
                .iter()
                .find(|g| g.policy == policy)
                .unwrap_or_else(|| panic!("no {policy}"))
                .hcl()
        };
        assert_eq!(
            rules("users-sidecar"),
            "service \"users\" { policy = \"write\" }\nkey \"trellis/config/users\" { policy = \"read\" }"
        );
        assert_eq!(
            rules("orders-sidecar"),
            "service \"orders\" { policy = \"write\" }\nservice \"users\" { policy = \"read\" }\n\
             key \"trellis/config/orders\" { policy = \"read\" }\nkey \"trellis/config/users\" { policy = \"read\" }"
        );
        let gateway = rules("gateway");
        assert!(
            gateway.starts_with("service \"gateway\" { policy = \"write\" }"),
            "{gateway}"
        );
        assert!(
            !gateway.contains("\"users\" { policy = \"write\""),
            "{gateway}"
        );
        assert_eq!(rules("orders-app"), "operator = \"write\"");
        let children: Vec<&str> = grants
            .iter()
            .flat_map(|g| g.children.iter().map(String::as_str))
            .collect();
        for child in [
            "users-1-sidecar",
            "users-2-sidecar",
            "orders-1-sidecar",
            "orders-2-sidecar",
            "inventory-1-sidecar",
            "gateway",
            "orders-1",
            "orders-2",
        ] {
            assert_eq!(
                children.iter().filter(|c| **c == child).count(),
                1,
                "{child}"
            );
        }
        // users and inventory never talk to the registry: no token.
        assert!(!children.contains(&"users-1") && !children.contains(&"inventory-1"));
    }

    #[test]
    fn intentions_allow_exactly_the_calls_made() {
        assert_eq!(
            intentions(&plan()),
            vec![
                ("gateway", "users"),
                ("gateway", "orders"),
                ("gateway", "inventory"),
                ("orders", "users"),
                ("trellis-coordinator", "orders"),
                ("trellis-coordinator", "inventory"),
            ]
        );
    }

    #[test]
    fn the_management_secret_is_kept_across_runs_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let first = prepare_management(dir.path()).unwrap();
        assert_eq!(first.len(), 36, "{first}");
        assert_eq!(prepare_management(dir.path()).unwrap(), first);
        let text = std::fs::read_to_string(dir.path().join(REGISTRY_CONFIG)).unwrap();
        assert!(
            text.contains(&format!("initial_management = \"{first}\"")),
            "{text}"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(REGISTRY_CONFIG))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "{mode:o}");
        }
        let other = tempfile::tempdir().unwrap();
        assert_ne!(prepare_management(other.path()).unwrap(), first);
    }
}
