//! Realistic EAV traffic written into a live PostgreSQL store (`schemas/eav.sql`), and the
//! store's current state read back in the same terms as the generator's ground truth: what the
//! end-to-end tests compare the lake with.
//!
//! The traffic, from several connections at once: bulk inserts of `bulk_size` entities in one
//! transaction (half of them by `COPY`, whose rows share WAL records and so source positions),
//! updates of hot (JSONB) and cold (`entity_values`) attributes, value deletes, values moved to
//! another attribute (an UPDATE of the primary key, which Debezium publishes as a delete and a
//! create at one source position), entity deletes (physical, and logical: `is_deleted` set, the
//! values left in place, some of them written again later, some entities then deleted for good),
//! attributes added while running, and long transactions that stay open while short ones commit
//! around them. Each connection owns its own entities (no lock waits); the catalog is shared.

use super::rng::Rng;
use super::Expected;
use crate::decode::DataType;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_postgres::Client;

/// What to drive.
#[derive(Debug, Clone)]
pub struct DriveSpec {
    pub tenants: i64,
    pub entity_types: Vec<String>,
    /// Short transactions in all, over all connections.
    pub transactions: u64,
    /// Concurrent connections with short transactions (one more runs long transactions).
    pub connections: usize,
    /// Entities per bulk insert.
    pub bulk_size: usize,
    /// Pause between transactions of one connection (0: as fast as possible).
    pub pause: Duration,
    /// Seeds the connections' random choices: drives with other seeds make other traffic.
    pub seed: u64,
}

impl Default for DriveSpec {
    fn default() -> Self {
        DriveSpec {
            tenants: 6,
            entity_types: vec!["customer".into(), "order".into()],
            transactions: 400,
            connections: 3,
            bulk_size: 1000,
            pause: Duration::ZERO,
            seed: 1,
        }
    }
}

/// What was driven.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DriveReport {
    pub transactions: u64,
    pub long_transactions: u64,
    pub entities_inserted: u64,
    /// Rows deleted from `entities` (with their values), some of them deleted logically before.
    pub entities_deleted: u64,
    /// Entities whose `is_deleted` was set (their rows and values stay).
    pub entities_deleted_logically: u64,
    /// Values written to logically deleted entities (the store keeps them; an un-delete brings
    /// them back).
    pub values_written_deleted: u64,
    /// Logically deleted entities brought back (`is_deleted` set to false): with all their
    /// values, those written while they were deleted included.
    pub entities_undeleted: u64,
    pub values_written: u64,
    pub values_deleted: u64,
    pub hot_updates: u64,
    /// Values moved to another attribute by an UPDATE of their primary key.
    pub values_moved: u64,
    pub attributes_added: u64,
}

#[derive(Debug, Clone)]
struct Attr {
    id: i64,
    tenant: i64,
    entity_type: String,
    name: String,
    data_type: DataType,
    hot: bool,
}

/// State shared by the connections.
struct Shared {
    attrs: Mutex<Vec<Attr>>,
    next_attr: Mutex<i64>,
    report: Mutex<DriveReport>,
}

