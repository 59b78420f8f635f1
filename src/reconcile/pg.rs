//! The Postgres side of a reconcile: checksums and cells of the live EAV store, computed in SQL
//! over ranges of entity_id, on a bounded pool of connections.
//!
//! The cells of a range are built by one CTE (`CELLS`) that renders each value in the canonical
//! form of `checksum.rs`: a presence cell per live entity, a cell per non-null hot attribute
//! (`entities.hot_attributes`, typed by the catalog as the pivot types them) and per non-null
//! cold value (`entity_values`, the typed column matching the attribute's data type).

use super::checksum::{sum_from_halves, Checksum};
use super::ReconcileError;
use crate::decode::DataType;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use std::time::Duration;

/// The canonical cells of one tenant's entities of one type with ids in `[$3, $4)`:
/// `(entity_id, name, v, data_type)`, `v` null when the cell is null.
///
/// Shaped for speed (this query is what bounds a reconcile): hot values are looked up per hot
/// attribute of the catalog (`->`, not `jsonb_each` joined to the catalog), and cold values are
/// read without a join to their entities, only an anti-join with the few soft-deleted ones (a
/// physically deleted entity's values are gone with it: ON DELETE CASCADE). Keys of
/// `hot_attributes` the catalog does not know as hot attributes are not cells: the lake cannot
/// hold them either.
const CELLS: &str = r#"
WITH e AS (
    SELECT entity_id, hot_attributes FROM entities
    WHERE tenant_id = $1 AND entity_type = $2 AND NOT is_deleted AND entity_id >= $3 AND entity_id < $4
), gone AS (
    SELECT entity_id FROM entities
    WHERE tenant_id = $1 AND entity_type = $2 AND is_deleted AND entity_id >= $3 AND entity_id < $4
), a AS (
    SELECT attribute_id, name, data_type, is_hot FROM attributes WHERE tenant_id = $1 AND entity_type = $2
), cells AS (
    SELECT e.entity_id, ''::text AS name, ''::text AS v, ''::text AS data_type FROM e
    UNION ALL
    SELECT e.entity_id, a.name,
        CASE a.data_type
            WHEN 'text' THEN e.hot_attributes ->> a.name
            WHEN 'int' THEN e.hot_attributes ->> a.name
            WHEN 'bool' THEN e.hot_attributes ->> a.name
            WHEN 'decimal' THEN trim_scale((e.hot_attributes ->> a.name)::numeric)::text
            WHEN 'timestamp' THEN CASE jsonb_typeof(e.hot_attributes -> a.name)
                WHEN 'number' THEN e.hot_attributes ->> a.name
                ELSE ((extract(epoch FROM (e.hot_attributes ->> a.name)::timestamptz) * 1000000)::bigint)::text END
            ELSE (e.hot_attributes -> a.name)::text
        END,
        a.data_type
    FROM e CROSS JOIN a
    WHERE a.is_hot AND e.hot_attributes ? a.name AND jsonb_typeof(e.hot_attributes -> a.name) <> 'null'
    UNION ALL
    SELECT v.entity_id, a.name,
        CASE a.data_type
            WHEN 'text' THEN v.value_text
            WHEN 'int' THEN v.value_int::text
            WHEN 'bool' THEN v.value_bool::text
            WHEN 'decimal' THEN trim_scale(v.value_decimal)::text
            WHEN 'timestamp' THEN ((extract(epoch FROM v.value_timestamp) * 1000000)::bigint)::text
            ELSE v.value_json::text
        END,
        a.data_type
    FROM entity_values v JOIN a ON a.attribute_id = v.attribute_id
    WHERE v.entity_id >= $3 AND v.entity_id < $4 AND v.tenant_id = $1
      AND NOT EXISTS (SELECT 1 FROM gone WHERE gone.entity_id = v.entity_id)
)
"#;

/// The Postgres side: a pool of connections, all in UTC.
pub struct Pg {
    pool: Pool,
    /// Where it is, for messages (no password).
    pub name: String,
}

/// One cell as Postgres has it.
#[derive(Debug, Clone)]
pub struct PgCell {
    pub entity_id: i64,
    /// Empty for the presence cell.
    pub name: String,
    pub value: String,
    pub data_type: Option<DataType>,
}

fn pg_err(name: &str, what: &str, e: impl std::fmt::Display) -> ReconcileError {
    ReconcileError::Postgres(format!("{name}: {what}: {e}"))
}

