//! A private PostgreSQL 15 cluster for a test: a data dir in a temp dir (a
//! copy of one `initdb` per PostgreSQL version), the postmaster as a child
//! process on a loopback port, trust authentication on loopback only, stopped
//! by its PID. Debian's `postgresql` package provides the binaries;
//! `scripts/test.sh` installs it.
//!
//! initdb and postgres refuse to run as root, so as root both run as the
//! `postgres` OS user through `setpriv`, which execs in place: the child we
//! hold is the postmaster itself, never a wrapper, so its PID is the one we
//! signal and reap.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::process::{free_port, memory_tempdir, run, text, tool};

const START_LIMIT: Duration = Duration::from_secs(30);
const STOP_LIMIT: Duration = Duration::from_secs(15);
/// A port picked free can be taken by someone else before postgres binds it.
const PORT_ATTEMPTS: usize = 5;

/// Three mirror replicas, each with a pool of up to 32 plus a LISTEN
/// connection and the leader's advisory-lock connection, and the CLI and test
/// connections beside them.
const MAX_CONNECTIONS: usize = 3 * (32 + 2) + 20;

pub const DATABASE: &str = "mirror";
pub const ROLE: &str = "mirror";

/// A running private cluster; dropped, it stops and its files go.
pub struct Postgres {
    postmaster: Option<Child>,
    port: u16,
    data: PathBuf,
    log: PathBuf,
    run_as_postgres: bool,
    root: tempfile::TempDir,
}

impl Postgres {
    /// A fresh cluster (a copy of the template), started, with the `mirror`
    /// role and database.
    pub fn start() -> Postgres {
        let root = memory_tempdir("postgres-");
        let run_as_postgres = owned_by_root(root.path());
        if run_as_postgres {
            hand_to_postgres_user(root.path());
        }
        let data = root.path().join("data");
        copy_dir(template(), &data);
        let sockets = root.path().join("sockets");
        std::fs::create_dir(&sockets).expect("socket dir");
        if run_as_postgres {
            hand_to_postgres_user(&sockets);
        }
        configure(&data, &sockets);
        let mut postgres = Postgres {
            postmaster: None,
            port: 0,
            log: root.path().join("postgres.log"),
            data,
            run_as_postgres,
            root,
        };
        postgres.start_on_free_port();
        postgres.create_role_and_database();
        postgres
    }

    /// `postgres://mirror@127.0.0.1:PORT/mirror`
    pub fn url(&self) -> String {
        format!("postgres://{ROLE}@127.0.0.1:{}/{DATABASE}", self.port)
    }

