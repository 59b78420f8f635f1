//! Configuration: a TOML file (`--config`, examples in `config/`), typed, with unknown keys
//! refused and every rule checked at start by [`Config::validate`], which names the key it
//! rejects.
//!
//! Layers, later wins: the file; environment variables `EAVLAKE__<SECTION>__<KEY>` (for example
//! `EAVLAKE__KAFKA__GROUP_ID=g`, `EAVLAKE__KAFKA__PROPERTIES__SASL_PASSWORD=…`, whose key becomes
//! `sasl.password`: librdkafka's property names have dots where the variable has `_`); then
//! `--set section.key=value` flags (`--set kafka.properties.sasl.mechanism=PLAIN`). Values are
//! read as TOML scalars (numbers, booleans) when they parse as one, as strings otherwise.

use crate::decode::{DecimalMode, DecodeOptions, TableNames, TimeMode};
use crate::pipeline::PipelineOptions;
use crate::sink::S3Options;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::Path;

/// A secret (password, key, connection string with credentials): never printed or logged.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, Default, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub lake: LakeConfig,
    pub decode: DecodeConfig,
    pub tables: TablesConfig,
    pub batch: BatchConfig,
    pub catalog: CatalogConfig,
    pub kafka: KafkaConfig,
    pub metrics: MetricsConfig,
    /// What one record may hold; past a limit it is a dead letter (see `limits`).
    pub limits: crate::limits::Limits,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LakeConfig {
    /// Where the lake lives: a local folder, `file://…`, `s3://bucket/prefix`, `memory://`.
    pub url: String,
    /// Entity ids per current-state object. Fixed for the life of a lake.
    pub range_size: i64,
    /// Scale of decimal columns; must match `entity_values.value_decimal`'s scale.
    pub decimal_scale: u32,
    /// Compact the current state at the end of a file run.
    pub compact_after_run: bool,
    pub s3: S3Config,
}

impl Default for LakeConfig {
    fn default() -> Self {
        LakeConfig {
            url: "lake".into(),
            range_size: 100_000,
            decimal_scale: 9,
            compact_after_run: true,
            s3: S3Config::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, Default, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    /// Endpoint of an S3-compatible server (path-style requests are used when set).
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Allow plain HTTP endpoints (local test servers).
    pub allow_http: bool,
    /// Static credentials; when absent, the standard AWS environment variables apply.
    pub access_key_id: Option<Secret>,
    pub secret_access_key: Option<Secret>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Json,
    Avro,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DecodeConfig {
    /// Record format: `json` (with or without embedded schemas) or `avro` (Confluent wire format).
    pub format: Format,
    /// Debezium's `decimal.handling.mode`, for records without schemas.
    pub decimal_handling_mode: DecimalMode,
    /// Debezium's `time.precision.mode`, for integer timestamps in records without schemas.
    pub time_precision_mode: TimeMode,
    /// Confluent-compatible schema registry, required for `avro`.
    pub schema_registry_url: Option<String>,
}

impl Default for DecodeConfig {
    fn default() -> Self {
        DecodeConfig {
            format: Format::Json,
            decimal_handling_mode: DecimalMode::Precise,
            time_precision_mode: TimeMode::Adaptive,
            schema_registry_url: None,
        }
    }
}

/// Source table names as Debezium reports them in `source.table`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TablesConfig {
    pub attributes: String,
    pub entities: String,
    pub entity_values: String,
}

impl Default for TablesConfig {
    fn default() -> Self {
        let t = TableNames::default();
        TablesConfig { attributes: t.attributes, entities: t.entities, entity_values: t.entity_values }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// Flush a stream when this many rows are buffered.
    pub max_rows: usize,
    /// Flush a stream when about this many bytes are buffered.
    pub max_bytes: usize,
    /// Flush a stream when its oldest buffered record arrived this long ago (Kafka worker): the
    /// flush starts early by the time recent flushes took, so this bounds the wait of a record.
    pub max_age_ms: u64,
    /// All streams of a worker together: above this, the largest is flushed (memory bound).
    pub max_buffered_bytes: usize,
    /// Entities of one transaction folded at once; larger transactions fold in slices.
    pub max_pending_entities: usize,
    /// A flush's objects must be durable within this time or the flush is abandoned (and redone
    /// by whoever takes the stream over, who waits this long for it).
    pub flush_deadline_ms: u64,
    /// How far apart the clocks of two workers may be.
    pub clock_skew_ms: u64,
}

impl Default for BatchConfig {
    fn default() -> Self {
        let p = PipelineOptions::default();
        BatchConfig {
            max_rows: p.flush_rows,
            max_bytes: p.flush_bytes,
            max_age_ms: 10_000,
            max_buffered_bytes: 256 << 20,
            max_pending_entities: p.max_pending_entities,
            flush_deadline_ms: p.timing.flush_deadline.as_millis() as u64,
            clock_skew_ms: p.timing.clock_skew.as_millis() as u64,
        }
    }
}

/// The Kafka worker (`eavlake run --source kafka`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// `bootstrap.servers`.
    pub brokers: String,
    pub group_id: String,
    /// Topics of the `entities` and `entity_values` tables, by name…
    pub topics: Vec<String>,
    /// …or by regular expression (Debezium names them `<prefix>.<schema>.<table>`).
    pub topic_pattern: Option<String>,
    /// The `attributes` table's topic, read whole by every worker (not shared by the group).
    pub catalog_topic: Option<String>,
    /// Dead-letter topic; `{topic}` stands for the source topic.
    pub dead_letter_topic: String,
    /// Time allowed for a dead letter to be acknowledged, and for metadata requests.
    pub request_timeout_ms: u64,
    /// librdkafka properties passed through as they are (TLS, SASL, fetch sizes, …).
    pub properties: KafkaProperties,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            group_id: "eavlake".into(),
            topics: Vec::new(),
            topic_pattern: None,
            catalog_topic: None,
            dead_letter_topic: "{topic}.dlq".into(),
            request_timeout_ms: 30_000,
            properties: KafkaProperties::default(),
        }
    }
}

