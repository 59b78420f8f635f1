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
pub use crate::secret::{Secret, SecretUrl};
use crate::sink::S3Options;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::Path;

mod checks;

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
    pub tenants: TenantsConfig,
}

/// Which tenants are written (`[tenants]`). Changes of a tenant not allowed are skipped on
/// purpose: counted (`tenant_skipped` in the run report, `eavlake_tenant_skipped_total`), never
/// written, not dead letters.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TenantsConfig {
    /// Only these tenants are written; empty means every tenant.
    pub allow: Vec<i64>,
    /// These tenants are never written.
    pub deny: Vec<i64>,
    /// Entities per stream whose tenant is remembered, so that a value row of an entity seen
    /// under another tenant in an earlier transaction is a dead letter (16 bytes each).
    pub remembered_entities: usize,
}

impl Default for TenantsConfig {
    fn default() -> Self {
        TenantsConfig {
            allow: Vec::new(),
            deny: Vec::new(),
            remembered_entities: PipelineOptions::default().remembered_entities,
        }
    }
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
    /// Static credentials; when absent, the rest of the standard AWS chain applies
    /// (`AWS_*` variables, a profile of `~/.aws/credentials`, web identity, ECS, EC2).
    pub access_key_id: Option<Secret>,
    pub secret_access_key: Option<Secret>,
    /// With temporary static credentials.
    pub session_token: Option<Secret>,
    /// A profile of the shared credentials file (instead of `AWS_PROFILE`).
    pub profile: Option<String>,
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
    /// Confluent-compatible schema registry, required for `avro` (`https://user:pass@host/…`
    /// for basic authentication; the password never prints).
    pub schema_registry_url: Option<SecretUrl>,
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

impl KafkaConfig {
    /// Whether topics to read are set (a worker config, not the defaults).
    pub fn subscribes(&self) -> bool {
        !self.topics.is_empty() || self.topic_pattern.is_some()
    }
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
    /// Whether a librdkafka property holds a secret (its value never prints).
    pub fn is_secret(key: &str) -> bool {
        ["password", "secret", "key.pem", "keystore", "token", "sasl.jaas", "sasl.oauthbearer.config"]
            .iter()
            .any(|s| key.contains(s))
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
    /// Load the attribute catalog from this Postgres at start (`postgres://…`, libpq's
    /// `sslmode`/`sslrootcert` honoured; the password never prints).
    pub bootstrap_postgres_url: Option<SecretUrl>,
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
    Invalid { key: String, message: String },
    #[error("config override `{name}`: {message}")]
    Override { name: String, message: String },
    /// A variable read beside the configuration (`AWS_PROFILE`, `AWS_SECRET_ACCESS_KEY`, …).
    #[error("environment variable `{name}`: {message}")]
    Environment { name: String, message: String },
}

/// One override of the file: an `EAVLAKE__…` variable or a `--set` flag.
struct Override {
    /// How the user wrote it, for messages: the variable's name, or `--set <key>` (never the
    /// value, which may be a secret).
    name: String,
    segments: Vec<String>,
    value: String,
}

impl Override {
    fn from_env(name: &str, value: &str) -> Option<Override> {
        let rest = name.strip_prefix("EAVLAKE__")?;
        let segments: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        let segments = if segments.len() > 2 && segments[0] == "kafka" && segments[1] == "properties" {
            vec![segments[0].clone(), segments[1].clone(), segments[2..].join("__").replace('_', ".")]
        } else {
            segments
        };
        Some(Override { name: name.to_string(), segments, value: value.to_string() })
    }

    fn from_flag(index: usize, flag: &str) -> Result<Override, ConfigError> {
        let Some((key, value)) = flag.split_once('=') else {
            return Err(ConfigError::Override {
                name: format!("--set #{}", index + 1),
                message: "expected key=value".into(),
            });
        };
        let mut segments: Vec<String> = key.trim().split('.').map(str::to_string).collect();
        if segments.len() > 2 && segments[0] == "kafka" && segments[1] == "properties" {
            let prop = segments[2..].join(".");
            segments.truncate(2);
            segments.push(prop);
        }
        Ok(Override { name: format!("--set {}", key.trim()), segments, value: value.to_string() })
    }

    fn key(&self) -> String {
        self.segments.join(".")
    }

    fn error(&self, message: impl Into<String>) -> ConfigError {
        ConfigError::Override { name: self.name.clone(), message: message.into() }
    }

    /// The value as a TOML scalar when it reads back as exactly the same text (`7`, `true`),
    /// else as a string: `+5`, `1_000` or `1.50` stay text, so a secret is never reshaped.
    fn scalar(&self) -> Option<toml::Value> {
        let v = toml::from_str::<toml::Table>(&format!("v = {}", self.value)).ok()?.remove("v")?;
        (!v.is_table() && !v.is_array() && v.to_string() == self.value).then_some(v)
    }

