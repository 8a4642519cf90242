"""The demo's client flow against the compose example (tests/deploy/docker.sh runs it).

Usage: compose_flow.py GATEWAY_URL REGISTRY_URL COMPOSE_PROJECT

Through the gateway: the seeded users, orders and stock; load spread over both users
instances; an order placed as a transaction (the stock follows it); an order for more than is
left refused (409) with the stock unchanged. Then users-1's app is SIGKILLed from the host:
requests through the gateway keep succeeding while Docker restarts it, and it serves again.
Exits non-zero, saying which step failed, on the first failure.
"""

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

gateway, registry, project = sys.argv[1:4]


def call(method, url, body=None, timeout=10):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        text = error.read()
        try:
            payload = json.loads(text)
        except ValueError:
            payload = text.decode(errors="replace")
        return error.code, dict(error.headers), payload


def get(path):
    return call("GET", gateway + path)


def step(text):
    print(f"-- {text}", flush=True)


def check(condition, text):
    if not condition:
        print(f"FAILED: {text}", file=sys.stderr, flush=True)
        sys.exit(1)
    print(f"   ok: {text}", flush=True)


def wait_for(what, seconds, probe):
    deadline = time.monotonic() + seconds
    last = None
    while time.monotonic() < deadline:
        try:
            last = probe()
            if last is True:
                return
        except (OSError, urllib.error.URLError) as error:
            last = error
        time.sleep(0.5)
    check(False, f"{what} within {seconds} s (last: {last})")


def served_by(headers):
    return {k.lower(): v for k, v in headers.items()}.get("x-served-by", "")


def passing_instances(service):
    status, _, body = call("GET", f"{registry}/v1/health/service/{service}?passing")
    return sorted(entry["Service"]["ID"] for entry in body) if status == 200 else []


def stock(product):
    status, _, body = get("/stock/" + product.replace(" ", "%20"))
    check(status == 200, f"GET /stock/{product} → {status}")
    return body["stock"], body["reserved"]


step("the registry sees every instance passing")
expected = {"users": ["users-1", "users-2"], "orders": ["orders-1", "orders-2"], "inventory": ["inventory-1"]}
for service, ids in expected.items():
    wait_for(f"{service} instances {ids} passing", 120, lambda: passing_instances(service) == ids or passing_instances(service))
    print(f"   ok: {service}: {', '.join(ids)} passing", flush=True)

step("the gateway routes /users, /orders and /stock")
for route in ["/users", "/orders", "/stock"]:
    wait_for(f"GET {route} → 200 through the gateway", 60, lambda: get(route)[0] == 200 or get(route)[0])
status, _, users = get("/users")
names = {u["name"] for u in users}
check(status == 200 and {"John", "Jane"} <= names, f"GET /users → {sorted(names)}")

step("load through the gateway reaches both users instances")
with ThreadPoolExecutor(8) as pool:
    answers = list(pool.map(lambda _: get("/users/1"), range(64)))
seen = {served_by(headers) for status, headers, _ in answers if status == 200}
check(all(a[0] == 200 for a in answers), "64 concurrent GET /users/1 all answered 200")
check({"users-1", "users-2"} <= seen, f"served by {sorted(seen)}")

step("an order is one transaction across orders and inventory")
before, _ = stock("Product A")
status, headers, order = call("POST", gateway + "/orders", {"user_id": 1, "product": "Product A", "quantity": 2})
gid = {k.lower(): v for k, v in headers.items()}.get("x-trellis-gid", "")
check(status == 201 and gid, f"POST /orders 2 × Product A → {status}, order {order.get('id') if isinstance(order, dict) else order}, transaction {gid}")
after, reserved = stock("Product A")
check(after == before - 2 and reserved == 0, f"Product A stock {before} → {after} ({reserved} reserved)")
status, _, txn = call("GET", f"{registry}/v1/trellis/txn/{gid}")
check(status == 200 and txn.get("state") == "committed", f"the registry's coordinator: transaction {gid} {txn.get('state') if isinstance(txn, dict) else txn}")

step("an order for more than is left aborts")
before = stock("Limited edition")
status, _, refused = call("POST", gateway + "/orders", {"user_id": 2, "product": "Limited edition", "quantity": 2})
reason = refused.get("error", "") if isinstance(refused, dict) else str(refused)
check(status == 409 and "only 1 of" in reason, f"POST /orders 2 × Limited edition → {status} {reason}")
check(stock("Limited edition") == before, f"Limited edition stock unchanged at {before[0]}")

step("users-1's app is killed (SIGKILL from the host): Docker restarts it, the gateway routes around it")
container = subprocess.run(
    ["/usr/bin/docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={project}",
     "--filter", "label=com.docker.compose.service=users-1"],
    check=True, capture_output=True, text=True).stdout.strip()
check(container != "", f"the users-1 container ({container})")
pid = subprocess.run(["/usr/bin/docker", "inspect", "-f", "{{.State.Pid}}", container],
                     check=True, capture_output=True, text=True).stdout.strip()
subprocess.run(["kill", "-KILL", pid], check=True)
failures = 0
served = set()
started = time.monotonic()
while time.monotonic() - started < 6:
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: get("/users/1"), range(8)))
    failures += sum(1 for a in answers if a[0] != 200)
    served |= {served_by(a[1]) for a in answers if a[0] == 200}
check(failures == 0, f"requests through the gateway while users-1 was down: {failures} failed, served by {sorted(served)}")
restarts = lambda: int(subprocess.run(["/usr/bin/docker", "inspect", "-f", "{{.RestartCount}}", container],
                                      check=True, capture_output=True, text=True).stdout.strip())
wait_for("Docker to restart users-1", 60, lambda: restarts() >= 1 or restarts())
wait_for("users-1 passing again", 60, lambda: "users-1" in passing_instances("users") or passing_instances("users"))


def users_1_serves():
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: get("/users/1"), range(32)))
    return "users-1" in {served_by(a[1]) for a in answers if a[0] == 200} or "not yet"


wait_for("users-1 serving through the gateway again", 60, users_1_serves)
print("   ok: users-1 restarted by Docker, passing and serving again", flush=True)
print("client flow passed", flush=True)