const TYPES: [DataType; 6] =
    [DataType::Text, DataType::Int, DataType::Decimal, DataType::Bool, DataType::Timestamp, DataType::Json];

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Creates the initial catalog (if the store has none) and drives `spec`'s traffic.
pub async fn drive(url: &str, spec: &DriveSpec) -> anyhow::Result<DriveReport> {
    let mut client = crate::pg::connect(url).await?;
    let existing = client
        .query("SELECT attribute_id, tenant_id, entity_type, name, data_type, is_hot FROM attributes", &[])
        .await?;
    let mut attrs: Vec<Attr> = existing
        .iter()
        .filter_map(|r| {
            Some(Attr {
                id: r.get(0),
                tenant: r.get(1),
                entity_type: r.get(2),
                name: r.get(3),
                data_type: DataType::parse(r.get(4))?,
                hot: r.get(5),
            })
        })
        .collect();
    let mut next_attr = attrs.iter().map(|a| a.id).max().unwrap_or(0) + 1;
    if attrs.is_empty() {
        // Ten attributes per tenant and type, two of them hot, every data type present.
        let tx = client.transaction().await?;
        for tenant in 1..=spec.tenants {
            for et in &spec.entity_types {
                for i in 0..10 {
                    let a = Attr {
                        id: next_attr,
                        tenant,
                        entity_type: et.clone(),
                        name: format!("{et}_a{i}"),
                        data_type: TYPES[i % TYPES.len()],
                        hot: i < 2,
                    };
                    insert_attr(&tx, &a).await?;
                    attrs.push(a);
                    next_attr += 1;
                }
            }
        }
        tx.commit().await?;
    }
    let max_entity: i64 = client.query_one("SELECT coalesce(max(entity_id), 0) FROM entities", &[]).await?.get(0);
    let shared = Arc::new(Shared {
        attrs: Mutex::new(attrs),
        next_attr: Mutex::new(next_attr),
        report: Mutex::new(DriveReport::default()),
    });
    let per = spec.transactions / spec.connections.max(1) as u64;
    let mut tasks = Vec::new();
    for c in 0..=spec.connections {
        let (url, spec, shared) = (url.to_string(), spec.clone(), shared.clone());
        // Each connection allocates entity ids from its own block.
        let first_id = max_entity + 1 + c as i64 * 1_000_000_000;
        tasks.push(tokio::spawn(async move {
            let mut client = crate::pg::connect(&url).await?;
            let long = c == spec_long(&spec);
            let rng = Rng::new(connection_seed(spec.seed, c));
            let mut conn = Conn { spec, shared, rng, next_id: first_id, live: Vec::new(), deleted: Vec::new() };
            if long {
                conn.long_transactions(&mut client, per).await
            } else {
                conn.short_transactions(&mut client, per).await
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let report = lock(&shared.report).clone();
    Ok(report)
}

/// Connection `c`'s random choices under `seed`: each connection its own, each seed its own.
fn connection_seed(seed: u64, c: usize) -> u64 {
    seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (0x5eed + c as u64 * 7919)
}

/// The connection that runs long transactions: the last one.
fn spec_long(spec: &DriveSpec) -> usize {
    spec.connections
}

async fn insert_attr(client: &impl tokio_postgres::GenericClient, a: &Attr) -> anyhow::Result<()> {
    client
        .execute(
            "INSERT INTO attributes (attribute_id, tenant_id, entity_type, name, data_type, is_hot) VALUES ($1, $2, $3, $4, $5, $6)",
            &[&a.id, &a.tenant, &a.entity_type, &a.name, &a.data_type.as_str(), &a.hot],
        )
        .await?;
    Ok(())
}

/// One connection's traffic.
struct Conn {
    spec: DriveSpec,
    shared: Arc<Shared>,
    rng: Rng,
    next_id: i64,
    /// This connection's live entities: (id, tenant, type).
    live: Vec<(i64, i64, String)>,
    /// This connection's logically deleted entities, rows still in the store.
    deleted: Vec<(i64, i64, String)>,
}

/// One cold value, as bind parameters (text for the types that cast from text).
#[derive(Default)]
struct Cold {
    text: Option<String>,
    int: Option<i64>,
    decimal: Option<String>,
    bool: Option<bool>,
    timestamp: Option<String>,
    json: Option<String>,
}

impl Conn {
    fn attrs_of(&self, tenant: i64, et: &str, hot: bool) -> Vec<Attr> {
        lock(&self.shared.attrs)
            .iter()
            .filter(|a| a.tenant == tenant && a.entity_type == et && a.hot == hot)
            .cloned()
            .collect()
    }

    fn value(&mut self, t: DataType) -> serde_json::Value {
        use serde_json::json;
        match t {
            DataType::Text => json!(format!("v{}", self.rng.below(100_000))),
            DataType::Int => json!(self.rng.between(-1_000_000_000_000, 1_000_000_000_000)),
            DataType::Decimal => {
                let units = self.rng.between(-99_999_999_999, 99_999_999_999);
                let frac = self.rng.below(1_000_000_000);
                let sign = if units < 0 { "-" } else { "" };
                json!(format!("{sign}{}.{frac:09}", units.unsigned_abs()))
            }
            DataType::Bool => json!(self.rng.chance(500)),
            DataType::Timestamp => {
                // 2020..2030, µs precision, as ISO text.
                let us = self.rng.between(1_577_836_800_000_000, 1_893_456_000_000_000);
                let secs = us.div_euclid(1_000_000);
                let t = chrono::DateTime::from_timestamp(secs, (us.rem_euclid(1_000_000) * 1000) as u32)
                    .unwrap_or_default();
                json!(t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
            }
            DataType::Json => json!({"k": self.rng.below(1000), "tags": [self.rng.below(10), "x"]}),
        }
    }

    fn cold(&mut self, t: DataType) -> Cold {
        let v = self.value(t);
        let s = || v.as_str().map(str::to_string);
        match t {
            DataType::Text => Cold { text: s(), ..Cold::default() },
            DataType::Int => Cold { int: v.as_i64(), ..Cold::default() },
            DataType::Decimal => Cold { decimal: s(), ..Cold::default() },
            DataType::Bool => Cold { bool: v.as_bool(), ..Cold::default() },
            DataType::Timestamp => Cold { timestamp: s(), ..Cold::default() },
            DataType::Json => Cold { json: Some(v.to_string()), ..Cold::default() },
        }
    }

    fn hot_json(&mut self, hot: &[Attr]) -> String {
        let mut m = serde_json::Map::new();
        for a in hot {
            if self.rng.chance(800) {
                let v = self.value(a.data_type);
                m.insert(a.name.clone(), v);
            }
        }
        serde_json::Value::Object(m).to_string()
    }

    async fn upsert_value(
        tx: &tokio_postgres::Transaction<'_>,
        entity: i64,
        tenant: i64,
        a: &Attr,
        v: &Cold,
    ) -> anyhow::Result<()> {
        tx.execute(
            "INSERT INTO entity_values (entity_id, attribute_id, tenant_id, value_text, value_int, value_decimal, value_bool, value_timestamp, value_json)
             VALUES ($1, $2, $3, $4, $5, $6::text::numeric, $7, $8::text::timestamptz, $9::text::jsonb)
             ON CONFLICT (entity_id, attribute_id) DO UPDATE SET value_text = EXCLUDED.value_text, value_int = EXCLUDED.value_int,
               value_decimal = EXCLUDED.value_decimal, value_bool = EXCLUDED.value_bool, value_timestamp = EXCLUDED.value_timestamp,
               value_json = EXCLUDED.value_json, updated_at = now()",
            &[&entity, &a.id, &tenant, &v.text, &v.int, &v.decimal, &v.bool, &v.timestamp, &v.json],
        )
        .await?;
        Ok(())
    }

    /// Inserts `n` entities of one tenant and type with hot and cold values, in `tx`, by `COPY`
    /// when `by_copy` (as bulk loads are written), else by `INSERT … SELECT`.
    async fn insert_entities(
        &mut self,
        tx: &tokio_postgres::Transaction<'_>,
        n: usize,
        by_copy: bool,
    ) -> anyhow::Result<()> {
        let tenant = self.rng.between(1, self.spec.tenants);
        let et = self.spec.entity_types[self.rng.index(self.spec.entity_types.len())].clone();
        let (hot, cold) = (self.attrs_of(tenant, &et, true), self.attrs_of(tenant, &et, false));
        let (mut ids, mut hots) = (Vec::with_capacity(n), Vec::with_capacity(n));
        let mut vals: (Vec<i64>, Vec<i64>, Vec<Cold>) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..n {
            let id = self.next_id;
            self.next_id += 1;
            ids.push(id);
            hots.push(self.hot_json(&hot));
            for a in &cold {
                if self.rng.chance(700) {
                    let v = self.cold(a.data_type);
                    vals.0.push(id);
                    vals.1.push(a.id);
                    vals.2.push(v);
                }
            }
            self.live.push((id, tenant, et.clone()));
        }
        let new = NewEntities { tenant, entity_type: &et, ids: &ids, hots: &hots, vals: &vals };
        if by_copy {
            copy_entities(tx, &new).await?;
        } else {
            select_entities(tx, &new).await?;
        }
        let mut r = lock(&self.shared.report);
        r.entities_inserted += n as u64;
        r.values_written += vals.0.len() as u64;
        Ok(())
    }

    /// Writes a random value of a random cold attribute of entity `id`'s tenant and type;
    /// false when the type has no cold attribute.
    async fn write_cold_value(
        &mut self,
        tx: &tokio_postgres::Transaction<'_>,
        id: i64,
        tenant: i64,
        et: &str,
    ) -> anyhow::Result<bool> {
        let cold = self.attrs_of(tenant, et, false);
        if cold.is_empty() {
            return Ok(false);
        }
        let a = &cold[self.rng.index(cold.len())];
        let v = self.cold(a.data_type);
        Self::upsert_value(tx, id, tenant, a, &v).await?;
        Ok(true)
    }

    /// Changes a few of this connection's entities: hot updates, cold upserts, value deletes.
    async fn touch(&mut self, tx: &tokio_postgres::Transaction<'_>, entities: usize) -> anyhow::Result<()> {
        for _ in 0..entities {
            // Now and then a logically deleted entity comes back (one is always left deleted).
            if self.deleted.len() >= 2 && self.rng.chance(10) {
                let entity = self.deleted.swap_remove(self.rng.index(self.deleted.len()));
                set_deleted(tx, entity.0, false).await?;
                self.live.push(entity);
                lock(&self.shared.report).entities_undeleted += 1;
                continue;
            }
            if self.live.is_empty() {
                return Ok(());
            }
            let (id, tenant, et) = self.live[self.rng.index(self.live.len())].clone();
            match self.rng.below(20) {
                0..=7 => {
                    let hot = self.attrs_of(tenant, &et, true);
                    let json = self.hot_json(&hot);
                    tx.execute(
                        "UPDATE entities SET hot_attributes = $2::text::jsonb, version = version + 1, updated_at = now() WHERE entity_id = $1",
                        &[&id, &json],
                    )
                    .await?;
                    lock(&self.shared.report).hot_updates += 1;
                }
                8..=16 => {
                    if self.write_cold_value(tx, id, tenant, &et).await? {
                        lock(&self.shared.report).values_written += 1;
                    }
                }
                17 => {
                    let n = Self::move_value(tx, id, tenant, &et).await?;
                    lock(&self.shared.report).values_moved += n;
                }
                _ => {
                    let n = tx.execute("DELETE FROM entity_values WHERE entity_id = $1 AND attribute_id IN (SELECT attribute_id FROM entity_values WHERE entity_id = $1 LIMIT 1)", &[&id]).await?;
                    lock(&self.shared.report).values_deleted += n;
                }
            }
        }
        Ok(())
    }

    /// Moves one of entity `id`'s cold values to another cold attribute of its tenant, type and
    /// data type that it has no value for, as a migration merging or renaming attributes does:
    /// an UPDATE of the row's primary key, which Debezium publishes as a delete of the old key
    /// and a create of the new one, both at the update's source position. Returns the rows
    /// moved (0 when no value of the entity has such an attribute to go to).
    async fn move_value(tx: &tokio_postgres::Transaction<'_>, id: i64, tenant: i64, et: &str) -> anyhow::Result<u64> {
        let moved = tx
            .execute(
                "WITH pick AS (
                   SELECT v.attribute_id AS from_id, t.attribute_id AS to_id
                   FROM entity_values v
                   JOIN attributes f ON f.attribute_id = v.attribute_id
                   JOIN attributes t ON t.tenant_id = $2 AND t.entity_type = $3 AND NOT t.is_hot
                                    AND t.data_type = f.data_type AND t.attribute_id <> v.attribute_id
                   WHERE v.entity_id = $1
                     AND NOT EXISTS (SELECT 1 FROM entity_values w WHERE w.entity_id = $1 AND w.attribute_id = t.attribute_id)
                   ORDER BY v.attribute_id, t.attribute_id
                   LIMIT 1)
                 UPDATE entity_values SET attribute_id = pick.to_id, updated_at = now()
                 FROM pick WHERE entity_id = $1 AND attribute_id = pick.from_id",
                &[&id, &tenant, &et],
            )
            .await?;
        Ok(moved)
    }

    /// Deletes one of this connection's entities: a live one, for good or logically (half
    /// each), or one deleted logically before: for good, or one of its values written anyway
    /// (a store does not stop a job from writing to an entity in its bin).
    async fn delete_entity(&mut self, tx: &tokio_postgres::Transaction<'_>) -> anyhow::Result<()> {
        let choice = self.rng.below(8);
        if choice >= 6 && !self.deleted.is_empty() {
            let i = self.rng.index(self.deleted.len());
            if choice == 6 {
                let (id, _, _) = self.deleted.swap_remove(i);
                delete_entity(tx, id).await?;
                lock(&self.shared.report).entities_deleted += 1;
            } else {
                let (id, tenant, et) = self.deleted[i].clone();
                if self.write_cold_value(tx, id, tenant, &et).await? {
                    lock(&self.shared.report).values_written_deleted += 1;
                }
            }
            return Ok(());
        }
        if self.live.is_empty() {
            return Ok(());
        }
        let i = self.rng.index(self.live.len());
        let entity = self.live.swap_remove(i);
        if choice < 3 {
            delete_entity(tx, entity.0).await?;
            lock(&self.shared.report).entities_deleted += 1;
        } else {
            set_deleted(tx, entity.0, true).await?;
            self.deleted.push(entity);
            lock(&self.shared.report).entities_deleted_logically += 1;
        }
        Ok(())
    }

    async fn add_attribute(&mut self, client: &Client) -> anyhow::Result<()> {
        let tenant = self.rng.between(1, self.spec.tenants);
        let et = self.spec.entity_types[self.rng.index(self.spec.entity_types.len())].clone();
        let id = {
            let mut next = lock(&self.shared.next_attr);
            *next += 1;
            *next - 1
        };
        let a = Attr {
            id,
            tenant,
            entity_type: et.clone(),
            name: format!("{et}_x{id}"),
            data_type: TYPES[self.rng.index(TYPES.len())],
            hot: self.rng.chance(200),
        };
        insert_attr(client, &a).await?;
        lock(&self.shared.attrs).push(a);
        lock(&self.shared.report).attributes_added += 1;
        Ok(())
    }

    async fn short_transactions(&mut self, client: &mut Client, count: u64) -> anyhow::Result<()> {
        for _ in 0..count {
            let op = self.rng.below(100);
            if op < 3 {
                self.add_attribute(client).await?;
            } else {
                let tx = client.transaction().await?;
                match op {
                    3..=7 => {
                        let n = self.spec.bulk_size;
                        let by_copy = self.rng.chance(500);
                        self.insert_entities(&tx, n, by_copy).await?
                    }
                    8..=12 => self.delete_entity(&tx).await?,
                    13..=20 => self.insert_entities(&tx, 3, false).await?,
                    _ => {
                        let n = 1 + self.rng.index(6);
                        self.touch(&tx, n).await?
                    }
                }
                tx.commit().await?;
            }
            lock(&self.shared.report).transactions += 1;
            if !self.spec.pause.is_zero() {
                tokio::time::sleep(self.spec.pause).await;
            }
        }
        Ok(())
    }

    /// Transactions that stay open a while (changes spread over time) while the other
    /// connections commit short ones: their changes interleave in the WAL.
    async fn long_transactions(&mut self, client: &mut Client, short_per_connection: u64) -> anyhow::Result<()> {
        let rounds = (short_per_connection / 40).max(1);
        for _ in 0..rounds {
            let tx = client.transaction().await?;
            self.insert_entities(&tx, 20, false).await?;
            for _ in 0..5 {
                self.touch(&tx, 4).await?;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            tx.commit().await?;
            let mut r = lock(&self.shared.report);
            r.long_transactions += 1;
            r.transactions += 1;
        }
        Ok(())
    }
}

/// Deletes entity `id` logically (`true`) or brings it back (`false`), in its own statement's
/// transaction or in `client`'s: its values stay either way.
pub async fn set_deleted(client: &impl tokio_postgres::GenericClient, id: i64, deleted: bool) -> anyhow::Result<()> {
    client
        .execute(
            "UPDATE entities SET is_deleted = $2, version = version + 1, updated_at = now() WHERE entity_id = $1",
            &[&id, &deleted],
        )
        .await?;
    Ok(())
}

/// Deletes entity `id` physically, in `tx`: its values first, as an application would (the
/// foreign key would cascade anyway), then its row.
pub async fn delete_entity(tx: &tokio_postgres::Transaction<'_>, id: i64) -> anyhow::Result<()> {
    tx.execute("DELETE FROM entity_values WHERE entity_id = $1", &[&id]).await?;
    tx.execute("DELETE FROM entities WHERE entity_id = $1", &[&id]).await?;
    Ok(())
}

/// New entities of one tenant and type: ids, hot attributes (JSON text), and cold values as
/// (entity ids, attribute ids, values).
#[derive(Clone, Copy)]
struct NewEntities<'a> {
    tenant: i64,
    entity_type: &'a str,
    ids: &'a [i64],
    hots: &'a [String],
    vals: &'a (Vec<i64>, Vec<i64>, Vec<Cold>),
}

/// `insert_entities` by `INSERT … SELECT FROM unnest(…)`: one statement per table, a WAL record
/// (and LSN) per row.
async fn select_entities(tx: &tokio_postgres::Transaction<'_>, new: &NewEntities<'_>) -> anyhow::Result<()> {
    let NewEntities { tenant, entity_type, ids, hots, vals } = *new;
    let tenants = vec![tenant; ids.len()];
    let types = vec![entity_type; ids.len()];
    tx.execute(
        "INSERT INTO entities (entity_id, tenant_id, entity_type, hot_attributes)
         SELECT e, t, ty, h::jsonb FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[]) AS u(e, t, ty, h)",
        &[&ids, &tenants, &types, &hots],
    )
    .await?;
    let col = |f: fn(&Cold) -> Option<String>| vals.2.iter().map(f).collect::<Vec<_>>();
    let (texts, decimals, stamps, jsons) =
        (col(|c| c.text.clone()), col(|c| c.decimal.clone()), col(|c| c.timestamp.clone()), col(|c| c.json.clone()));
    let ints: Vec<Option<i64>> = vals.2.iter().map(|c| c.int).collect();
    let bools: Vec<Option<bool>> = vals.2.iter().map(|c| c.bool).collect();
    let value_tenants = vec![tenant; vals.0.len()];
    tx.execute(
        "INSERT INTO entity_values (entity_id, attribute_id, tenant_id, value_text, value_int, value_decimal, value_bool, value_timestamp, value_json)
         SELECT e, a, t, vt, vi, vd::numeric, vb, vts::timestamptz, vj::jsonb
         FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::text[], $5::bigint[], $6::text[], $7::bool[], $8::text[], $9::text[])
           AS u(e, a, t, vt, vi, vd, vb, vts, vj)",
        &[&vals.0, &vals.1, &value_tenants, &texts, &ints, &decimals, &bools, &stamps, &jsons],
    )
    .await?;
    Ok(())
}

/// `insert_entities` by `COPY … FROM STDIN` (text format): PostgreSQL writes the rows of one
/// table partition up to 1,000 to a WAL record, so Debezium gives them one LSN.
async fn copy_entities(tx: &tokio_postgres::Transaction<'_>, new: &NewEntities<'_>) -> anyhow::Result<()> {
    let NewEntities { tenant, entity_type, ids, hots, vals } = *new;
    let (tenant, mut entities, mut values) = (tenant.to_string(), String::new(), String::new());
    for (id, hot) in ids.iter().zip(hots) {
        copy_row(&mut entities, &[Some(&id.to_string()), Some(&tenant), Some(entity_type), Some(hot)]);
    }
    for ((entity, attribute), v) in vals.0.iter().zip(&vals.1).zip(&vals.2) {
        let int = v.int.map(|i| i.to_string());
        let fields = [
            Some(entity.to_string()),
            Some(attribute.to_string()),
            Some(tenant.clone()),
            v.text.clone(),
            int,
            v.decimal.clone(),
            v.bool.map(|b| if b { "t" } else { "f" }.to_string()),
            v.timestamp.clone(),
            v.json.clone(),
        ];
        copy_row(&mut values, &fields.each_ref().map(|f| f.as_deref()));
    }
    copy_in(tx, "COPY entities (entity_id, tenant_id, entity_type, hot_attributes) FROM STDIN", entities).await?;
    let columns = "entity_id, attribute_id, tenant_id, value_text, value_int, value_decimal, value_bool, value_timestamp, value_json";
    copy_in(tx, &format!("COPY entity_values ({columns}) FROM STDIN"), values).await?;
    Ok(())
}

async fn copy_in(tx: &tokio_postgres::Transaction<'_>, statement: &str, data: String) -> anyhow::Result<()> {
    use futures::SinkExt;
    let sink = tx.copy_in::<_, bytes::Bytes>(statement).await?;
    futures::pin_mut!(sink);
    sink.send(bytes::Bytes::from(data)).await?;
    sink.finish().await?;
    Ok(())
}

/// One line of `COPY`'s text format: fields separated by tabs, `\N` for NULL, and backslash,
/// tab, newline and carriage return escaped.
fn copy_row(out: &mut String, fields: &[Option<&str>]) {
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.push('\t');
        }
        let Some(text) = field else {
            out.push_str("\\N");
            continue;
        };
        for c in text.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\t' => out.push_str("\\t"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                c => out.push(c),
            }
        }
    }
    out.push('\n');
}

