//! A throw-away PostgreSQL server for tests (behind the `testing` feature): Debian's binaries
//! (`/usr/lib/postgresql/<version>/bin`, or `$TRELLIS_PG_BIN`), a fresh cluster in a temp
//! directory, reachable only through a unix socket in that directory (no TCP at all), with
//! `max_prepared_transactions = 100`. `initdb` refuses to run as root, so as root the server
//! runs as the `postgres` user that Debian's package creates (or `nobody`), through `setpriv`.
//! Stopped by its pid when dropped.
//!
//! ```no_run
//! # async fn run() {
//! use trellis_participant::testing::PgServer;
//!
//! let pg = PgServer::start();
//! let client = pg.connect().await;
//! client.batch_execute("CREATE TABLE t (id int)").await.unwrap();
//! // Another process reaches it with `pg.connection_string()`.
//! # }
//! ```

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};
use tempfile::TempDir;

/// The port only names the socket file (`.s.PGSQL.5432`); nothing listens on TCP.
const PORT: u16 = 5432;
const READY_WITHIN: Duration = Duration::from_secs(60);

/// One PostgreSQL server (its cluster, its process); see the [module docs](self).
pub struct PgServer {
    dir: TempDir,
    bin: PathBuf,
    run_as: Option<(u32, u32)>,
    settings: Vec<(String, String)>,
    child: Option<Child>,
}

impl PgServer {
    /// A new cluster with `max_prepared_transactions = 100`, started and accepting connections.
    pub fn start() -> PgServer {
        PgServer::start_with(&[("max_prepared_transactions", "100")])
    }

    /// A new cluster with these server settings, started.
    pub fn start_with(settings: &[(&str, &str)]) -> PgServer {
        let bin = bin_dir();
        let run_as = rustix::process::geteuid().is_root().then(unprivileged_user);
        // As root, under /tmp: the unprivileged server must be able to reach its directory,
        // which it could not under a private $TMPDIR.
        let dir = match run_as {
            Some(_) => tempfile::Builder::new()
                .prefix("trellis-pg-")
                .tempdir_in("/tmp"),
            None => tempfile::Builder::new().prefix("trellis-pg-").tempdir(),
        }
        .expect("temp dir");
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown temp dir");
        }
        let mut server = PgServer {
            dir,
            bin,
            run_as,
            settings: settings
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            child: None,
        };
        server.initdb();
        server.spawn();
        server
    }

    /// Connection settings for the `postgres` database as the `postgres` superuser.
    pub fn config(&self) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host_path(self.dir.path())
            .port(PORT)
            .user("postgres")
            .dbname("postgres")
            .connect_timeout(Duration::from_secs(10));
        config
    }

    /// The same settings as a `tokio_postgres` connection string (`host=<socket dir> port=...
    /// user=postgres dbname=postgres`), for a process of its own (`trellis bank --postgres`).
    pub fn connection_string(&self) -> String {
        format!(
            "host={} port={PORT} user=postgres dbname=postgres connect_timeout=10",
            self.dir.path().display()
        )
    }

    /// The directory of the server's unix socket (and of its data and log).
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    /// A plain connection for the test's own queries.
    pub async fn connect(&self) -> tokio_postgres::Client {
        let (client, connection) = self
            .config()
            .connect(tokio_postgres::NoTls)
            .await
            .expect("connect to the test PostgreSQL");
        tokio::spawn(connection);
        client
    }

    /// Kills the server the hard way (immediate shutdown: no checkpoint, crash recovery at the
    /// next start) and starts it again on the same data.
    pub fn restart_after_crash(&mut self) {
        self.stop(Signal::QUIT);
        self.spawn();
    }

    fn initdb(&self) {
        let data = self.data_dir();
        let log = self.dir.path().join("initdb.log");
        let status = self
            .command("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C"])
            // Only skips initdb's own final fsync of the new files; the server keeps fsync on.
            .arg("--no-sync")
            .stdout(Stdio::null())
            .stderr(File::create(&log).expect("initdb log"))
            .status()
            .expect("run initdb (through setpriv when root)");
        assert!(
            status.success(),
            "initdb failed ({status}):\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    fn spawn(&mut self) {
        let log_path = self.dir.path().join("postgres.log");
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("postgres log");
        let mut command = self.command("postgres");
        command
            .arg("-D")
            .arg(self.data_dir())
            .args(["-c", "listen_addresses="])
            .arg("-c")
            .arg(format!(
                "unix_socket_directories={}",
                self.dir.path().display()
            ))
            .args(["-c", &format!("port={PORT}")])
            .args(["-c", "max_connections=40"])
            .args(["-c", "shared_buffers=16MB"])
            .args(["-c", "logging_collector=off"]);
        for (key, value) in &self.settings {
            command.arg("-c").arg(format!("{key}={value}"));
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start postgres");
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                panic!(
                    "postgres exited at start ({status}):\n{}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
            }
            if self.is_ready() {
                break;
            }
            assert!(
                started.elapsed() < READY_WITHIN,
                "postgres not ready after {READY_WITHIN:?}:\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child = Some(child);
    }

    fn is_ready(&self) -> bool {
        Command::new(self.bin.join("pg_isready"))
            .arg("-q")
            .arg("-h")
            .arg(self.dir.path())
            .args(["-p", &PORT.to_string(), "-U", "postgres", "-d", "postgres"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// Signals the server (INT: fast shutdown, QUIT: immediate) and waits for it to exit,
    /// killing it if it takes too long.
    fn stop(&mut self, signal: Signal) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = kill_process(Pid::from_child(&child), signal);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `bin/<program>`, through `setpriv` as the unprivileged user when root.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut command = match self.run_as {
            Some((uid, gid)) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .arg("--clear-groups")
                    .arg("--")
                    .arg(path);
                c
            }
            None => Command::new(path),
        };
        command.env("LC_ALL", "C").env_remove("PGDATA");
        command
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop(Signal::INT);
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin` with the server in it, or `$TRELLIS_PG_BIN`.
/// Fails the test (never skips it) when there is none.
fn bin_dir() -> PathBuf {
    let complete = |bin: &Path| {
        ["initdb", "postgres", "pg_isready"]
            .iter()
            .all(|program| bin.join(program).is_file())
    };
    let found = match std::env::var_os("TRELLIS_PG_BIN") {
        Some(dir) => Some(PathBuf::from(dir)).filter(|bin| complete(bin)),
        None => {
            let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|entry| {
                    let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
                    let bin = entry.path().join("bin");
                    complete(&bin).then_some((version, bin))
                })
                .collect();
            found.sort();
            found.pop().map(|(_, bin)| bin)
        }
    };
    found.unwrap_or_else(|| {
        panic!(
            "PostgreSQL server binaries (initdb, postgres, pg_isready) not found in \
             /usr/lib/postgresql/<version>/bin (or $TRELLIS_PG_BIN): run scripts/install-deps, \
             which installs Debian's postgresql package"
        )
    })
}

/// (uid, gid) of `postgres` (created by Debian's package), else `nobody`.
fn unprivileged_user() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    let lookup = |name: &str| {
        passwd.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.len() > 3 && fields[0] == name)
                .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
                .flatten()
        })
    };
    lookup("postgres").or_else(|| lookup("nobody")).expect(
        "neither a postgres nor a nobody user to run PostgreSQL as: run scripts/install-deps",
    )
}
