//! The worker's HTTP listener: `/metrics` (Prometheus), `/healthz` (the process answers) and
//! `/readyz` (assigned, consuming, flushing).
//!
//! It runs on the async runtime, apart from the poll thread, and reads only atomics: it answers
//! while a flush is stuck on a slow store, and then says why the worker is not ready.

use super::prom::WorkerMetrics;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;

/// What `/readyz` judges by; the poll thread keeps it up to date.
#[derive(Debug)]
pub struct Health {
    assigned: AtomicUsize,
    buffered: AtomicUsize,
    /// Unix ms of the poll loop's last round.
    last_poll_ms: AtomicI64,
    /// Unix ms of the last successful flush (or of the start, before the first).
    last_flush_ms: AtomicI64,
    /// Longer than this since the last poll, or since the last flush while rows wait, is not
    /// ready.
    stale_after_ms: i64,
}

impl Health {
    pub fn new(stale_after_ms: i64) -> Health {
        let now = now_ms();
        Health {
            assigned: AtomicUsize::new(0),
            buffered: AtomicUsize::new(0),
            last_poll_ms: AtomicI64::new(now),
            last_flush_ms: AtomicI64::new(now),
            stale_after_ms,
        }
    }

    pub fn polled(&self, assigned: usize, buffered: usize) {
        self.assigned.store(assigned, Ordering::Relaxed);
        self.buffered.store(buffered, Ordering::Relaxed);
        self.last_poll_ms.store(now_ms(), Ordering::Relaxed);
    }

    pub fn flushed(&self) {
        self.last_flush_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// `Ok` when ready, else why not.
    pub fn readiness(&self) -> Result<(), String> {
        let now = now_ms();
        if self.assigned.load(Ordering::Relaxed) == 0 {
            return Err("no partition assigned".into());
        }
        let polled = now - self.last_poll_ms.load(Ordering::Relaxed);
        if polled > self.stale_after_ms {
            return Err(format!("not consuming: last poll {} s ago", polled / 1000));
        }
        let flushed = now - self.last_flush_ms.load(Ordering::Relaxed);
        if self.buffered.load(Ordering::Relaxed) > 0 && flushed > self.stale_after_ms {
            return Err(format!("rows waiting and no flush for {} s", flushed / 1000));
        }
        Ok(())
    }
}

fn now_ms() -> i64 {
    crate::progress::now_ms()
}

#[derive(Clone)]
struct Endpoints {
    metrics: Arc<WorkerMetrics>,
    health: Arc<Health>,
}

/// Binds `listen` and serves the endpoints until the runtime ends; returns the bound address
/// (`listen` may ask for port 0).
pub async fn serve(listen: &str, metrics: Arc<WorkerMetrics>, health: Arc<Health>) -> anyhow::Result<SocketAddr> {
    use anyhow::Context;
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| {
        format!("config key `metrics.listen`: cannot listen on `{listen}` (set another address, or \"\" for none)")
    })?;
    let addr = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics_page))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready_page))
        .with_state(Endpoints { metrics, health });
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics listener stopped");
        }
    });
    tracing::info!(%addr, "serving /metrics, /healthz, /readyz");
    Ok(addr)
}

async fn metrics_page(State(s): State<Endpoints>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], s.metrics.encode())
}

async fn ready_page(State(s): State<Endpoints>) -> impl IntoResponse {
    match s.health.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_needs_an_assignment_and_recent_rounds() {
        let h = Health::new(60_000);
        assert_eq!(h.readiness(), Err("no partition assigned".into()));
        h.polled(2, 0);
        assert_eq!(h.readiness(), Ok(()));
        h.last_flush_ms.store(now_ms() - 120_000, Ordering::Relaxed);
        assert_eq!(h.readiness(), Ok(()), "nothing waits: an old flush is fine");
        h.polled(2, 1000);
        assert!(h.readiness().unwrap_err().contains("no flush for 120 s"));
        h.flushed();
        h.last_poll_ms.store(now_ms() - 90_000, Ordering::Relaxed);
        assert!(h.readiness().unwrap_err().contains("not consuming"));
    }

    #[tokio::test]
    async fn endpoints_answer() {
        let metrics = Arc::new(WorkerMetrics::new(&["invalid_json"]));
        let health = Arc::new(Health::new(60_000));
        let addr = serve("127.0.0.1:0", metrics, health.clone()).await.unwrap();
        let get = |path: &'static str| async move {
            let r = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        };
        assert_eq!(get("/healthz").await, (200, "ok\n".into()));
        assert_eq!(get("/readyz").await, (503, "not ready: no partition assigned\n".into()));
        health.polled(1, 0);
        assert_eq!(get("/readyz").await.0, 200);
        let (status, text) = get("/metrics").await;
        assert_eq!(status, 200);
        assert!(text.contains("eavlake_dead_letters_total{reason=\"invalid_json\"} 0"), "{text}");
        assert!(text.ends_with("# EOF\n"));
        let taken = serve(&addr.to_string(), Arc::new(WorkerMetrics::new(&[])), health).await.unwrap_err();
        assert!(format!("{taken:#}").contains("metrics.listen"), "{taken:#}");
    }
}
