//! The rest of the real stack for integration tests, beside `kafka_broker.rs`: a PostgreSQL
//! server with the reference EAV schema, and a Kafka Connect worker running Debezium's PostgreSQL
//! connector into a broker. Each lives in its own temporary folder on free 127.0.0.1 ports,
//! started and stopped by `integration-tests/stack/postgres.sh` and `connect.sh`.
//!
//! `postgres.sh` needs PostgreSQL's server binaries (`PG_BIN`, else `/usr/lib/postgresql/*/bin`);
//! as root it runs them as the `postgres` user. `connect.sh` runs Kafka Connect and Debezium from
//! Maven Central jars cached under `$EAVLAKE_CACHE` (default `~/.cache/eavlake`), so it needs
//! `java` (17+) and `python3`, plus `mvn` the first time (`connect.sh fetch` warms the cache).
//! The connector is `config/debezium-postgres.properties`: JSON without schemas, `entities` and
//! `entity_values` both on `eav.public.entity_changes` (4 partitions, partitioned by `entity_id`),
//! `eav.public.attributes`, `eav.transaction`, `__debezium-heartbeat.eav`.
//!
//! Each is stopped when dropped; one that is never dropped (a `static`, a killed test process)
//! is stopped by its script's watchdog within a second of this process exiting, and in any case
//! after `$EAVLAKE_STACK_TTL` seconds (default 3600).
//!
//! Include it from a test file with
//! ```ignore
//! #[path = "common/stack.rs"]
//! mod stack;
//! ```
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("integration-tests/stack").join(name)
}

/// Runs `integration-tests/stack/<name> <args…>` with this process as the stack's owner and
/// returns its stdout, trimmed; panics with its stderr when it fails.
fn run(name: &str, args: &[&str]) -> String {
    try_run(name, args).unwrap_or_else(|e| panic!("{e}"))
}

/// [`run`], with the failure returned.
fn try_run(name: &str, args: &[&str]) -> Result<String, String> {
    let out: std::io::Result<Output> = Command::new(script(name))
        .args(args)
        // The watchdog stops the server when this test process is gone.
        .env("EAVLAKE_STACK_OWNER_PID", std::process::id().to_string())
        .output();
    let what = format!("{name} {}", args.first().copied().unwrap_or_default());
    let out = out.map_err(|e| format!("{what}: cannot run {}: {e}", script(name).display()))?;
    if !out.status.success() {
        return Err(format!("{what} failed ({}):\n{}", out.status, String::from_utf8_lossy(&out.stderr)));
    }
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if stdout.is_empty() {
        return Err(format!("{what} printed nothing"));
    }
    Ok(stdout)
}

/// Restarts a service, once more if the first start fails: a restart races with what the
/// killed process leaves behind (its replication slot still active, a port in TIME_WAIT), and
/// that is the harness's business, not what the tests check. The first failure is printed.
fn restart(name: &str, args: &[&str], again: &[&str]) -> String {
    match try_run(name, args) {
        Ok(out) => out,
        Err(first) => {
            eprintln!("{first}\n(trying once more)");
            std::thread::sleep(std::time::Duration::from_secs(3));
            run(name, again)
        }
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("temporary folder path is UTF-8")
}

/// A running PostgreSQL server (`wal_level=logical`) with database `eav` and `schemas/eav.sql`
/// loaded; `url` is `postgres://postgres@127.0.0.1:PORT/eav` (trust authentication).
pub struct Postgres {
    pub url: String,
    dir: tempfile::TempDir,
}

impl Postgres {
    /// Starts a fresh server (initdb, about 2 s); panics with the script's stderr (the tail of
    /// the server's log) when it does not come up.
    pub fn start() -> Postgres {
        let dir = tempfile::Builder::new().prefix("eavlake-pg-").tempdir().expect("temporary folder");
        let url = run("postgres.sh", &["start", path_str(dir.path())]);
        Postgres { url, dir }
    }

    /// The server's folder: `data/`, `postgres.log`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Before the TempDir field is removed, which happens after this returns.
        let _ = Command::new(script("postgres.sh")).arg("stop").arg(self.dir.path()).output();
    }
}

/// A running Kafka Connect worker with the Debezium connector; `rest` is its REST API,
/// `http://127.0.0.1:PORT` (`GET {rest}/connectors/eavlake-postgres/status`).
pub struct Connect {
    pub rest: String,
    dir: tempfile::TempDir,
}

impl Connect {
    /// Starts a worker that captures the `eav` database at `pg_url` (as `Postgres::url`) into
    /// the broker at `bootstrap`, and waits until the connector's task is RUNNING: from then on
    /// every change is captured (the first start also snapshots the existing rows, in the
    /// background). Panics with the script's stderr (the tail of the worker's log) on failure.
    pub fn start(bootstrap: &str, pg_url: &str) -> Connect {
        let dir = tempfile::Builder::new().prefix("eavlake-connect-").tempdir().expect("temporary folder");
        let rest = run("connect.sh", &["start", path_str(dir.path()), bootstrap, pg_url]);
        Connect { rest, dir }
    }

    /// [`Connect::start`] with Avro values (config/debezium-avro.properties) whose schemas go to
    /// `registry`.
    pub fn start_avro(bootstrap: &str, pg_url: &str, registry: &Registry) -> Connect {
        let dir = tempfile::Builder::new().prefix("eavlake-connect-").tempdir().expect("temporary folder");
        let rest = run("connect.sh", &["start", path_str(dir.path()), bootstrap, pg_url, &registry.api_url]);
        Connect { rest, dir }
    }

    /// Stops the worker gracefully (its offsets committed) and starts it again from its stored
    /// offsets: Debezium resumes streaming, without a new snapshot.
    pub fn restart(&mut self) {
        let dir = path_str(self.dir.path());
        self.rest = restart("connect.sh", &["restart", dir], &["restart", dir]);
    }

    /// Kills the worker (SIGKILL) and starts it again: Debezium re-sends the changes that
    /// followed its last offset commit (at most about a second's worth, `offset.flush.interval.ms`).
    pub fn kill_and_restart(&mut self) {
        let dir = path_str(self.dir.path());
        self.rest = restart("connect.sh", &["restart", dir, "kill"], &["restart", dir]);
    }

    /// The worker's folder: `connect.log`, `offsets`, `worker.properties`, `connector.properties`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Connect {
    fn drop(&mut self) {
        let _ = Command::new(script("connect.sh")).arg("stop").arg(self.dir.path()).output();
    }
}

/// A running schema registry (Apicurio, in memory; `registry.sh`): `url` is its
/// Confluent-compatible API (eavlake's `decode.schema_registry_url`), `api_url` its own API (the
/// Kafka Connect converter's).
pub struct Registry {
    pub url: String,
    pub api_url: String,
    dir: tempfile::TempDir,
}

impl Registry {
    pub fn start() -> Registry {
        let dir = tempfile::Builder::new().prefix("eavlake-registry-").tempdir().expect("temporary folder");
        let url = run("registry.sh", &["start", path_str(dir.path()), "0"]);
        let api_url =
            std::fs::read_to_string(dir.path().join("api")).expect("registry.sh writes DIR/api").trim().to_string();
        Registry { url, api_url, dir }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = Command::new(script("registry.sh")).arg("stop").arg(self.dir.path()).output();
    }
}
