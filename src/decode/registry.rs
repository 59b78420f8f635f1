//! A client of a Confluent-compatible schema registry, for the writer schemas of Avro records.
//!
//! Contract: [`SchemaRegistry::schema`] resolves a schema id (bytes 1..5 of a record in the
//! Confluent wire format) with `GET {base}/schemas/ids/{id}` and returns the parsed Avro schema.
//! Only `AVRO` schemas without references are accepted. A registered schema never changes for
//! its id, so every schema is fetched once and cached for the life of the client; the cache can
//! be pre-seeded ([`SchemaRegistry::insert`], [`SchemaRegistry::insert_json`]) for tests and
//! offline use. Every failure is a [`DecodeError::Registry`] naming the schema id and the URL
//! (with any credentials removed) and saying what the registry answered.
//!
//! Besides the parsed schema the client keeps the schema's JSON text when it has it:
//! `apache_avro` drops the attributes of primitive types while parsing, and Debezium's
//! `connect.name` on a plain `long` (MicroTimestamp, NanoTimestamp, …) is the only thing that
//! gives such a column its unit.

use super::DecodeError;
use apache_avro::Schema;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// How long one registry request may take, connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest piece of an error response body quoted in an error message.
const MAX_QUOTED_BODY: usize = 300;

/// A writer schema as the registry gave it.
#[derive(Debug, Clone)]
pub struct RegisteredSchema {
    pub id: u32,
    pub schema: Arc<Schema>,
    /// The schema's JSON text; `None` when the schema was inserted already parsed.
    pub text: Option<Arc<str>>,
}

/// A caching client of a Confluent-compatible schema registry. Share it (`Arc`) between
/// decoders: the cache is behind a lock and lookups take `&self`.
#[derive(Debug)]
pub struct SchemaRegistry {
    /// Base URL without credentials and without a trailing `/`.
    base: String,
    client: reqwest::Client,
    cache: Mutex<HashMap<u32, RegisteredSchema>>,
}

#[derive(Deserialize)]
struct SchemaResponse {
    schema: String,
    /// Absent for Avro (the registry's default type).
    #[serde(rename = "schemaType", default)]
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct ErrorResponse {
    #[serde(default)]
    error_code: Option<i64>,
    #[serde(default)]
    message: Option<String>,
}

impl SchemaRegistry {
    /// A client of the registry at `url` (`http(s)://host:port[/path]`). Credentials in the URL
    /// (`https://user:secret@host`) are sent as HTTP basic authentication and kept out of error
    /// messages.
    pub fn new(url: &str) -> Result<SchemaRegistry, DecodeError> {
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| DecodeError::Registry(format!("cannot build an HTTP client: {}", error_chain(&e))))?;
        SchemaRegistry::with_client(url, client)
    }

    /// Like [`SchemaRegistry::new`] with a caller-configured HTTP client (TLS roots, proxies,
    /// headers). The client should have a timeout.
    pub fn with_client(url: &str, client: reqwest::Client) -> Result<SchemaRegistry, DecodeError> {
        let parsed = url::Url::parse(url.trim())
            .map_err(|e| DecodeError::Registry(format!("bad schema registry URL `{}`: {e}", redact_text(url))))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.cannot_be_a_base() {
            return Err(DecodeError::Registry(format!(
                "bad schema registry URL `{}`: expected http:// or https://",
                redact(&parsed)
            )));
        }
        Ok(SchemaRegistry { base: parsed.as_str().trim_end_matches('/').to_string(), client, cache: Mutex::default() })
    }

    /// The writer schema registered under `id`, fetched once and then served from the cache.
    pub async fn schema(&self, id: u32) -> Result<Arc<Schema>, DecodeError> {
        Ok(self.registered(id).await?.schema)
    }

    /// The writer schema registered under `id` with its JSON text, fetched once and then served
    /// from the cache.
    pub async fn registered(&self, id: u32) -> Result<RegisteredSchema, DecodeError> {
        self.try_registered(id).await.map_err(Failure::into_error)
    }

    /// [`Self::registered`], telling a failure that another try may mend (the registry
    /// unreachable, timing out, answering 5xx or 429) from one it will not (an unknown id, a
    /// schema that is not Avro).
    pub async fn try_registered(&self, id: u32) -> Result<RegisteredSchema, Failure> {
        if let Some(hit) = self.lock().get(&id) {
            return Ok(hit.clone());
        }
        // Two tasks missing the same id at once both fetch it: harmless (the answer is the same)
        // and cheaper than holding a lock across the request.
        let fetched = self.fetch(id).await?;
        Ok(self.lock().entry(id).or_insert(fetched).clone())
    }

    /// Seeds the cache with an already parsed schema (tests, offline use). Its JSON text is
    /// unknown, so Debezium's `connect.name` on primitive types is not available for it: prefer
    /// [`SchemaRegistry::insert_json`].
    pub fn insert(&self, id: u32, schema: Schema) {
        self.lock().insert(id, RegisteredSchema { id, schema: Arc::new(schema), text: None });
    }

