//! `Pivot`: narrow changes of `entities` and `entity_values` folded into wide rows, one per
//! entity per transaction, and the Arrow batches they end up in.

use super::*;
use crate::decode::{Decimal, SourceMeta};
use crate::position::{Lsn, SourcePosition};
use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType as ArrowType, Int64Type, TimeUnit, TimestampMicrosecondType};
use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};

// ---------------------------------------------------------------------------------------------
// Catalog: tenant 1's `customer` has six hot and six cold attributes, one of each type; tenant 2's
// `customer` and tenant 1's `order` have one cold attribute each.

fn attr(id: i64, tenant_id: i64, entity_type: &str, name: &str, data_type: DataType, is_hot: bool) -> Attribute {
    Attribute {
        attribute_id: id,
        tenant_id,
        entity_type: Arc::from(entity_type),
        name: Arc::from(name),
        data_type,
        is_hot,
    }
}

fn catalog() -> Catalog {
    let mut c = Catalog::default();
    for a in [
        attr(1, 1, "customer", "status", DataType::Text, true),
        attr(2, 1, "customer", "score", DataType::Int, true),
        attr(3, 1, "customer", "balance", DataType::Decimal, true),
        attr(4, 1, "customer", "vip", DataType::Bool, true),
        attr(5, 1, "customer", "last_seen", DataType::Timestamp, true),
        attr(6, 1, "customer", "prefs", DataType::Json, true),
        attr(10, 1, "customer", "name", DataType::Text, false),
        attr(11, 1, "customer", "age", DataType::Int, false),
        attr(12, 1, "customer", "credit", DataType::Decimal, false),
        attr(13, 1, "customer", "active", DataType::Bool, false),
        attr(14, 1, "customer", "born", DataType::Timestamp, false),
        attr(15, 1, "customer", "profile", DataType::Json, false),
        attr(20, 2, "customer", "nickname", DataType::Text, false),
        attr(30, 1, "order", "total", DataType::Decimal, false),
    ] {
        c.upsert(a);
    }
    c
}

// ---------------------------------------------------------------------------------------------
// Transactions and changes.

/// 2024-03-01T10:00:00Z in µs.
const DAY1: i64 = 1_709_287_200_000_000;
/// 2024-03-02T08:30:00Z in µs.
const DAY2: i64 = 1_709_368_200_000_000;

/// A source transaction. A change's LSN is `commit_lsn + its seq`.
#[derive(Clone, Copy)]
struct Tx {
    id: Option<&'static str>,
    tx_id: i64,
    commit_lsn: u64,
    ts: i64,
    snapshot: bool,
}

const T1: Tx = Tx { id: Some("771:20100"), tx_id: 771, commit_lsn: 20_000, ts: DAY1, snapshot: false };
const T2: Tx = Tx { id: Some("772:20300"), tx_id: 772, commit_lsn: 20_200, ts: DAY1 + 60_000_000, snapshot: false };
const T3: Tx = Tx { id: Some("773:20500"), tx_id: 773, commit_lsn: 20_400, ts: DAY2, snapshot: false };
/// Snapshot reads: no transaction block, all at the snapshot LSN.
const SNAP: Tx = Tx { id: None, tx_id: 768, commit_lsn: 19_000, ts: DAY1 - 3_600_000_000, snapshot: true };

impl Tx {
    fn at(self, ts: i64) -> Tx {
        Tx { ts, ..self }
    }

    fn source(&self, seq: i64) -> SourceMeta {
        SourceMeta {
            position: SourcePosition { commit_lsn: Lsn(self.commit_lsn), lsn: Lsn(self.commit_lsn + seq as u64) },
            tx_id: Some(self.tx_id),
            commit_time_us: Some(self.ts),
            snapshot: self.snapshot,
        }
    }
}

/// A pivot and its catalog, fed changes numbered 1, 2, 3… in stream order.
struct Feed {
    pivot: Pivot,
    catalog: Catalog,
    seq: i64,
}

impl Feed {
    fn new() -> Feed {
        Feed::with_limit(10_000)
    }

    fn with_limit(max_pending_entities: usize) -> Feed {
        Feed { pivot: Pivot::new(9, max_pending_entities), catalog: catalog(), seq: 0 }
    }

    fn apply(&mut self, tx: Tx, op: Op, mut row: RowChange) -> Result<(), PivotError> {
        self.seq += 1;
        let origin = Origin { seq: self.seq, kafka: None };
        self.pivot.apply(&self.catalog, op, &tx.source(self.seq), tx.id, &mut row, &origin).map(|_| ())
    }

    fn ok(&mut self, tx: Tx, op: Op, row: RowChange) {
        let seq = self.seq + 1;
        if let Err(e) = self.apply(tx, op, row) {
            panic!("change {seq} failed: {e}");
        }
    }

    fn end(&mut self) {
        self.pivot.end_transaction(&self.catalog);
    }

    fn finish(&mut self) -> Vec<FinishedBatch> {
        self.end();
        self.pivot.batches.finish().expect("batches sorted")
    }

    /// Ends the transaction and returns the only batch.
    fn single(&mut self) -> RecordBatch {
        let batches = self.finish();
        assert_eq!(batches.len(), 1, "{batches:?}");
        batches.into_iter().next().unwrap().batch
    }
}

/// An `entities` image of a `customer` of tenant 1.
fn customer(id: i64, hot_attributes: Field<String>) -> EntityRow {
    EntityRow {
        entity_id: id,
        tenant_id: Some(1),
        entity_type: Some("customer".into()),
        hot_attributes,
        is_deleted: false,
    }
}

fn hot(json: &str) -> Field<String> {
    Field::Value(json.to_string())
}

fn deleted(e: EntityRow) -> EntityRow {
    EntityRow { is_deleted: true, ..e }
}

fn entity_insert(after: EntityRow) -> RowChange {
    RowChange::Entity { before: None, after: Some(after) }
}

fn entity_update(before: Option<EntityRow>, after: EntityRow) -> RowChange {
    RowChange::Entity { before, after: Some(after) }
}

fn entity_delete(before: EntityRow) -> RowChange {
    RowChange::Entity { before: Some(before), after: None }
}

/// An `entity_values` row of tenant 1 with every typed column null.
fn value(entity_id: i64, attribute_id: i64) -> ValueRow {
    ValueRow {
        entity_id,
        attribute_id,
        tenant_id: Some(1),
        value_text: Field::Null,
        value_int: None,
        value_decimal: None,
        value_bool: None,
        value_timestamp: None,
        value_json: Field::Null,
    }
}

fn text(entity_id: i64, attribute_id: i64, s: &str) -> ValueRow {
    ValueRow { value_text: Field::Value(s.into()), ..value(entity_id, attribute_id) }
}

fn int(entity_id: i64, attribute_id: i64, v: i64) -> ValueRow {
    ValueRow { value_int: Some(v), ..value(entity_id, attribute_id) }
}

fn value_set(after: ValueRow) -> RowChange {
    RowChange::Value { before: None, after: Some(after) }
}

fn value_update(before: ValueRow, after: ValueRow) -> RowChange {
    RowChange::Value { before: Some(before), after: Some(after) }
}

fn value_delete(before: ValueRow) -> RowChange {
    RowChange::Value { before: Some(before), after: None }
}

// ---------------------------------------------------------------------------------------------
// Reading batches.

fn names(batch: &RecordBatch) -> Vec<String> {
    batch.schema().fields().iter().map(|f| f.name().clone()).collect()
}

