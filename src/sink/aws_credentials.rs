//! Where an S3 lake's credentials come from, in the order of the AWS SDKs' default chain:
//!
//! 1. `lake.s3.access_key_id` / `secret_access_key` (/ `session_token`) in the configuration;
//! 2. the `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (/ `AWS_SESSION_TOKEN`) variables;
//! 3. a profile of the shared credentials file (`AWS_SHARED_CREDENTIALS_FILE`, else
//!    `~/.aws/credentials`): the one named by `lake.s3.profile` or `AWS_PROFILE` (which must then
//!    exist), else `[default]` if the file has it. Its region comes from the shared config file
//!    (`AWS_CONFIG_FILE`, else `~/.aws/config`) when neither `lake.s3.region` nor `AWS_REGION` /
//!    `AWS_DEFAULT_REGION` gives one;
//! 4. object_store's own chain: web identity (`AWS_WEB_IDENTITY_TOKEN_FILE`, EKS), the ECS
//!    container endpoint, the EC2 instance metadata service.
//!
//! object_store reads 1, 2 and 4 but not the shared files; this module reads those (static keys
//! only: profiles that assume a role, use SSO or run a `credential_process` are not supported
//! and say so).

use crate::secret::Secret;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Credentials read from a profile.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileCredentials {
    pub profile: String,
    pub access_key_id: Secret,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
    /// From the shared config file, if it names one for the profile.
    pub region: Option<String>,
}

/// Why credentials cannot be used, naming the key or variable at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("`{key}`: {message}")]
pub struct CredentialsError {
    pub key: String,
    pub message: String,
}

/// Sections of an INI file (`[name]`, `key = value`, `#` and `;` comments), keys lower-cased.
/// Values are taken whole (AWS files have no quoting); indented lines (nested sub-keys such as
/// `s3 =` blocks) are skipped.
pub fn parse_ini(text: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut sections: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if line.starts_with([' ', '\t']) {
            continue;
        }
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.trim().to_string();
            sections.entry(name.clone()).or_default();
            current = Some(name);
        } else if let (Some(section), Some((k, v))) = (&current, line.split_once('=')) {
            sections.entry(section.clone()).or_default().insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    sections
}

fn home_file(env: &dyn Fn(&str) -> Option<String>, var: &str, name: &str) -> Option<PathBuf> {
    match env(var).filter(|v| !v.is_empty()) {
        Some(p) => Some(PathBuf::from(p)),
        None => env("HOME").filter(|h| !h.is_empty()).map(|h| PathBuf::from(h).join(".aws").join(name)),
    }
}

