//! The demo's child processes: each role runs as its own OS process of this same binary, with
//! its output in a log file; every child is stopped when the demo ends, however it ends.

use anyhow::{Context, bail};
use std::collections::BTreeMap;
use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The child that is the registry (stopped after the others).
pub const REGISTRY: &str = "registry";

/// How long a child gets to exit after SIGTERM before it is killed.
const GRACE: Duration = Duration::from_secs(5);

/// The environment variables a registry token reaches `trellis` commands through.
const TOKEN_VARS: [&str; 2] = ["TRELLIS_HTTP_TOKEN", "CONSUL_HTTP_TOKEN"];

/// Running children by name, stopped (SIGTERM, then SIGKILL) on drop.
pub struct Processes {
    exe: PathBuf,
    log_dir: PathBuf,
    children: BTreeMap<String, Child>,
    /// The registry token each child is started with (`--secure`), by child name, so that a
    /// restarted child gets its own again.
    tokens: BTreeMap<String, String>,
}

impl Processes {
    pub fn new(log_dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(log_dir)
            .with_context(|| format!("cannot create {}", log_dir.display()))?;
        Ok(Self {
            exe: std::env::current_exe().context("cannot find the trellis executable")?,
            log_dir: log_dir.to_owned(),
            children: BTreeMap::new(),
            tokens: BTreeMap::new(),
        })
    }

    /// Child `name`, whenever it is started from now on, gets `secret` as its registry token
    /// in `TRELLIS_HTTP_TOKEN`: in its environment (readable only by this user), not on its
    /// command line, which every user of the machine can read.
    pub fn give_token(&mut self, name: &str, secret: &str) {
        self.tokens.insert(name.to_owned(), secret.to_owned());
    }

    /// Starts `trellis ARGS...` as child `name`, appending its output to `logs/<name>.log`.
    pub fn spawn(&mut self, name: &str, args: &[String]) -> anyhow::Result<()> {
        let log_path = self.log_dir.join(format!("{name}.log"));
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("cannot open {}", log_path.display()))?;
        let mut command = Command::new(&self.exe);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .env("TRELLIS_LOG", "info");
        // A token in the user's own environment is not the demo's: the demo's registry would
        // refuse it (403 ACL not found) even without --secure.
        for var in TOKEN_VARS {
            command.env_remove(var);
        }
        if let Some(secret) = self.tokens.get(name) {
            command.env(TOKEN_VARS[0], secret);
        }
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        self.children.insert(name.to_owned(), child);
        Ok(())
    }

    /// SIGKILLs child `name` (the fault the demo injects).
    pub fn kill(&mut self, name: &str) -> anyhow::Result<()> {
        let Some(mut child) = self.children.remove(name) else {
            bail!("no process {name}");
        };
        child
            .kill()
            .with_context(|| format!("cannot kill {name}"))?;
        let _ = child.wait();
        Ok(())
    }

    /// Waits up to `timeout` for child `name` to exit on its own (a crash the demo injected)
    /// and forgets it; fails if it is still running then.
    pub fn wait_exit(&mut self, name: &str, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let Some(child) = self.children.get_mut(name) else {
            bail!("no process {name}");
        };
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                self.children.remove(name);
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!("{name} is still running {timeout:?} after it should have exited");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Fails if a child has exited on its own.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        for (name, child) in &mut self.children {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "{name} exited unexpectedly ({status}); see {}",
                    self.log_dir.join(format!("{name}.log")).display()
                );
            }
        }
        Ok(())
    }

    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    /// Stops every child: SIGTERM first so sidecars deregister, SIGKILL after the grace time.
    pub fn stop_all(&mut self) {
        // The registry last: the sidecars deregister on SIGTERM, which needs it.
        let (registry, others): (Vec<String>, Vec<String>) = self
            .children
            .keys()
            .cloned()
            .partition(|name| name == REGISTRY);
        self.stop_together(&others);
        self.stop_together(&registry);
    }

    /// Sends SIGTERM to each of `names`, waits up to the grace time for them all, then kills
    /// what is left.
    fn stop_together(&mut self, names: &[String]) {
        for name in names {
            if let Some(child) = self.children.get(name) {
                let _ = Command::new("kill")
                    .args(["-TERM", &child.id().to_string()])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
        let deadline = Instant::now() + GRACE;
        for name in names {
            let Some(mut child) = self.children.remove(name) else {
                continue;
            };
            while Instant::now() < deadline {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// Fails with the first port that is already taken, naming it.
pub fn ensure_free(ports: &[(String, SocketAddr)]) -> anyhow::Result<()> {
    for (what, addr) in ports {
        if let Err(e) = TcpListener::bind(addr) {
            bail!(
                "port {} ({what}) is not available: {e}; choose other ports with --base-port",
                addr.port()
            );
        }
    }
    Ok(())
}

/// How to run this very binary from the current directory (e.g. `./target/release/trellis`
/// after `cargo run --release`), so the hints can be pasted as they are.
pub fn this_binary() -> String {
    let Ok(exe) = std::env::current_exe() else {
        return "trellis".to_owned();
    };
    let relative = std::env::current_dir()
        .ok()
        .and_then(|cwd| exe.strip_prefix(cwd).ok().map(|p| Path::new(".").join(p)));
    relative.unwrap_or(exe).display().to_string()
}
