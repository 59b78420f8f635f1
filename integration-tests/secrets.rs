//! The `eavlake` binary, run as users run it, with bad configurations and with secrets:
//!
//! - a configuration error (unknown key, bad address or URL, missing credential) stops the
//!   command at start with exit code 2 and a message naming the key, before the lake's folder
//!   is created or the metrics listener binds;
//! - a secret given in a file, a variable or a flag appears in no output of any command (`config`,
//!   every `--help`, a failing `reconcile`, a Kafka worker that cannot reach its brokers), at
//!   `RUST_LOG=debug` with librdkafka's own debug logging on, nor in the worker's `/metrics`.
//!
//! Needs no services: the brokers and the database are unreachable on purpose.

#[path = "common/ports.rs"]
mod ports;

use ports::free_port;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Distinctive enough to be found only where it leaked.
const SECRET: &str = "Zq7xLeakCanary93";

fn eavlake() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_eavlake"));
    c.env("RUST_LOG", "debug").env_remove("EAVLAKE_RECONCILE_POSTGRES");
    // A clean slate: no overrides or AWS settings from the caller's environment.
    for (k, _) in std::env::vars() {
        if k.starts_with("EAVLAKE__") || k.starts_with("AWS_") {
            c.env_remove(k);
        }
    }
    c
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn assert_no_secret(what: &str, output: &str) {
    assert!(!output.contains(SECRET), "{what}: the secret leaked:\n{output}");
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// What is wrong, the variables and `--set` flags that make it so, what stderr must say.
type Case = (&'static str, Vec<(&'static str, String)>, Vec<String>, &'static str);

/// Each class of configuration error stops `eavlake run --source kafka` at start: exit code 2, the
/// key named on stderr, no lake folder, no metrics listener.
#[test]
fn configuration_errors_stop_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let port = free_port();
    let config = dir.path().join("worker.toml");
    let base = format!(
        "[lake]\nurl = \"{}\"\n[kafka]\nbrokers = \"127.0.0.1:1\"\ntopics = [\"t\"]\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n",
        lake.display()
    );
    let cases: Vec<Case> = vec![
        (
            "unknown key in a variable",
            vec![("EAVLAKE__KAFKA__BOOTSTRAP_SERVERZ", "127.0.0.1:9092".into())],
            vec![],
            "EAVLAKE__KAFKA__BOOTSTRAP_SERVERZ`: key `kafka.bootstrap_serverz`: unknown field `bootstrap_serverz`",
        ),
        ("bad broker address", vec![], vec!["kafka.brokers=127.0.0.1:90921".into()], "config key `kafka.brokers`"),
        ("bad listen address", vec![], vec!["metrics.listen=localhost".into()], "config key `metrics.listen`"),
        (
            "bad Postgres URL",
            vec![("EAVLAKE__CATALOG__BOOTSTRAP_POSTGRES_URL", format!("postgres://u:{SECRET}@h/db?sslmode=verify"))],
            vec![],
            "config key `catalog.bootstrap_postgres_url`: `sslmode`",
        ),
        (
            "SASL without a password",
            vec![],
            vec![
                "kafka.properties.security.protocol=SASL_PLAINTEXT".into(),
                "kafka.properties.sasl.mechanism=SCRAM-SHA-256".into(),
                "kafka.properties.sasl.username=eavlake".into(),
            ],
            "config key `kafka.properties.sasl.password`: is required with sasl.mechanism = SCRAM-SHA-256",
        ),
        (
            "TLS CA file missing",
            vec![("EAVLAKE__KAFKA__PROPERTIES__SECURITY_PROTOCOL", "SSL".into())],
            vec!["kafka.properties.ssl.ca.location=/nonexistent/ca.pem".into()],
            "config key `kafka.properties.ssl.ca.location`: `/nonexistent/ca.pem`",
        ),
        (
            "S3 key id without its secret",
            vec![("EAVLAKE__LAKE__S3__ACCESS_KEY_ID", "AKIAEXAMPLE".into())],
            vec!["lake.url=s3://bucket/prefix".into()],
            "config key `lake.s3.secret_access_key`: is required with lake.s3.access_key_id",
        ),
    ];
    write(&config, &base);
    for (what, env, sets, expected) in cases {
        let mut cmd = eavlake();
        cmd.args(["run", "--source", "kafka", "--config"]).arg(&config);
        for s in &sets {
            cmd.args(["--set", s]);
        }
        cmd.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
        let started = Instant::now();
        let out = cmd.output().expect("run eavlake");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{what}: {stderr}");
        assert!(stderr.contains(expected), "{what}: expected `{expected}` in:\n{stderr}");
        assert!(!lake.exists(), "{what}: the lake folder was created");
        assert!(!stderr.contains("serving /metrics"), "{what}: the listener started:\n{stderr}");
        assert!(started.elapsed() < Duration::from_secs(10), "{what}: took {:?}", started.elapsed());
        assert_no_secret(what, &stderr);
    }
    // The same file without the faults is accepted (the cases fail for their fault only).
    let out = eavlake().args(["config", "--config"]).arg(&config).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
}