    /// Sets the key in `root` to `value`.
    fn set(&self, root: &mut toml::Table, value: toml::Value) -> Result<(), ConfigError> {
        let Some((last, parents)) = self.segments.split_last() else { return Err(self.error("empty key")) };
        if self.segments.iter().any(|s| s.is_empty()) {
            return Err(self.error("empty key segment"));
        }
        let mut table = root;
        for seg in parents {
            let entry = table.entry(seg.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
            table = entry.as_table_mut().ok_or_else(|| self.error(format!("`{seg}` is not a section")))?;
        }
        table.insert(last.clone(), value);
        Ok(())
    }

    /// Applies the override to `root` and checks the result still reads as a [`Config`], so
    /// that an unknown key or a wrong type is blamed on the override that brought it.
    fn apply(&self, root: &mut toml::Table) -> Result<(), ConfigError> {
        let text = toml::Value::String(self.value.clone());
        let is_property = self.segments.len() == 3 && self.segments[0] == "kafka" && self.segments[1] == "properties";
        let candidates = match self.scalar() {
            Some(v) if !is_property => vec![v, text],
            _ => vec![text],
        };
        let mut last_err = None;
        for value in candidates {
            let mut attempt = root.clone();
            self.set(&mut attempt, value)?;
            match Config::deserialize(attempt.clone()) {
                Ok(_) => {
                    *root = attempt;
                    return Ok(());
                }
                Err(e) => last_err = Some(e),
            }
        }
        let message = last_err.map(|e| e.message().to_string()).unwrap_or_default();
        Err(self.error(format!("key `{}`: {message}", self.key())))
    }
}

/// A TOML error as ``line L column C (`key`): message``, without the quoted source line that
/// toml's own Display adds (the line may hold a secret); the key is what precedes `=` there.
fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let Some(span) = e.span() else { return e.message().to_string() };
    let start = span.start.min(text.len());
    let line_start = text[..start].rfind('\n').map(|i| i + 1).unwrap_or(0);
    let line_text = text[line_start..].lines().next().unwrap_or_default();
    let line = text[..start].matches('\n').count() + 1;
    let column = text[line_start..start].chars().count() + 1;
    match line_text.split_once('=').map(|(k, _)| k.trim()).filter(|k| !k.is_empty() && !k.starts_with('[')) {
        Some(key) => format!("line {line} column {column} (`{key}`): {}", e.message()),
        None => format!("line {line} column {column}: {}", e.message()),
    }
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
        // The file alone first: its errors then point at its lines.
        toml::from_str::<Config>(&text).map_err(|e| file_err(toml_error(&text, &e)))?;
        let mut root: toml::Table = toml::from_str(&text).map_err(|e| file_err(toml_error(&text, &e)))?;
        let mut overrides: Vec<Override> = env.into_iter().filter_map(|(n, v)| Override::from_env(&n, &v)).collect();
        // Variables in a stable order: the environment's order is arbitrary.
        overrides.sort_by(|a, b| a.name.cmp(&b.name));
        for (i, set) in sets.iter().enumerate() {
            overrides.push(Override::from_flag(i, set)?);
        }
        for o in &overrides {
            o.apply(&mut root)?;
        }
        let config = Config::deserialize(root).map_err(|e| file_err(e.message().to_string()))?;
        config.validate()?;
        Ok(config)
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_layered(Some(path), [], &[])
    }

    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text)
            .map_err(|e| ConfigError::File { path: String::new(), message: toml_error(text, &e) })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every rule, naming the key that breaks one: values, cross-key rules, addresses
    /// and URLs, credentials that must come in pairs, files that must exist (TLS). Reads the
    /// process environment for the AWS variables.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_with_env(&|k| std::env::var(k).ok())
    }

    /// [`Config::validate`] with `env` for the environment.
    pub fn validate_with_env(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let invalid =
            |key: &str, message: &str| Err(ConfigError::Invalid { key: key.to_string(), message: message.to_string() });
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
        if let Some(t) = self.tenants.deny.iter().find(|t| self.tenants.allow.contains(t)) {
            return Err(ConfigError::Invalid {
                key: "tenants.deny".to_string(),
                message: format!("tenant {t} is also in tenants.allow: a tenant is allowed or denied, not both"),
            });
        }
        if self.tenants.remembered_entities > 1 << 30 {
            return invalid("tenants.remembered_entities", "must be at most 2^30 (16 GiB)");
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
        // Addresses, URLs and credentials last: their checks read files and the environment.
        let named = |(key, message): (String, String)| {
            if key.chars().all(|c| c.is_ascii_uppercase() || c == '_') {
                ConfigError::Environment { name: key, message }
            } else {
                ConfigError::Invalid { key, message }
            }
        };
        checks::lake(&self.lake, env).map_err(named)?;
        checks::brokers(&self.kafka.brokers).map_err(named)?;
        checks::kafka_properties(&self.kafka.properties.0).map_err(named)?;
        checks::listen(&self.metrics.listen).map_err(named)?;
        if let Some(url) = &self.decode.schema_registry_url {
            checks::http_url("decode.schema_registry_url", url).map_err(named)?;
        }
        if let Some(url) = &self.catalog.bootstrap_postgres_url {
            crate::pg::parse(url.expose()).map_err(|e| ConfigError::Invalid {
                key: "catalog.bootstrap_postgres_url".into(),
                message: e.to_string(),
            })?;
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
            tenants: crate::tenancy::TenantFilter::new(&self.tenants.allow, &self.tenants.deny),
            remembered_entities: self.tenants.remembered_entities,
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
            access_key_id: self.lake.s3.access_key_id.clone(),
            secret_access_key: self.lake.s3.secret_access_key.clone(),
            session_token: self.lake.s3.session_token.clone(),
            profile: self.lake.s3.profile.clone(),
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
        let sets = [
            "kafka.brokers=b:2".to_string(),
            "kafka.properties.security.protocol=SASL_SSL".into(),
            "kafka.properties.sasl.mechanism=PLAIN".into(),
            "kafka.properties.sasl.username=u".into(),
        ];
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
        assert_eq!(err.to_string(), "config override `--set #1`: expected key=value");
    }

    /// An unknown key is refused in every section and from every layer, and the message names
    /// where it came from.
    #[test]
    fn unknown_keys_are_refused_in_every_layer() {
        let env = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        let err = Config::load_layered(None, env("EAVLAKE__KAFKA__BOOTSTRAP_SERVERZ", "a:1"), &[]).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("config override `EAVLAKE__KAFKA__BOOTSTRAP_SERVERZ`: key `kafka.bootstrap_serverz`: unknown field `bootstrap_serverz`"),
            "{text}"
        );
        for section in ["lake", "lake.s3", "decode", "tables", "batch", "catalog", "kafka", "metrics", "tenants"] {
            let err = Config::load_layered(None, [], &[format!("{section}.nope=1")]).unwrap_err();
            assert!(err.to_string().contains("unknown field `nope`"), "{section}: {err}");
            let err = Config::parse(&format!("[{section}]\nnope = 1\n")).unwrap_err();
            assert!(err.to_string().contains("line 2 column 1 (`nope`): unknown field `nope`"), "{section}: {err}");
        }
        let err = Config::load_layered(None, env("EAVLAKE__NOPE__X", "1"), &[]).unwrap_err();
        assert!(err.to_string().contains("unknown field `nope`"), "{err}");
        // A value of the wrong type names the key too.
        let err = Config::load_layered(None, [], &["batch.max_rows=many".to_string()]).unwrap_err();
        assert!(
            err.to_string().starts_with("config override `--set batch.max_rows`: key `batch.max_rows`: invalid type"),
            "{err}"
        );
        // A key librdkafka does not know fails at start, not when the consumer is made.
        let err = Config::load_layered(None, env("EAVLAKE__KAFKA__PROPERTIES__FETCH_MAX_BYTEZ", "1"), &[]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("config key `kafka.properties.fetch.max.bytez`: No such configuration property"),
            "{err}"
        );
    }

    /// Addresses and URLs are checked at start, naming the key.
    #[test]
    fn bad_urls_name_their_key() {
        for (toml, key) in [
            ("[lake]\nurl = \"gs://bucket/x\"", "lake.url"),
            ("[lake]\nurl = \"s3://\"", "lake.url"),
            ("[lake]\nurl = \"s3://b\"\n[lake.s3]\nendpoint = \"not a url\"", "lake.s3.endpoint"),
            ("[lake]\nurl = \"s3://b\"\n[lake.s3]\nendpoint = \"http://127.0.0.1:9000\"", "lake.s3.allow_http"),
            ("[kafka]\nbrokers = \"host:port\"", "kafka.brokers"),
            ("[metrics]\nlisten = \"9464\"", "metrics.listen"),
            ("[decode]\nschema_registry_url = \"registry:8081\"", "decode.schema_registry_url"),
            ("[catalog]\nbootstrap_postgres_url = \"postgres://u:SECRETPW@h:port/db\"", "catalog.bootstrap_postgres_url"),
            ("[catalog]\nbootstrap_postgres_url = \"postgres://u:SECRETPW@h/db?sslmode=verify-full&sslrootcert=/nonexistent.pem\"", "catalog.bootstrap_postgres_url"),
        ] {
            let config: Config = toml::from_str(toml).unwrap();
            let err = config.validate_with_env(&|_| None).unwrap_err();
            match &err {
                ConfigError::Invalid { key: k, .. } => assert_eq!(k, key, "{toml}: {err}"),
                other => panic!("{toml}: {other}"),
            }
            assert!(!err.to_string().contains("SECRETPW"), "{err}");
        }
    }

    /// Credentials that come in sets fail at start when one is missing, naming the missing key.
    #[test]
    fn partial_credentials_name_the_missing_key() {
        for (toml, key) in [
            ("[lake]\nurl = \"s3://b\"\n[lake.s3]\naccess_key_id = \"AKIA\"", "lake.s3.secret_access_key"),
            ("[lake]\nurl = \"s3://b\"\n[lake.s3]\nsecret_access_key = \"SECRETPW\"", "lake.s3.access_key_id"),
            ("[lake]\nurl = \"s3://b\"\n[lake.s3]\nprofile = \"nope\"", "lake.s3.profile"),
            (
                "[kafka.properties]\n\"security.protocol\" = \"SASL_SSL\"\n\"sasl.mechanism\" = \"SCRAM-SHA-256\"\n\"sasl.username\" = \"u\"",
                "kafka.properties.sasl.password",
            ),
            (
                "[kafka.properties]\n\"security.protocol\" = \"SSL\"\n\"ssl.ca.location\" = \"/nonexistent/ca.pem\"",
                "kafka.properties.ssl.ca.location",
            ),
        ] {
            let config: Config = toml::from_str(toml).unwrap();
            let home = |k: &str| (k == "HOME").then(|| "/nonexistent-home".to_string());
            let err = config.validate_with_env(&home).unwrap_err();
            match &err {
                ConfigError::Invalid { key: k, .. } => assert_eq!(k, key, "{toml}: {err}"),
                other => panic!("{toml}: {other}"),
            }
            assert!(!err.to_string().contains("SECRETPW"), "{err}");
        }
        // The same rule for the AWS variables names the variable.
        let config: Config = toml::from_str("[lake]\nurl = \"s3://b\"").unwrap();
        let env = |k: &str| (k == "AWS_ACCESS_KEY_ID").then(|| "AKIA".to_string());
        assert_eq!(
            config.validate_with_env(&env).unwrap_err().to_string(),
            "environment variable `AWS_SECRET_ACCESS_KEY`: is required with AWS_ACCESS_KEY_ID"
        );
    }

    #[test]
    fn tenant_lists_are_checked() {
        let c = Config::parse("[tenants]\nallow = [1, 2]\ndeny = [3]\n").unwrap();
        let f = c.pipeline_options().tenants;
        assert!(f.allows(1) && !f.allows(3) && !f.allows(4));
        let err = Config::parse("[tenants]\nallow = [1, 2]\ndeny = [2]\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "config key `tenants.deny`: tenant 2 is also in tenants.allow: a tenant is allowed or denied, not both"
        );
        let err = Config::parse("[tenants]\ndeny = [\"x\"]\n").unwrap_err();
        assert!(err.to_string().contains("deny"), "{err}");
        let err = Config::load_layered(None, [], &["tenants.remembered_entities=9999999999".to_string()]).unwrap_err();
        assert_eq!(err.to_string(), "config key `tenants.remembered_entities`: must be at most 2^30 (16 GiB)");
    }

    #[test]
    fn secrets_never_print() {
        let c = Config::load_layered(
            None,
            [("EAVLAKE__CATALOG__BOOTSTRAP_POSTGRES_URL".to_string(), "postgres://u:pgpass@h/db".to_string())],
            &[
                "lake.s3.access_key_id=AKIA123".to_string(),
                "lake.s3.secret_access_key=1.50".into(),
                "decode.schema_registry_url=https://reg:regpass@r:8081/apis".into(),
            ],
        )
        .unwrap();
        let shown = format!("{c:?} {}", toml::to_string(&c).unwrap());
        for secret in ["1.50", "AKIA123", "pgpass", "regpass"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("postgres://u:***@h/db") && shown.contains("https://reg:***@r:8081/apis"), "{shown}");
        // Kept exactly as given, although `1.50` reads as a number.
        assert_eq!(c.s3_options().secret_access_key.as_ref().map(Secret::expose), Some("1.50"));
        // Nor does an error quote a file's line holding a secret.
        let err = Config::parse("[lake.s3]\nsecret_acces_key = \"hunter2\"\n").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let err = Config::parse("[lake.s3]\nsecret_access_key = \"hunter2\" x\n").unwrap_err();
        assert!(!err.to_string().contains("hunter2") && err.to_string().contains("line 2"), "{err}");
    }
}
