//! PostgreSQL connection strings as libpq reads them, TLS included, for every connection eavlake
//! makes (`eavlake reconcile`, `catalog.bootstrap_postgres_url`, the workload driver).
//!
//! tokio-postgres knows `sslmode` `disable`, `prefer` and `require` only, and never checks a
//! certificate; this module takes libpq's TLS parameters out of the string and builds an OpenSSL
//! connector that does what libpq does:
//!
//! | `sslmode` | TLS | server certificate checked against `sslrootcert` | host name checked |
//! |---|---|---|---|
//! | `disable` | no | | |
//! | `allow`, `prefer` (default) | if the server offers it | no | no |
//! | `require` | yes | only if `sslrootcert` is given (as libpq does) | no |
//! | `verify-ca` | yes | yes | no |
//! | `verify-full` | yes | yes | yes |
//!
//! `sslrootcert` is a PEM file of trusted CAs, or `system` (OpenSSL's default trust store, also
//! used when a `verify-*` mode has no `sslrootcert`). `sslcert` and `sslkey` (PEM, unencrypted)
//! give a client certificate. Both URL (`postgres://…?sslmode=verify-full&sslrootcert=ca.pem`)
//! and `key=value` forms are read. Errors name the parameter and never quote the password.

use openssl::ssl::{SslConnector, SslFiletype, SslMethod, SslVerifyMode};
use postgres_openssl::MakeTlsConnector;
use std::path::PathBuf;
use std::str::FromStr;

/// A connection string that cannot be used, naming the parameter at fault.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("`{param}`: {message}")]
pub struct PgUrlError {
    pub param: String,
    pub message: String,
}

fn bad(param: &str, message: impl Into<String>) -> PgUrlError {
    PgUrlError { param: param.to_string(), message: message.into() }
}

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl FromStr for SslMode {
    type Err = PgUrlError;
    fn from_str(s: &str) -> Result<SslMode, PgUrlError> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "allow" | "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(bad(
                    "sslmode",
                    format!("`{other}` is not one of disable, allow, prefer, require, verify-ca, verify-full"),
                ))
            }
        })
    }
}

/// A parsed connection string: the driver's settings and the TLS connector to use with them.
pub struct PgTarget {
    pub config: tokio_postgres::Config,
    pub tls: MakeTlsConnector,
    pub ssl_mode: SslMode,
}

/// The TLS parameters taken out of a connection string.
#[derive(Debug, Default, PartialEq)]
struct TlsParams {
    mode: Option<String>,
    root_cert: Option<String>,
    cert: Option<String>,
    key: Option<String>,
}

impl TlsParams {
    /// Takes `key` if it is a TLS parameter this module handles.
    fn take(&mut self, key: &str, value: String) -> bool {
        let slot = match key {
            "sslmode" => &mut self.mode,
            "sslrootcert" => &mut self.root_cert,
            "sslcert" => &mut self.cert,
            "sslkey" => &mut self.key,
            _ => return false,
        };
        *slot = Some(value);
        true
    }
}

/// Splits a `postgres://` URL into the URL without the TLS parameters and the parameters.
fn split_url(url: &str) -> (String, TlsParams) {
    let mut params = TlsParams::default();
    let Some((base, query)) = url.split_once('?') else { return (url.to_string(), params) };
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let decoded = url::form_urlencoded::parse(pair.as_bytes()).next();
        match decoded {
            Some((k, v)) if params.take(&k, v.to_string()) => {}
            _ => kept.push(pair),
        }
    }
    let rest = if kept.is_empty() { base.to_string() } else { format!("{base}?{}", kept.join("&")) };
    (rest, params)
}

/// Splits a libpq `key=value …` string the same way (values may be quoted with `'`, with `\`
/// escapes, and `=` may have spaces around it).
fn split_key_value(text: &str) -> Result<(String, TlsParams), PgUrlError> {
    let mut params = TlsParams::default();
    let mut kept = Vec::new();
    let mut chars = text.char_indices().peekable();
    let skip_ws = |chars: &mut std::iter::Peekable<std::str::CharIndices>| {
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
    };
    loop {
        skip_ws(&mut chars);
        let Some(&(start, _)) = chars.peek() else { break };
        let mut key = String::new();
        while let Some((_, c)) = chars.next_if(|(_, c)| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        skip_ws(&mut chars);
        if chars.next_if(|(_, c)| *c == '=').is_none() {
            return Err(bad(&key, "expected `=` after the parameter name"));
        }
        skip_ws(&mut chars);
        let mut value = String::new();
        if chars.next_if(|(_, c)| *c == '\'').is_some() {
            let mut closed = false;
            while let Some((_, c)) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next().map(|(_, c)| c)),
                    '\'' => {
                        closed = true;
                        break;
                    }
                    c => value.push(c),
                }
            }
            if !closed {
                return Err(bad(&key, "unterminated quoted value"));
            }
        } else {
            while let Some((_, c)) = chars.next_if(|(_, c)| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next().map(|(_, c)| c));
                } else {
                    value.push(c);
                }
            }
        }
        let end = chars.peek().map(|(i, _)| *i).unwrap_or(text.len());
        if !params.take(&key, value) {
            kept.push(&text[start..end]);
        }
    }
    Ok((kept.join(" "), params))
}

fn is_url(text: &str) -> bool {
    text.starts_with("postgres://") || text.starts_with("postgresql://")
}