/// The Kafka worker's HTTP listener (`/metrics`, `/healthz`, `/readyz`) and lag figures.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// `host:port` to listen on; `""` for no listener.
    pub listen: String,
    /// How often the worker asks the brokers for high watermarks (the lag metrics).
    pub lag_interval_ms: u64,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { listen: "127.0.0.1:9464".into(), lag_interval_ms: 5_000 }
    }
}

/// librdkafka properties; values of keys that name a secret never print.
#[derive(Clone, Deserialize, PartialEq, Default)]
#[serde(transparent)]
pub struct KafkaProperties(pub std::collections::BTreeMap<String, String>);

impl KafkaProperties {
    fn is_secret(key: &str) -> bool {
        ["password", "secret", "key.pem", "keystore", "token", "sasl.jaas"].iter().any(|s| key.contains(s))
    }

    fn shown(&self) -> std::collections::BTreeMap<&str, &str> {
        self.0.iter().map(|(k, v)| (k.as_str(), if Self::is_secret(k) { "***" } else { v.as_str() })).collect()
    }
}

impl fmt::Debug for KafkaProperties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.shown().fmt(f)
    }
}

impl Serialize for KafkaProperties {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.shown().serialize(s)
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CatalogConfig {
    /// Load the attribute catalog from this Postgres at start (`postgres://…`).
    pub bootstrap_postgres_url: Option<Secret>,
    /// Records a change with an unknown attribute waits for the catalog before it is a dead letter.
    pub unknown_attribute_wait: u64,
    /// The Kafka worker also gives up after this long (a partition may go quiet).
    pub unknown_attribute_wait_ms: u64,
    /// Changes that may wait at once.
    pub max_parked: usize,
}

impl Default for CatalogConfig {
    fn default() -> Self {
        let p = PipelineOptions::default();
        CatalogConfig {
            bootstrap_postgres_url: None,
            unknown_attribute_wait: p.unknown_attribute_wait,
            unknown_attribute_wait_ms: p.unknown_attribute_wait_time.as_millis() as u64,
            max_parked: p.max_parked,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("config file `{path}`: {message}")]
    File { path: String, message: String },
    #[error("config key `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
    #[error("config override `{name}`: {message}")]
    Override { name: String, message: String },
}

/// Sets `segments` (a key path) in `root` to `value`, read as a TOML scalar if it is one (but
/// always as a string under `kafka.properties`).
fn set_path(root: &mut toml::Table, segments: &[String], value: &str, name: &str) -> Result<(), ConfigError> {
    let bad = |message: &str| ConfigError::Override { name: name.to_string(), message: message.to_string() };
    let Some((last, parents)) = segments.split_last() else { return Err(bad("empty key")) };
    if segments.iter().any(|s| s.is_empty()) {
        return Err(bad("empty key segment"));
    }
    let mut table = root;
    for seg in parents {
        let entry = table.entry(seg.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry.as_table_mut().ok_or_else(|| bad(&format!("`{seg}` is not a section")))?;
    }
    let is_property = segments.len() == 3 && segments[0] == "kafka" && segments[1] == "properties";
    let parsed = if is_property {
        toml::Value::String(value.to_string())
    } else {
        match toml::from_str::<toml::Table>(&format!("v = {value}")).ok().and_then(|mut t| t.remove("v")) {
            Some(v) if !v.is_table() => v,
            _ => toml::Value::String(value.to_string()),
        }
    };
    table.insert(last.clone(), parsed);
    Ok(())
}

impl Config {
    /// Loads the layers (see the module's documentation): the file if any, the environment
    /// variables in `env`, the `--set` flags; then checks the rules.
    pub fn load_layered(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        sets: &[String],
    ) -> Result<Config, ConfigError> {
        let file = path.map(|p| p.display().to_string()).unwrap_or_default();
        let file_err = |message: String| ConfigError::File { path: file.clone(), message };
        let text = match path {
            Some(p) => std::fs::read_to_string(p).map_err(|e| file_err(e.to_string()))?,
            None => String::new(),
        };
        let mut root: toml::Table = toml::from_str(&text).map_err(|e: toml::de::Error| file_err(e.to_string()))?;
        for (name, value) in env {
            let Some(rest) = name.strip_prefix("EAVLAKE__") else { continue };
            let segments: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
            let segments = if segments.len() > 2 && segments[0] == "kafka" && segments[1] == "properties" {
                vec![segments[0].clone(), segments[1].clone(), segments[2..].join("__").replace('_', ".")]
            } else {
                segments
            };
            set_path(&mut root, &segments, &value, &name)?;
        }
        for set in sets {
            let Some((key, value)) = set.split_once('=') else {
                return Err(ConfigError::Override { name: set.clone(), message: "expected key=value".into() });
            };
            let mut segments: Vec<String> = key.trim().split('.').map(str::to_string).collect();
            if segments.len() > 2 && segments[0] == "kafka" && segments[1] == "properties" {
                let prop = segments[2..].join(".");
                segments.truncate(2);
                segments.push(prop);
            }
            set_path(&mut root, &segments, value, set)?;
        }
        let config = Config::deserialize(root).map_err(|e| file_err(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file_err = |message: String| ConfigError::File { path: path.display().to_string(), message };
        let text = std::fs::read_to_string(path).map_err(|e| file_err(e.to_string()))?;
        Config::parse(&text).map_err(|e| match e {
            ConfigError::File { message, .. } => file_err(message),
            other => other,
        })
    }

    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let config: Config =
            toml::from_str(text).map_err(|e| ConfigError::File { path: String::new(), message: e.to_string() })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every rule, naming the key that breaks one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| Err(ConfigError::Invalid { key, message: message.to_string() });
        if self.lake.url.trim().is_empty() {
            return invalid("lake.url", "must not be empty");
        }
        if self.lake.range_size <= 0 {
            return invalid("lake.range_size", "must be positive");
        }
        if self.lake.decimal_scale > 38 {
            return invalid("lake.decimal_scale", "must be at most 38 (Decimal128)");
        }
        if self.batch.max_rows == 0 {
            return invalid("batch.max_rows", "must be positive");
        }
        if self.batch.max_bytes < 1024 {
            return invalid("batch.max_bytes", "must be at least 1024");
        }
        if self.batch.max_age_ms == 0 {
            return invalid("batch.max_age_ms", "must be positive");
        }
        if self.batch.max_buffered_bytes < self.batch.max_bytes {
            return invalid("batch.max_buffered_bytes", "must be at least batch.max_bytes");
        }
        if self.batch.flush_deadline_ms < 1000 {
            return invalid("batch.flush_deadline_ms", "must be at least 1000");
        }
        if self.kafka.brokers.trim().is_empty() {
            return invalid("kafka.brokers", "must not be empty");
        }
        if self.kafka.group_id.trim().is_empty() {
            return invalid("kafka.group_id", "must not be empty");
        }
        if !self.kafka.topics.is_empty() && self.kafka.topic_pattern.is_some() {
            return invalid("kafka.topic_pattern", "give topics or topic_pattern, not both");
        }
        if self.metrics.lag_interval_ms < 100 {
            return invalid("metrics.lag_interval_ms", "must be at least 100");
        }
        if self.kafka.dead_letter_topic.trim().is_empty() {
            return invalid("kafka.dead_letter_topic", "must not be empty");
        }
        if self.kafka.properties.0.contains_key("bootstrap.servers") || self.kafka.properties.0.contains_key("group.id")
        {
            return invalid(
                "kafka.properties",
                "set bootstrap.servers and group.id with kafka.brokers and kafka.group_id",
            );
        }
        if let Err((key, message)) = self.limits.check() {
            return invalid(key, message);
        }
        if self.batch.max_pending_entities == 0 {
            return invalid("batch.max_pending_entities", "must be positive");
        }
        if self.decode.format == Format::Avro && self.decode.schema_registry_url.is_none() {
            return invalid("decode.schema_registry_url", "is required when decode.format = \"avro\"");
        }
        if let Some(url) = &self.decode.schema_registry_url {
            if url::Url::parse(url).is_err() {
                return invalid("decode.schema_registry_url", "is not a URL");
            }
        }
        if let Some(url) = &self.catalog.bootstrap_postgres_url {
            if url.expose().parse::<tokio_postgres::Config>().is_err() {
                return invalid("catalog.bootstrap_postgres_url", "is not a PostgreSQL connection string");
            }
        }
        if self.lake.s3.access_key_id.is_some() != self.lake.s3.secret_access_key.is_some() {
            return invalid("lake.s3.secret_access_key", "access_key_id and secret_access_key go together");
        }
        for (key, name) in [
            ("tables.attributes", &self.tables.attributes),
            ("tables.entities", &self.tables.entities),
            ("tables.entity_values", &self.tables.entity_values),
        ] {
            if name.trim().is_empty() {
                return invalid(key, "must not be empty");
            }
        }
        Ok(())
    }

    pub fn pipeline_options(&self) -> PipelineOptions {
        PipelineOptions {
            decode: DecodeOptions {
                decimal_mode: self.decode.decimal_handling_mode,
                time_mode: self.decode.time_precision_mode,
                decimal_scale: self.lake.decimal_scale,
            },
            tables: TableNames {
                attributes: self.tables.attributes.clone(),
                entities: self.tables.entities.clone(),
                entity_values: self.tables.entity_values.clone(),
            },
            flush_rows: self.batch.max_rows,
            flush_bytes: self.batch.max_bytes,
            max_pending_entities: self.batch.max_pending_entities,
            unknown_attribute_wait: self.catalog.unknown_attribute_wait,
            unknown_attribute_wait_time: std::time::Duration::from_millis(self.catalog.unknown_attribute_wait_ms),
            max_parked: self.catalog.max_parked,
            limits: self.limits,
            timing: crate::progress::Timing {
                flush_deadline: std::time::Duration::from_millis(self.batch.flush_deadline_ms),
                clock_skew: std::time::Duration::from_millis(self.batch.clock_skew_ms),
            },
            ..PipelineOptions::default()
        }
    }

    pub fn s3_options(&self) -> S3Options {
        S3Options {
            endpoint: self.lake.s3.endpoint.clone(),
            region: self.lake.s3.region.clone(),
            allow_http: self.lake.s3.allow_http,
            access_key_id: self.lake.s3.access_key_id.as_ref().map(|s| s.expose().to_string()),
            secret_access_key: self.lake.s3.secret_access_key.as_ref().map(|s| s.expose().to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every example in `config/` is a valid configuration.
    #[test]
    fn examples_load() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            if entry.path().extension().is_some_and(|e| e == "toml") {
                Config::load(&entry.path()).unwrap_or_else(|e| panic!("{}: {e}", entry.path().display()));
                seen += 1;
            }
        }
        assert!(seen >= 3);
    }

    #[test]
    fn defaults_are_valid_and_unknown_keys_are_refused() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
        let err = Config::parse("[lake]\nurll = \"x\"\n").unwrap_err();
        assert!(err.to_string().contains("unknown field `urll`"), "{err}");
    }

    #[test]
    fn rules_name_their_key() {
        let err = Config::parse("[lake]\nrange_size = 0\n").unwrap_err();
        assert_eq!(err.to_string(), "config key `lake.range_size`: must be positive");
        let err = Config::parse("[decode]\nformat = \"avro\"\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "config key `decode.schema_registry_url`: is required when decode.format = \"avro\""
        );
        let err = Config::parse("[limits]\nmax_record_bytes = 10\n").unwrap_err();
        assert_eq!(err.to_string(), "config key `limits.max_record_bytes`: must be at least 1024");
        let err = Config::parse("[limits]\nmax_json_bytes = 20000000\n").unwrap_err();
        assert_eq!(err.to_string(), "config key `limits.max_json_bytes`: must be at most limits.max_record_bytes");
        let c = Config::parse("[limits]\nmax_json_depth = 16\nmax_attributes_per_row = 50\n").unwrap();
        assert_eq!((c.pipeline_options().limits.max_json_depth, c.limits.max_attributes_per_row), (16, 50));
        let err = Config::parse("[decode]\ndecimal_handling_mode = \"exact\"\n").unwrap_err();
        assert!(err.to_string().contains("decimal_handling_mode"), "{err}");
    }

    #[test]
    fn environment_and_flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "[kafka]\ngroup_id = \"from-file\"\nbrokers = \"a:1\"\n[batch]\nmax_rows = 5\n").unwrap();
        let env = [
            ("EAVLAKE__KAFKA__GROUP_ID".to_string(), "from-env".to_string()),
            ("EAVLAKE__BATCH__MAX_ROWS".into(), "7".into()),
            ("EAVLAKE__KAFKA__PROPERTIES__SASL_PASSWORD".into(), "pw1".into()),
            ("PATH".into(), "/bin".into()),
        ];
        let sets = ["kafka.brokers=b:2".to_string(), "kafka.properties.security.protocol=SASL_SSL".into()];
        let c = Config::load_layered(Some(&file), env, &sets).unwrap();
        assert_eq!((c.kafka.group_id.as_str(), c.kafka.brokers.as_str(), c.batch.max_rows), ("from-env", "b:2", 7));
        assert_eq!(c.kafka.properties.0.get("sasl.password").map(String::as_str), Some("pw1"));
        assert_eq!(c.kafka.properties.0.get("security.protocol").map(String::as_str), Some("SASL_SSL"));
        let shown = format!("{c:?} {}", toml::to_string(&c).unwrap());
        assert!(!shown.contains("pw1") && shown.contains("SASL_SSL"), "{shown}");

        let err = Config::load_layered(None, [], &["batch.max_rows=0".to_string()]).unwrap_err();
        assert_eq!(err.to_string(), "config key `batch.max_rows`: must be positive");
        let err = Config::load_layered(None, [("EAVLAKE__KAFKA__GROUPID".into(), "x".into())], &[]).unwrap_err();
        assert!(err.to_string().contains("unknown field `groupid`"), "{err}");
        let err = Config::load_layered(None, [], &["nonsense".to_string()]).unwrap_err();
        assert_eq!(err.to_string(), "config override `nonsense`: expected key=value");
    }

    #[test]
    fn secrets_never_print() {
        let c = Config::parse("[lake.s3]\naccess_key_id = \"AKIA123\"\nsecret_access_key = \"hunter2\"\n").unwrap();
        let shown = format!("{c:?} {}", toml::to_string(&c).unwrap());
        assert!(!shown.contains("hunter2") && !shown.contains("AKIA123"), "{shown}");
        assert_eq!(c.s3_options().secret_access_key.as_deref(), Some("hunter2"));
    }
}
