//! Kafka SASL against a real broker (`integration-tests/stack/kafka.sh` with its SASL_PLAINTEXT
//! listener): the worker's client settings log in by PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512
//! with librdkafka's built-in SASL, and `eavlake lag` works with the right password and fails
//! with a wrong one, printing neither at debug level.
//!
//! Needs Java 17 and the Kafka jars (see `common/kafka_broker.rs`); one broker, a few seconds.

#[path = "common/kafka_broker.rs"]
mod kafka_broker;

use eavlake::config::Config;
use kafka_broker::KafkaBroker;
use rdkafka::consumer::{BaseConsumer, Consumer};
use std::process::Command;
use std::time::Duration;

const USER: &str = "eavlake";
const PASSWORD: &str = "Sasl7RightCanary42";
const WRONG: &str = "Sasl7WrongCanary99";
const TOPIC: &str = "sasl.topic";

fn sasl_config(bootstrap: &str, mechanism: &str, password: &str) -> Config {
    let mut c = Config::default();
    c.kafka.brokers = bootstrap.to_string();
    for (k, v) in [
        ("security.protocol", "SASL_PLAINTEXT"),
        ("sasl.mechanism", mechanism),
        ("sasl.username", USER),
        ("sasl.password", password),
    ] {
        c.kafka.properties.0.insert(k.into(), v.into());
    }
    c.validate().expect("a valid SASL configuration");
    c
}

#[test]
fn sasl_mechanisms_log_in_and_a_wrong_password_stays_secret() {
    let broker = KafkaBroker::start_with_sasl(USER, PASSWORD);
    let sasl = broker.sasl_bootstrap.clone().expect("a SASL listener");
    broker.create_topic(TOPIC, 2);

    for mechanism in ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] {
        let c = sasl_config(&sasl, mechanism, PASSWORD);
        let consumer: BaseConsumer = eavlake::source::kafka::client_config(&c.kafka).create().expect("a consumer");
        let meta = consumer
            .fetch_metadata(Some(TOPIC), Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("{mechanism}: metadata over SASL: {e}"));
        let topic = &meta.topics()[0];
        assert_eq!((topic.name(), topic.error(), topic.partitions().len()), (TOPIC, None, 2), "{mechanism}");
    }

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lag.toml");
    std::fs::write(
        &file,
        format!(
            "[lake]\nurl = \"{}\"\n[kafka]\nbrokers = \"{sasl}\"\ntopics = [\"{TOPIC}\"]\nrequest_timeout_ms = 8000\n\
             [kafka.properties]\n\"security.protocol\" = \"SASL_PLAINTEXT\"\n\"sasl.mechanism\" = \"SCRAM-SHA-512\"\n\
             \"sasl.username\" = \"{USER}\"\n\"debug\" = \"security,broker\"\n",
            dir.path().join("lake").display()
        ),
    )
    .unwrap();
    let lag = |password: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_eavlake"))
            .args(["lag", "--format", "json", "--config"])
            .arg(&file)
            .env("RUST_LOG", "debug")
            .env("EAVLAKE__KAFKA__PROPERTIES__SASL_PASSWORD", password)
            .output()
            .expect("run eavlake lag");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        for secret in [PASSWORD, WRONG] {
            assert!(!text.contains(secret), "a password leaked:\n{text}");
        }
        (out.status.code(), text)
    };
    // A fresh broker creates its offsets topic on the first group request and answers "not
    // coordinator" until it is ready: a few tries.
    let mut tries = 0;
    let (code, text) = loop {
        let (code, text) = lag(PASSWORD);
        tries += 1;
        if code == Some(0) || tries == 10 || !text.contains("Not coordinator") {
            break (code, text);
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains(&format!("\"topic\": \"{TOPIC}\"")), "{text}");
    // librdkafka reports the refused login as a transport failure of the metadata request.
    let (code, text) = lag(WRONG);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("eavlake: error: reading the cluster's metadata"), "{text}");
}