/// A driver error with the server's own message (the driver's Display says only "db error").
fn db_err(name: &str, what: &str, e: tokio_postgres::Error) -> ReconcileError {
    let cause = match e.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => e.to_string(),
    };
    pg_err(name, what, cause)
}

impl Pg {
    /// Connects (checking the server answers and holds the EAV tables).
    pub async fn connect(url: &str, max_connections: usize) -> Result<Pg, ReconcileError> {
        let target = crate::pg::parse(url).map_err(|e| ReconcileError::Postgres(format!("database URL: {e}")))?;
        let mut cfg = target.config;
        // JIT compiling costs ~0.4 s per query here and gains nothing on these scans.
        cfg.options("-c TimeZone=UTC -c jit=off");
        if cfg.get_connect_timeout().is_none() {
            cfg.connect_timeout(Duration::from_secs(10));
        }
        let hosts: Vec<String> = cfg
            .get_hosts()
            .iter()
            .map(|h| match h {
                tokio_postgres::config::Host::Tcp(h) => h.clone(),
                tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
            })
            .collect();
        let ports: Vec<String> = cfg.get_ports().iter().map(|p| p.to_string()).collect();
        let name = format!(
            "PostgreSQL at {}:{} database `{}`",
            hosts.join(","),
            if ports.is_empty() { "5432".into() } else { ports.join(",") },
            cfg.get_dbname().unwrap_or("?")
        );
        let mgr = Manager::from_config(cfg, target.tls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(mgr)
            .max_size(max_connections.max(1))
            .build()
            .map_err(|e| pg_err(&name, "connection pool", e))?;
        let pg = Pg { pool, name };
        let client = pg.client().await?;
        let row = client
            .query_one(
                "SELECT to_regclass('attributes') IS NOT NULL, to_regclass('entities') IS NOT NULL,
                        to_regclass('entity_values') IS NOT NULL",
                &[],
            )
            .await
            .map_err(|e| db_err(&pg.name, "checking the schema", e))?;
        for (i, table) in ["attributes", "entities", "entity_values"].iter().enumerate() {
            if !row.get::<_, bool>(i) {
                return Err(ReconcileError::Postgres(format!(
                    "{}: no table `{table}`: not an EAV store of schemas/eav.sql",
                    pg.name
                )));
            }
        }
        Ok(pg)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, ReconcileError> {
        self.pool.get().await.map_err(|e| {
            // deadpool wraps the driver's error; its source says why (refused, timeout, auth).
            let cause = match &e {
                deadpool_postgres::PoolError::Backend(b) => format!("{b}"),
                other => other.to_string(),
            };
            ReconcileError::Postgres(format!("{}: cannot connect: {cause}", self.name))
        })
    }

    /// The server's current WAL write position.
    pub async fn wal_lsn(&self) -> Result<u64, ReconcileError> {
        let client = self.client().await?;
        let row = client
            .query_one("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::text", &[])
            .await
            .map_err(|e| db_err(&self.name, "pg_current_wal_lsn()", e))?;
        let text: String = row.get(0);
        text.parse().map_err(|_| pg_err(&self.name, "pg_current_wal_lsn()", format!("unexpected `{text}`")))
    }

    /// How far Debezium's replication slot has confirmed (every change committed before it is
    /// in Kafka), or `None` when there is no such slot in this database.
    pub async fn slot_confirmed_lsn(&self, slot: &str) -> Result<Option<u64>, ReconcileError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT (confirmed_flush_lsn - '0/0'::pg_lsn)::text FROM pg_replication_slots
                 WHERE slot_name = $1 AND database = current_database()",
                &[&slot],
            )
            .await
            .map_err(|e| db_err(&self.name, "pg_replication_slots", e))?;
        let Some(text) = row.and_then(|r| r.get::<_, Option<String>>(0)) else { return Ok(None) };
        text.parse()
            .map(Some)
            .map_err(|_| pg_err(&self.name, "pg_replication_slots.confirmed_flush_lsn", format!("unexpected `{text}`")))
    }