/// The cells of one column as text: nulls as `null`, timestamps as RFC 3339 in UTC (`Z`),
/// decimals at their scale, lists as `[a, b]`.
fn cells(batch: &RecordBatch, column: &str) -> Vec<String> {
    let col = batch.column_by_name(column).unwrap_or_else(|| panic!("no column {column} in {:?}", names(batch)));
    if let ArrowType::Timestamp(TimeUnit::Microsecond, _) = col.data_type() {
        // (Arrow's own formatter needs chrono-tz for named zones.)
        let ts = col.as_primitive::<TimestampMicrosecondType>();
        return (0..ts.len())
            .map(|i| match ts.is_null(i) {
                true => "null".to_string(),
                false => chrono::DateTime::from_timestamp_micros(ts.value(i))
                    .unwrap()
                    .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            })
            .collect();
    }
    let options = FormatOptions::new().with_null("null");
    let f = ArrayFormatter::try_new(col.as_ref(), &options).unwrap();
    (0..col.len()).map(|i| f.value(i).to_string()).collect()
}

/// Each row as `col=value, …` over `columns` (see [`cells`]).
fn show(batch: &RecordBatch, columns: &[&str]) -> Vec<String> {
    let cols: Vec<Vec<String>> = columns.iter().map(|c| cells(batch, c)).collect();
    (0..batch.num_rows())
        .map(|i| columns.iter().zip(&cols).map(|(c, v)| format!("{c}={}", v[i])).collect::<Vec<_>>().join(", "))
        .collect()
}

/// Every column of every row.
fn show_all(batch: &RecordBatch) -> Vec<String> {
    let names = names(batch);
    let columns: Vec<&str> = names.iter().map(String::as_str).collect();
    show(batch, &columns)
}

fn ints(batch: &RecordBatch, column: &str) -> Vec<i64> {
    batch.column_by_name(column).unwrap().as_primitive::<Int64Type>().values().to_vec()
}

fn arrow_type(batch: &RecordBatch, column: &str) -> ArrowType {
    batch.schema().field_with_name(column).unwrap().data_type().clone()
}

fn error_of(result: Result<(), PivotError>) -> PivotError {
    match result {
        Err(e) => e,
        Ok(()) => panic!("the change was accepted"),
    }
}

// ---------------------------------------------------------------------------------------------
// Folding.

