//! An S3-compatible server on loopback for tests: moto's server from the project's Python venv
//! (`$EAVLAKE_CACHE/venv`, made by `integration-tests/run.sh`), with one bucket, `lake`. It keeps
//! its objects in memory, so an outage is simulated by freezing it (SIGSTOP/SIGCONT), not by
//! restarting it.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct S3Server {
    pub endpoint: String,
    child: Child,
}

fn venv() -> std::path::PathBuf {
    let cache = std::env::var_os("EAVLAKE_CACHE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/eavlake"));
    cache.join("venv")
}

impl S3Server {
    pub fn start() -> S3Server {
        // The port is free when picked but can be taken before moto binds it (another test's
        // server starting at the same moment): moto then exits, and another port is tried. The
        // server that answers must be moto (its own API), not whoever took the port.
        let (child, port) = (0..3)
            .find_map(|_| {
                let port = crate::ports::free_port();
                let mut child = spawn_moto(port);
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    if child.try_wait().unwrap().is_some() {
                        return None;
                    }
                    if answers_as_moto(port) {
                        return Some((child, port));
                    }
                    assert!(Instant::now() < deadline, "moto_server did not listen within 30 s");
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
            .expect("moto_server exited at start three times (each on a newly picked port)");
        let endpoint = format!("http://127.0.0.1:{port}");
        // moto does not check signatures: a plain PUT creates the bucket.
        let status = Command::new("python3")
            .args(["-c", &format!("import urllib.request as u; u.urlopen(u.Request('{endpoint}/lake', method='PUT'))")])
            .status()
            .unwrap();
        assert!(status.success(), "creating the bucket");
        S3Server { endpoint, child }
    }

    /// Freezes the server: requests hang until [`S3Server::resume`].
    pub fn freeze(&self) {
        // SAFETY: signals to a child this test started.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGSTOP) };
    }

    pub fn resume(&self) {
        // SAFETY: as above.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGCONT) };
    }
}

/// Whether the server on `port` answers moto's own API (`GET /moto-api/config`, 201 in moto 5).
fn answers_as_moto(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request = format!("GET /moto-api/config HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    let mut head = [0u8; 12];
    stream.write_all(request.as_bytes()).is_ok()
        && stream.read_exact(&mut head).is_ok()
        && head.starts_with(b"HTTP/1.")
        && head[9] == b'2'
}

/// moto's server on `port`, killed with the test process however that ends.
fn spawn_moto(port: u16) -> Child {
    let mut cmd = Command::new(venv().join("bin/moto_server"));
    cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]).stdout(Stdio::null()).stderr(Stdio::null());
    // SAFETY: prctl only sets this child's parent-death signal: the server goes with the test
    // process however that ends.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd.spawn().expect("moto_server from the venv of integration-tests/run.sh")
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.resume();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