    /// (tenant_id, entity_type) pairs with entities, live or not.
    pub async fn scopes(&self) -> Result<Vec<(i64, String)>, ReconcileError> {
        let client = self.client().await?;
        let rows = client
            .query("SELECT DISTINCT tenant_id, entity_type FROM entities ORDER BY 1, 2", &[])
            .await
            .map_err(|e| db_err(&self.name, "listing tenants and entity types", e))?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// The attribute catalog: attribute_id → (tenant_id, entity_type, name, data_type).
    pub async fn attributes(&self) -> Result<Vec<(i64, i64, String, String, String)>, ReconcileError> {
        let client = self.client().await?;
        let rows = client
            .query("SELECT attribute_id, tenant_id, entity_type, name, data_type FROM attributes", &[])
            .await
            .map_err(|e| db_err(&self.name, "reading attributes", e))?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4))).collect())
    }

    /// Smallest and largest id of the live entities of a scope within `[lo, hi)`.
    pub async fn bounds(
        &self,
        tenant: i64,
        entity_type: &str,
        lo: i64,
        hi: i64,
    ) -> Result<Option<(i64, i64)>, ReconcileError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT min(entity_id), max(entity_id) FROM entities
                 WHERE tenant_id = $1 AND entity_type = $2 AND NOT is_deleted AND entity_id >= $3 AND entity_id < $4",
                &[&tenant, &entity_type, &lo, &hi],
            )
            .await
            .map_err(|e| db_err(&self.name, "entity id bounds", e))?;
        Ok(match (row.get::<_, Option<i64>>(0), row.get::<_, Option<i64>>(1)) {
            (Some(a), Some(b)) => Some((a, b)),
            _ => None,
        })
    }

    /// Checksums of the buckets `[bounds[i], bounds[i + 1])`, in one scan.
    pub async fn checksums(
        &self,
        tenant: i64,
        entity_type: &str,
        bounds: &[i64],
    ) -> Result<Vec<Checksum>, ReconcileError> {
        let buckets = bounds.len().saturating_sub(1);
        let mut out = vec![Checksum::default(); buckets];
        if buckets == 0 {
            return Ok(out);
        }
        let sql = format!(
            "{CELLS} SELECT width_bucket(entity_id, $5::bigint[]), count(*),
                    sum((h >> 32)::int4), sum(((h & 4294967295) - 2147483648)::int4)
             FROM (SELECT entity_id, hashtextextended(v, entity_id # hashtextextended(name, 0)) AS h
                   FROM cells WHERE v IS NOT NULL) AS hashed
             GROUP BY 1"
        );
        let client = self.client().await?;
        let (lo, hi) = (bounds[0], bounds[buckets]);
        let rows = client
            .query(&sql, &[&tenant, &entity_type, &lo, &hi, &bounds])
            .await
            .map_err(|e| db_err(&self.name, &format!("checksums of tenant {tenant} {entity_type} [{lo}, {hi})"), e))?;
        for r in rows {
            let b: i32 = r.get(0);
            let count: i64 = r.get(1);
            let (high, low): (Option<i64>, Option<i64>) = (r.get(2), r.get(3));
            let Some(slot) = usize::try_from(b).ok().and_then(|b| b.checked_sub(1)).and_then(|b| out.get_mut(b)) else {
                continue;
            };
            slot.count = count as u64;
            slot.sum = sum_from_halves(count, high.unwrap_or(0), low.unwrap_or(0));
        }
        Ok(out)
    }

    /// The cells of the entities with ids in `[lo, hi)`.
    pub async fn cells(&self, tenant: i64, entity_type: &str, lo: i64, hi: i64) -> Result<Vec<PgCell>, ReconcileError> {
        let sql = format!("{CELLS} SELECT entity_id, name, v, data_type FROM cells WHERE v IS NOT NULL");
        let client = self.client().await?;
        let rows = client
            .query(&sql, &[&tenant, &entity_type, &lo, &hi])
            .await
            .map_err(|e| db_err(&self.name, &format!("cells of tenant {tenant} {entity_type} [{lo}, {hi})"), e))?;
        Ok(rows
            .iter()
            .map(|r| PgCell {
                entity_id: r.get(0),
                name: r.get(1),
                value: r.get(2),
                data_type: DataType::parse(r.get::<_, &str>(3)),
            })
            .collect())
    }

    /// Makes the capture carry a delete of an entity the lake still has and Postgres does not:
    /// a soft-deleted entity is touched (its update says `is_deleted`); an absent one is inserted
    /// and deleted in one transaction (no reader ever sees it; the lake folds both into a
    /// delete). Returns whether the entity was absent or soft-deleted (a live one is left alone).
    pub async fn capture_delete(&self, tenant: i64, entity_type: &str, entity_id: i64) -> Result<bool, ReconcileError> {
        let mut client = self.client().await?;
        let what = format!("capturing the delete of entity {entity_id}");
        let tx = client.transaction().await.map_err(|e| db_err(&self.name, &what, e))?;
        let row = tx
            .query_opt("SELECT is_deleted FROM entities WHERE entity_id = $1 FOR UPDATE", &[&entity_id])
            .await
            .map_err(|e| db_err(&self.name, &what, e))?;
        match row.map(|r| r.get::<_, bool>(0)) {
            Some(false) => return Ok(false),
            Some(true) => {
                tx.execute("UPDATE entities SET version = version + 1 WHERE entity_id = $1", &[&entity_id])
                    .await
                    .map_err(|e| db_err(&self.name, &what, e))?;
            }
            None => {
                tx.execute(
                    "INSERT INTO entities (entity_id, tenant_id, entity_type, is_deleted) VALUES ($1, $2, $3, true)",
                    &[&entity_id, &tenant, &entity_type],
                )
                .await
                .map_err(|e| db_err(&self.name, &what, e))?;
                tx.execute("DELETE FROM entities WHERE entity_id = $1", &[&entity_id])
                    .await
                    .map_err(|e| db_err(&self.name, &what, e))?;
            }
        }
        tx.commit().await.map_err(|e| db_err(&self.name, &what, e))?;
        Ok(true)
    }

    /// Asks Debezium for an incremental snapshot of these entities (their `entities` and
    /// `entity_values` rows), through its signal table. Several signals when the ids do not fit
    /// one (the reference table's `data` is varchar(4096)).
    pub async fn request_snapshot(
        &self,
        signal_table: &str,
        schema: &str,
        ids: &[i64],
    ) -> Result<Vec<String>, ReconcileError> {
        let client = self.client().await?;
        let mut sent = Vec::new();
        // The reference table's `data` is varchar(4096): as many ids per signal as fit.
        let mut chunks: Vec<Vec<i64>> = vec![Vec::new()];
        let mut len = 0usize;
        for &id in ids {
            let w = id.to_string().len() + 1;
            if len + w > 1500 && !chunks.last().is_some_and(|c| c.is_empty()) {
                chunks.push(Vec::new());
                len = 0;
            }
            len += w;
            if let Some(last) = chunks.last_mut() {
                last.push(id);
            }
        }
        for chunk in chunks.iter().filter(|c| !c.is_empty()) {
            let list = chunk.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",");
            let data = serde_json::json!({
                "data-collections": [format!("{schema}.entities"), format!("{schema}.entity_values")],
                "type": "incremental",
                "additional-conditions": [
                    {"data-collection": format!("{schema}.entities"), "filter": format!("entity_id IN ({list})")},
                    {"data-collection": format!("{schema}.entity_values"), "filter": format!("entity_id IN ({list})")},
                ],
            })
            .to_string();
            sent.push(self.signal(&client, signal_table, "execute-snapshot", &data, sent.len()).await?);
        }
        Ok(sent)
    }

    /// Writes a `log` signal (Debezium only logs its message). A change of a captured table, it
    /// moves Debezium's slot past the current WAL position even when the store is quiet.
    pub async fn log_signal(&self, signal_table: &str, message: &str) -> Result<(), ReconcileError> {
        let client = self.client().await?;
        let data = serde_json::json!({ "message": message }).to_string();
        self.signal(&client, signal_table, "log", &data, 0).await.map(drop)
    }

    /// Inserts one signal row; returns its id.
    async fn signal(
        &self,
        client: &deadpool_postgres::Client,
        signal_table: &str,
        kind: &str,
        data: &str,
        n: usize,
    ) -> Result<String, ReconcileError> {
        let id = format!("eavlake-reconcile-{}-{}-{n}", std::process::id(), crate::progress::now_ms());
        let sql = format!("INSERT INTO {signal_table} (id, type, data) VALUES ($1, $2, $3)");
        client
            .execute(&sql, &[&id, &kind, &data])
            .await
            .map_err(|e| db_err(&self.name, &format!("writing a `{kind}` signal into `{signal_table}`"), e))?;
        Ok(id)
    }
}
