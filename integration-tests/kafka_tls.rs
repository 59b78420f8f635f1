//! Kafka TLS against a real broker (`integration-tests/stack/kafka.sh` with TLS listeners whose
//! certificate a test CA signs, made by `common/test_ca.rs` with the `openssl` command):
//!
//! - an `eavlake run --source kafka` worker with `security.protocol = SSL` and the test CA in
//!   `ssl.ca.location` consumes a Debezium workload and writes the lake (exactly once, its dead
//!   letters produced over TLS too), and `eavlake lag` reads the cluster over TLS;
//! - another worker does the same over mutual TLS, on a listener that requires a client
//!   certificate: its key is encrypted and `ssl.key.password` comes from an `EAVLAKE__…`
//!   variable, never printed (librdkafka's security debug logging on);
//! - `eavlake lag` logs in by SCRAM-SHA-512 over SASL_SSL (the README's example), the passwords
//!   never printed; a wrong key password is refused at start, naming the key file;
//! - a worker and `eavlake lag` given another CA report librdkafka's certificate verification
//!   failure, and read nothing.
//!
//! Needs Java 17, the Kafka jars (see `common/kafka_broker.rs`) and the `openssl` command; one
//! broker, about 30 s.

#[path = "common/kafka_broker.rs"]
mod kafka_broker;
#[path = "common/kafka_workload.rs"]
mod kafka_workload;
#[path = "common/lake.rs"]
mod lake;
#[path = "common/test_ca.rs"]
mod test_ca;
#[path = "common/worker_process.rs"]
mod worker_process;

use kafka_broker::KafkaBroker;
use kafka_workload::{assert_dead_letters_exactly, high_watermarks, produce_workload, wait_for_lake};
use lake::assert_exactly_once;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use worker_process::{spawn_worker_with, stop, write_config};

const TOPIC: &str = "eav.public.entity_changes";
const PARTITIONS: i32 = 2;
const USER: &str = "eavlake";
/// The SASL user's password (SASL_SSL).
const PASSWORD: &str = "Tls7SaslCanary42";
/// The client key's password (mutual TLS), and a wrong one.
const KEY_PASSWORD: &str = "Tls7KeyCanary42";
const WRONG_KEY_PASSWORD: &str = "Tls7WrongKeyCanary99";
const SECRETS: [&str; 3] = [PASSWORD, KEY_PASSWORD, WRONG_KEY_PASSWORD];