    /// Seeds the cache with a schema's JSON text, as the registry would return it.
    pub fn insert_json(&self, id: u32, text: &str) -> Result<(), DecodeError> {
        let registered = parse(id, text).map_err(|m| DecodeError::Registry(format!("schema id {id}: {m}")))?;
        self.lock().insert(id, registered);
        Ok(())
    }

    /// Base URL of the registry, without credentials.
    pub fn url(&self) -> String {
        url::Url::parse(&self.base).map(|u| redact(&u)).unwrap_or_else(|_| self.base.clone())
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u32, RegisteredSchema>> {
        // The map is never left half-updated, so a panic elsewhere while holding the lock does
        // not make its contents wrong.
        self.cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn fetch(&self, id: u32) -> Result<RegisteredSchema, Failure> {
        let url = format!("{}/schemas/ids/{id}", self.base);
        let shown = url::Url::parse(&url).map(|u| redact(&u)).unwrap_or_else(|_| redact_text(&url));
        let error = |message: String| DecodeError::Registry(format!("schema id {id}: GET {shown}: {message}"));
        let fail = |message: String| Failure::Permanent(error(message));
        let again = |message: String| Failure::Transient(error(message));
        let response = self
            .client
            .get(&url)
            .header(reqwest::header::ACCEPT, "application/vnd.schemaregistry.v1+json, application/json")
            .send()
            .await
            .map_err(|e| again(error_chain(&e.without_url())))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| again(format!("HTTP {status}, body unreadable: {}", error_chain(&e.without_url()))))?;
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Err(again(format!("HTTP {status}: {}", quote_body(&body))));
        }
        if !status.is_success() {
            // The registry explains itself as {"error_code": 40403, "message": "Schema 7 not found"}.
            let detail = match serde_json::from_slice::<ErrorResponse>(&body) {
                Ok(ErrorResponse { message: Some(m), error_code: Some(code) }) => format!("{m} (error code {code})"),
                Ok(ErrorResponse { message: Some(m), error_code: None }) => m,
                _ => quote_body(&body),
            };
            return Err(fail(format!("HTTP {status}: {detail}")));
        }
        let answer: SchemaResponse = serde_json::from_slice(&body)
            .map_err(|e| fail(format!("response is not a schema ({e}): {}", quote_body(&body))))?;
        if let Some(kind) = answer.schema_type.as_deref() {
            if !kind.eq_ignore_ascii_case("AVRO") {
                return Err(fail(format!("schema type is {kind}, only AVRO is supported")));
            }
        }
        if !answer.references.is_empty() {
            return Err(fail(format!("schema has {} references, which are not supported", answer.references.len())));
        }
        parse(id, &answer.schema).map_err(fail)
    }
}

/// Why a schema could not be had.
#[derive(Debug)]
pub enum Failure {
    /// Another try will not help: the records that name this id are dead letters.
    Permanent(DecodeError),
    /// The registry may answer later: the caller waits and tries again.
    Transient(DecodeError),
}

impl Failure {
    pub fn into_error(self) -> DecodeError {
        match self {
            Failure::Permanent(e) | Failure::Transient(e) => e,
        }
    }
}

fn parse(id: u32, text: &str) -> Result<RegisteredSchema, String> {
    let schema = Schema::parse_str(text).map_err(|e| format!("not a valid Avro schema: {e}"))?;
    Ok(RegisteredSchema { id, schema: Arc::new(schema), text: Some(Arc::from(text)) })
}

/// A URL without its user name and password.
fn redact(url: &url::Url) -> String {
    let mut url = url.clone();
    // Both fail only for URLs that cannot have credentials, which then have none to hide.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.as_str().trim_end_matches('/').to_string()
}

/// Best effort for text that did not parse as a URL: drop everything before an `@`.
fn redact_text(text: &str) -> String {
    match (text.find("://"), text.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}{}", &text[..s + 3], &text[at + 1..]),
        _ => text.to_string(),
    }
}

fn quote_body(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "empty body".to_string();
    }
    match text.char_indices().nth(MAX_QUOTED_BODY) {
        Some((cut, _)) => format!("`{}…`", &text[..cut]),
        None => format!("`{text}`"),
    }
}

/// An error with its causes: reqwest's own message ("error sending request") names none of them.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_redacted() {
        let r = SchemaRegistry::new("https://user:secret@registry.example:8081/base/").unwrap();
        assert_eq!(r.url(), "https://registry.example:8081/base");
        assert!(matches!(SchemaRegistry::new("not a url"), Err(DecodeError::Registry(_))));
        let err = SchemaRegistry::new("ftp://u:secret@host/").unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
        assert_eq!(redact_text("http://u:p@host x"), "http://host x");
    }

    #[test]
    fn seeded_json_schemas_keep_their_text() {
        let r = SchemaRegistry::new("http://127.0.0.1:1").unwrap();
        r.insert_json(3, r#"{"type":"long","connect.name":"io.debezium.time.MicroTimestamp"}"#).unwrap();
        let hit = r.lock().get(&3).cloned().unwrap();
        assert_eq!(*hit.schema, Schema::Long);
        assert!(hit.text.unwrap().contains("MicroTimestamp"));
        let err = r.insert_json(4, "{").unwrap_err();
        assert!(err.to_string().contains("schema id 4"), "{err}");
    }
}
