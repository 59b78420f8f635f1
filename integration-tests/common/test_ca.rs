//! Test certificates made with the `openssl` command: a CA, a server certificate it signs, an
//! unrelated CA (to be refused), and client certificates for mutual TLS.
//!
//! Include it from a test file with
//! ```ignore
//! #[path = "common/test_ca.rs"]
//! mod test_ca;
//! ```
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("the openssl command runs");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA (`ca.pem`, `ca.key`), a server certificate it signs with the subject alternative names
/// `san` (e.g. `DNS:localhost`, `IP:127.0.0.1`; `server.pem`, `server.key`, an unencrypted
/// PKCS#8 key) and an unrelated CA (`other-ca.pem`), in `dir`. Valid for two days.
pub fn make_certificates(dir: &Path, san: &str) {
    for ca in ["ca", "other-ca"] {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN=eavlake test {ca}"),
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.pem"),
            ],
        );
    }
    sign(dir, "server", "/CN=localhost", Some(san));
}

/// A client certificate `NAME.pem` signed by `ca.pem` of [`make_certificates`], with its key in
/// `NAME.key`, encrypted (AES-256, PKCS#8) with `password` if given.
pub fn make_client_certificate(dir: &Path, name: &str, password: Option<&str>) {
    sign(dir, name, &format!("/CN={name}"), None);
    if let Some(password) = password {
        let (key, encrypted) = (format!("{name}.key"), format!("{name}.key.enc"));
        let pass = format!("pass:{password}");
        openssl(dir, &["pkcs8", "-topk8", "-v2", "aes-256-cbc", "-in", &key, "-out", &encrypted, "-passout", &pass]);
        std::fs::rename(dir.join(&encrypted), dir.join(&key)).expect("replace the key by its encrypted form");
    }
}

/// `NAME.key` and `NAME.pem`, signed by `ca.pem`/`ca.key`.
fn sign(dir: &Path, name: &str, subject: &str, san: Option<&str>) {
    let (key, csr, pem) = (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"));
    openssl(dir, &["req", "-newkey", "rsa:2048", "-nodes", "-subj", subject, "-keyout", &key, "-out", &csr]);
    let mut args =
        vec!["x509", "-req", "-in", &csr, "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2"];
    let ext = format!("{name}.ext");
    if let Some(san) = san {
        std::fs::write(dir.join(&ext), format!("subjectAltName={san}\n")).expect("write the extensions file");
        args.extend(["-extfile", &ext]);
    }
    args.extend(["-out", &pem]);
    openssl(dir, &args);
}