/// The store's current state: live entities → attribute name → non-null value, decimals at
/// `scale`, timestamps in µs.
pub async fn read_state(
    url: &str,
    scale: u32,
) -> anyhow::Result<BTreeMap<(String, i64, i64), BTreeMap<String, Expected>>> {
    use crate::decode::json::{hot_decimal, hot_timestamp};
    use crate::decode::value::{parse_decimal, rescale};
    let client = crate::pg::connect(url).await?;
    let mut catalog: BTreeMap<(i64, String, String), DataType> = BTreeMap::new();
    for r in client.query("SELECT tenant_id, entity_type, name, data_type FROM attributes", &[]).await? {
        if let Some(t) = DataType::parse(r.get(3)) {
            catalog.insert((r.get(0), r.get(1), r.get(2)), t);
        }
    }
    let mut state = BTreeMap::new();
    let mut types = BTreeMap::new();
    for r in client
        .query("SELECT entity_type, tenant_id, entity_id, hot_attributes::text FROM entities WHERE NOT is_deleted", &[])
        .await?
    {
        let (et, tenant, id, hot): (String, i64, i64, String) = (r.get(0), r.get(1), r.get(2), r.get(3));
        let mut attrs = BTreeMap::new();
        let obj: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&hot)?;
        for (name, v) in obj {
            if v.is_null() {
                continue;
            }
            let Some(t) = catalog.get(&(tenant, et.clone(), name.clone())) else {
                anyhow::bail!("entity {id}: hot attribute `{name}` is not in the catalog");
            };
            let raw = v.to_string();
            let value = match t {
                DataType::Text => Expected::Text(v.as_str().unwrap_or_default().to_string()),
                DataType::Int => Expected::Int(v.as_i64().unwrap_or_default()),
                DataType::Bool => Expected::Bool(v.as_bool().unwrap_or_default()),
                DataType::Json => Expected::Json(v),
                DataType::Decimal => Expected::Decimal(
                    hot_decimal(&raw).and_then(|d| rescale(d, scale)).map_err(|e| anyhow::anyhow!("{e}"))?,
                ),
                DataType::Timestamp => Expected::Timestamp(hot_timestamp(&raw).map_err(|e| anyhow::anyhow!("{e}"))?),
            };
            attrs.insert(name, value);
        }
        types.insert(id, (et.clone(), tenant));
        state.insert((et, tenant, id), attrs);
    }
    let rows = client
        .query(
            "SELECT v.entity_id, a.name, a.data_type, v.value_text, v.value_int, v.value_decimal::text, v.value_bool,
                    (extract(epoch from v.value_timestamp) * 1000000)::bigint, v.value_json::text
             FROM entity_values v JOIN attributes a USING (attribute_id)",
            &[],
        )
        .await?;
    for r in rows {
        let id: i64 = r.get(0);
        let Some((et, tenant)) = types.get(&id) else { continue };
        let name: String = r.get(1);
        let value = match DataType::parse(r.get(2)) {
            Some(DataType::Text) => r.get::<_, Option<String>>(3).map(Expected::Text),
            Some(DataType::Int) => r.get::<_, Option<i64>>(4).map(Expected::Int),
            Some(DataType::Decimal) => match r.get::<_, Option<String>>(5) {
                Some(t) => Some(Expected::Decimal(
                    parse_decimal(&t).and_then(|d| rescale(d, scale)).map_err(|e| anyhow::anyhow!("{e}"))?,
                )),
                None => None,
            },
            Some(DataType::Bool) => r.get::<_, Option<bool>>(6).map(Expected::Bool),
            Some(DataType::Timestamp) => r.get::<_, Option<i64>>(7).map(Expected::Timestamp),
            Some(DataType::Json) => match r.get::<_, Option<String>>(8) {
                Some(t) => Some(Expected::Json(serde_json::from_str(&t)?)),
                None => None,
            },
            None => None,
        };
        if let (Some(v), Some(attrs)) = (value, state.get_mut(&(et.clone(), *tenant, id))) {
            attrs.insert(name, v);
        }
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    #[test]
    fn copy_rows_escape_what_the_text_format_gives_meaning() {
        let mut out = String::new();
        super::copy_row(&mut out, &[Some("7"), None, Some("a\tb\\c\nd\re"), Some(r#"{"k":"\"q\""}"#)]);
        assert_eq!(out, "7\t\\N\ta\\tb\\\\c\\nd\\re\t{\"k\":\"\\\\\"q\\\\\"\"}\n");
    }
}
