//! A lake made from a real PostgreSQL store the way the worker makes it: the store's live rows
//! written out as Debezium JSON change events (streamed creates whose source positions end at
//! Postgres' WAL position of the moment, like a capture that has caught up) and run through the
//! file pipeline and compaction (`eavlake::run::run_file`).
#![allow(dead_code)]

use eavlake::config::Config;
use eavlake::decode::DecimalMode;
use std::path::Path;
use tokio_postgres::{Client, NoTls};

pub async fn connect(url: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await.expect("connect to the test server");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client.batch_execute("SET TIME ZONE 'UTC'").await.unwrap();
    client
}

pub fn config(lake: &Path) -> Config {
    let mut c = Config::default();
    c.lake.url = lake.to_str().unwrap().to_string();
    // Several ranges per tenant, so that removing one object removes some entities only.
    c.lake.range_size = 2_000;
    c.decode.decimal_handling_mode = DecimalMode::String;
    c
}

/// Writes the store's live rows (all entities, or `only` these) as Debezium JSON change events
/// into `file`, then runs them into `lake` (pipeline and compaction), as a capture would.
pub async fn capture(pg_url: &str, lake: &Path, file: &Path, only: Option<&[i64]>) {
    let client = connect(pg_url).await;
    let wal: i64 = client.query_one("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint", &[]).await.unwrap().get(0);
    let attrs: Vec<String> = client
        .query(
            "SELECT json_build_object('attribute_id', attribute_id, 'tenant_id', tenant_id, 'entity_type', entity_type,
                 'name', name, 'data_type', data_type, 'is_hot', is_hot, 'created_at', created_at)::text
             FROM attributes ORDER BY attribute_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let ids: Vec<i64> = only.map(|o| o.to_vec()).unwrap_or_default();
    let filter = if only.is_some() { "AND entity_id = ANY($1)" } else { "AND $1::bigint[] IS NOT NULL" };
    let entities = client
        .query(
            &format!(
                "SELECT entity_id, json_build_object('entity_id', entity_id, 'tenant_id', tenant_id, 'entity_type', entity_type,
                     'hot_attributes', hot_attributes::text, 'version', version, 'is_deleted', is_deleted,
                     'created_at', created_at, 'updated_at', updated_at)::text
                 FROM entities WHERE NOT is_deleted {filter} ORDER BY entity_id"
            ),
            &[&ids],
        )
        .await
        .unwrap();
    let values = client
        .query(
            &format!(
                "SELECT entity_id, json_build_object('entity_id', entity_id, 'attribute_id', attribute_id, 'tenant_id', tenant_id,
                     'value_text', value_text, 'value_int', value_int, 'value_decimal', value_decimal::text,
                     'value_bool', value_bool, 'value_timestamp', value_timestamp, 'value_json', value_json::text,
                     'updated_at', updated_at)::text
                 FROM entity_values WHERE true {filter} ORDER BY entity_id, attribute_id"
            ),
            &[&ids],
        )
        .await
        .unwrap();
    // Transactions: the attributes, then one per entity with its values; positions strictly
    // increasing and ending at the WAL position read above.
    let mut txs: Vec<Vec<(&str, String)>> = vec![attrs.into_iter().map(|a| ("attributes", a)).collect()];
    let mut vi = 0;
    for e in &entities {
        let id: i64 = e.get(0);
        let mut tx = vec![("entities", e.get::<_, String>(1))];
        while vi < values.len() && values[vi].get::<_, i64>(0) <= id {
            if values[vi].get::<_, i64>(0) == id {
                tx.push(("entity_values", values[vi].get(1)));
            }
            vi += 1;
        }
        txs.push(tx);
    }
    let total: i64 = txs.iter().map(|t| t.len() as i64).sum();
    let mut lsn = wal - total;
    let mut commit = lsn - 1;
    let mut out = String::new();
    for (n, tx) in txs.iter().enumerate() {
        for (table, after) in tx {
            lsn += 1;
            out.push_str(&format!(
                r#"{{"before":null,"after":{after},"source":{{"version":"2.7.3.Final","connector":"postgresql","name":"eav","ts_ms":1700000000000,"snapshot":"false","db":"eav","sequence":"[\"{commit}\",\"{lsn}\"]","schema":"public","table":"{table}","txId":{},"lsn":{lsn},"xmin":null}},"transaction":null,"op":"c","ts_ms":1700000000000}}"#,
                1000 + n
            ));
            out.push('\n');
        }
        commit = lsn;
    }
    std::fs::write(file, out).unwrap();
    let report = eavlake::run::run_file(&config(lake), file).await.unwrap();
    assert!(report.stats.dead_letters.is_empty(), "the capture must be clean: {report:?}");
}