/// Secrets from a file, variables and flags: `eavlake config` prints them as `***`, and no
/// `--help` shows them.
#[test]
fn config_and_help_never_show_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    write(
        &file,
        &format!(
            "[lake]\nurl = \"s3://bucket/lake\"\n[lake.s3]\naccess_key_id = \"AKIAEXAMPLE\"\nsecret_access_key = \"{SECRET}\"\n\
             [decode]\nschema_registry_url = \"https://reg:{SECRET}@registry.example:8081/apis/ccompat/v7\"\n\
             [kafka.properties]\n\"security.protocol\" = \"SASL_SSL\"\n\"sasl.mechanism\" = \"SCRAM-SHA-512\"\n\
             \"sasl.username\" = \"eavlake\"\n"
        ),
    );
    let out = eavlake()
        .args(["config", "--config"])
        .arg(&file)
        .args(["--set", &format!("kafka.properties.ssl.key.password={SECRET}")])
        .env("EAVLAKE__KAFKA__PROPERTIES__SASL_PASSWORD", SECRET)
        .env(
            "EAVLAKE__CATALOG__BOOTSTRAP_POSTGRES_URL",
            format!("postgres://eav:{SECRET}@db.example/eav?sslmode=require"),
        )
        .output()
        .unwrap();
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    assert_no_secret("eavlake config", &shown);
    for expected in [
        "secret_access_key = \"***\"",
        "\"sasl.password\" = \"***\"",
        "\"ssl.key.password\" = \"***\"",
        "bootstrap_postgres_url = \"postgres://eav:***@db.example/eav?sslmode=require\"",
        "schema_registry_url = \"https://reg:***@registry.example:8081/apis/ccompat/v7\"",
        "\"sasl.username\" = \"eavlake\"",
    ] {
        assert!(shown.contains(expected), "`{expected}` not in:\n{shown}");
    }

    // A configuration error with secrets around: the message names the key only.
    let out = eavlake()
        .args(["config", "--config"])
        .arg(&file)
        .args(["--set", &format!("lake.s3.secret_acces_key={SECRET}")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("`--set lake.s3.secret_acces_key`"), "{}", text(&out));
    assert_no_secret("a bad --set", &text(&out));
    let typo = dir.path().join("typo.toml");
    write(&typo, &format!("[lake.s3]\nsecret_acces_key = \"{SECRET}\"\n"));
    let out = eavlake().args(["config", "--config"]).arg(&typo).output().unwrap();
    assert!(text(&out).contains("line 2 column 1 (`secret_acces_key`): unknown field"), "{}", text(&out));
    assert_no_secret("a file with a typo", &text(&out));

    for sub in [vec![], vec!["run"], vec!["compact"], vec!["lag"], vec!["reconcile"], vec!["config"], vec!["generate"]]
    {
        let out = eavlake()
            .args(&sub)
            .arg("--help")
            .env("EAVLAKE_RECONCILE_POSTGRES", format!("postgres://u:{SECRET}@127.0.0.1:1/db"))
            .env("EAVLAKE__KAFKA__PROPERTIES__SASL_PASSWORD", SECRET)
            .output()
            .unwrap();
        assert!(out.status.success(), "{sub:?} --help: {}", text(&out));
        assert_no_secret(&format!("{sub:?} --help"), &text(&out));
    }
}

