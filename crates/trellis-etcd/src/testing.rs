//! For tests: a real etcd member (Debian's `etcd-server`) on loopback ports, its data in a
//! temporary directory, killed by pid when dropped.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct EtcdProcess {
    child: Child,
    /// The member's client URL, `http://127.0.0.1:PORT`.
    pub client_url: String,
    peer_url: String,
    data: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

impl EtcdProcess {
    /// Starts a one-member cluster and waits until it answers (at most 30 s).
    pub fn start() -> EtcdProcess {
        let data = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let client_url = format!("http://127.0.0.1:{}", free_port());
        let peer_url = format!("http://127.0.0.1:{}", free_port());
        let child = spawn(data.path(), &client_url, &peer_url);
        let mut member = EtcdProcess {
            child,
            client_url,
            peer_url,
            data,
        };
        member.wait_healthy(Duration::from_secs(30));
        member
    }

    /// SIGKILL, as a crash: what etcd acknowledged is on its disk.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the member again on its data and ports, and waits until it answers.
    pub fn restart(&mut self) {
        self.kill();
        self.child = spawn(self.data.path(), &self.client_url, &self.peer_url);
        self.wait_healthy(Duration::from_secs(30));
    }

    fn wait_healthy(&mut self, patience: Duration) {
        let deadline = Instant::now() + patience;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("etcd exited at start: {status}");
            }
            if etcdctl(&self.client_url, &["endpoint", "health"]).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "etcd not healthy after {patience:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `etcdctl get --prefix PREFIX --keys-only`: the keys, one per line.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        etcdctl(
            &self.client_url,
            &["get", "--prefix", prefix, "--keys-only"],
        )
        .unwrap_or_else(|e| panic!("etcdctl: {e}"))
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
    }

    /// `etcdctl get KEY -w json`: the key's create and mod revisions.
    pub fn revisions(&self, key: &str) -> (u64, u64) {
        let answer = etcdctl(&self.client_url, &["get", key, "-w", "json"])
            .unwrap_or_else(|e| panic!("etcdctl: {e}"));
        let answer: serde_json::Value =
            serde_json::from_str(&answer).unwrap_or_else(|e| panic!("etcdctl's JSON: {e}"));
        let field = |name: &str| {
            answer["kvs"][0][name]
                .as_u64()
                .unwrap_or_else(|| panic!("no {name} for {key}: {answer}"))
        };
        (field("create_revision"), field("mod_revision"))
    }

    /// `etcdctl get KEY --print-value-only`.
    pub fn value(&self, key: &str) -> String {
        etcdctl(&self.client_url, &["get", key, "--print-value-only"])
            .unwrap_or_else(|e| panic!("etcdctl: {e}"))
            .trim_end()
            .to_owned()
    }
}

fn spawn(data: &Path, client_url: &str, peer_url: &str) -> Child {
    Command::new("etcd")
        .args(["--name", "m1", "--data-dir"])
        .arg(data.join("m1"))
        .args(["--listen-client-urls", client_url])
        .args(["--advertise-client-urls", client_url])
        .args(["--listen-peer-urls", peer_url])
        .args(["--initial-advertise-peer-urls", peer_url])
        .args(["--initial-cluster", &format!("m1={peer_url}")])
        .args(["--initial-cluster-state", "new", "--logger", "zap"])
        .args(["--log-level", "error"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start etcd ({e}): scripts/install-deps installs etcd-server")
        })
}

/// Runs `etcdctl` (v3 API) against `endpoint`; its stdout, or why it failed.
pub fn etcdctl(endpoint: &str, args: &[&str]) -> Result<String, String> {
    let output = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", endpoint, "--command-timeout=3s"])
        .args(args)
        .output()
        .map_err(|e| {
            format!("cannot run etcdctl ({e}): scripts/install-deps installs etcd-client")
        })?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

impl Drop for EtcdProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
