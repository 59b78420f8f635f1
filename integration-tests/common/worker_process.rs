//! `eavlake run --source kafka` as a child process, for tests against a real broker: its
//! configuration, starting it (killed with the test), stopping it, watching its flushes.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Writes `<dir>/<group>.toml`: small flushes and short deadlines, so that crashes and takeovers
/// happen often and are waited out quickly. `properties`: more `[kafka.properties]` lines (the
/// session timeout at least; static membership if wanted).
pub fn write_config(dir: &Path, bootstrap: &str, lake: &Path, topic: &str, group: &str, properties: &str) -> PathBuf {
    let path = dir.join(format!("{group}.toml"));
    let text = format!(
        r#"
[lake]
url = "{lake}"
range_size = 5000
[decode]
decimal_handling_mode = "string"
[batch]
max_rows = 5000
max_age_ms = 400
flush_deadline_ms = 1500
clock_skew_ms = 50
[catalog]
# A value may wait this long for its attribute when attributes come on a catalog topic of their
# own, read alongside. (Where every partition carries the attributes' changes, a value never
# waits: the "1 run in 4" dead letters once blamed on a 1 s wait here were most likely a stream
# behind the others taking attributes back from the lake's saved catalog, since fixed.)
unknown_attribute_wait = 200000
unknown_attribute_wait_ms = 8000
[kafka]
brokers = "{bootstrap}"
group_id = "{group}"
topics = ["{topic}"]
request_timeout_ms = 10000
[kafka.properties]
{properties}
[metrics]
# The HTTP listener runs (and is scraped by nobody) on a port of its own.
listen = "127.0.0.1:0"
"#,
        lake = lake.display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Starts a worker logging to `log` (appended); its report (stdout) goes to `report` if given.
pub fn spawn_worker(config: &Path, log: &Path, report: Option<&Path>) -> Child {
    spawn_worker_with(config, log, report, &[])
}

/// [`spawn_worker`] with more environment variables (`EAVLAKE__…` secrets, `RUST_LOG`).
pub fn spawn_worker_with(config: &Path, log: &Path, report: Option<&Path>, env: &[(&str, &str)]) -> Child {
    use std::os::unix::process::CommandExt;
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    let stdout = match report {
        Some(p) => Stdio::from(std::fs::File::create(p).unwrap()),
        None => Stdio::null(),
    };
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_eavlake"));
    // SAFETY: prctl only sets the child's parent-death signal: a failed test leaves no worker.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd.args(["run", "--source", "kafka", "--config"])
        .arg(config)
        .env("RUST_LOG", "eavlake=info")
        .envs(env.iter().copied())
        .stdout(stdout)
        .stderr(log)
        .spawn()
        .unwrap()
}

/// SIGTERM, then waits for the exit (at most `within`).
pub async fn stop(worker: &mut Child, within: Duration) -> ExitStatus {
    // SAFETY: SIGTERM to a child process the test started.
    unsafe { libc::kill(worker.id() as i32, libc::SIGTERM) };
    let stopped = Instant::now();
    loop {
        if let Some(s) = worker.try_wait().unwrap() {
            return s;
        }
        assert!(stopped.elapsed() < within, "no clean stop within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether some partition's progress record shows a flush begun and not completed.
pub fn flush_in_progress(lake: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(lake.join("_eavlake/progress")) else { return false };
    entries.flatten().any(|e| std::fs::read_to_string(e.path()).is_ok_and(|t| t.contains("\"pending\"")))
}

/// Waits (at most `within`) until a flush is in progress, to kill a worker inside it.
pub async fn wait_for_flush(lake: &Path, within: Duration) {
    let until = Instant::now() + within;
    while !flush_in_progress(lake) && Instant::now() < until {
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
}
