//! The checks of [`super::Config::validate`] that look inside values: addresses, URLs,
//! credentials that come in sets, TLS files that must exist, librdkafka properties. Each returns
//! the key it blames and why; no message quotes a secret.

use super::{KafkaProperties, LakeConfig};
use crate::secret::{redact_url, SecretUrl};
use std::collections::BTreeMap;

type Checked = Result<(), (String, String)>;

fn fail(key: &str, message: impl Into<String>) -> Checked {
    Err((key.to_string(), message.into()))
}

/// A host name or IPv4 address as it may appear before `:port`.
fn is_host(host: &str) -> bool {
    !host.is_empty() && host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// `host:port` (IPv6 in brackets); with `port_required` false the port may be left out.
fn host_port(entry: &str, port_required: bool) -> Result<(), String> {
    let (host, port) = if let Some(rest) = entry.strip_prefix('[') {
        let (v6, after) = rest.split_once(']').ok_or("`[` without `]`")?;
        v6.parse::<std::net::Ipv6Addr>().map_err(|_| format!("`{v6}` is not an IPv6 address"))?;
        match after {
            "" => (None, None),
            p => (None, Some(p.strip_prefix(':').ok_or("expected `:port` after `]`")?)),
        }
    } else {
        match entry.rsplit_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(entry), None),
        }
    };
    if let Some(h) = host {
        if !is_host(h) {
            return Err(format!("`{h}` is not a host name or address"));
        }
    }
    match port {
        Some(p) => p.parse::<u16>().map(|_| ()).map_err(|_| format!("port `{p}` is not a number from 0 to 65535")),
        None if port_required => Err("expected host:port".into()),
        None => Ok(()),
    }
}

/// `kafka.brokers`: a comma-separated list of `host[:port]`, each optionally `protocol://`.
pub fn brokers(list: &str) -> Checked {
    if list.trim().is_empty() {
        return fail("kafka.brokers", "must not be empty");
    }
    for entry in list.split(',').map(str::trim) {
        let bare = match entry.split_once("://") {
            Some((proto, rest)) => {
                let known = ["plaintext", "ssl", "sasl_plaintext", "sasl_ssl"];
                if !known.contains(&proto.to_ascii_lowercase().as_str()) {
                    return fail("kafka.brokers", format!("`{}`: unknown protocol `{proto}`", redact_url(entry)));
                }
                rest
            }
            None => entry,
        };
        if let Err(why) = host_port(bare, false) {
            return fail("kafka.brokers", format!("`{}`: {why}", redact_url(entry)));
        }
    }
    Ok(())
}

/// `metrics.listen`: `""` (no listener) or `host:port`.
pub fn listen(addr: &str) -> Checked {
    if addr.is_empty() || addr.parse::<std::net::SocketAddr>().is_ok() {
        return Ok(());
    }
    host_port(addr, true).or_else(|why| fail("metrics.listen", format!("`{addr}`: {why} (or \"\" for no listener)")))
}

/// An `http(s)://` URL with a host.
pub fn http_url(key: &str, url: &SecretUrl) -> Checked {
    match url::Url::parse(url.expose().trim()) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        Ok(_) => fail(key, format!("`{}` is not an http:// or https:// URL", url.redacted())),
        Err(e) => fail(key, format!("`{}` is not a URL: {e}", url.redacted())),
    }
}

/// `lake.url` and, for an S3 lake, its endpoint and credentials.
pub fn lake(lake: &LakeConfig, env: &dyn Fn(&str) -> Option<String>) -> Checked {
    let url = lake.url.trim();
    let Some((scheme, rest)) = url.split_once("://") else { return Ok(()) };
    match scheme {
        "file" | "memory" => return Ok(()),
        "s3" => {}
        other => {
            return fail(
                "lake.url",
                format!("unsupported scheme `{other}://` (use a folder, file://, s3:// or memory://)"),
            )
        }
    }
    let bucket = rest.split('/').next().unwrap_or_default();
    if bucket.is_empty() {
        return fail("lake.url", "no bucket in the s3:// URL");
    }
    if bucket.contains('@') {
        // Not echoed: what precedes the `@` would be a key.
        return fail("lake.url", "credentials do not belong in the URL (use lake.s3.* or the AWS chain)");
    }
    if !bucket.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_')) {
        return fail("lake.url", format!("`{bucket}` is not an S3 bucket name"));
    }
    let s3 = &lake.s3;
    if let Some(endpoint) = &s3.endpoint {
        let parsed = url::Url::parse(endpoint)
            .map_err(|e| ("lake.s3.endpoint".to_string(), format!("`{}` is not a URL: {e}", redact_url(endpoint))))?;
        match parsed.scheme() {
            "https" => {}
            "http" => {
                let env_allows = env("AWS_ALLOW_HTTP").is_some_and(|v| v.eq_ignore_ascii_case("true"));
                if !s3.allow_http && !env_allows {
                    return fail("lake.s3.allow_http", "must be true for an http:// endpoint");
                }
            }
            other => return fail("lake.s3.endpoint", format!("scheme `{other}`: expected http or https")),
        }
    }
    match (&s3.access_key_id, &s3.secret_access_key) {
        (Some(_), None) => return fail("lake.s3.secret_access_key", "is required with lake.s3.access_key_id"),
        (None, Some(_)) => return fail("lake.s3.access_key_id", "is required with lake.s3.secret_access_key"),
        _ => {}
    }
    if s3.session_token.is_some() && s3.access_key_id.is_none() {
        return fail("lake.s3.access_key_id", "is required with lake.s3.session_token");
    }
    if s3.profile.is_some() && s3.access_key_id.is_some() {
        return fail("lake.s3.profile", "give a profile or static keys (lake.s3.access_key_id), not both");
    }
    crate::sink::aws_credentials::from_profile(s3.profile.as_deref(), s3.access_key_id.is_some(), env)
        .map(|_| ())
        .map_err(|e| (e.key, e.message))
}

