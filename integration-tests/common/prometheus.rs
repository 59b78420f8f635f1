//! Prometheus for the real-stack tests: Debian's package, started by
//! `integration-tests/stack/prometheus.sh` with the project's own `config/prometheus.yml` and
//! `config/alerts.yml`, changed only where a test must: the scrape target, one-second intervals,
//! and alert durations and thresholds short enough to see within a test.
//!
//! Include it from a test file with
//! ```ignore
//! #[path = "common/prometheus.rs"]
//! mod prometheus;
//! ```
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn script() -> PathBuf {
    root().join("integration-tests/stack/prometheus.sh")
}

/// `promtool check config` on config/prometheus.yml (with the rule files it names), `promtool
/// check rules` on config/alerts.yml and its unit tests, config/alerts.test.yml.
pub fn promtool_check() {
    for args in [
        ["check", "config", "config/prometheus.yml"],
        ["check", "rules", "config/alerts.yml"],
        ["test", "rules", "config/alerts.test.yml"],
    ] {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(root())
            .output()
            .expect("promtool (apt-get install prometheus)");
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Replaces `from` with `to` in `text`, which must contain it.
fn replace_in(text: &str, from: &str, to: &str, file: &str) -> String {
    assert!(text.contains(from), "{file} no longer contains `{from}`: update the test's tuning");
    text.replace(from, to)
}

pub struct Prometheus {
    pub url: String,
    dir: tempfile::TempDir,
    client: reqwest::Client,
}

impl Prometheus {
    /// Starts Prometheus scraping the worker at `target` (`host:port`) every second, with the
    /// alert rules of config/alerts.yml where every `for:` is `alert_for` and each `(from, to)`
    /// of `tuning` is applied to the rules' text.
    pub fn start(target: &str, alert_for: &str, tuning: &[(&str, &str)]) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = std::fs::read_to_string(root().join("config/prometheus.yml")).unwrap();
        let config = replace_in(&config, "scrape_interval: 15s", "scrape_interval: 1s", "prometheus.yml");
        let config = replace_in(&config, "evaluation_interval: 15s", "evaluation_interval: 1s", "prometheus.yml");
        let config = replace_in(&config, "\"eavlake:9464\"", &format!("\"{target}\""), "prometheus.yml");
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let mut rules = std::fs::read_to_string(root().join("config/alerts.yml")).unwrap();
        for (from, to) in tuning {
            rules = replace_in(&rules, from, to, "alerts.yml");
        }
        let rules: String = rules
            .lines()
            .map(|l| match l.trim_start().strip_prefix("for: ") {
                Some(_) => format!("{}for: {alert_for}\n", &l[..l.len() - l.trim_start().len()]),
                None => format!("{l}\n"),
            })
            .collect();
        std::fs::write(dir.path().join("alerts.yml"), rules).unwrap();
        let out = Command::new(script())
            .args(["start", path_str(&dir.path().join("run")), path_str(&dir.path().join("prometheus.yml"))])
            .env("EAVLAKE_STACK_OWNER_PID", std::process::id().to_string())
            .output()
            .unwrap();
        assert!(out.status.success(), "prometheus.sh start:\n{}", String::from_utf8_lossy(&out.stderr));
        let url = String::from_utf8_lossy(&out.stdout).trim().to_string();
        Prometheus { url, dir, client: reqwest::Client::new() }
    }

    async fn api(&self, path: &str, query: &[(&str, &str)]) -> serde_json::Value {
        let r = self.client.get(format!("{}{path}", self.url)).query(query).send().await.unwrap();
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["status"], "success", "{path} {query:?}: {v}");
        v["data"].clone()
    }

    /// The series an instant query returns (panics on an invalid expression).
    pub async fn query(&self, expr: &str) -> Vec<serde_json::Value> {
        self.api("/api/v1/query", &[("query", expr)]).await["result"].as_array().cloned().unwrap_or_default()
    }

    /// The largest value an instant query returns, if any.
    pub async fn max(&self, expr: &str) -> Option<f64> {
        self.query(expr)
            .await
            .iter()
            .filter_map(|s| s["value"][1].as_str().and_then(|v| v.parse::<f64>().ok()))
            .fold(None, |m, v| Some(m.map_or(v, |m: f64| m.max(v))))
    }

    /// Whether an alert is firing now.
    pub async fn firing(&self, alert: &str) -> bool {
        !self.query(&format!("ALERTS{{alertname=\"{alert}\",alertstate=\"firing\"}}")).await.is_empty()
    }

    /// (name, expression) of every loaded alerting rule.
    pub async fn alert_rules(&self) -> Vec<(String, String)> {
        let data = self.api("/api/v1/rules", &[("type", "alert")]).await;
        let mut out = Vec::new();
        for g in data["groups"].as_array().into_iter().flatten() {
            for r in g["rules"].as_array().into_iter().flatten() {
                out.push((r["name"].as_str().unwrap().to_string(), r["query"].as_str().unwrap().to_string()));
            }
        }
        out
    }

    /// Whether the last scrape of the worker succeeded.
    pub async fn target_up(&self) -> bool {
        self.max("up{job=\"eavlake\"}").await == Some(1.0)
    }
}

/// The metric names an expression selects (`eavlake_*`, `up`).
pub fn selected_metrics(expr: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_alphabetic() || bytes[i] == b'_' {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            let word = &expr[start..i];
            // A metric name, not a label inside `{…}` or `by (…)`: eavlake's all start so.
            if (word.starts_with("eavlake_") || (word == "up" && bytes.get(i) == Some(&b'{')))
                && !out.iter().any(|w| w == word)
            {
                out.push(word.to_string());
            }
        } else {
            i += 1;
        }
    }
    out
}

/// Every Prometheus expression of a Grafana dashboard.
pub fn dashboard_expressions(path: &Path) -> Vec<(String, String)> {
    let d: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push((p["title"].as_str().unwrap_or("?").to_string(), t["expr"].as_str().unwrap().to_string()));
        }
    }
    out
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("temporary folder path is UTF-8")
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = Command::new(script()).args(["stop", path_str(&self.dir.path().join("run"))]).output();
    }
}
