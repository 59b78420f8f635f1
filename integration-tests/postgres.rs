//! Against a real PostgreSQL (Debian's packages, started here on loopback in a temporary folder):
//! the reference schema in `schemas/eav.sql` loads with psql as shipped, and the attribute
//! catalog can be bootstrapped from it, and connections honour libpq's TLS modes against a
//! server with a certificate of a test CA.
//!
//! The server binaries are found through `PG_BIN` or under `/usr/lib/postgresql/*/bin`
//! (`integration-tests/run.sh` installs them when missing). Without them the tests fail, unless
//! `EAVLAKE_SKIP_POSTGRES=1` says to skip them.

#[path = "common/ports.rs"]
mod ports;
#[path = "common/test_ca.rs"]
mod test_ca;

use eavlake::catalog::Catalog;
use eavlake::decode::DataType;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A PostgreSQL server for one test, stopped when dropped.
struct Postgres {
    child: Child,
    port: u16,
    bin: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Postgres {
    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn psql(&self, args: &[&str]) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", &self.port.to_string(), "-U"])
            .arg("postgres")
            .args(["-d", "postgres", "-At"])
            .args(args)
            .output()
            .expect("psql runs");
        assert!(out.status.success(), "psql {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

fn pg_bin() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("PG_BIN") {
        return Some(PathBuf::from(p));
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("postgres").exists())
        .collect();
    found.sort();
    found.pop()
}

/// Runs a command as the `postgres` user when we are root (initdb refuses root).
fn as_postgres(program: &Path, args: &[&str]) -> Command {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program).args(args);
        c
    } else {
        let mut c = Command::new(program);
        c.args(args);
        c
    }
}

/// Starts a fresh server with `wal_level=logical` on a free loopback port, or `None` when
/// PostgreSQL is not installed and skipping was asked for.
fn start_postgres() -> Option<Postgres> {
    start_postgres_with(|_| Vec::new())
}

/// [`start_postgres`] with extra server settings (`-c name=value`), made by `setup` from the
/// server's folder (which it may fill first, e.g. with certificates).
fn start_postgres_with(setup: impl FnOnce(&Path) -> Vec<String>) -> Option<Postgres> {
    let Some(bin) = pg_bin() else {
        if std::env::var("EAVLAKE_SKIP_POSTGRES").is_ok_and(|v| v == "1") {
            eprintln!("PostgreSQL not installed: skipped (EAVLAKE_SKIP_POSTGRES=1)");
            return None;
        }
        panic!("PostgreSQL server binaries not found (set PG_BIN, or EAVLAKE_SKIP_POSTGRES=1 to skip)");
    };
    let dir = tempfile::Builder::new().prefix("eavlake-pg-").tempdir().expect("temp dir");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let ok = Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()).status().expect("chown");
        assert!(ok.success());
    }
    let data = dir.path().join("data");
    let data_s = data.to_str().expect("utf-8 path");
    let out = as_postgres(&bin.join("initdb"), &["-D", data_s, "-U", "postgres", "-A", "trust", "--no-sync"])
        .output()
        .expect("initdb runs");
    assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
    let port = ports::free_port();
    let sockets = dir.path().to_str().expect("utf-8 path").to_string();
    let settings = [
        "listen_addresses=127.0.0.1".to_string(),
        format!("unix_socket_directories={sockets}"),
        "wal_level=logical".into(),
        "fsync=off".into(),
    ];
    let extra = setup(dir.path());
    let port_s = port.to_string();
    let mut args = vec!["-D", data_s, "-p", &port_s];
    for s in settings.iter().chain(&extra) {
        args.extend(["-c", s.as_str()]);
    }
    let child = as_postgres(&bin.join("postgres"), &args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("postgres starts");
    let pg = Postgres { child, port, bin, _dir: dir };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = Command::new(pg.bin.join("pg_isready"))
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ready {
            return Some(pg);
        }
        assert!(Instant::now() < deadline, "PostgreSQL did not become ready in 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn schema_path() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/eav.sql").to_str().expect("utf-8 path").to_string()
}