/// A reconcile against an unreachable database, the URL given on the command line and in the
/// variable, and with a bad `sslmode`: errors name the server, not the password.
#[test]
fn reconcile_errors_hide_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let url = format!("postgres://eav:{SECRET}@127.0.0.1:1/eav?connect_timeout=5");
    let by_flag = eavlake().args(["reconcile", "--postgres", &url, "--lake"]).arg(&lake).output().unwrap();
    let by_env =
        eavlake().args(["reconcile", "--lake"]).arg(&lake).env("EAVLAKE_RECONCILE_POSTGRES", &url).output().unwrap();
    for (what, out) in [("--postgres", by_flag), ("EAVLAKE_RECONCILE_POSTGRES", by_env)] {
        assert_eq!(out.status.code(), Some(2), "{what}: {}", text(&out));
        assert!(text(&out).contains("PostgreSQL at 127.0.0.1:1"), "{what}: {}", text(&out));
        assert_no_secret(what, &text(&out));
    }
    let bad = format!("postgres://eav:{SECRET}@127.0.0.1:1/eav?sslmode=verify-full&sslrootcert=/nonexistent/root.crt");
    let out = eavlake().args(["reconcile", "--postgres", &bad, "--lake"]).arg(&lake).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--postgres: `sslrootcert`: `/nonexistent/root.crt`"), "{}", text(&out));
    assert_no_secret("bad sslrootcert", &text(&out));
}

/// `GET path` on 127.0.0.1:port; `None` while nothing answers.
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

fn stop(mut child: Child) -> Output {
    // SAFETY: kill(2) on the pid of a child this test started and has not reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    child.wait_with_output().expect("the worker's output")
}

/// A Kafka worker with SASL credentials that cannot reach its brokers, librdkafka's debug
/// logging on: neither its logs nor its `/metrics` hold the password.
#[test]
fn kafka_worker_logs_and_metrics_hide_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let broker_port = free_port();
    let config = dir.path().join("worker.toml");
    write(
        &config,
        &format!(
            "[lake]\nurl = \"{}\"\n[kafka]\nbrokers = \"127.0.0.1:{broker_port}\"\ntopics = [\"t\"]\n\
             request_timeout_ms = 2000\n[kafka.properties]\n\"security.protocol\" = \"SASL_PLAINTEXT\"\n\
             \"sasl.mechanism\" = \"PLAIN\"\n\"sasl.username\" = \"eavlake\"\n\"debug\" = \"conf,security,broker,generic\"\n\
             [metrics]\nlisten = \"127.0.0.1:{port}\"\nlag_interval_ms = 500\n",
            dir.path().join("lake").display()
        ),
    );
    let child = eavlake()
        .args(["run", "--source", "kafka", "--config"])
        .arg(&config)
        .env("EAVLAKE__KAFKA__PROPERTIES__SASL_PASSWORD", SECRET)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the worker");
    let deadline = Instant::now() + Duration::from_secs(30);
    let metrics = loop {
        if let Some(m) = http_get(port, "/metrics").filter(|m| m.contains("eavlake_")) {
            break Some(m);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    // Let librdkafka try the broker a few times (its connection attempts log at debug).
    std::thread::sleep(Duration::from_secs(3));
    let out = stop(child);
    let logs = text(&out);
    let metrics = metrics.unwrap_or_else(|| panic!("/metrics never answered; the worker said:\n{logs}"));
    assert_no_secret("/metrics", &metrics);
    assert_no_secret("the worker's output", &logs);
    // The logs did go where the password could have shown: librdkafka's dump of its settings
    // (which it redacts itself) and its connection attempts.
    assert!(logs.contains("sasl.password = [redacted]"), "{logs}");
    assert!(logs.contains(&format!("sasl_plaintext://127.0.0.1:{broker_port}")), "{logs}");
}
