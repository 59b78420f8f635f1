//! Configuration: a TOML file (`--config`, examples in `config/`), typed, with unknown keys
//! refused and every rule checked at start by [`Config::validate`], which names the key it
//! rejects. Command-line flags override the file.

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
    /// Flush when this many rows are buffered.
    pub max_rows: usize,
    /// Flush when about this many bytes are buffered.
    pub max_bytes: usize,
    /// Entities of one transaction folded at once; larger transactions fold in slices.
    pub max_pending_entities: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        let p = PipelineOptions::default();
        BatchConfig { max_rows: p.flush_rows, max_bytes: p.flush_bytes, max_pending_entities: p.max_pending_entities }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CatalogConfig {
    /// Load the attribute catalog from this Postgres at start (`postgres://…`).
    pub bootstrap_postgres_url: Option<Secret>,
    /// Records a change with an unknown attribute waits for the catalog before it is a dead letter.
    pub unknown_attribute_wait: u64,
    /// Changes that may wait at once.
    pub max_parked: usize,
}

impl Default for CatalogConfig {
    fn default() -> Self {
        let p = PipelineOptions::default();
        CatalogConfig {
            bootstrap_postgres_url: None,
            unknown_attribute_wait: p.unknown_attribute_wait,
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
}

impl Config {
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
            max_parked: self.catalog.max_parked,
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
        let err = Config::parse("[decode]\ndecimal_handling_mode = \"exact\"\n").unwrap_err();
        assert!(err.to_string().contains("decimal_handling_mode"), "{err}");
    }

    #[test]
    fn secrets_never_print() {
        let c = Config::parse("[lake.s3]\naccess_key_id = \"AKIA123\"\nsecret_access_key = \"hunter2\"\n").unwrap();
        let shown = format!("{c:?} {}", toml::to_string(&c).unwrap());
        assert!(!shown.contains("hunter2") && !shown.contains("AKIA123"), "{shown}");
        assert_eq!(c.s3_options().secret_access_key.as_deref(), Some("hunter2"));
    }
}
