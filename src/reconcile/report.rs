//! What a reconcile found, and its renderings: a table for people, JSON for machines, the
//! Prometheus text format for metrics.

use super::ScopeDiffs;
use serde::Serialize;
use std::fmt::Write;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct EntityRef {
    pub tenant_id: i64,
    pub entity_type: String,
    pub entity_id: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttributeDiff {
    pub name: String,
    /// The value in Postgres (canonical; timestamps as RFC 3339), `null` when absent or null.
    pub postgres: Option<String>,
    pub lake: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Different {
    #[serde(flatten)]
    pub entity: EntityRef,
    pub attributes: Vec<AttributeDiff>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub lake: String,
    /// `agree` or `drift`.
    pub status: &'static str,
    pub scopes: usize,
    pub lake_entities: u64,
    pub lake_cells: u64,
    pub postgres_cells: u64,
    /// Postgres queries made.
    pub queries: u64,
    /// Ranges compared cell by cell.
    pub leaf_ranges: u64,
    /// Live in Postgres, absent from the lake.
    pub missing_in_lake: Vec<EntityRef>,
    /// In the lake, not live in Postgres.
    pub extra_in_lake: Vec<EntityRef>,
    pub different: Vec<Different>,
    /// Differed at first, agreed once the lake had caught up.
    pub lag: Vec<EntityRef>,
    /// Postgres' WAL position and the lake's applied position at the last lag check.
    pub wal_lsn: Option<u64>,
    pub lake_lsn: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub repair_signals: Vec<String>,
    /// Drifted entities a repair cannot heal (extra in the lake, yet live in Postgres by then).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_repairable: Vec<EntityRef>,
    /// With `--repair --wait`: whether everything agreed in the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repaired: Option<bool>,
    pub seconds: f64,
}

impl Report {
    pub(crate) fn add_scope_diffs(&mut self, d: ScopeDiffs) {
        self.missing_in_lake.extend(d.missing);
        self.extra_in_lake.extend(d.extra);
        self.different.extend(d.different);
        self.status = if self.is_clean() { "agree" } else { "drift" };
    }

    /// Replaces the drift found so far with a re-check's findings.
    pub(crate) fn replace_drift(&mut self, rechecked: Vec<ScopeDiffs>) {
        self.missing_in_lake.clear();
        self.extra_in_lake.clear();
        self.different.clear();
        for d in rechecked {
            self.add_scope_diffs(d);
        }
        self.status = if self.is_clean() { "agree" } else { "drift" };
    }

    /// No drift (lag alone is not drift).
    pub fn is_clean(&self) -> bool {
        self.missing_in_lake.is_empty() && self.extra_in_lake.is_empty() && self.different.is_empty()
    }

    /// Every drifted entity.
    pub fn drifted(&self) -> impl Iterator<Item = &EntityRef> {
        self.missing_in_lake.iter().chain(&self.extra_in_lake).chain(self.different.iter().map(|d| &d.entity))
    }

    /// 0 in agreement, 1 on drift (errors are 2, by the caller).
    pub fn exit_code(&self) -> u8 {
        if self.is_clean() {
            0
        } else {
            1
        }
    }

    pub fn to_json(&self) -> String {
        let mut r = self.clone();
        r.status = if self.is_clean() { "agree" } else { "drift" };
        serde_json::to_string_pretty(&r).unwrap_or_default()
    }

    /// A table for people.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let verdict = if self.is_clean() { "AGREE" } else { "DRIFT" };
        let _ = writeln!(
            out,
            "{verdict}: lake `{}` vs Postgres: {} scope(s), {} lake entities, {} lake cells / {} Postgres cells, {} queries, {:.2} s",
            self.lake, self.scopes, self.lake_entities, self.lake_cells, self.postgres_cells, self.queries, self.seconds
        );
        if !self.lag.is_empty() {
            let _ = writeln!(out, "{} entit(ies) only lagged behind (agreed once the lake caught up)", self.lag.len());
        }
        if self.is_clean() {
            return out;
        }
        let _ = writeln!(
            out,
            "{:<10} {:<16} {:>14}  {:<24} {:<28} {:<28}",
            "TENANT", "ENTITY TYPE", "ENTITY", "KIND / ATTRIBUTE", "POSTGRES", "LAKE"
        );
        for e in &self.missing_in_lake {
            let _ = writeln!(
                out,
                "{:<10} {:<16} {:>14}  {:<24}",
                e.tenant_id, e.entity_type, e.entity_id, "missing in lake"
            );
        }
        for e in &self.extra_in_lake {
            let _ =
                writeln!(out, "{:<10} {:<16} {:>14}  {:<24}", e.tenant_id, e.entity_type, e.entity_id, "extra in lake");
        }
        for d in &self.different {
            for a in &d.attributes {
                let _ = writeln!(
                    out,
                    "{:<10} {:<16} {:>14}  {:<24} {:<28} {:<28}",
                    d.entity.tenant_id,
                    d.entity.entity_type,
                    d.entity.entity_id,
                    a.name,
                    shorten(a.postgres.as_deref()),
                    shorten(a.lake.as_deref())
                );
            }
        }
        if !self.repair_signals.is_empty() {
            let _ = writeln!(out, "repair: {} snapshot signal(s) sent", self.repair_signals.len());
        }
        if !self.not_repairable.is_empty() {
            let _ = writeln!(out, "repair: {} entit(ies) could not be repaired", self.not_repairable.len());
        }
        out
    }

    /// The counts the workers export (see [`crate::metrics::ReconcileSummary`]).
    pub fn summary(&self, scope: &str) -> crate::metrics::ReconcileSummary {
        crate::metrics::ReconcileSummary {
            finished_ms: crate::progress::now_ms(),
            status: self.status.to_string(),
            missing_in_lake: self.missing_in_lake.len() as u64,
            extra_in_lake: self.extra_in_lake.len() as u64,
            different: self.different.len() as u64,
            lag: self.lag.len() as u64,
            scoped: !scope.is_empty(),
            scope: scope.to_string(),
        }
    }

    /// Prometheus text exposition (for node_exporter's textfile collector or a Pushgateway).
    pub fn to_metrics(&self) -> String {
        let mut out = String::new();
        let gauge = |out: &mut String, name: &str, help: &str, samples: &[(&str, f64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for (labels, v) in samples {
                let _ = writeln!(out, "{name}{labels} {v}");
            }
        };
        gauge(
            &mut out,
            "eavlake_reconcile_agree",
            "1 when the lake agrees with Postgres, 0 on drift.",
            &[("", if self.is_clean() { 1.0 } else { 0.0 })],
        );
        gauge(
            &mut out,
            "eavlake_reconcile_entities",
            "Entities found drifted or lagging, by kind.",
            &[
                ("{kind=\"missing_in_lake\"}", self.missing_in_lake.len() as f64),
                ("{kind=\"extra_in_lake\"}", self.extra_in_lake.len() as f64),
                ("{kind=\"different\"}", self.different.len() as f64),
                ("{kind=\"lag\"}", self.lag.len() as f64),
            ],
        );
        gauge(&mut out, "eavlake_reconcile_lake_cells", "Cells of the lake compared.", &[("", self.lake_cells as f64)]);
        gauge(
            &mut out,
            "eavlake_reconcile_postgres_cells",
            "Cells of Postgres compared.",
            &[("", self.postgres_cells as f64)],
        );
        gauge(&mut out, "eavlake_reconcile_queries", "Postgres queries made.", &[("", self.queries as f64)]);
        gauge(&mut out, "eavlake_reconcile_duration_seconds", "Duration of the reconcile.", &[("", self.seconds)]);
        gauge(
            &mut out,
            "eavlake_reconcile_last_run_timestamp_seconds",
            "When the reconcile ended.",
            &[("", crate::progress::now_ms() as f64 / 1000.0)],
        );
        out
    }
}

fn shorten(v: Option<&str>) -> String {
    match v {
        None => "(absent)".to_string(),
        Some(s) if s.chars().count() > 28 => format!("{}…", s.chars().take(27).collect::<String>()),
        Some(s) => s.to_string(),
    }
}
