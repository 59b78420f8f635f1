//! Benchmark of `eavlake reconcile`: 1M entities × 10 attributes (2 hot in JSONB, 8 cold in
//! entity_values: 10M cells) in a real PostgreSQL and in a lake, no drift, then 100 drifted
//! entities (40 values changed, 30 entities deleted, 30 inserted, all behind the capture's back).
//!
//!   cargo bench --bench reconcile                    # 1M entities
//!   EAVLAKE_BENCH_ENTITIES=100000 cargo bench --bench reconcile
//!
//! Postgres is loaded with generate_series SQL; the lake's current objects are written with the
//! lake's own column definitions (`eavlake::columns`) and Parquet encoder, with the values the
//! same SQL expressions give (both are functions of entity_id), plus lake.json, catalog.json and
//! a progress record, as compaction leaves a lake. Each reconcile runs as the `eavlake` binary
//! (`--lag-wait 0`: this drift is made outside capture, the lake will not move); the report is
//! the median of 3 runs and the peak RSS of those processes.

#[path = "common/stack.rs"]
mod stack;

use arrow::array::{
    ArrayRef, BooleanBuilder, Decimal128Builder, Int64Array, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType as ArrowType, Field, Schema};
use arrow::record_batch::RecordBatch;
use eavlake::catalog::{Attribute, Catalog};
use eavlake::columns;
use eavlake::decode::DataType;
use eavlake::sink::{Lake, S3Options};
use std::sync::Arc;
use std::time::Instant;
use tokio_postgres::NoTls;

const RANGE: i64 = 100_000;
const SCALE: u32 = 9;
const TS0: i64 = 1_704_067_200_000_000;

/// (id, name, type, hot)
const ATTRS: [(i64, &str, DataType, bool); 10] = [
    (1, "h_text", DataType::Text, true),
    (2, "h_int", DataType::Int, true),
    (3, "c_int", DataType::Int, false),
    (4, "c_dec", DataType::Decimal, false),
    (5, "c_bool", DataType::Bool, false),
    (6, "c_ts", DataType::Timestamp, false),
    (7, "c_text", DataType::Text, false),
    (8, "c_json", DataType::Json, false),
    (9, "c_int2", DataType::Int, false),
    (10, "c_dec2", DataType::Decimal, false),
];

const LOAD: &str = r#"
-- A bulk load: no per-row foreign-key triggers (the rows are consistent by construction).
SET session_replication_role = replica;
INSERT INTO attributes (attribute_id, tenant_id, entity_type, name, data_type, is_hot) VALUES
  (1, 1, 'item', 'h_text', 'text', true), (2, 1, 'item', 'h_int', 'int', true),
  (3, 1, 'item', 'c_int', 'int', false), (4, 1, 'item', 'c_dec', 'decimal', false),
  (5, 1, 'item', 'c_bool', 'bool', false), (6, 1, 'item', 'c_ts', 'timestamp', false),
  (7, 1, 'item', 'c_text', 'text', false), (8, 1, 'item', 'c_json', 'json', false),
  (9, 1, 'item', 'c_int2', 'int', false), (10, 1, 'item', 'c_dec2', 'decimal', false);
INSERT INTO entities (entity_id, tenant_id, entity_type, hot_attributes)
  SELECT i, 1, 'item', jsonb_build_object('h_text', 'name-' || i, 'h_int', i * 7) FROM generate_series(1, $N) i;
INSERT INTO entity_values (entity_id, attribute_id, tenant_id, value_int)
  SELECT i, 3, 1, i % 1000 FROM generate_series(1, $N) i;
INSERT INTO entity_values (entity_id, attribute_id, tenant_id, value_decimal)
  SELECT i, 4, 1, (i % 100000) / 100.0 FROM generate_series(1, $N) i;
INSERT INTO entity_values (entity_id, attribute_id, tenant_id, value_bool)
  SELECT i, 5, 1, i % 2 = 0 FROM generate_series(1, $N) i;
INSERT INTO entity_values (entity_id, attribute_id, tenant_id, value_timestamp)
  SELECT i, 6, 1, timestamptz '2024-01-01 00:00:00+00' + i * interval '1 second' FROM generate_series(1, $N) i;
INSERT INTO entity_values (entity_id, attribute_id, tenant_id, value_text)
  SELECT i, 7, 1, 'text-' || (i * 31 % 1000003) FROM generate_series(1, $N) i;
INSERT INTO entity_values (entity_id, attribute_id, tenant_id, value_json)
  SELECT i, 8, 1, jsonb_build_object('k', i, 'tags', jsonb_build_array('a', i % 7)) FROM generate_series(1, $N) i;