/// `schemas/eav.sql` loads as shipped (twice: it is idempotent) and builds what Debezium and
/// eavlake rely on: RANGE partitions on entity_id, REPLICA IDENTITY FULL down to the
/// partitions, a publication via the partition root, the signal table.
#[test]
fn reference_schema_loads_with_psql() {
    let Some(pg) = start_postgres() else { return };
    pg.psql(&["-f", &schema_path()]);
    pg.psql(&["-f", &schema_path()]);

    assert_eq!(pg.psql(&["-c", "SELECT pubviaroot FROM pg_publication WHERE pubname = 'eavlake'"]), "t");
    let published = pg.psql(&[
        "-c",
        "SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_publication_tables WHERE pubname = 'eavlake'",
    ]);
    assert_eq!(published, "attributes,debezium_signal,entities,entity_values");
    let partitioned =
        pg.psql(&["-c", "SELECT string_agg(relname, ',' ORDER BY relname) FROM pg_class WHERE relkind = 'p'"]);
    assert_eq!(partitioned, "entities,entity_values");
    let not_full = pg.psql(&[
        "-c",
        "SELECT count(*) FROM pg_class WHERE relkind IN ('r', 'p') AND relreplident <> 'f' \
         AND relname ~ '^(attributes|entities|entity_values)'",
    ]);
    assert_eq!(not_full, "0", "every table and partition has REPLICA IDENTITY FULL");

    // Rows land in partitions by entity_id; a value of an unknown attribute is refused.
    pg.psql(&[
        "-c",
        "INSERT INTO attributes VALUES (1, 7, 'customer', 'name', 'text', true, now());
         INSERT INTO entities (entity_id, tenant_id, entity_type, hot_attributes)
              VALUES (15000000, 7, 'customer', '{\"name\": \"Ada\"}');",
    ]);
    assert_eq!(pg.psql(&["-c", "SELECT tableoid::regclass FROM entities"]), "entities_p1");
    let refused = Command::new(pg.bin.join("psql"))
        .args(["-X", "-h", "127.0.0.1", "-p", &pg.port.to_string(), "-U", "postgres", "-v", "ON_ERROR_STOP=1"])
        .args([
            "-c",
            "INSERT INTO entity_values (entity_id, attribute_id, tenant_id, value_int) VALUES (15000000, 99, 7, 1)",
        ])
        .output()
        .expect("psql runs");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("violates foreign key constraint"));
}

/// The catalog bootstrapped from a live `attributes` table has every attribute with its type
/// and hotness; a bad connection string or an unreachable server is a clear error.
#[test]
fn catalog_bootstraps_from_postgres() {
    let Some(pg) = start_postgres() else { return };
    pg.psql(&["-f", &schema_path()]);
    pg.psql(&[
        "-c",
        "INSERT INTO attributes (attribute_id, tenant_id, entity_type, name, data_type, is_hot) VALUES
           (1, 7, 'customer', 'name', 'text', true),
           (2, 7, 'customer', 'balance', 'decimal', false),
           (3, 8, 'order', 'placed_at', 'timestamp', false)",
    ]);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let catalog = rt.block_on(Catalog::bootstrap_from_postgres(&pg.url(), "attributes")).expect("bootstrap");
    assert_eq!(catalog.len(), 3);
    let name = catalog.by_name(7, "customer", "name").expect("name");
    assert_eq!((name.attribute_id, name.data_type, name.is_hot), (1, DataType::Text, true));
    assert_eq!(catalog.get(2).map(|a| (a.data_type, a.is_hot)), Some((DataType::Decimal, false)));
    assert_eq!(catalog.get(3).map(|a| (&*a.entity_type, a.data_type)), Some(("order", DataType::Timestamp)));

    let err = rt.block_on(Catalog::bootstrap_from_postgres(&pg.url(), "no_such_table")).unwrap_err().to_string();
    assert!(err.starts_with("catalog from Postgres (query)"), "{err}");
    drop(pg);
    let err = rt
        .block_on(Catalog::bootstrap_from_postgres("postgres://postgres@127.0.0.1:1/postgres", "attributes"))
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("catalog from Postgres (connect)"), "{err}");
}

/// The workload driver writes every kind of change the end-to-end tests rely on into a live
/// store, and reading the store back gives exactly the live entities with typed values.
#[test]
fn workload_driver_writes_realistic_traffic() {
    use eavlake::workload::postgres::{drive, read_state, DriveSpec};
    use eavlake::workload::Expected;
    let Some(pg) = start_postgres() else { return };
    pg.psql(&["-f", &schema_path()]);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let spec = DriveSpec { transactions: 240, bulk_size: 200, ..DriveSpec::default() };
    let report = rt.block_on(drive(&pg.url(), &spec)).expect("drive");
    assert!(report.entities_inserted >= 1000, "{report:?}");
    assert!(
        report.entities_deleted > 0
            && report.entities_deleted_logically > 0
            && report.values_deleted > 0
            && report.hot_updates > 0
            && report.values_moved > 0,
        "{report:?}"
    );
    assert!(report.attributes_added > 0 && report.long_transactions > 0, "{report:?}");
    let rows: i64 = pg.psql(&["-c", "SELECT count(*) FROM entities"]).parse().unwrap();
    assert_eq!(rows as u64, report.entities_inserted - report.entities_deleted);
    let live: i64 = pg.psql(&["-c", "SELECT count(*) FROM entities WHERE NOT is_deleted"]).parse().unwrap();
    assert!(live < rows, "logically deleted entities stay in the store: {live} live of {rows}");

    let state = rt.block_on(read_state(&pg.url(), 9)).expect("read");
    assert_eq!(state.len() as u64, live as u64);
    let values: usize = state.values().map(|a| a.len()).sum();
    let kinds: std::collections::BTreeSet<&str> = state
        .values()
        .flat_map(|a| a.values())
        .map(|v| match v {
            Expected::Text(_) => "text",
            Expected::Int(_) => "int",
            Expected::Decimal(_) => "decimal",
            Expected::Bool(_) => "bool",
            Expected::Timestamp(_) => "timestamp",
            Expected::Json(_) => "json",
        })
        .collect();
    assert_eq!(kinds.len(), 6, "every data type present: {kinds:?}");
    assert!(values > state.len() * 3, "hot and cold values: {values}");
    // A second drive continues on the same store (ids and attributes carry on).
    let again = rt.block_on(drive(&pg.url(), &DriveSpec { transactions: 30, bulk_size: 50, ..spec })).expect("drive");
    assert!(again.transactions >= 30);
}

