//! Secrets and the URLs that carry them: types that redact themselves, so that no log line,
//! error message, metric or `eavlake config` output can show a password by accident.
//!
//! - [`Secret`]: a password or key. Debug, Display and Serialize print `***`; only
//!   [`Secret::expose`] gives the value, at the one place that hands it to a client library.
//! - [`SecretUrl`]: a URL that may hold a password (`postgres://u:PASS@h/db`,
//!   `https://user:PASS@registry`). Printed with the password replaced by `***`, so that the host
//!   still shows in messages.
//! - [`redact_url`]: the same for a URL held as text (also libpq's `password=…` form).

use serde::{Deserialize, Serialize};
use std::fmt;

/// What a secret prints as.
pub const REDACTED: &str = "***";

/// A secret (password, secret key, passphrase): never printed or logged.
#[derive(Clone, PartialEq, Eq)]
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
        write!(f, "Secret({REDACTED})")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(REDACTED)
    }
}

/// From a string; numbers and booleans are taken as their text, because an override
/// (`--set`, `EAVLAKE__…`) that looks like a number is read as one, and the error for the wrong
/// type would quote the secret.
impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Secret;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Secret, E> {
                Ok(Secret::new(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Secret, E> {
                Ok(Secret::new(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Secret, E> {
                Ok(Secret::new(v.to_string()))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Secret, E> {
                Ok(Secret::new(v.to_string()))
            }
            // Deliberately no visit_f64: "1.50" would come back as "1.5"; such a value must be
            // quoted in the file (an override keeps it a string, see config).
        }
        d.deserialize_any(V)
    }
}

/// A URL that may carry credentials: printed with its password as `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(Secret);

impl SecretUrl {
    pub fn new(s: impl Into<String>) -> SecretUrl {
        SecretUrl(Secret::new(s))
    }

    /// The URL with its password, for the client library.
    pub fn expose(&self) -> &str {
        self.0.expose()
    }

    /// The URL with its password replaced by `***`.
    pub fn redacted(&self) -> String {
        redact_url(self.0.expose())
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Serialize for SecretUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

impl<'de> Deserialize<'de> for SecretUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<SecretUrl, D::Error> {
        Secret::deserialize(d).map(SecretUrl)
    }
}

/// `text` with any password replaced by `***`: the password of a `scheme://user:PASS@host…` URL
/// (the last `@` before the path ends the user info, as in libpq and the WHATWG parser), and the
/// value of `password=…` in a query string or a libpq `key=value` connection string.
pub fn redact_url(text: &str) -> String {
    let mut out = match text.find("://") {
        Some(scheme_end) => {
            let rest = &text[scheme_end + 3..];
            let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            let authority = &rest[..authority_end];
            match authority.rfind('@') {
                Some(at) => {
                    let user_info = &authority[..at];
                    let user = match user_info.find(':') {
                        Some(colon) => format!("{}:{REDACTED}", &user_info[..colon]),
                        None => user_info.to_string(),
                    };
                    format!("{}{user}{}", &text[..scheme_end + 3], &rest[at..])
                }
                None => text.to_string(),
            }
        }
        None => text.to_string(),
    };
    // `password=…` (and `sslpassword=…`) up to the next separator (`&` in a URL query, space in key=value form; a
    // quoted value runs to its closing quote).
    let mut from = 0;
    while let Some(found) = out[from..].to_ascii_lowercase().find("password=") {
        let start = from + found + "password=".len();
        let value = &out[start..];
        let end = if let Some(quoted) = value.strip_prefix('\'') {
            quoted.find('\'').map(|q| q + 2).unwrap_or(value.len())
        } else {
            value.find(['&', ' ', '#']).unwrap_or(value.len())
        };
        out.replace_range(start..start + end, REDACTED);
        from = start + REDACTED.len();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_print_as_stars() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?} {}", serde_json::to_string(&s).unwrap()), "*** Secret(***) \"***\"");
        assert_eq!(s.expose(), "hunter2");
        let n: Secret = toml::from_str::<toml::Table>("v = 1234").unwrap()["v"].clone().try_into().unwrap();
        assert_eq!(n.expose(), "1234");
    }

    #[test]
    fn urls_lose_their_passwords() {
        for (url, shown) in [
            ("postgres://u:SECRETPW@127.0.0.1:1/db", "postgres://u:***@127.0.0.1:1/db"),
            ("postgres://u@h/db", "postgres://u@h/db"),
            ("postgresql://u:p%40ss@h1:5432,h2/db?sslmode=require", "postgresql://u:***@h1:5432,h2/db?sslmode=require"),
            (
                "postgres://h/db?user=u&password=SECRET&sslmode=verify-full",
                "postgres://h/db?user=u&password=***&sslmode=verify-full",
            ),
            ("host=h user=u password=SECRET dbname=db", "host=h user=u password=*** dbname=db"),
            ("host=h password='two words' dbname=db", "host=h password=*** dbname=db"),
            ("https://user:pw@registry:8081/apis", "https://user:***@registry:8081/apis"),
            ("http://a@b:c@host/x", "http://a@b:***@host/x"),
            ("s3://bucket/prefix", "s3://bucket/prefix"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
        let u = SecretUrl::new("postgres://u:SECRETPW@h/db");
        assert_eq!(format!("{u} {u:?}"), "postgres://u:***@h/db \"postgres://u:***@h/db\"");
    }
}
