//! Free loopback ports for servers the tests start themselves (a worker's metrics listener,
//! PostgreSQL, moto), picked by the stack scripts' `free_ports.py`: it shares a record of the
//! ports handed out in the last two minutes with the scripts, so a port picked here is not
//! handed at the same moment to a server that another test starts through a script (the kernel
//! gives a port just bound and released to the next caller).
//!
//! Include it from a test file with
//! ```ignore
//! #[path = "common/ports.rs"]
//! mod ports;
//! ```
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

/// `n` distinct loopback TCP ports, free when asked.
pub fn free_ports(n: usize) -> Vec<u16> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("integration-tests/stack/free_ports.py");
    let record = std::env::temp_dir().join("eavlake-recent-ports");
    let out = Command::new("python3")
        .arg(&script)
        .arg(&record)
        .arg(n.to_string())
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 {}: {e}", script.display()));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{} failed ({}): {}",
        script.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let ports: Vec<u16> = text
        .split_whitespace()
        .map(|p| p.parse().unwrap_or_else(|e| panic!("{} printed {text:?}: {e}", script.display())))
        .collect();
    assert_eq!(ports.len(), n, "{} printed {text:?} for {n} ports", script.display());
    ports
}

/// One loopback TCP port, free when asked.
pub fn free_port() -> u16 {
    free_ports(1)[0]
}