/// Reads a connection string: the driver's settings, the TLS mode and a connector for it (the
/// certificate files are read now, so a missing or bad file fails here, before any work).
pub fn parse(text: &str) -> Result<PgTarget, PgUrlError> {
    let (rest, params) = if is_url(text) { split_url(text) } else { split_key_value(text)? };
    let mut config = tokio_postgres::Config::from_str(&rest).map_err(|e| {
        // The driver's message names the option, never the password; the string itself is not
        // quoted here for that reason.
        bad("connection string", format!("not a PostgreSQL connection string: {e}"))
    })?;
    let ssl_mode = match &params.mode {
        Some(m) => m.parse()?,
        None => SslMode::Prefer,
    };
    config.ssl_mode(match ssl_mode {
        SslMode::Disable => tokio_postgres::config::SslMode::Disable,
        SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
        _ => tokio_postgres::config::SslMode::Require,
    });
    let tls = connector(ssl_mode, &params)?;
    Ok(PgTarget { config, tls, ssl_mode })
}

fn existing_file(param: &str, path: &str) -> Result<PathBuf, PgUrlError> {
    let p = PathBuf::from(path);
    match std::fs::metadata(&p) {
        Ok(m) if m.is_file() => Ok(p),
        Ok(_) => Err(bad(param, format!("`{path}` is not a file"))),
        Err(e) => Err(bad(param, format!("`{path}`: {e}"))),
    }
}

fn connector(mode: SslMode, params: &TlsParams) -> Result<MakeTlsConnector, PgUrlError> {
    let ssl_err = |param: &str, e: openssl::error::ErrorStack| bad(param, format!("OpenSSL: {e}"));
    let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(|e| ssl_err("sslmode", e))?;
    // libpq: `require` with a root certificate given verifies the chain like `verify-ca`.
    let verify_chain = match mode {
        SslMode::VerifyCa | SslMode::VerifyFull => true,
        SslMode::Require => params.root_cert.as_deref().is_some_and(|r| r != "system"),
        SslMode::Disable | SslMode::Prefer => false,
    };
    if verify_chain {
        match params.root_cert.as_deref() {
            None | Some("system") => b.set_default_verify_paths().map_err(|e| ssl_err("sslrootcert", e))?,
            Some(path) => {
                let file = existing_file("sslrootcert", path)?;
                b.set_ca_file(&file).map_err(|e| ssl_err("sslrootcert", e))?;
            }
        }
        b.set_verify(SslVerifyMode::PEER);
    } else {
        b.set_verify(SslVerifyMode::NONE);
    }
    match (&params.cert, &params.key) {
        (Some(cert), Some(key)) => {
            let cert = existing_file("sslcert", cert)?;
            let key = existing_file("sslkey", key)?;
            b.set_certificate_chain_file(&cert).map_err(|e| ssl_err("sslcert", e))?;
            b.set_private_key_file(&key, SslFiletype::PEM).map_err(|e| ssl_err("sslkey", e))?;
            b.check_private_key().map_err(|e| ssl_err("sslkey", e))?;
        }
        (Some(_), None) => return Err(bad("sslkey", "is required with sslcert")),
        (None, Some(_)) => return Err(bad("sslcert", "is required with sslkey")),
        (None, None) => {}
    }
    let mut tls = MakeTlsConnector::new(b.build());
    if mode != SslMode::VerifyFull {
        tls.set_callback(|c, _host| {
            c.set_verify_hostname(false);
            Ok(())
        });
    }
    Ok(tls)
}

/// Connects one client (its connection task runs on the runtime; its end is logged).
pub async fn connect(text: &str) -> anyhow::Result<tokio_postgres::Client> {
    use anyhow::Context;
    let target = parse(text).context("PostgreSQL connection string")?;
    let (client, conn) = target.config.connect(target.tls).await.context("connecting to PostgreSQL")?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::warn!(error = %e, "postgres connection");
        }
    });
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_are_taken_out() {
        let (rest, p) =
            split_url("postgres://u:pw@h:5/db?sslmode=verify-full&application_name=x&sslrootcert=%2Ftmp%2Fca.pem");
        assert_eq!(rest, "postgres://u:pw@h:5/db?application_name=x");
        assert_eq!((p.mode.as_deref(), p.root_cert.as_deref()), (Some("verify-full"), Some("/tmp/ca.pem")));
        let (rest, p) =
            split_key_value("host=h  password = 'a b\\'c' sslmode=require sslrootcert='/x y/ca.pem'").unwrap();
        assert_eq!(rest, "host=h password = 'a b\\'c'");
        assert_eq!((p.mode.as_deref(), p.root_cert.as_deref()), (Some("require"), Some("/x y/ca.pem")));
        assert_eq!(split_key_value("host").unwrap_err().param, "host");
    }

    #[test]
    fn modes_and_files_are_checked() {
        assert_eq!(parse("postgres://u:pw@h/db").unwrap().ssl_mode, SslMode::Prefer);
        assert_eq!(parse("postgres://h/db?sslmode=disable").unwrap().ssl_mode, SslMode::Disable);
        assert_eq!(parse("postgres://h/db?sslmode=verify-full").unwrap().ssl_mode, SslMode::VerifyFull);
        let err = parse("postgres://u:SECRETPW@h/db?sslmode=verify_full").err().unwrap();
        assert_eq!(err.param, "sslmode");
        let err = parse("postgres://u:SECRETPW@h/db?sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem").err().unwrap();
        assert_eq!(err.param, "sslrootcert");
        assert!(err.to_string().contains("/nonexistent/ca.pem") && !err.to_string().contains("SECRETPW"), "{err}");
        let err = parse("host=h password=SECRETPW sslcert=/tmp").err().unwrap();
        assert_eq!(err.to_string(), "`sslkey`: is required with sslcert");
        let err = parse("postgres://u:SECRETPW@h:notaport/db").err().unwrap();
        assert!(!err.to_string().contains("SECRETPW"), "{err}");
    }
}