    /// The superuser's URL, for a test that inspects or breaks things.
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{DATABASE}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The postmaster's PID while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.postmaster.as_ref().map(Child::id)
    }

    /// Stops the server (fast shutdown: clients are disconnected) and keeps
    /// its data and port, for an outage a test controls; `resume` ends it.
    pub fn halt(&mut self) {
        if let Some(child) = self.postmaster.take() {
            stop_postmaster(child);
        }
    }

    /// Starts the server again on the same port over the same data.
    pub fn resume(&mut self) {
        assert!(self.postmaster.is_none(), "postgres is already running");
        if let Err(failure) = self.spawn_and_wait(self.port) {
            panic!(
                "postgres did not come back on port {}: {failure}",
                self.port
            );
        }
    }

    /// The "restart PostgreSQL under load" outage: same port, same data.
    pub fn restart(&mut self) {
        self.halt();
        self.resume();
    }

    /// Stops the server and removes its files.
    pub fn stop(self) {
        drop(self);
    }

    fn start_on_free_port(&mut self) {
        let mut failures = Vec::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            match self.spawn_and_wait(port) {
                Ok(()) => return,
                Err(failure) => failures.push(format!("port {port}: {failure}")),
            }
        }
        panic!("postgres did not start: {}", failures.join("\n"));
    }

    /// Runs the postmaster in the foreground and waits until it accepts
    /// queries; on failure returns why, with the log.
    fn spawn_and_wait(&mut self, port: u16) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open postgres log");
        let log_err = log.try_clone().expect("clone log handle");
        let mut postmaster = self
            .command("postgres")
            .arg("-D")
            .arg(&self.data)
            .arg("-p")
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .expect("spawn postgres");
        let deadline = Instant::now() + START_LIMIT;
        loop {
            if let Ok(Some(status)) = postmaster.try_wait() {
                return Err(format!("postgres exited ({status}): {}", self.log_text()));
            }
            if self.accepts_queries(port) {
                self.port = port;
                self.postmaster = Some(postmaster);
                return Ok(());
            }
            if Instant::now() > deadline {
                stop_postmaster(postmaster);
                return Err(format!(
                    "not ready after {START_LIMIT:?}: {}",
                    self.log_text()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `pg_isready` answers 0 only once the server accepts connections,
    /// not while it is still starting up or recovering.
    fn accepts_queries(&self, port: u16) -> bool {
        let mut ready = Command::new(tool("pg_isready"));
        ready.args(["-q", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres"]);
        ready.arg("-p").arg(port.to_string()).arg("-t").arg("2");
        run(&mut ready, Duration::from_secs(10)).status.success()
    }

    fn create_role_and_database(&self) {
        let mut psql = Command::new(tool("psql"));
        psql.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", "postgres", "-d", "postgres"])
            .arg("-c")
            .arg(format!("CREATE ROLE {ROLE} LOGIN"))
            .arg("-c")
            .arg(format!("CREATE DATABASE {DATABASE} OWNER {ROLE}"));
        let output = run(&mut psql, Duration::from_secs(30));
        assert!(
            output.status.success(),
            "creating the mirror role and database failed: {}",
            text(&output)
        );
    }

    fn command(&self, name: &str) -> Command {
        pg_command(name, self.run_as_postgres, self.root.path())
    }

    fn log_text(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.halt();
    }
}

/// SIGINT is PostgreSQL's fast shutdown; SIGKILL if it does not finish.
fn stop_postmaster(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + STOP_LIMIT;
    while Instant::now() < deadline {
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A command for a PostgreSQL binary, as the postgres user when we are root.
fn pg_command(name: &str, as_postgres: bool, working_dir: &Path) -> Command {
    let binary = tool(name);
    let mut command = if as_postgres {
        let mut setpriv = Command::new(tool("setpriv"));
        setpriv
            .args([
                "--reuid=postgres",
                "--regid=postgres",
                "--init-groups",
                "--",
            ])
            .arg(binary);
        setpriv
    } else {
        Command::new(binary)
    };
    // Our own working directory may be one the postgres user cannot enter.
    command.current_dir(working_dir);
    command
}

/// initdb is most of a cluster's start (it bootstraps every catalog: 2 s in
/// memory, 6 s on this machine's busy disk) and makes the same files for
/// every test, so it runs once per PostgreSQL version into cargo's test tmp
/// dir, and each test copies that (0.3 s).
fn template() -> &'static Path {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    TEMPLATE.get_or_init(make_template)
}

fn make_template() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let template = tmp.join(format!("postgres-{}-template", initdb_version()));
    if template.is_dir() {
        return template;
    }
    let staging = tempfile::Builder::new()
        .prefix("postgres-template-")
        .tempdir_in(tmp)
        .expect("staging dir for the postgres template");
    let as_postgres = owned_by_root(staging.path());
    if as_postgres {
        hand_to_postgres_user(staging.path());
    }
    let data = staging.path().join("data");
    let mut initdb = pg_command("initdb", as_postgres, staging.path());
    initdb
        .arg("--pgdata")
        .arg(&data)
        .args(["--username=postgres", "--auth=trust", "--encoding=UTF8"])
        .args(["--locale=C", "--no-sync", "--no-instructions"]);
    let output = run(&mut initdb, Duration::from_secs(120));
    assert!(output.status.success(), "initdb failed: {}", text(&output));
    // Test binaries running at once may all get here: a rename is atomic, the
    // first one wins, and the others' copies go with their staging dirs.
    if let Err(e) = std::fs::rename(&data, &template) {
        assert!(
            template.is_dir(),
            "cannot place {}: {e}",
            template.display()
        );
    }
    template
}

/// `15.18` from `initdb (PostgreSQL) 15.18 (Debian …)`.
fn initdb_version() -> String {
    let mut version = Command::new(tool("initdb"));
    version.arg("--version");
    let output = run(&mut version, Duration::from_secs(10));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    stdout
        .split_whitespace()
        .nth(2)
        .filter(|v| v.chars().all(|c| c.is_ascii_alphanumeric() || c == '.'))
        .unwrap_or_else(|| panic!("unexpected `initdb --version`: {}", text(&output)))
        .to_owned()
}

/// Settings of one test cluster, after the template's defaults.
fn configure(data: &Path, sockets: &Path) {
    let settings = format!(
        "\n# tests/common/postgres.rs\n\
         listen_addresses = '127.0.0.1'\n\
         unix_socket_directories = '{sockets}'\n\
         max_connections = {MAX_CONNECTIONS}\n\
         fsync = off\n\
         synchronous_commit = off\n\
         full_page_writes = off\n",
        sockets = sockets.display(),
    );
    append(&data.join("postgresql.conf"), &settings);
    // initdb's pg_hba.conf already trusts only the unix socket and loopback
    // (127.0.0.1/32, ::1/128), and listen_addresses keeps it so.
}

/// `cp -a` keeps the owner (postgres) and the 0700 mode postgres insists on.
fn copy_dir(from: &Path, to: &Path) {
    let mut cp = Command::new("cp");
    cp.arg("-a").arg(from).arg(to);
    let output = run(&mut cp, Duration::from_secs(60));
    assert!(
        output.status.success(),
        "copying the template: {}",
        text(&output)
    );
}

/// A directory we just created is owned by our own effective user.
fn owned_by_root(dir: &Path) -> bool {
    std::fs::metadata(dir).expect("stat temp dir").uid() == 0
}

fn hand_to_postgres_user(dir: &Path) {
    let mut chown = Command::new("chown");
    chown.arg("postgres:postgres").arg(dir);
    let output = run(&mut chown, Duration::from_secs(10));
    assert!(
        output.status.success(),
        "cannot give {} to the postgres user (is the `postgresql` package installed? \
         scripts/test.sh installs it): {}",
        dir.display(),
        text(&output)
    );
}

fn append(path: &Path, settings: &str) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    file.write_all(settings.as_bytes())
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}