/// A CA (`ca.pem`), a server certificate it signs for the name `localhost` only (`server.pem`,
/// `server.key`) and an unrelated CA (`other-ca.pem`), made with the openssl command.
fn make_certificates(dir: &Path) {
    test_ca::make_certificates(dir, "DNS:localhost");
    // The server refuses a key others can read; as root it runs as `postgres`, who must own it.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let ok =
            Command::new("chown").args(["postgres:postgres", "server.key", "server.pem"]).current_dir(dir).status();
        assert!(ok.is_ok_and(|s| s.success()), "chown of the server's key");
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.join("server.key"), std::fs::Permissions::from_mode(0o600)).expect("chmod server.key");
}

/// Every `sslmode` against a server with `ssl=on` and a certificate for `localhost` signed by a
/// test CA: `disable` is plaintext, `require` encrypts without checking, `verify-ca` checks the
/// chain (and fails with another CA), `verify-full` also checks the name (fails by IP address,
/// works by name); the catalog bootstrap goes through the same path.
#[test]
fn tls_modes_against_a_server_with_a_test_ca() {
    let mut certs = None;
    let Some(pg) = start_postgres_with(|dir| {
        make_certificates(dir);
        certs = Some(dir.to_path_buf());
        vec![
            "ssl=on".into(),
            format!("ssl_cert_file={}", dir.join("server.pem").display()),
            format!("ssl_key_file={}", dir.join("server.key").display()),
        ]
    }) else {
        return;
    };
    let certs = certs.expect("certificates made");
    let ca = certs.join("ca.pem").display().to_string();
    let other = certs.join("other-ca.pem").display().to_string();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    // Whether the session is encrypted, as the server sees it.
    let encrypted = |url: String| -> Result<bool, String> {
        rt.block_on(async {
            let client = eavlake::pg::connect(&url).await.map_err(|e| format!("{e:#}"))?;
            let row = client
                .query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[])
                .await
                .map_err(|e| e.to_string())?;
            Ok(row.get::<_, bool>(0))
        })
    };
    let at = |host: &str, query: &str| format!("postgres://postgres@{host}:{}/postgres?{query}", pg.port);
    assert_eq!(encrypted(at("127.0.0.1", "sslmode=disable")), Ok(false));
    assert_eq!(encrypted(at("127.0.0.1", "sslmode=prefer")), Ok(true));
    assert_eq!(encrypted(at("127.0.0.1", "sslmode=require")), Ok(true));
    assert_eq!(encrypted(at("127.0.0.1", &format!("sslmode=verify-ca&sslrootcert={ca}"))), Ok(true));
    let err = encrypted(at("127.0.0.1", &format!("sslmode=verify-ca&sslrootcert={other}"))).unwrap_err();
    assert!(err.contains("certificate verify failed"), "{err}");
    // libpq: `require` with a root certificate checks the chain.
    let err = encrypted(at("127.0.0.1", &format!("sslmode=require&sslrootcert={other}"))).unwrap_err();
    assert!(err.contains("certificate verify failed"), "{err}");
    let err = encrypted(at("127.0.0.1", &format!("sslmode=verify-full&sslrootcert={ca}"))).unwrap_err();
    assert!(err.contains("certificate verify failed"), "the name is not checked: {err}");
    assert_eq!(encrypted(at("localhost", &format!("sslmode=verify-full&sslrootcert={ca}"))), Ok(true));
    // The key=value form.
    let kv =
        format!("host=localhost port={} user=postgres dbname=postgres sslmode=verify-full sslrootcert='{ca}'", pg.port);
    assert_eq!(encrypted(kv), Ok(true));

    pg.psql(&["-f", &schema_path()]);
    let verified = at("localhost", &format!("sslmode=verify-full&sslrootcert={ca}"));
    let catalog = rt.block_on(Catalog::bootstrap_from_postgres(&verified, "attributes")).expect("bootstrap over TLS");
    assert_eq!(catalog.len(), 0);
    let refused = at("127.0.0.1", &format!("sslmode=verify-ca&sslrootcert={other}"));
    let err = rt.block_on(Catalog::bootstrap_from_postgres(&refused, "attributes")).unwrap_err().to_string();
    assert!(err.starts_with("catalog from Postgres (connect)"), "{err}");
}