#[test]
fn one_transaction_folds_entity_and_values_into_one_row() {
    let mut f = Feed::new();
    f.ok(T1, Op::Create, entity_insert(customer(1001, hot(r#"{"score": 5, "status": "new"}"#))));
    f.ok(T1, Op::Create, value_set(text(1001, 10, "Ada")));
    f.ok(T1, Op::Create, value_set(int(1001, 11, 30)));
    // The same attribute again: the last change wins.
    f.ok(T1, Op::Update, value_update(text(1001, 10, "Ada"), text(1001, 10, "Ada L.")));
    let batches = f.finish();
    assert_eq!(batches.len(), 1);
    assert_eq!(
        (&*batches[0].entity_type, batches[0].tenant_id, batches[0].date.as_str()),
        ("customer", 1, "2024-03-01")
    );
    let batch = &batches[0].batch;
    assert_eq!(
        names(batch),
        [
            "tenant_id",
            "entity_id",
            "status",
            "score",
            "balance",
            "vip",
            "last_seen",
            "prefs",
            "name",
            "age",
            "credit",
            "active",
            "born",
            "profile",
            "_op",
            "_changed",
            "_entity_changed",
            "_logical_delete",
            "_commit_lsn",
            "_lsn",
            "_tx_id",
            "_source_ts",
            "_seq",
            "_kafka_topic",
            "_kafka_partition",
            "_kafka_offset"
        ]
    );
    assert_eq!(
        show_all(batch),
        ["tenant_id=1, entity_id=1001, status=new, score=5, balance=null, vip=null, last_seen=null, prefs=null, \
          name=Ada L., age=30, credit=null, active=null, born=null, profile=null, _op=c, \
          _changed=[status, score, balance, vip, last_seen, prefs, name, age], _entity_changed=true, \
          _logical_delete=false, _commit_lsn=20000, _lsn=20004, _tx_id=771, _source_ts=2024-03-01T10:00:00Z, _seq=1, \
          _kafka_topic=null, _kafka_partition=null, _kafka_offset=null"]
    );
}

#[test]
fn two_transactions_give_two_rows() {
    let mut f = Feed::new();
    f.ok(T1, Op::Create, entity_insert(customer(1001, hot("{}"))));
    f.ok(T1, Op::Create, value_set(text(1001, 10, "Ada")));
    f.ok(T2, Op::Update, value_update(int(1001, 11, 30), int(1001, 11, 31)));
    let batch = f.single();
    assert_eq!(
        show(&batch, &["entity_id", "name", "age", "_op", "_changed", "_entity_changed", "_tx_id", "_lsn", "_seq"]),
        [
            "entity_id=1001, name=Ada, age=null, _op=c, _changed=[status, score, balance, vip, last_seen, prefs, name], \
             _entity_changed=true, _tx_id=771, _lsn=20002, _seq=1",
            "entity_id=1001, name=null, age=31, _op=u, _changed=[age], _entity_changed=false, _tx_id=772, \
             _lsn=20203, _seq=3",
        ]
    );
}

/// Without transaction metadata, `source.txId` and the commit LSN tell transactions apart.
#[test]
fn transactions_without_metadata_are_told_apart_by_tx_id_and_commit_lsn() {
    let mut f = Feed::new();
    let a = Tx { id: None, ..T1 };
    let b = Tx { id: None, ..T2 };
    f.ok(a, Op::Update, value_set(text(1001, 10, "Ada")));
    f.ok(a, Op::Update, value_set(int(1001, 11, 30)));
    f.ok(b, Op::Update, value_set(int(1001, 11, 31)));
    let batch = f.single();
    assert_eq!(
        show(&batch, &["entity_id", "name", "age", "_changed", "_tx_id", "_commit_lsn"]),
        [
            "entity_id=1001, name=Ada, age=30, _changed=[name, age], _tx_id=771, _commit_lsn=20000",
            "entity_id=1001, name=null, age=31, _changed=[age], _tx_id=772, _commit_lsn=20200",
        ]
    );
}

#[test]
fn hot_attributes_are_typed_by_the_catalog() {
    let mut f = Feed::new();
    f.ok(
        T1,
        Op::Create,
        entity_insert(customer(
            1001,
            hot(r#"{"vip": true, "prefs": {"tags": [1, 2], "theme": "dark"}, "score": 42, "status": "gold", "balance": 12.5, "last_seen": "2024-03-01T10:00:00.123456Z"}"#),
        )),
    );
    f.ok(T1, Op::Create, entity_insert(customer(1002, hot(r#"{"vip": false, "score": -3, "balance": 7}"#))));
    f.ok(T1, Op::Create, entity_insert(customer(1003, hot(r#"{"balance": "-0.125", "last_seen": 1709287200000001}"#))));
    f.ok(T1, Op::Create, entity_insert(customer(1004, hot(r#"{"status": null, "prefs": "just text"}"#))));
    let batch = f.single();
    assert_eq!(
        show(&batch, &["entity_id", "status", "score", "balance", "vip", "last_seen", "prefs"]),
        [
            r#"entity_id=1001, status=gold, score=42, balance=12.500000000, vip=true, last_seen=2024-03-01T10:00:00.123456Z, prefs={"tags": [1, 2], "theme": "dark"}"#,
            "entity_id=1002, status=null, score=-3, balance=7.000000000, vip=false, last_seen=null, prefs=null",
            "entity_id=1003, status=null, score=null, balance=-0.125000000, vip=null, last_seen=2024-03-01T10:00:00.000001Z, prefs=null",
            r#"entity_id=1004, status=null, score=null, balance=null, vip=null, last_seen=null, prefs="just text""#,
        ]
    );
    assert_eq!(arrow_type(&batch, "status"), ArrowType::Utf8);
    assert_eq!(arrow_type(&batch, "score"), ArrowType::Int64);
    assert_eq!(arrow_type(&batch, "balance"), ArrowType::Decimal128(38, 9));
    assert_eq!(arrow_type(&batch, "vip"), ArrowType::Boolean);
    assert_eq!(arrow_type(&batch, "last_seen"), ArrowType::Timestamp(TimeUnit::Microsecond, Some(Arc::from("UTC"))));
    assert_eq!(arrow_type(&batch, "prefs"), ArrowType::Utf8);
    let balance = batch.column_by_name("balance").unwrap().as_primitive::<arrow::datatypes::Decimal128Type>();
    assert_eq!(balance.value(0), 12_500_000_000);
    assert_eq!(balance.value(2), -125_000_000);
}

#[test]
fn cold_values_are_typed_by_the_catalog() {
    let mut f = Feed::new();
    f.ok(T1, Op::Create, value_set(text(1001, 10, "Ada")));
    f.ok(T1, Op::Create, value_set(int(1001, 11, -30)));
    f.ok(
        T1,
        Op::Create,
        value_set(ValueRow { value_decimal: Some(Decimal { unscaled: -1234, scale: 2 }), ..value(1001, 12) }),
    );
    f.ok(T1, Op::Create, value_set(ValueRow { value_bool: Some(false), ..value(1001, 13) }));
    f.ok(T1, Op::Create, value_set(ValueRow { value_timestamp: Some(DAY1 + 5), ..value(1001, 14) }));
    f.ok(T1, Op::Create, value_set(ValueRow { value_json: Field::Value(r#"{"a": [1]}"#.into()), ..value(1001, 15) }));
    let batch = f.single();
    assert_eq!(
        show(&batch, &["name", "age", "credit", "active", "born", "profile", "_changed"]),
        [
            r#"name=Ada, age=-30, credit=-12.340000000, active=false, born=2024-03-01T10:00:00.000005Z, profile={"a": [1]}, _changed=[name, age, credit, active, born, profile]"#
        ]
    );
}

#[test]
fn before_image_lists_only_the_hot_attributes_that_differ() {
    let mut f = Feed::new();
    let before = customer(1001, hot(r#"{"vip": false, "score": 5, "status": "new"}"#));
    let after = customer(1001, hot(r#"{"score": 5, "status": "gold", "balance": 1.5}"#));
    f.ok(T1, Op::Update, entity_update(Some(before), after));
    let batch = f.single();
    assert_eq!(
        show(&batch, &["status", "score", "balance", "vip", "_op", "_changed"]),
        // score is unchanged (its cell is null but it is not listed); vip was removed: set to null.
        ["status=gold, score=null, balance=1.500000000, vip=null, _op=u, _changed=[status, balance, vip]"]
    );
}

/// Without a before image the JSONB is the whole hot state: absent keys are set to null.
#[test]
fn without_before_image_absent_hot_keys_are_set_to_null() {
    let mut f = Feed::new();
    f.ok(T1, Op::Update, entity_update(None, customer(1001, hot(r#"{"status": "gold"}"#))));
    f.ok(T2, Op::Update, entity_update(None, customer(1001, Field::Null)));
    let batch = f.single();
    assert_eq!(
        show(&batch, &["status", "score", "_op", "_changed"]),
        [
            "status=gold, score=null, _op=u, _changed=[status, score, balance, vip, last_seen, prefs]",
            "status=null, score=null, _op=u, _changed=[status, score, balance, vip, last_seen, prefs]",
        ]
    );
}

/// A logically deleted entity coming back has all its hot attributes set anew.
#[test]
fn undeleted_entity_sets_every_hot_attribute() {
    let mut f = Feed::new();
    let before = deleted(customer(1001, hot(r#"{"status": "new"}"#)));
    f.ok(T1, Op::Update, entity_update(Some(before), customer(1001, hot(r#"{"status": "new"}"#))));
    let batch = f.single();
    assert_eq!(
        show(&batch, &["status", "_op", "_changed"]),
        ["status=new, _op=u, _changed=[status, score, balance, vip, last_seen, prefs]"]
    );
}

#[test]
fn toast_placeholders_leave_attributes_untouched() {
    let mut f = Feed::new();
    f.ok(T1, Op::Update, entity_update(None, customer(1001, Field::Unavailable)));
    let toasted = ValueRow { value_text: Field::Unavailable, ..value(1001, 10) };
    f.ok(T1, Op::Update, value_update(toasted.clone(), toasted));
    let toasted = ValueRow { value_json: Field::Unavailable, ..value(1001, 15) };
    f.ok(T1, Op::Update, value_update(toasted.clone(), toasted));
    f.ok(T1, Op::Update, value_update(int(1001, 11, 30), int(1001, 11, 31)));
    // An entity whose only change is a TOASTed value: a row that changes nothing.
    let toasted = ValueRow { value_text: Field::Unavailable, ..value(1002, 10) };
    f.ok(T1, Op::Update, value_update(toasted.clone(), toasted));
    let batch = f.single();
    assert_eq!(
        show(&batch, &["entity_id", "status", "name", "age", "profile", "_op", "_changed", "_entity_changed"]),
        [
            "entity_id=1001, status=null, name=null, age=31, profile=null, _op=u, _changed=[age], _entity_changed=true",
            "entity_id=1002, status=null, name=null, age=null, profile=null, _op=u, _changed=[], _entity_changed=false",
        ]
    );
}

#[test]
fn value_delete_sets_the_attribute_to_null_and_lists_it() {
    let mut f = Feed::new();
    f.ok(T1, Op::Delete, value_delete(text(1001, 10, "Ada")));
    f.ok(T1, Op::Delete, value_delete(int(1001, 11, 30)));
    let batch = f.single();
    assert_eq!(
        show(&batch, &["entity_id", "name", "age", "_op", "_changed", "_entity_changed"]),
        ["entity_id=1001, name=null, age=null, _op=u, _changed=[name, age], _entity_changed=false"]
    );
}

/// An update whose images name two rows (the topic keyed other than by the primary key) moves
/// the value: the old row is deleted, within the entity or across entities.
#[test]
fn value_update_that_changes_the_row_key_moves_the_value() {
    let mut f = Feed::new();
    f.ok(T1, Op::Update, value_set(text(1001, 10, "Ada")));
    f.ok(T1, Op::Update, value_set(text(1002, 10, "Bo")));
    f.end();
    f.ok(T2, Op::Update, value_update(text(1001, 10, "Ada"), int(1001, 11, 41)));
    f.ok(T2, Op::Update, value_update(text(1002, 10, "Bo"), text(1003, 10, "Bo")));
    let batch = f.single();
    assert_eq!(
        show(&batch, &["entity_id", "name", "age", "_op", "_changed", "_tx_id"]),
        [
            "entity_id=1001, name=Ada, age=null, _op=u, _changed=[name], _tx_id=771",
            "entity_id=1001, name=null, age=41, _op=u, _changed=[age, name], _tx_id=772",
            "entity_id=1002, name=Bo, age=null, _op=u, _changed=[name], _tx_id=771",
            "entity_id=1002, name=null, age=null, _op=u, _changed=[name], _tx_id=772",
            "entity_id=1003, name=Bo, age=null, _op=u, _changed=[name], _tx_id=772",
        ]
    );
}

/// A move that cannot be applied whole is not applied at all, and is handed back as it came,
/// so that a move parked for the catalog applies whole once the attribute is known.
#[test]
fn value_move_refused_or_parked_changes_nothing() {
    let mut f = Feed::new();
    let mut unknown_before = value_update(text(1001, 99, "Ada"), text(1001, 10, "Ada"));
    let origin = Origin { seq: 1, kafka: None };
    let e = f.pivot.apply(&f.catalog, Op::Update, &T1.source(1), T1.id, &mut unknown_before, &origin);
    assert!(matches!(e, Err(PivotError::UnknownAttribute { .. })), "{e:?}");
    let mut unknown_after = value_update(text(1001, 10, "Ada"), text(1001, 98, "Ada"));
    let e = f.pivot.apply(&f.catalog, Op::Update, &T1.source(2), T1.id, &mut unknown_after, &origin);
    assert!(matches!(e, Err(ref e) if e.may_resolve()), "{e:?}");
    assert!(f.finish().is_empty(), "nothing applied");
    let RowChange::Value { before: Some(b), after: Some(a) } = &unknown_after else { panic!("{unknown_after:?}") };
    assert_eq!((b.attribute_id, a.attribute_id, &a.value_text), (10, 98, &Field::Value("Ada".into())));
    f.catalog.upsert(attr(98, 1, "customer", "alias", DataType::Text, false));
    f.pivot.apply(&f.catalog, Op::Update, &T1.source(2), T1.id, &mut unknown_after, &origin).expect("applies whole");
    assert_eq!(
        show(&f.single(), &["entity_id", "name", "alias", "_changed"]),
        ["entity_id=1001, name=null, alias=Ada, _changed=[alias, name]"]
    );
}

/// `is_deleted` set to true: a delete, whatever the hot attributes say, marked logical. The
/// entity's values stay in the store: those its transaction set, before or after the delete,
/// are kept in the row (compaction keeps them for an un-delete).
#[test]
fn logical_delete_is_op_d_with_the_values_of_its_transaction() {
    let mut f = Feed::new();
    f.ok(T1, Op::Update, value_set(text(1001, 10, "Ada")));
    let before = customer(1001, hot(r#"{"status": "new"}"#));
    f.ok(T1, Op::Update, entity_update(Some(before.clone()), deleted(before)));
    f.ok(T1, Op::Update, value_set(int(1001, 11, 30)));
    let before = customer(1002, hot(r#"{"status": "new"}"#));
    f.ok(T1, Op::Update, entity_update(Some(before.clone()), deleted(before)));
    let batch = f.single();
    assert_eq!(
        show(&batch, &["entity_id", "status", "name", "age", "_op", "_changed", "_logical_delete", "_lsn"]),
        [
            "entity_id=1001, status=null, name=Ada, age=30, _op=d, _changed=[name, age], _logical_delete=true, \
             _lsn=20003",
            "entity_id=1002, status=null, name=null, age=null, _op=d, _changed=null, _logical_delete=true, \
             _lsn=20004",
        ]
    );
}

/// ON DELETE CASCADE: the entity's values are deleted after it, in the same transaction.
#[test]
fn physical_delete_with_cascaded_value_deletes_stays_a_delete() {
    let mut f = Feed::new();
    f.ok(T1, Op::Update, value_set(text(1001, 10, "Ada")));
    f.ok(T1, Op::Delete, entity_delete(customer(1001, hot(r#"{"status": "new"}"#))));
    f.ok(T1, Op::Delete, value_delete(text(1001, 10, "Ada")));
    f.ok(T1, Op::Delete, value_delete(int(1001, 11, 30)));
    let batch = f.single();
    assert_eq!(
        show(&batch, &["entity_id", "status", "name", "age", "_op", "_changed", "_logical_delete", "_lsn", "_seq"]),
        ["entity_id=1001, status=null, name=null, age=null, _op=d, _changed=null, _logical_delete=false, _lsn=20004, \
          _seq=1"]
    );
}

#[test]
fn entity_deleted_and_created_again_in_one_transaction_is_a_create() {
    let mut f = Feed::new();
    f.ok(T1, Op::Delete, entity_delete(customer(1001, hot(r#"{"status": "old"}"#))));
    f.ok(T1, Op::Create, entity_insert(customer(1001, hot(r#"{"status": "new"}"#))));
    let batch = f.single();
    assert_eq!(
        show(&batch, &["status", "_op", "_changed"]),
        ["status=new, _op=c, _changed=[status, score, balance, vip, last_seen, prefs]"]
    );
}

#[test]
fn snapshot_rows_are_reads() {
    let mut f = Feed::new();
    f.ok(SNAP, Op::Read, entity_insert(customer(2001, hot(r#"{"score": 1}"#))));
    f.ok(SNAP, Op::Read, value_set(text(2001, 10, "Bo")));
    // Values only: the entity's own row comes on another topic.
    f.ok(SNAP, Op::Read, value_set(text(2002, 10, "Cy")));
    f.ok(SNAP, Op::Read, value_set(int(2002, 11, 40)));
    f.ok(SNAP, Op::Read, value_set(text(2001, 10, "Bea")));
    let batch = f.single();
    // A snapshot is one transaction of any size: only consecutive reads of one entity fold
    // into one row, so that progress can move during it.
    assert_eq!(
        show(&batch, &["entity_id", "score", "name", "age", "_op", "_entity_changed", "_commit_lsn", "_tx_id"]),
        [
            "entity_id=2001, score=1, name=Bo, age=null, _op=r, _entity_changed=true, _commit_lsn=19000, _tx_id=768",
            "entity_id=2001, score=null, name=Bea, age=null, _op=r, _entity_changed=false, _commit_lsn=19000, \
             _tx_id=768",
            "entity_id=2002, score=null, name=Cy, age=40, _op=r, _entity_changed=false, _commit_lsn=19000, _tx_id=768",
        ]
    );
}

#[test]
fn attribute_changes_are_left_to_the_catalog() {
    let mut f = Feed::new();
    let row = crate::decode::AttributeRow {
        attribute_id: 16,
        tenant_id: 1,
        entity_type: "customer".into(),
        name: "email".into(),
        data_type: DataType::Text,
        is_hot: false,
    };
    f.ok(T1, Op::Create, RowChange::Attribute { before: None, after: Some(row) });
    assert_eq!(f.pivot.pending_first_seq(), None);
    assert!(f.finish().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Changes that violate the catalog.

#[test]
fn unknown_attribute_id_is_unknown_attribute_and_may_resolve() {
    let mut f = Feed::new();
    let e = error_of(f.apply(T1, Op::Create, value_set(text(1001, 99, "x"))));
    assert_eq!(e, PivotError::UnknownAttribute { attribute: "id 99".into() });
    assert_eq!(e.reason(), "unknown_attribute");
    assert!(e.may_resolve());
    assert_eq!(e.to_string(), "attribute id 99 is not in the catalog");
}

#[test]
fn unknown_hot_key_is_unknown_attribute_and_may_resolve() {
    let mut f = Feed::new();
    let e = error_of(f.apply(T1, Op::Create, entity_insert(customer(1001, hot(r#"{"status": "a", "nick": "b"}"#)))));
    assert_eq!(e, PivotError::UnknownAttribute { attribute: "`nick` of customer".into() });
    assert_eq!(e.reason(), "unknown_attribute");
    assert!(e.may_resolve());
    assert_eq!(e.to_string(), "attribute `nick` of customer is not in the catalog");
}

/// The keys are checked before the values: an unknown key is what is reported even when a
/// known key's value has the wrong type too.
#[test]
fn unknown_hot_key_is_named_before_a_wrong_value() {
    let mut f = Feed::new();
    let e = error_of(f.apply(T1, Op::Create, entity_insert(customer(1001, hot(r#"{"status": 5, "nick": "b"}"#)))));
    assert_eq!(e, PivotError::UnknownAttribute { attribute: "`nick` of customer".into() });
    let e = error_of(f.apply(T1, Op::Create, entity_insert(customer(1002, hot(r#"{"status": 5}"#)))));
    assert_eq!(e.reason(), "type_mismatch");
}

#[test]
fn cold_attribute_as_a_hot_key_is_type_mismatch() {
    let mut f = Feed::new();
    let e = error_of(f.apply(T1, Op::Create, entity_insert(customer(1001, hot(r#"{"name": "Ada"}"#)))));
    assert_eq!(
        e,
        PivotError::TypeMismatch {
            attribute: "name".into(),
            expected: "a cold attribute (in entity_values)",
            found: "a key of hot_attributes".into()
        }
    );
    assert_eq!(e.reason(), "type_mismatch");
    assert!(!e.may_resolve());
}

#[test]
fn hot_attribute_as_an_entity_values_row_is_type_mismatch() {
    let mut f = Feed::new();
    let e = error_of(f.apply(T1, Op::Create, value_set(text(1001, 1, "gold"))));
    assert_eq!(
        e,
        PivotError::TypeMismatch {
            attribute: "status".into(),
            expected: "a hot attribute (in entities.hot_attributes)",
            found: "an entity_values row".into()
        }
    );
    assert_eq!(e.reason(), "type_mismatch");
    assert_eq!(
        e.to_string(),
        "attribute `status` is a hot attribute (in entities.hot_attributes) but the change carries an entity_values row"
    );
}

#[test]
fn value_in_the_wrong_typed_column_is_type_mismatch() {
    let mut f = Feed::new();
    let e = error_of(f.apply(T1, Op::Create, value_set(text(1001, 11, "thirty"))));
    assert_eq!(
        e,
        PivotError::TypeMismatch { attribute: "age".into(), expected: "int", found: "a value in value_text".into() }
    );
    assert_eq!(e.reason(), "type_mismatch");
    assert_eq!(e.to_string(), "attribute `age` is int but the change carries a value in value_text");
    // A value in the right column next to one in another is refused too.
    let both = ValueRow { value_bool: Some(true), ..int(1001, 11, 30) };
    let e = error_of(f.apply(T1, Op::Create, value_set(both)));
    assert_eq!(
        e,
        PivotError::TypeMismatch { attribute: "age".into(), expected: "int", found: "a value in value_bool".into() }
    );
}

#[test]
fn hot_value_of_the_wrong_type_is_type_mismatch() {
    let mut f = Feed::new();
    let e = error_of(f.apply(T1, Op::Create, entity_insert(customer(1001, hot(r#"{"score": "five"}"#)))));
    assert_eq!(e, PivotError::TypeMismatch { attribute: "score".into(), expected: "int", found: r#"`"five"`"#.into() });
    assert_eq!(e.to_string(), r#"attribute `score` is int but the change carries `"five"`"#);
    let e = error_of(f.apply(T1, Op::Create, entity_insert(customer(1001, hot(r#"{"vip": "yes"}"#)))));
    assert_eq!(e, PivotError::TypeMismatch { attribute: "vip".into(), expected: "bool", found: r#"`"yes"`"#.into() });
    let e = error_of(f.apply(T1, Op::Create, entity_insert(customer(1001, hot(r#"{"last_seen": "soon"}"#)))));
    assert_eq!(
        e,
        PivotError::TypeMismatch { attribute: "last_seen".into(), expected: "timestamp", found: r#"`"soon"`"#.into() }
    );
}

#[test]
fn decimal_with_too_many_fraction_digits_is_out_of_range() {
    let mut f = Feed::new();
    let credit = ValueRow { value_decimal: Some(Decimal { unscaled: 12_345, scale: 10 }), ..value(1001, 12) };
    let e = error_of(f.apply(T1, Op::Create, value_set(credit)));
    assert_eq!(
        e,
        PivotError::OutOfRange { attribute: "credit".into(), message: "value has more than 9 fraction digits".into() }
    );
    assert_eq!(e.reason(), "value_out_of_range");
    assert_eq!(e.to_string(), "value of attribute `credit`: value has more than 9 fraction digits");
    // Trailing zeros beyond the lake's scale lose nothing: accepted.
    let exact = ValueRow { value_decimal: Some(Decimal { unscaled: 12_340, scale: 10 }), ..value(1001, 12) };
    f.ok(T1, Op::Create, value_set(exact));
    assert_eq!(show(&f.single(), &["credit"]), ["credit=0.000001234"]);
}

#[test]
fn hot_decimal_with_too_many_fraction_digits_is_out_of_range() {
    let mut f = Feed::new();
    let e = error_of(f.apply(T1, Op::Create, entity_insert(customer(1001, hot(r#"{"balance": 1.0000000001}"#)))));
    assert_eq!(e.reason(), "value_out_of_range");
    assert_eq!(
        e,
        PivotError::OutOfRange { attribute: "balance".into(), message: "value has more than 9 fraction digits".into() }
    );
}

#[test]
fn value_of_another_tenants_attribute_is_tenant_mismatch() {
    let mut f = Feed::new();
    let row = ValueRow { tenant_id: Some(2), ..text(1001, 10, "Ada") };
    let e = error_of(f.apply(T1, Op::Create, value_set(row)));
    assert_eq!(e, PivotError::TenantMismatch { row: 2, what: "attribute `name` (10)".into(), other: 1 });
    assert_eq!(e.reason(), "tenant_mismatch");
    assert_eq!(e.to_string(), "row of tenant 2 refers to attribute `name` (10) of tenant 1");
}

#[test]
fn change_of_a_pending_entity_from_another_tenant_is_tenant_mismatch() {
    let mut f = Feed::new();
    f.ok(T1, Op::Create, entity_insert(customer(1001, hot("{}"))));
    let other = ValueRow { tenant_id: Some(2), ..text(1001, 20, "Al") };
    let e = error_of(f.apply(T1, Op::Create, value_set(other)));
    assert_eq!(e, PivotError::TenantMismatch { row: 2, what: "entity 1001".into(), other: 1 });
    assert_eq!(e.reason(), "tenant_mismatch");
    assert_eq!(e.to_string(), "row of tenant 2 refers to entity 1001 of tenant 1");
}

/// The entity was folded and handed over in an earlier transaction: a value row of another
/// tenant for it is still refused (the pivot remembers the entity's tenant), and leaves no row.
#[test]
fn value_of_an_entity_seen_earlier_under_another_tenant_is_tenant_mismatch() {
    let mut f = Feed::new();
    f.ok(T1, Op::Create, entity_insert(customer(1001, hot("{}"))));
    f.end();
    let other = ValueRow { tenant_id: Some(2), ..text(1001, 20, "Al") };
    let e = error_of(f.apply(T2, Op::Create, value_set(other)));
    assert_eq!(e, PivotError::TenantMismatch { row: 2, what: "entity 1001".into(), other: 1 });
    let batches = f.finish();
    assert_eq!(batches.iter().map(|b| (b.tenant_id, b.batch.num_rows())).collect::<Vec<_>>(), [(1, 1)]);
    // Without the memory the same value would land under tenant 2.
    let mut f = Feed { pivot: Pivot::new(9, 100).with_remembered_entities(0), ..Feed::new() };
    f.ok(T1, Op::Create, entity_insert(customer(1001, hot("{}"))));
    f.end();
    f.ok(T2, Op::Create, value_set(ValueRow { tenant_id: Some(2), ..text(1001, 20, "Al") }));
    assert_eq!(f.finish().len(), 2);
}

/// An entity whose update moves it to another tenant would stay live under the old one.
#[test]
fn entity_moving_to_another_tenant_is_tenant_mismatch() {
    let mut f = Feed::new();
    let moved = EntityRow { tenant_id: Some(2), ..customer(1001, hot("{}")) };
    let e = error_of(f.apply(T1, Op::Update, entity_update(Some(customer(1001, hot("{}"))), moved.clone())));
    assert_eq!(e, PivotError::TenantMismatch { row: 2, what: "entity 1001 (its before-image)".into(), other: 1 });
    // And an entity row of another tenant for an entity seen before, without a before-image.
    f.ok(T1, Op::Create, entity_insert(customer(1002, hot("{}"))));
    f.end();
    let again = EntityRow { tenant_id: Some(2), ..customer(1002, hot("{}")) };
    let e = error_of(f.apply(T2, Op::Update, entity_update(None, again)));
    assert_eq!(e, PivotError::TenantMismatch { row: 2, what: "entity 1002".into(), other: 1 });
    assert_eq!(f.finish().iter().map(|b| b.batch.num_rows()).sum::<usize>(), 1);
}

#[test]
fn entity_delete_without_tenant_is_missing_before_image() {
    let mut f = Feed::new();
    // REPLICA IDENTITY DEFAULT: only the key in the before image.
    let key_only = EntityRow { tenant_id: None, entity_type: None, ..customer(1001, Field::Null) };
    let e = error_of(f.apply(T1, Op::Delete, entity_delete(key_only)));
    assert_eq!(e, PivotError::MissingImage { table: "entities", op: "d", message: "tenant_id is missing".into() });
    assert_eq!(e.reason(), "missing_before_image");
    assert_eq!(
        e.to_string(),
        "entities d without a full before-image (set REPLICA IDENTITY FULL): tenant_id is missing"
    );
    let e = error_of(f.apply(T1, Op::Delete, RowChange::Entity { before: None, after: None }));
    assert_eq!(e, PivotError::MissingImage { table: "entities", op: "d", message: "no before image".into() });
    let no_type = EntityRow { entity_type: None, ..customer(1001, Field::Null) };
    let e = error_of(f.apply(T1, Op::Delete, entity_delete(no_type)));
    assert_eq!(e, PivotError::MissingImage { table: "entities", op: "d", message: "entity_type is missing".into() });
}

#[test]
fn value_change_without_its_image_is_missing_image() {
    let mut f = Feed::new();
    let e = error_of(f.apply(T1, Op::Delete, RowChange::Value { before: None, after: None }));
    assert_eq!(e, PivotError::MissingImage { table: "entity_values", op: "d", message: "no row image".into() });
    assert_eq!(e.reason(), "missing_before_image");
}

#[test]
fn malformed_hot_attributes_is_bad_hot_attributes() {
    let mut f = Feed::new();
    let e = error_of(f.apply(T1, Op::Create, entity_insert(customer(1001, hot("[1, 2]")))));
    assert_eq!(e.reason(), "bad_hot_attributes");
    assert_eq!(e, PivotError::BadHotAttributes("expected an object at byte 0".into()));
}

/// Failed changes between good ones change nothing: the row is what the good ones make it.
#[test]
fn failed_apply_leaves_no_trace() {
    let mut f = Feed::new();
    f.ok(T1, Op::Create, entity_insert(customer(1001, hot(r#"{"status": "new"}"#))));
    f.ok(T1, Op::Create, value_set(text(1001, 10, "Ada")));
    assert!(f.apply(T1, Op::Create, value_set(text(1001, 99, "x"))).is_err());
    assert!(f.apply(T1, Op::Update, entity_update(None, customer(1001, hot(r#"{"score": "x"}"#)))).is_err());
    assert!(f.apply(T1, Op::Update, entity_update(None, customer(1001, hot(r#"{"nick": 1}"#)))).is_err());
    assert!(f.apply(T1, Op::Update, value_set(text(1001, 11, "thirty"))).is_err());
    assert!(f.apply(T1, Op::Update, value_set(ValueRow { tenant_id: Some(2), ..text(1001, 20, "Al") })).is_err());
    assert!(f
        .apply(T1, Op::Delete, entity_delete(EntityRow { tenant_id: None, ..customer(1001, Field::Null) }))
        .is_err());
    assert_eq!(f.pivot.batches.rows(), 0);
    let batch = f.single();
    assert_eq!(
        show(&batch, &["entity_id", "status", "score", "name", "age", "_op", "_changed", "_lsn", "_seq"]),
        ["entity_id=1001, status=new, score=null, name=Ada, age=null, _op=c, \
          _changed=[status, score, balance, vip, last_seen, prefs, name], _lsn=20002, _seq=1"]
    );
}

/// A failing first change of the next transaction does not end the open one.
#[test]
fn failed_change_of_another_transaction_keeps_the_open_one() {
    let mut f = Feed::new();
    f.ok(T1, Op::Create, value_set(text(1001, 10, "Ada")));
    assert!(f.apply(T2, Op::Create, value_set(text(1002, 99, "x"))).is_err());
    assert_eq!(f.pivot.batches.rows(), 0);
    assert_eq!(f.pivot.pending_first_seq(), Some(1));
    // The open transaction goes on.
    f.ok(T1, Op::Create, value_set(int(1001, 11, 30)));
    let batch = f.single();
    assert_eq!(show(&batch, &["entity_id", "name", "age", "_tx_id"]), ["entity_id=1001, name=Ada, age=30, _tx_id=771"]);
}

#[test]
fn value_of_another_entity_types_attribute_is_refused() {
    let mut f = Feed::new();
    f.ok(T1, Op::Create, entity_insert(customer(1001, hot("{}"))));
    // Attribute 30 is `total` of `order`, not of `customer`.
    let total = ValueRow { value_decimal: Some(Decimal { unscaled: 5, scale: 0 }), ..value(1001, 30) };
    let result = f.apply(T1, Op::Create, value_set(total));
    let batches = f.finish();
    let kept = batches.iter().any(|b| b.batch.column_by_name("total").is_some());
    let columns: Vec<Vec<String>> = batches.iter().map(|b| names(&b.batch)).collect();
    assert!(result.is_err() || kept, "accepted, yet no batch has a `total` column: {columns:?}");
}

// ---------------------------------------------------------------------------------------------
// Batches.

#[test]
fn new_attribute_mid_batch_adds_a_column_with_nulls_for_earlier_rows() {
    let mut f = Feed::new();
    f.ok(T1, Op::Create, value_set(text(1001, 10, "Ada")));
    f.end();
    assert_eq!(f.pivot.batches.rows(), 1);
    f.catalog.upsert(attr(16, 1, "customer", "email", DataType::Text, false));
    f.ok(T2, Op::Create, value_set(text(1002, 16, "bo@example.com")));
    let batch = f.single();
    assert_eq!(names(&batch)[13..15], ["profile", "email"]);
    assert_eq!(
        show(&batch, &["entity_id", "name", "email", "_changed"]),
        [
            "entity_id=1001, name=Ada, email=null, _changed=[name]",
            "entity_id=1002, name=null, email=bo@example.com, _changed=[email]",
        ]
    );
}

#[test]
fn changed_data_type_closes_the_open_batch() {
    let mut f = Feed::new();
    f.ok(T1, Op::Create, value_set(int(1001, 11, 30)));
    f.end();
    f.catalog.upsert(attr(11, 1, "customer", "age", DataType::Text, false));
    f.ok(T2, Op::Create, value_set(text(1002, 11, "thirty")));
    let batches = f.finish();
    assert_eq!(batches.len(), 2);
    let keys: Vec<(&str, i64, &str)> =
        batches.iter().map(|b| (&*b.entity_type, b.tenant_id, b.date.as_str())).collect();
    assert_eq!(keys, [("customer", 1, "2024-03-01"), ("customer", 1, "2024-03-01")]);
    let (old, new) = (&batches[0].batch, &batches[1].batch);
    assert_eq!(arrow_type(old, "age"), ArrowType::Int64);
    assert_eq!(show(old, &["entity_id", "age"]), ["entity_id=1001, age=30"]);
    assert_eq!(arrow_type(new, "age"), ArrowType::Utf8);
    assert_eq!(show(new, &["entity_id", "age"]), ["entity_id=1002, age=thirty"]);
    let meta = |b: &RecordBatch| crate::columns::attribute_of(b.schema().field_with_name("age").unwrap());
    assert_eq!(meta(old), Some((11, DataType::Int)));
    assert_eq!(meta(new), Some((11, DataType::Text)));
}

/// A transaction touching more entities than `max_pending_entities` is folded in slices: every
/// row is still there.
#[test]
fn transactions_larger_than_max_pending_entities_are_folded_in_slices() {
    let mut f = Feed::with_limit(2);
    for id in 1..=5 {
        f.ok(T1, Op::Create, entity_insert(customer(id, hot(&format!(r#"{{"score": {id}}}"#)))));
        f.ok(T1, Op::Create, value_set(text(id, 10, &format!("n{id}"))));
    }
    // Two slices of two entities went to the batches; entity 5 is pending.
    assert_eq!(f.pivot.batches.rows(), 4);
    assert!(f.pivot.pending_first_seq().is_some());
    let batch = f.single();
    assert_eq!(
        show(&batch, &["entity_id", "score", "name", "_op", "_seq"]),
        [
            "entity_id=1, score=1, name=n1, _op=c, _seq=1",
            "entity_id=2, score=2, name=n2, _op=c, _seq=3",
            "entity_id=3, score=3, name=n3, _op=c, _seq=5",
            "entity_id=4, score=4, name=n4, _op=c, _seq=7",
            "entity_id=5, score=5, name=n5, _op=c, _seq=9",
        ]
    );
}

#[test]
fn rows_are_sorted_by_entity_id_and_split_by_date() {
    let mut f = Feed::new();
    f.ok(T1, Op::Update, value_set(int(30, 11, 1)));
    f.ok(T2.at(DAY2), Op::Update, value_set(int(10, 11, 2)));
    f.ok(T3.at(DAY1 + 3_600_000_000), Op::Update, value_set(int(20, 11, 3)));
    f.ok(
        Tx { id: Some("774:20700"), tx_id: 774, commit_lsn: 20_600, ts: DAY2 + 1, snapshot: false },
        Op::Update,
        value_set(int(5, 11, 4)),
    );
    f.ok(
        Tx { id: Some("775:20900"), tx_id: 775, commit_lsn: 20_800, ts: DAY1 + 7_200_000_000, snapshot: false },
        Op::Update,
        value_set(int(30, 11, 5)),
    );
    let batches = f.finish();
    let dates: Vec<&str> = batches.iter().map(|b| b.date.as_str()).collect();
    assert_eq!(dates, ["2024-03-01", "2024-03-02"]);
    assert_eq!(
        show(&batches[0].batch, &["entity_id", "age", "_seq", "_source_ts"]),
        [
            "entity_id=20, age=3, _seq=3, _source_ts=2024-03-01T11:00:00Z",
            "entity_id=30, age=1, _seq=1, _source_ts=2024-03-01T10:00:00Z",
            "entity_id=30, age=5, _seq=5, _source_ts=2024-03-01T12:00:00Z",
        ]
    );
    assert_eq!(
        show(&batches[1].batch, &["entity_id", "age", "_seq", "_source_ts"]),
        [
            "entity_id=5, age=4, _seq=4, _source_ts=2024-03-02T08:30:00.000001Z",
            "entity_id=10, age=2, _seq=2, _source_ts=2024-03-02T08:30:00Z",
        ]
    );
}

#[test]
fn kafka_coordinates_fill_the_kafka_columns() {
    let catalog = catalog();
    let mut pivot = Pivot::new(9, 100);
    let kafka = KafkaCoords { topic: Arc::from("eav.public.entity_values"), partition: 3, offset: 4711 };
    let origin = Origin { seq: 4711, kafka: Some(kafka) };
    pivot.apply(&catalog, Op::Create, &T1.source(1), T1.id, &mut value_set(text(1001, 10, "Ada")), &origin).unwrap();
    // A record from a file has no Kafka coordinates.
    let origin = Origin { seq: 12, kafka: None };
    pivot.apply(&catalog, Op::Create, &T2.source(2), T2.id, &mut value_set(text(1002, 10, "Bo")), &origin).unwrap();
    pivot.end_transaction(&catalog);
    let batches = pivot.batches.finish().expect("batches sorted");
    assert_eq!(batches.len(), 1);
    let batch = &batches[0].batch;
    assert_eq!(
        show(batch, &["entity_id", "_seq", "_kafka_topic", "_kafka_partition", "_kafka_offset"]),
        [
            "entity_id=1001, _seq=4711, _kafka_topic=eav.public.entity_values, _kafka_partition=3, _kafka_offset=4711",
            "entity_id=1002, _seq=12, _kafka_topic=null, _kafka_partition=null, _kafka_offset=null",
        ]
    );
    assert_eq!(ints(batch, "_seq"), [4711, 12]);
}

/// `finish` empties the set: a second call has nothing, and counters restart.
#[test]
fn finish_hands_over_every_row_once() {
    let mut f = Feed::new();
    f.ok(T1, Op::Create, value_set(text(1001, 10, "Ada")));
    f.end();
    assert_eq!(f.pivot.batches.rows(), 1);
    assert!(f.pivot.batches.bytes() > 0);
    assert_eq!(f.pivot.batches.finish().expect("batches sorted").len(), 1);
    assert_eq!(f.pivot.batches.rows(), 0);
    assert_eq!(f.pivot.batches.bytes(), 0);
    assert!(f.pivot.batches.finish().expect("batches sorted").is_empty());
}

// ---------------------------------------------------------------------------------------------
// Pending position.

#[test]
fn nothing_pending_before_the_first_change_and_after_the_transaction() {
    let mut f = Feed::new();
    assert_eq!(f.pivot.pending_first_seq(), None);
    f.ok(T1, Op::Create, value_set(text(1001, 10, "Ada")));
    assert_eq!(f.pivot.pending_first_seq(), Some(1));
    f.end();
    assert_eq!(f.pivot.pending_first_seq(), None);
}

/// The pipeline marks everything before `pending_first_seq` durable once flushed: it must not be
/// above any change still in the fold.
#[test]
fn pending_first_seq_is_the_oldest_change_in_the_fold() {
    let mut f = Feed::new();
    f.ok(T1, Op::Create, value_set(text(1001, 10, "Ada")));
    f.ok(T1, Op::Create, value_set(text(1002, 10, "Bo")));
    f.ok(T1, Op::Create, value_set(int(1001, 11, 30)));
    // Change 1 is in the fold, not in a batch.
    assert_eq!(f.pivot.batches.rows(), 0);
    assert_eq!(f.pivot.pending_first_seq(), Some(1));
}

// ---------------------------------------------------------------------------------------------
// Limits: each refused change leaves no trace, the next ones apply.

fn limited(limits: Limits) -> Feed {
    Feed { pivot: Pivot::new(9, 10_000).with_limits(limits), catalog: catalog(), seq: 0 }
}

#[test]
fn too_many_attributes_in_one_row() {
    let mut f = limited(Limits { max_attributes_per_row: 8, ..Limits::default() });
    // The entity's six hot attributes, then cold ones in the same transaction: the ninth cell
    // is one too many.
    f.ok(T1, Op::Create, entity_insert(customer(1001, hot("{}"))));
    f.ok(T1, Op::Create, value_set(text(1001, 10, "Ada")));
    f.ok(T1, Op::Create, value_set(int(1001, 11, 36)));
    // Setting a cell the row already has again is not one more.
    f.ok(T1, Op::Update, value_set(int(1001, 11, 37)));
    let e = error_of(f.apply(T1, Op::Create, value_set(ValueRow { value_bool: Some(true), ..value(1001, 13) })));
    assert_eq!(e, PivotError::TooManyAttributes { entity_id: 1001, count: 9, limit: 8 });
    assert_eq!(e.reason(), "too_many_attributes");
    assert_eq!(e.to_string(), "entity 1001: 9 attributes in one row, over limits.max_attributes_per_row (8)");
    // A hot_attributes object with more keys than the limit, whatever they are.
    let mut f = limited(Limits { max_attributes_per_row: 2, ..Limits::default() });
    let e =
        error_of(f.apply(T1, Op::Create, entity_insert(customer(7, hot(r#"{"status":"a","score":1,"vip":true}"#)))));
    assert_eq!(e, PivotError::TooManyAttributes { entity_id: 7, count: 3, limit: 2 });
    // Nothing of the refused changes remains.
    f.ok(T1, Op::Create, value_set(text(8, 10, "Bo")));
    assert_eq!(show(&f.single(), &["entity_id", "name"]), ["entity_id=8, name=Bo"]);
}

#[test]
fn jsonb_too_deep_or_too_large() {
    let limits = Limits { max_json_depth: 4, max_json_bytes: 64, ..Limits::default() };
    let mut f = limited(limits);
    // hot_attributes is the first level: a value may nest three more.
    f.ok(T1, Op::Create, entity_insert(customer(1, hot(r#"{"prefs":{"a":[{"b":1}]}}"#))));
    let e = error_of(f.apply(T1, Op::Create, entity_insert(customer(2, hot(r#"{"prefs":{"a":[{"b":[1]}]}}"#)))));
    assert_eq!(e, PivotError::JsonTooDeep { what: "hot_attributes".into(), limit: 4 });
    assert_eq!(e.reason(), "json_too_deep");
    assert_eq!(e.to_string(), "hot_attributes: JSON nested over limits.max_json_depth (4) levels deep");
    let big = format!(r#"{{"status":"{}"}}"#, "x".repeat(60));
    let e = error_of(f.apply(T1, Op::Create, entity_insert(customer(3, hot(&big)))));
    assert_eq!(e, PivotError::JsonTooLarge { what: "hot_attributes".into(), bytes: 73, limit: 64 });
    assert_eq!(e.reason(), "json_too_large");
    // A cold json attribute: its own depth, brackets inside strings not counted.
    let json = |s: &str| ValueRow { value_json: Field::Value(s.into()), ..value(4, 15) };
    f.ok(T1, Op::Create, value_set(json(r#"[[[["]]]]]]"]]]]"#)));
    let e = error_of(f.apply(T1, Op::Create, value_set(json("[[[[[1]]]]]"))));
    assert_eq!(e, PivotError::JsonTooDeep { what: "attribute `profile`".into(), limit: 4 });
    let e = error_of(f.apply(T1, Op::Create, value_set(json(&format!("\"{}\"", "y".repeat(70))))));
    assert_eq!(e, PivotError::JsonTooLarge { what: "attribute `profile`".into(), bytes: 72, limit: 64 });
    assert_eq!(e.to_string(), "attribute `profile`: 72 bytes of JSON, over limits.max_json_bytes (64)");
    assert_eq!(show(&f.single(), &["entity_id"]), ["entity_id=1", "entity_id=4"]);
}

/// Values a column cannot hold: a hot int past i64, a decimal of 39 digits (it fits an i128, not
/// Decimal128(38, 9)), a hot timestamp past year 9999.
#[test]
fn values_beyond_their_column_are_out_of_range() {
    let mut f = Feed::new();
    let e = error_of(f.apply(T1, Op::Create, entity_insert(customer(1, hot(r#"{"score": 9223372036854775808}"#)))));
    assert_eq!(
        e,
        PivotError::OutOfRange {
            attribute: "score".into(),
            message: "`9223372036854775808` is beyond the range of a 64-bit integer".into()
        }
    );
    let big = ValueRow { value_decimal: Some(Decimal { unscaled: 10i128.pow(29), scale: 0 }), ..value(1, 12) };
    let e = error_of(f.apply(T1, Op::Create, value_set(big)));
    assert_eq!(
        e,
        PivotError::OutOfRange { attribute: "credit".into(), message: "value does not fit a decimal(38, 9)".into() }
    );
    assert_eq!(e.reason(), "value_out_of_range");
    let most = ValueRow { value_decimal: Some(Decimal { unscaled: 10i128.pow(29) - 1, scale: 0 }), ..value(1, 12) };
    f.ok(T1, Op::Create, value_set(most));
    let e = error_of(f.apply(
        T1,
        Op::Create,
        entity_insert(customer(2, hot(r#"{"last_seen": "+10000-01-01T00:00:00Z"}"#))),
    ));
    assert_eq!(e.reason(), "type_mismatch", "{e}");
    let e = error_of(f.apply(T1, Op::Create, entity_insert(customer(2, hot(r#"{"last_seen": 253402300800000000}"#)))));
    assert_eq!(
        e,
        PivotError::OutOfRange {
            attribute: "last_seen".into(),
            message: "timestamp 253402300800000000 µs is outside years 1 to 9999".into()
        }
    );
    let e = error_of(f.apply(T1, Op::Create, entity_insert(customer(2, hot(r#"{"balance": "NaN"}"#)))));
    assert_eq!(
        e,
        PivotError::OutOfRange { attribute: "balance".into(), message: "`NaN` is not a finite number".into() }
    );
}
