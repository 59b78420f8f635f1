//! A real single-node Apache Kafka broker (KRaft) for integration tests, on a free 127.0.0.1
//! port in its own temporary folder, started and stopped by `integration-tests/stack/kafka.sh`.
//!
//! The script runs the broker from Maven Central jars cached under `$EAVLAKE_CACHE` (default
//! `~/.cache/eavlake`), so it needs `java` (17+) and `python3`, plus `mvn` the first time, when
//! it downloads them (`kafka.sh fetch` warms the cache). Starting takes a few seconds, so share
//! one broker between the tests of a file where they can use distinct topics.
//!
//! The broker is stopped when the `KafkaBroker` is dropped. A broker that is never dropped (a
//! `static`, a test process killed mid-run) is stopped by the script's watchdog within a second
//! of this process exiting, and in any case after `$EAVLAKE_STACK_TTL` seconds (default 3600).
//!
//! Include it from a test file with
//! ```ignore
//! #[path = "common/kafka_broker.rs"]
//! mod kafka_broker;
//! ```
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A running broker; `bootstrap` is its `127.0.0.1:PORT` for `bootstrap.servers`.
pub struct KafkaBroker {
    pub bootstrap: String,
    /// The SASL_PLAINTEXT listener of [`KafkaBroker::start_with_sasl`].
    pub sasl_bootstrap: Option<String>,
    /// The TLS listeners of [`KafkaBroker::start_with_tls`]: server authentication only, and
    /// client certificate required.
    pub ssl_bootstrap: Option<String>,
    pub mtls_bootstrap: Option<String>,
    /// The SASL_SSL listener of [`KafkaBroker::start_with_tls`] with SASL.
    pub sasl_ssl_bootstrap: Option<String>,
    dir: tempfile::TempDir,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("integration-tests/stack/kafka.sh")
}

fn check(what: &str, out: std::io::Result<Output>) -> Output {
    let out = out.unwrap_or_else(|e| panic!("{what}: cannot run {}: {e}", script().display()));
    assert!(out.status.success(), "{what} failed ({}):\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    out
}

impl KafkaBroker {
    /// Starts a broker and waits until it serves requests; panics with the script's stderr
    /// (which ends with the tail of the broker's log) when it does not come up.
    pub fn start() -> KafkaBroker {
        Self::start_inner(None, None)
    }

    /// [`Self::start`] with a SASL_PLAINTEXT listener too (`sasl_bootstrap`), where `user` logs
    /// in with `password` (letters and digits) by PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.
    pub fn start_with_sasl(user: &str, password: &str) -> KafkaBroker {
        Self::start_inner(Some((user, password)), None)
    }

    /// [`Self::start`] with TLS listeners too, whose certificate is `certs`/`server.pem` (key
    /// `server.key`, unencrypted PKCS#8), trusting client certificates signed by `certs`/`ca.pem`
    /// (see `common/test_ca.rs`): `ssl_bootstrap` (SSL, no client certificate), `mtls_bootstrap`
    /// (SSL, a client certificate required) and, with `sasl` (as [`Self::start_with_sasl`]),
    /// `sasl_bootstrap` and `sasl_ssl_bootstrap` (SASL_SSL).
    pub fn start_with_tls(certs: &Path, sasl: Option<(&str, &str)>) -> KafkaBroker {
        Self::start_inner(sasl, Some(certs))
    }

    fn start_inner(sasl: Option<(&str, &str)>, tls: Option<&Path>) -> KafkaBroker {
        let dir = tempfile::Builder::new().prefix("eavlake-kafka-").tempdir().expect("temporary folder");
        let mut cmd = Command::new(script());
        cmd.arg("start")
            .arg(dir.path())
            // The watchdog stops the broker when this test process is gone.
            .env("EAVLAKE_STACK_OWNER_PID", std::process::id().to_string())
            .env_remove("EAVLAKE_KAFKA_SASL_USER")
            .env_remove("EAVLAKE_KAFKA_SASL_PASSWORD")
            .env_remove("EAVLAKE_KAFKA_TLS_DIR");
        if let Some((user, password)) = sasl {
            cmd.env("EAVLAKE_KAFKA_SASL_USER", user).env("EAVLAKE_KAFKA_SASL_PASSWORD", password);
        }
        if let Some(certs) = tls {
            cmd.env("EAVLAKE_KAFKA_TLS_DIR", certs);
        }
        let out = check("kafka.sh start", cmd.output());
        let bootstrap = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(!bootstrap.is_empty(), "kafka.sh start printed no bootstrap address");
        let read = |name: &str| {
            let file = dir.path().join(name);
            std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display())).trim().to_string()
        };
        let sasl_bootstrap = sasl.map(|_| read("sasl_bootstrap"));
        let ssl_bootstrap = tls.map(|_| read("ssl_bootstrap"));
        let mtls_bootstrap = tls.map(|_| read("mtls_bootstrap"));
        let sasl_ssl_bootstrap = tls.and(sasl).map(|_| read("sasl_ssl_bootstrap"));
        KafkaBroker { bootstrap, sasl_bootstrap, ssl_bootstrap, mtls_bootstrap, sasl_ssl_bootstrap, dir }
    }

    /// Creates a topic with replication factor 1 (topics are also auto-created, with one
    /// partition, on first use).
    pub fn create_topic(&self, name: &str, partitions: i32) {
        check(
            &format!("kafka.sh topic {name} {partitions}"),
            Command::new(script()).arg("topic").arg(self.dir.path()).arg(name).arg(partitions.to_string()).output(),
        );
    }

    /// Stops the broker and starts it again with its data, on the same port; once more if that
    /// start fails (the first failure is printed).
    pub fn restart(&self) {
        self.retried("restart");
    }

    /// Stops the broker (until [`Self::start_again`]).
    pub fn stop(&self) {
        self.try_run("stop").unwrap_or_else(|e| panic!("{e}"));
    }

    /// Starts a stopped broker again with its data, on the same port, like [`Self::restart`].
    pub fn start_again(&self) {
        self.retried("start");
    }

    fn retried(&self, verb: &str) {
        if let Err(first) = self.try_run(verb) {
            eprintln!("{first}\n(trying once more)");
            std::thread::sleep(std::time::Duration::from_secs(3));
            self.try_run(verb).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    fn try_run(&self, verb: &str) -> Result<(), String> {
        let out = Command::new(script())
            .arg(verb)
            .arg(self.dir.path())
            .env("EAVLAKE_STACK_OWNER_PID", std::process::id().to_string())
            .output()
            .expect("kafka.sh runs");
        if !out.status.success() {
            let log = std::fs::read_to_string(self.dir.path().join("broker.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            return Err(format!(
                "kafka.sh {verb} failed ({}):\n{}\nbroker.log ends:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ));
        }
        Ok(())
    }

    /// The broker's folder: `broker.log`, `server.properties`, `data/`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for KafkaBroker {
    fn drop(&mut self) {
        // Before the TempDir field is removed, which happens after this returns.
        let _ = Command::new(script()).arg("stop").arg(self.dir.path()).output();
    }
}