INSERT INTO entity_values (entity_id, attribute_id, tenant_id, value_int)
  SELECT i, 9, 1, i * 3 FROM generate_series(1, $N) i;
INSERT INTO entity_values (entity_id, attribute_id, tenant_id, value_decimal)
  SELECT i, 10, 1, (i % 997) * 1.125 FROM generate_series(1, $N) i;
"#;

/// The current-state batch of ids `[lo, hi]`, with the values LOAD gives them.
fn batch(lo: i64, hi: i64, wal: i64) -> RecordBatch {
    let ids: Vec<i64> = (lo..=hi).collect();
    let n = ids.len();
    let mut fields = vec![
        Field::new(columns::TENANT_ID, ArrowType::Int64, false),
        Field::new(columns::ENTITY_ID, ArrowType::Int64, false),
    ];
    let mut arrays: Vec<ArrayRef> =
        vec![Arc::new(Int64Array::from(vec![1; n])), Arc::new(Int64Array::from(ids.clone()))];
    for (id, name, dt, _) in ATTRS {
        fields.push(columns::attribute_field(name, id, dt, SCALE));
        let e = 10i128.pow(SCALE);
        let a: ArrayRef = match name {
            "h_text" => Arc::new(ids.iter().map(|i| Some(format!("name-{i}"))).collect::<arrow::array::StringArray>()),
            "h_int" => Arc::new(Int64Array::from_iter_values(ids.iter().map(|i| i * 7))),
            "c_int" => Arc::new(Int64Array::from_iter_values(ids.iter().map(|i| i % 1000))),
            "c_int2" => Arc::new(Int64Array::from_iter_values(ids.iter().map(|i| i * 3))),
            "c_dec" | "c_dec2" => {
                let mut b = Decimal128Builder::new().with_precision_and_scale(38, SCALE as i8).unwrap();
                for i in &ids {
                    b.append_value(if name == "c_dec" {
                        (*i % 100_000) as i128 * e / 100
                    } else {
                        (*i % 997) as i128 * 1125 * e / 1000
                    });
                }
                Arc::new(b.finish())
            }
            "c_bool" => {
                let mut b = BooleanBuilder::new();
                ids.iter().for_each(|i| b.append_value(i % 2 == 0));
                Arc::new(b.finish())
            }
            "c_ts" => {
                let mut b = TimestampMicrosecondBuilder::new().with_timezone("UTC");
                ids.iter().for_each(|i| b.append_value(TS0 + i * 1_000_000));
                Arc::new(b.finish())
            }
            "c_text" => {
                let mut b = StringBuilder::new();
                ids.iter().for_each(|i| b.append_value(format!("text-{}", i * 31 % 1_000_003)));
                Arc::new(b.finish())
            }
            "c_json" => {
                let mut b = StringBuilder::new();
                ids.iter().for_each(|i| b.append_value(format!(r#"{{"k": {i}, "tags": ["a", {}]}}"#, i % 7)));
                Arc::new(b.finish())
            }
            _ => unreachable!("every attribute has a generator"),
        };
        arrays.push(a);
    }
    fields.extend([
        Field::new(columns::COMMIT_LSN, ArrowType::Int64, false),
        Field::new(columns::LSN, ArrowType::Int64, false),
        Field::new(columns::SOURCE_TS, columns::timestamp_type(), true),
    ]);
    arrays.push(Arc::new(Int64Array::from(vec![wal; n])));
    arrays.push(Arc::new(Int64Array::from(vec![wal; n])));
    let mut ts = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    (0..n).for_each(|_| ts.append_value(TS0));
    arrays.push(Arc::new(ts.finish()));
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).unwrap()
}

async fn build_lake(dir: &std::path::Path, entities: i64, wal: i64) {
    let lake = Lake::open(dir.to_str().unwrap(), &S3Options::default()).unwrap();
    lake.ensure_settings(RANGE, SCALE).await.unwrap();
    let mut catalog = Catalog::default();
    for (id, name, dt, hot) in ATTRS {
        catalog.upsert(Attribute {
            attribute_id: id,
            tenant_id: 1,
            entity_type: "item".into(),
            name: name.into(),
            data_type: dt,
            is_hot: hot,
        });
    }
    lake.put(&Lake::meta_path("catalog.json"), bytes::Bytes::from(catalog.to_json())).await.unwrap();
    let stream = "file-bench.jsonl";
    let last_seq = entities * 9;
    let mut lo = 0;
    while lo <= entities {
        let hi = lo + RANGE - 1;
        let b = batch(lo.max(1), hi.min(entities), wal);
        let path = Lake::current_path("item", 1, lo, hi);
        let wm = serde_json::json!({ stream: last_seq }).to_string();
        let bytes =
            eavlake::sink::parquet::encode(path.as_ref(), &[b], vec![(columns::META_WATERMARKS.to_string(), wm)])
                .unwrap();
        lake.put(&path, bytes).await.unwrap();
        lo += RANGE;
    }
    let at = eavlake::position::SourcePosition {
        commit_lsn: eavlake::position::Lsn(wal as u64),
        lsn: eavlake::position::Lsn(wal as u64),
    };
    let mark = eavlake::dedup::Mark::new(at, None);
    let record = eavlake::progress::StreamProgress::new(stream.into(), last_seq, Some(&mark), Some(TS0));
    lake.put(
        &Lake::meta_path(&format!("progress/{stream}.json")),
        bytes::Bytes::from(serde_json::to_vec(&record).unwrap()),
    )
    .await
    .unwrap();
}

/// Runs the CLI; returns (seconds, exit code, stdout).
fn run(pg: &str, lake: &str) -> (f64, i32, String) {
    let t = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_eavlake"))
        .args(["reconcile", "--postgres", pg, "--lake", lake, "--lag-wait", "0", "--format", "json"])
        // EAVLAKE_BENCH_LOG=eavlake=debug shows where the time goes (the child's log on stderr).
        .env("RUST_LOG", std::env::var("EAVLAKE_BENCH_LOG").unwrap_or_else(|_| "warn".into()))
        .output()
        .unwrap();
    if std::env::var("EAVLAKE_BENCH_LOG").is_ok() {
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
    }
    let secs = t.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.code() == Some(2) {
        panic!("reconcile failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    (secs, out.status.code().unwrap_or(-1), stdout)
}

fn peak_rss_children_mib() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    ru.ru_maxrss as f64 / 1024.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let entities: i64 = std::env::var("EAVLAKE_BENCH_ENTITIES").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let pg = stack::Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let lake_dir = dir.path().join("lake");
    let lake = lake_dir.to_str().unwrap().to_string();
    let client = rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(&pg.url, NoTls).await.unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client
    });
    let t = Instant::now();
    rt.block_on(client.batch_execute(&LOAD.replace("$N", &entities.to_string()))).unwrap();
    // Outside the load's implicit transaction: VACUUM refuses to run in one.
    rt.block_on(client.batch_execute("VACUUM ANALYZE")).unwrap();
    let wal: i64 =
        rt.block_on(client.query_one("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint", &[])).unwrap().get(0);
    eprintln!("Postgres loaded: {entities} entities × 10 attributes in {:.1} s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    rt.block_on(build_lake(&lake_dir, entities, wal));
    eprintln!("lake written in {:.1} s", t.elapsed().as_secs_f64());

    let mut clean = Vec::new();
    for _ in 0..3 {
        let (secs, code, out) = run(&pg.url, &lake);
        assert_eq!(code, 0, "a clean lake must agree: {out}");
        clean.push(secs);
    }
    // 100 drifted entities, spread over the id space.
    let step = entities / 101;
    let ids: Vec<i64> = (1..=100).map(|k| k * step).collect();
    let (changed, rest) = ids.split_at(40);
    let (deleted, inserted) = rest.split_at(30);
    rt.block_on(async {
        client
            .execute(
                "UPDATE entity_values SET value_int = -1 WHERE attribute_id = 3 AND entity_id = ANY($1)",
                &[&changed],
            )
            .await
            .unwrap();
        client.execute("DELETE FROM entities WHERE entity_id = ANY($1)", &[&deleted]).await.unwrap();
        // New ids beside existing ones (inserted behind the capture's back: missing in the lake).
        let new: Vec<i64> = inserted.iter().map(|i| i + entities + 1).collect();
        client
            .execute(
                "INSERT INTO entities (entity_id, tenant_id, entity_type, hot_attributes)
                 SELECT i, 1, 'item', jsonb_build_object('h_text', 'new') FROM unnest($1::bigint[]) i",
                &[&new],
            )
            .await
            .unwrap();
    });
    let mut drift = Vec::new();
    for _ in 0..3 {
        let (secs, code, out) = run(&pg.url, &lake);
        assert_eq!(code, 1, "drift must be found");
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        let count = |k: &str| json[k].as_array().map_or(0, |a| a.len());
        assert_eq!(
            (count("different"), count("extra_in_lake"), count("missing_in_lake")),
            (40, 30, 30),
            "exactly the 100 drifted entities"
        );
        drift.push(secs);
    }
    let (c, d) = (median(clean), median(drift));
    println!(
        "reconcile {entities} entities × 10 attributes: clean {c:.2} s (median of 3), 100 drifted {d:.2} s ({:.2}× clean), peak RSS {:.0} MiB",
        d / c,
        peak_rss_children_mib()
    );
}