/// Resolves step 3 of the chain (see the module): `Ok(None)` when steps 1 or 2 apply or no
/// profile is named and there is no `[default]`, so that object_store's chain takes over.
/// `configured_profile` is `lake.s3.profile`; `env` reads the environment.
pub fn from_profile(
    configured_profile: Option<&str>,
    has_static_keys: bool,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<ProfileCredentials>, CredentialsError> {
    let bad = |key: &str, message: String| CredentialsError { key: key.to_string(), message };
    if has_static_keys {
        return Ok(None);
    }
    let env_id = env("AWS_ACCESS_KEY_ID").filter(|v| !v.is_empty());
    let env_secret = env("AWS_SECRET_ACCESS_KEY").filter(|v| !v.is_empty());
    match (env_id.is_some(), env_secret.is_some()) {
        (true, true) => return Ok(None),
        (true, false) => return Err(bad("AWS_SECRET_ACCESS_KEY", "is required with AWS_ACCESS_KEY_ID".into())),
        (false, true) => return Err(bad("AWS_ACCESS_KEY_ID", "is required with AWS_SECRET_ACCESS_KEY".into())),
        (false, false) => {}
    }
    let env_profile = env("AWS_PROFILE").filter(|v| !v.is_empty());
    let (named_by, profile) = match (configured_profile, &env_profile) {
        (Some(p), _) => ("lake.s3.profile", Some(p.to_string())),
        (None, Some(p)) => ("AWS_PROFILE", Some(p.clone())),
        (None, None) => ("", None),
    };
    let Some(file) = home_file(env, "AWS_SHARED_CREDENTIALS_FILE", "credentials") else {
        return match profile {
            Some(p) => Err(bad(
                named_by,
                format!("profile `{p}`: no credentials file (set HOME or AWS_SHARED_CREDENTIALS_FILE)"),
            )),
            None => Ok(None),
        };
    };
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && profile.is_none() => return Ok(None),
        Err(e) => {
            let key = if profile.is_some() { named_by } else { "AWS_SHARED_CREDENTIALS_FILE" };
            return Err(bad(key, format!("reading `{}`: {e}", file.display())));
        }
    };
    let sections = parse_ini(&text);
    let name = profile.clone().unwrap_or_else(|| "default".to_string());
    let Some(section) = sections.get(&name) else {
        return match profile {
            Some(p) => Err(bad(named_by, format!("no profile `{p}` in `{}`", file.display()))),
            None => Ok(None),
        };
    };
    let (Some(id), Some(secret)) = (section.get("aws_access_key_id"), section.get("aws_secret_access_key")) else {
        let key = if profile.is_some() { named_by } else { "AWS_SHARED_CREDENTIALS_FILE" };
        return Err(bad(
            key,
            format!(
                "profile `{name}` in `{}` needs aws_access_key_id and aws_secret_access_key (role, SSO and \
                 credential_process profiles are not supported)",
                file.display()
            ),
        ));
    };
    let region =
        home_file(env, "AWS_CONFIG_FILE", "config").and_then(|f| std::fs::read_to_string(f).ok()).and_then(|t| {
            let config = parse_ini(&t);
            // The config file names profiles `[profile x]`, except `[default]`.
            let section = if name == "default" { "default".to_string() } else { format!("profile {name}") };
            config.get(&section).and_then(|s| s.get("region")).cloned()
        });
    Ok(Some(ProfileCredentials {
        profile: name,
        access_key_id: Secret::new(id.clone()),
        secret_access_key: Secret::new(secret.clone()),
        session_token: section.get("aws_session_token").map(|t| Secret::new(t.clone())),
        region,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(vars: &[(&str, String)]) -> impl Fn(&str) -> Option<String> {
        let vars: BTreeMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        move |k: &str| vars.get(k).cloned()
    }

    #[test]
    fn profiles_come_from_the_shared_files() {
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("credentials");
        std::fs::write(
            &creds,
            "# comment\n[default]\naws_access_key_id = AKIADEFAULT\naws_secret_access_key = s3cr3t/default\n\n\
             [ci]\nAWS_ACCESS_KEY_ID=AKIACI\naws_secret_access_key=s3cr3t=ci\naws_session_token = tok\n\
             [sso]\nsso_start_url = https://x\n",
        )
        .unwrap();
        let config = dir.path().join("config");
        std::fs::write(&config, "[profile ci]\nregion = eu-west-3\ns3 =\n  addressing_style = path\n").unwrap();
        let base = vec![
            ("AWS_SHARED_CREDENTIALS_FILE", creds.display().to_string()),
            ("AWS_CONFIG_FILE", config.display().to_string()),
        ];

        let got = from_profile(None, false, &env_of(&base)).unwrap().unwrap();
        assert_eq!((got.profile.as_str(), got.access_key_id.expose()), ("default", "AKIADEFAULT"));
        assert_eq!((got.secret_access_key.expose(), got.region), ("s3cr3t/default", None));

        let mut with_env = base.clone();
        with_env.push(("AWS_PROFILE", "ci".into()));
        let got = from_profile(None, false, &env_of(&with_env)).unwrap().unwrap();
        assert_eq!((got.access_key_id.expose(), got.secret_access_key.expose()), ("AKIACI", "s3cr3t=ci"));
        assert_eq!(
            (got.session_token.as_ref().map(Secret::expose), got.region.as_deref()),
            (Some("tok"), Some("eu-west-3"))
        );

        // Static keys and the key variables come first.
        assert_eq!(from_profile(Some("ci"), true, &env_of(&base)).unwrap(), None);
        let mut keys = base.clone();
        keys.extend([("AWS_ACCESS_KEY_ID", "A".to_string()), ("AWS_SECRET_ACCESS_KEY", "S".to_string())]);
        assert_eq!(from_profile(None, false, &env_of(&keys)).unwrap(), None);

        let err = from_profile(Some("nope"), false, &env_of(&base)).unwrap_err();
        assert_eq!(err.key, "lake.s3.profile");
        assert!(err.message.starts_with("no profile `nope`"), "{err}");
        let err = from_profile(Some("sso"), false, &env_of(&base)).unwrap_err();
        assert!(err.message.contains("not supported"), "{err}");
        let err = from_profile(None, false, &env_of(&[("AWS_ACCESS_KEY_ID", "A".into())])).unwrap_err();
        assert_eq!(err.key, "AWS_SECRET_ACCESS_KEY");

        // No file and no profile named: object_store's chain (web identity, ECS, IMDS).
        let none = [("HOME", dir.path().join("nohome").display().to_string())];
        assert_eq!(from_profile(None, false, &env_of(&none)).unwrap(), None);
        let err = from_profile(None, false, &env_of(&[none[0].clone(), ("AWS_PROFILE", "x".into())])).unwrap_err();
        assert_eq!(err.key, "AWS_PROFILE");
    }
}