fn text(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

fn assert_no_secret(what: &str, text: &str) {
    for secret in SECRETS {
        assert!(!text.contains(secret), "{what}: a password leaked:\n{text}");
    }
}

/// A worker configuration (`common/worker_process.rs`) for `group`, its dead letters in a topic
/// of its own (`<topic>.<group>.dlq`), with these `[kafka.properties]` lines.
fn worker_config(dir: &Path, bootstrap: &str, group: &str, properties: &str) -> (PathBuf, PathBuf) {
    let lake = dir.join(format!("lake-{group}"));
    let path = write_config(dir, bootstrap, &lake, TOPIC, group, properties);
    let topics = format!("topics = [\"{TOPIC}\"]");
    let with_dlq = text(&path).replace(&topics, &format!("{topics}\ndead_letter_topic = \"{{topic}}.{group}.dlq\""));
    std::fs::write(&path, with_dlq).unwrap();
    (path, lake)
}

/// `eavlake lag` with `config` and these environment variables: (exit code, stdout + stderr).
fn lag(config: &Path, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_eavlake"))
        .args(["lag", "--format", "json", "--config"])
        .arg(config)
        .env("RUST_LOG", "debug")
        .envs(env.iter().copied())
        .output()
        .expect("run eavlake lag");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_no_secret("eavlake lag", &text);
    (out.status.code(), text)
}

/// A `lag` configuration file over `bootstrap` with these `[kafka.properties]` lines.
fn lag_config(dir: &Path, name: &str, bootstrap: &str, lake: &Path, properties: &str) -> PathBuf {
    let file = dir.join(format!("{name}.toml"));
    std::fs::write(
        &file,
        format!(
            "[lake]\nurl = \"{}\"\n[kafka]\nbrokers = \"{bootstrap}\"\ntopics = [\"{TOPIC}\"]\n\
             request_timeout_ms = 8000\n[kafka.properties]\n{properties}\n",
            lake.display()
        ),
    )
    .unwrap();
    file
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_over_tls_and_mutual_tls_write_the_lake_and_another_ca_is_refused() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    // Clients connect to 127.0.0.1 (the advertised listeners) and check the name.
    test_ca::make_certificates(&certs, "IP:127.0.0.1,DNS:localhost");
    test_ca::make_client_certificate(&certs, "client", Some(KEY_PASSWORD));
    let broker = KafkaBroker::start_with_tls(&certs, Some((USER, PASSWORD)));
    let ssl = broker.ssl_bootstrap.clone().expect("an SSL listener");
    let mtls = broker.mtls_bootstrap.clone().expect("a client-certificate listener");
    let sasl_ssl = broker.sasl_ssl_bootstrap.clone().expect("a SASL_SSL listener");
    broker.create_topic(TOPIC, PARTITIONS);
    eprintln!("broker up after {:.1} s", started.elapsed().as_secs_f64());

    let file = |name: &str| certs.join(name).display().to_string();
    let tls = |ca: &str| format!("\"security.protocol\" = \"SSL\"\n\"ssl.ca.location\" = \"{}\"", file(ca));
    let client_cert = format!(
        "\"ssl.certificate.location\" = \"{}\"\n\"ssl.key.location\" = \"{}\"",
        file("client.pem"),
        file("client.key")
    );
    // librdkafka's own logging of the TLS handshake and key loading, in the worker's log.
    let verbose = [("RUST_LOG", "eavlake=info,librdkafka=debug,rdkafka=debug")];
    let key_password = ("EAVLAKE__KAFKA__PROPERTIES__SSL_KEY_PASSWORD", KEY_PASSWORD);

    let (one_way, one_way_lake) = worker_config(dir.path(), &ssl, "tls", &tls("ca.pem"));
    let mutual_properties = format!("{}\n{client_cert}\n\"debug\" = \"security\"", tls("ca.pem"));
    let (mutual, mutual_lake) = worker_config(dir.path(), &mtls, "mtls", &mutual_properties);
    let (refused, refused_lake) = worker_config(dir.path(), &ssl, "other-ca", &tls("other-ca.pem"));
    let log = |name: &str| dir.path().join(format!("{name}.log"));

    let spec = eavlake::workload::WorkloadSpec {
        events: 3_000,
        tenants: 3,
        seed: 443,
        max_bulk: 100,
        ..eavlake::workload::WorkloadSpec::default()
    };
    // Produced over the plaintext listener: what is tested is the workers' side.
    let producing = {
        let b = broker.bootstrap.clone();
        tokio::spawn(async move { produce_workload(&b, TOPIC, PARTITIONS, &spec, 0).await })
    };
    let mut workers = [
        spawn_worker_with(&one_way, &log("tls"), None, &[]),
        spawn_worker_with(&mutual, &log("mtls"), None, &[verbose[0], key_password]),
        // At the default log level (info, librdkafka's own messages included).
        spawn_worker_with(&refused, &log("other-ca"), None, &[("RUST_LOG", "info")]),
    ];

    // Another CA: librdkafka's verification failure in the worker's log, and nothing read.
    let until = Instant::now() + Duration::from_secs(20);
    while !text(&log("other-ca")).contains("certificate verify failed") {
        let exited = workers[2].try_wait().unwrap();
        assert!(
            exited.is_none() && Instant::now() < until,
            "no certificate error from the worker given another CA ({exited:?}); log:\n{}",
            text(&log("other-ca"))
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let refusal = text(&log("other-ca")).lines().find(|l| l.contains("certificate verify failed")).unwrap().to_string();
    eprintln!("another CA refused after {:.1} s: {refusal}", started.elapsed().as_secs_f64());

    let produced = producing.await.unwrap();
    let ends = high_watermarks(&broker.bootstrap, TOPIC, PARTITIONS);
    eprintln!("{} records produced, {} poison", produced.records, produced.expected_dead.len());
    wait_for_lake(&one_way_lake, TOPIC, &ends, Duration::from_secs(30)).await;
    wait_for_lake(&mutual_lake, TOPIC, &ends, Duration::from_secs(30)).await;
    for (worker, name) in workers.iter_mut().zip(["tls", "mtls", "other-ca"]) {
        let status = stop(worker, Duration::from_secs(20)).await;
        assert!(status.success(), "the {name} worker stopped cleanly: {status}; log:\n{}", text(&log(name)));
    }
    eprintln!("workers done after {:.1} s", started.elapsed().as_secs_f64());
    assert_exactly_once(&one_way, &one_way_lake, &produced.truth.current).await;
    assert_exactly_once(&mutual, &mutual_lake, &produced.truth.current).await;
    assert_dead_letters_exactly(&broker.bootstrap, &format!("{TOPIC}.tls.dlq"), &produced);
    assert_dead_letters_exactly(&broker.bootstrap, &format!("{TOPIC}.mtls.dlq"), &produced);
    assert!(kafka_workload::lake_progress(&refused_lake, TOPIC, 0).is_none(), "nothing read with another CA");
    let mtls_log = text(&log("mtls"));
    assert_no_secret("the mutual TLS worker's log", &mtls_log);
    assert!(mtls_log.contains("librdkafka"), "librdkafka's debug logging is on:\n{mtls_log}");

    // `eavlake lag` over TLS, with a client certificate, and by SCRAM-SHA-512 over SASL_SSL.
    let (code, out) = lag(&one_way, &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(&format!("\"topic\": \"{TOPIC}\"")), "{out}");
    let (code, out) = lag(&mutual, &[key_password]);
    assert_eq!(code, Some(0), "{out}");
    let sasl_properties = format!(
        "\"security.protocol\" = \"SASL_SSL\"\n\"sasl.mechanism\" = \"SCRAM-SHA-512\"\n\"sasl.username\" = \"{USER}\"\n\
         \"ssl.ca.location\" = \"{}\"\n\"debug\" = \"security,broker\"",
        file("ca.pem")
    );
    let sasl_lag = lag_config(dir.path(), "sasl-ssl", &sasl_ssl, &one_way_lake, &sasl_properties);
    // A fresh broker answers "not coordinator" until its offsets topic is ready: a few tries.
    let mut tries = 0;
    let (code, out) = loop {
        let (code, out) = lag(&sasl_lag, &[("EAVLAKE__KAFKA__PROPERTIES__SASL_PASSWORD", PASSWORD)]);
        tries += 1;
        if code == Some(0) || tries == 10 || !out.contains("Not coordinator") {
            break (code, out);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(&format!("\"topic\": \"{TOPIC}\"")), "{out}");

    // A wrong key password is refused at start; another CA fails with the verification error.
    let (code, out) = lag(&mutual, &[("EAVLAKE__KAFKA__PROPERTIES__SSL_KEY_PASSWORD", WRONG_KEY_PASSWORD)]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("creating the watermark client") && out.contains("ssl.key.location failed"), "{out}");
    let (code, out) = lag(&refused, &[]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("eavlake: error: reading the cluster's metadata"), "{out}");
    assert!(out.contains("SSL handshake failed") && out.contains("certificate verify failed"), "{out}");
    eprintln!("done after {:.1} s", started.elapsed().as_secs_f64());
}