/// Properties holding a file path librdkafka reads when the client starts.
const TLS_FILES: [&str; 5] =
    ["ssl.ca.location", "ssl.certificate.location", "ssl.key.location", "ssl.crl.location", "ssl.keystore.location"];

/// `kafka.properties`: the protocol, the SASL mechanism and its credentials, TLS files, then
/// librdkafka's own check of every name and value.
pub fn kafka_properties(props: &BTreeMap<String, String>) -> Checked {
    let key = |p: &str| format!("kafka.properties.{p}");
    let get = |p: &str| props.get(p).map(|v| v.trim()).filter(|v| !v.is_empty());
    if props.contains_key("bootstrap.servers") || props.contains_key("group.id") {
        return fail("kafka.properties", "set bootstrap.servers and group.id with kafka.brokers and kafka.group_id");
    }
    let protocol = get("security.protocol").unwrap_or("plaintext").to_ascii_lowercase();
    if !["plaintext", "ssl", "sasl_plaintext", "sasl_ssl"].contains(&protocol.as_str()) {
        return fail(&key("security.protocol"), "must be PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL");
    }
    let sasl = protocol.starts_with("sasl_");
    let tls = protocol.ends_with("ssl");
    let mechanism_key = if props.contains_key("sasl.mechanisms") { "sasl.mechanisms" } else { "sasl.mechanism" };
    let mechanism = get(mechanism_key).map(str::to_ascii_uppercase);
    if sasl {
        match mechanism.as_deref() {
            None => {
                return fail(
                    &key("sasl.mechanism"),
                    format!(
                        "is required with security.protocol = {} (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)",
                        protocol.to_uppercase()
                    ),
                )
            }
            Some("PLAIN" | "SCRAM-SHA-256" | "SCRAM-SHA-512") => {
                for p in ["sasl.username", "sasl.password"] {
                    if get(p).is_none() {
                        return fail(
                            &key(p),
                            format!("is required with sasl.mechanism = {}", mechanism.as_deref().unwrap_or("")),
                        );
                    }
                }
            }
            Some("OAUTHBEARER") => {}
            Some("GSSAPI") => {
                return fail(&key(mechanism_key), "GSSAPI (Kerberos) is not supported by this build (no Cyrus SASL)")
            }
            Some(other) => {
                return fail(
                    &key(mechanism_key),
                    format!("`{other}`: expected PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER"),
                )
            }
        }
    } else {
        for p in [mechanism_key, "sasl.username", "sasl.password"] {
            if props.contains_key(p) {
                return fail(
                    &key("security.protocol"),
                    format!(
                        "{p} is set but security.protocol is {}: use SASL_PLAINTEXT or SASL_SSL",
                        protocol.to_uppercase()
                    ),
                );
            }
        }
    }
    for p in TLS_FILES.iter().chain(&["ssl.certificate.pem", "ssl.key.pem", "ssl.ca.pem"]) {
        if props.contains_key(*p) && !tls {
            return fail(
                &key("security.protocol"),
                format!("{p} is set but security.protocol is {}: use SSL or SASL_SSL", protocol.to_uppercase()),
            );
        }
    }
    for p in TLS_FILES {
        let Some(path) = get(p) else { continue };
        if p == "ssl.ca.location" && path == "probe" {
            continue;
        }
        if let Err(e) = std::fs::metadata(path) {
            return fail(&key(p), format!("`{path}`: {e}"));
        }
    }
    let cert = get("ssl.certificate.location").or(get("ssl.certificate.pem")).is_some();
    let private_key = get("ssl.key.location").or(get("ssl.key.pem")).is_some();
    if cert && !private_key {
        return fail(&key("ssl.key.location"), "is required with a client certificate (ssl.certificate.location)");
    }
    if private_key && !cert {
        return fail(&key("ssl.certificate.location"), "is required with a client key (ssl.key.location)");
    }
    // Unknown names and bad values, as librdkafka itself judges them; its message may quote
    // the value, so a secret's is replaced.
    let mut client = rdkafka::ClientConfig::new();
    for (k, v) in props {
        client.set(k, v);
    }
    if let Err(e) = client.create_native_config() {
        return match e {
            rdkafka::error::KafkaError::ClientConfig(_, description, name, value) => {
                let description = if KafkaProperties::is_secret(&name) && !value.is_empty() {
                    description.replace(&value, crate::secret::REDACTED)
                } else {
                    description
                };
                fail(&key(&name), description)
            }
            other => fail("kafka.properties", other.to_string()),
        };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert!(brokers("a:9092, b.example:1,[::1]:9093,SASL_SSL://c:9094,d").is_ok());
        for bad in ["", "a:99999", "a:x", "a b:1", "http://a:1", "[::1:1", "a:1,,b:2"] {
            assert_eq!(brokers(bad).unwrap_err().0, "kafka.brokers", "{bad}");
        }
        assert!(listen("").is_ok() && listen("127.0.0.1:0").is_ok() && listen("localhost:9464").is_ok());
        for bad in ["9464", "localhost", "1.2.3.4:70000", ":80"] {
            assert_eq!(listen(bad).unwrap_err().0, "metrics.listen", "{bad}");
        }
        let err = http_url("decode.schema_registry_url", &SecretUrl::new("ftp://u:SECRETPW@r/x")).unwrap_err();
        assert_eq!(err.0, "decode.schema_registry_url");
        assert!(!err.1.contains("SECRETPW"), "{}", err.1);
        let mut lake_config = LakeConfig { url: "s3://AKIA:SECRETPW@bucket/x".into(), ..LakeConfig::default() };
        let err = lake(&lake_config, &|_| None).unwrap_err();
        assert_eq!(err.0, "lake.url");
        assert!(!err.1.contains("SECRETPW"), "{}", err.1);
        lake_config.url = "s3://bucket/x".into();
        assert_eq!(lake(&lake_config, &|_| None), Ok(()));
    }

    fn props(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn kafka_security() {
        let ok = props(&[
            ("security.protocol", "SASL_PLAINTEXT"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.username", "u"),
            ("sasl.password", "SECRETPW"),
        ]);
        assert_eq!(kafka_properties(&ok), Ok(()));
        let blame = |pairs: &[(&str, &str)]| kafka_properties(&props(pairs)).unwrap_err();
        let (k, m) = blame(&[("security.protocol", "SASL_SSL"), ("sasl.mechanism", "PLAIN"), ("sasl.username", "u")]);
        assert_eq!(
            (k.as_str(), m.as_str()),
            ("kafka.properties.sasl.password", "is required with sasl.mechanism = PLAIN")
        );
        assert_eq!(blame(&[("security.protocol", "SASL_SSL")]).0, "kafka.properties.sasl.mechanism");
        assert_eq!(blame(&[("sasl.mechanism", "PLAIN")]).0, "kafka.properties.security.protocol");
        assert_eq!(
            blame(&[("security.protocol", "SASL_PLAINTEXT"), ("sasl.mechanism", "GSSAPI")]).0,
            "kafka.properties.sasl.mechanism"
        );
        let (k, m) = blame(&[("security.protocol", "SSL"), ("ssl.ca.location", "/nonexistent/ca.pem")]);
        assert_eq!(k, "kafka.properties.ssl.ca.location");
        assert!(m.contains("/nonexistent/ca.pem"), "{m}");
        assert_eq!(blame(&[("ssl.ca.location", "probe")]).0, "kafka.properties.security.protocol");
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("c.pem");
        std::fs::write(&cert, "x").unwrap();
        let cert = cert.display().to_string();
        assert_eq!(
            blame(&[("security.protocol", "SSL"), ("ssl.certificate.location", &cert)]).0,
            "kafka.properties.ssl.key.location"
        );
        // librdkafka's own judgement: unknown names, bad values.
        let (k, m) = blame(&[("fetch.max.bytez", "1")]);
        assert_eq!(k, "kafka.properties.fetch.max.bytez");
        assert!(m.contains("No such configuration property"), "{m}");
        assert_eq!(blame(&[("fetch.max.bytes", "lots")]).0, "kafka.properties.fetch.max.bytes");
    }
}
