//! The traffic: what the application does to the EAV store and when, how PostgreSQL orders it in
//! the WAL, and how Debezium streams it.
//!
//! One initial snapshot, then transactions in commit order. Each transaction is built completely
//! against the model (its changes and row images in a [`TxBuf`]), then scheduled into the WAL
//! (change LSNs, commit LSN), then written out. Two concurrent transactions are built one after
//! the other on disjoint entities (as row locks would force) and their LSNs are interleaved, so
//! that the later-committing one carries change LSNs below those already streamed.

use super::debezium::{self as dbz, Schemas, Sink, SourceInfo, TxBlock};
use super::model::{self, Db, TxBuf, Val, ENTITY_TYPES, MARCH_2024_US};
use super::rng::Rng;
use super::{Expected, GroundTruth, WorkloadFormat, WorkloadSpec};
use crate::decode::Table;
use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Write};

const MS: i64 = 1_000;
const SEC: i64 = 1_000_000;
const HOUR: i64 = 3_600 * SEC;
const DAY: i64 = 24 * HOUR;
/// How long the streamed part lasts, so that the lake sees several dates.
const SPAN: i64 = 3 * DAY;

/// What a transaction does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Bulk load: up to max_bulk entities, all entity rows, then all value rows.
    Bulk,
    /// An application creating one to three entities.
    Insert,
    /// Small updates of hot and cold attributes of one to three entities.
    Update,
    /// The long transaction of an interleaved pair: updates of several entities.
    UpdateMany,
    /// The same cold attribute updated twice, and the hot attributes twice, in one transaction.
    Twice,
    /// Updates that leave TOASTed columns alone (placeholders in the images).
    Toast,
    /// Deletes of cold values.
    ValueDelete,
    /// `is_deleted = true`.
    LogicalDelete,
    /// `DELETE FROM entities` (cascading to entity_values).
    PhysicalDelete,
    /// New attributes of an entity type for a tenant, and first values for them.
    AddAttribute,
    /// A long and a short transaction whose changes interleave in the WAL.
    Interleaved,
}

/// The first transactions, so that even a small workload has every feature once.
const TOUR: &[Kind] = &[
    Kind::Bulk,
    Kind::Interleaved,
    Kind::Update,
    Kind::Twice,
    Kind::Toast,
    Kind::ValueDelete,
    Kind::AddAttribute,
    Kind::Insert,
    Kind::LogicalDelete,
    Kind::PhysicalDelete,
    Kind::Update,
    Kind::Interleaved,
    Kind::PhysicalDelete,
    Kind::Toast,
];

/// The mix after the tour (per mille), bulk loads and new attributes aside.
const MIX: &[(Kind, u64)] = &[
    (Kind::Update, 580),
    (Kind::Twice, 50),
    (Kind::Toast, 40),
    (Kind::ValueDelete, 60),
    (Kind::Insert, 110),
    (Kind::LogicalDelete, 45),
    (Kind::PhysicalDelete, 45),
    (Kind::Interleaved, 70),
];

/// A Debezium restart re-sends up to this many change records.
const RESEND_MAX: usize = 50;

/// Rows of one table a bulk load's WAL record holds. `COPY` writes up to 1,000 rows (or 64 kB)
/// per record, and logical decoding gives them all the record's LSN: a bulk load's consecutive
/// inserts into one table share LSNs in runs of this many (fewer than PostgreSQL, so that the
/// re-sends above often start inside a run).
const ROWS_PER_WAL_RECORD: usize = 30;

const POISON_REASONS: [&str; 4] = ["invalid_json", "not_debezium", "unknown_attribute", "type_mismatch"];

pub(crate) struct Generator<'w> {
    rng: Rng,
    db: Db,
    sink: Sink<'w>,
    schemas: Option<Schemas>,
    max_bulk: u64,
    events: u64,
    /// Change events still to emit.
    remaining: u64,
    /// Next free WAL position.
    wal: u64,
    /// Commit LSN of the last streamed transaction (`sequence[0]` of the next one).
    last_commit: u64,
    next_xid: i64,
    /// Commit time of the last transaction.
    clock_us: i64,
    /// Streaming starts here and spreads its events evenly over [`SPAN`].
    stream_start_us: i64,
    snapshot_events: u64,
    /// Mean time between commits, for jitter.
    step_us: i64,
    change_events: u64,
    duplicates: u64,
    transactions: u64,
    dead_letters: Vec<(u64, &'static str)>,
    /// `change_events` counts at which the next poison record, Debezium restart and new
    /// attributes are due.
    poison_at: VecDeque<u64>,
    poison_seq: usize,
    resend_at: VecDeque<u64>,
    add_attribute_at: VecDeque<u64>,
    tour: VecDeque<Kind>,
    bulk_per_million: u64,
    a: TxBuf,
    b: TxBuf,
    scratch: Vec<u8>,
}

impl<'w> Generator<'w> {
    pub(crate) fn new(spec: &WorkloadSpec, out: &'w mut dyn Write) -> Generator<'w> {
        let with_schemas = matches!(spec.format, WorkloadFormat::WithSchemas);
        let mut rng = Rng::new(spec.seed);
        let wal = 22_000_000_000 + rng.below(1 << 30);
        let next_xid = 700 + rng.below(300) as i64;
        Generator {
            rng,
            db: Db::new(spec.tenants, with_schemas),
            sink: Sink::new(out, if spec.resends { RESEND_MAX } else { 0 }),
            schemas: with_schemas.then(Schemas::new),
            max_bulk: spec.max_bulk.max(1) as u64,
            events: spec.events,
            remaining: spec.events,
            wal,
            last_commit: wal,
            next_xid,
            clock_us: MARCH_2024_US + 6 * HOUR,
            stream_start_us: MARCH_2024_US + 6 * HOUR,
            snapshot_events: 0,
            step_us: SEC,
            change_events: 0,
            duplicates: 0,
            transactions: 0,
            dead_letters: Vec::new(),
            poison_at: VecDeque::new(),
            poison_seq: 0,
            resend_at: VecDeque::new(),
            add_attribute_at: VecDeque::new(),
            tour: TOUR.iter().copied().collect(),
            bulk_per_million: 0,
            a: TxBuf::default(),
            b: TxBuf::default(),
            scratch: Vec::with_capacity(4096),
        }
        .planned(spec)
    }

    /// Decides how the streaming part is spread: poison, restarts, new attributes, pace.
    fn planned(mut self, spec: &WorkloadSpec) -> Generator<'w> {
        // The snapshot holds the catalog and a tenth of the events (or as much of the catalog as
        // a tiny workload allows).
        let catalog = self.db.tenants() as u64 * (Db::initial_def_count(0) + Db::initial_def_count(1)) as u64;
        let snapshot = self.events.min(catalog + self.events / 10);
        let streaming = self.events - snapshot;
        self.snapshot_events = snapshot;
        // A transaction carries about six events on average.
        self.step_us = (SPAN * 6 / streaming.max(1) as i64).clamp(2 * MS, 2 * HOUR);
        let at = |count: u64, rng: &mut Rng| -> VecDeque<u64> {
            let mut v: Vec<u64> = (0..count).map(|_| snapshot + rng.below(streaming.max(1))).collect();
            v.sort_unstable();
            v.into()
        };
        if spec.poison && streaming > 0 {
            self.poison_at = at((4 + streaming / 50_000).min(60), &mut self.rng);
            self.poison_seq = self.rng.index(POISON_REASONS.len());
        }
        if spec.resends && streaming > 0 {
            self.resend_at = at((3 + streaming / 100_000).min(100), &mut self.rng);
        }
        let additions = (2 + streaming / 5_000).min(self.db.tenants() as u64 * 6);
        self.add_attribute_at = at(additions, &mut self.rng);
        // Bulk loads carry about 20% of the streamed events: a bulk of mean size n writes about
        // 6n events, any other transaction about 4.
        let mb = self.max_bulk as f64;
        let mean_bulk = 0.3 * (mb + 1.0) / 2.0 + 0.7 * (mb.min(100.0) + 1.0) / 2.0;
        let p = 0.2 * 4.0 / (0.8 * mean_bulk * 6.0 + 0.2 * 4.0);
        self.bulk_per_million = (p * 1e6) as u64;
        self
    }

    pub(crate) fn run(mut self) -> io::Result<GroundTruth> {
        self.snapshot()?;
        let mut empty = 0;
        while self.remaining > 0 {
            self.between_transactions()?;
            let kind = self.next_kind();
            if self.transaction(kind)? == 0 {
                // Nothing can change any more (a catalog cut short by a tiny budget).
                empty += 1;
                if empty > 3 {
                    break;
                }
            }
        }
        self.between_transactions()?;
        self.sink.finish()?;
        self.ground_truth()
    }

    // -----------------------------------------------------------------------------------------
    // Snapshot.

    /// The initial snapshot: the catalog, entities and their values as they were before the
    /// connector started, read table by table at one LSN.
    fn snapshot(&mut self) -> io::Result<()> {
        let budget = self.snapshot_events;
        let start_us = self.clock_us - 10 * 60 * SEC;
        let mut used = 0;
        'catalog: for t in 0..self.db.tenants() {
            for e in 0..2u8 {
                for _ in 0..Db::initial_def_count(e) {
                    if used == budget {
                        break 'catalog;
                    }
                    let created = start_us - self.rng.between(30 * DAY, 400 * DAY);
                    self.db.create_attribute(t, e, created);
                    used += 1;
                }
            }
        }
        let attributes = used;
        let first_entity = self.db.entities.len();
        while used < budget {
            let t = self.rng.below(self.db.tenants() as u64) as u32;
            let e = self.rng.below(2) as u8;
            let created = start_us - self.rng.between(HOUR, 60 * DAY);
            let mut cold_budget = budget - used - 1;
            let mut ent = self.db.new_entity(&mut self.rng, t, e, created, &mut cold_budget);
            used = budget - cold_budget;
            ent.updated_us = self.rng.between(created, start_us - MS);
            ent.version = 1 + self.rng.below(5) as i64;
            for c in &mut ent.cold {
                c.updated_us = self.rng.between(created, ent.updated_us);
            }
            ent.deleted = self.rng.chance(30);
            self.db.entities.push(ent);
        }
        let entities = self.db.entities.len() - first_entity;
        let values: usize = self.db.entities[first_entity..].iter().map(|e| e.cold.len()).sum();

        let xid = self.next_xid;
        self.next_xid += 1;
        let lsn = self.wal;
        let total = used;
        let mut i = 0u64;
        let mut emit = |g: &mut Self, table: Table, in_table: usize, table_len: usize| -> io::Result<()> {
            let marker = if i == 0 {
                "first"
            } else if i + 1 == total {
                "last"
            } else if in_table == 0 {
                "first_in_data_collection"
            } else if in_table + 1 == table_len {
                "last_in_data_collection"
            } else {
                "true"
            };
            let ts_us = start_us + i as i64 * 37;
            let src = SourceInfo { table, snapshot: marker, ts_us, tx_id: xid, lsn, last_commit: None };
            let start = g.sink.start();
            dbz::change_record(
                &mut g.sink.buf,
                g.schemas.as_ref(),
                b'r',
                None,
                Some(&g.scratch),
                &src,
                None,
                ts_us * 1000 + 250_000_000,
            );
            g.sink.end_line(start, false)?;
            i += 1;
            Ok(())
        };
        for a in 0..attributes as usize {
            self.scratch.clear();
            self.db.attribute_image(a, &mut self.scratch);
            emit(self, Table::Attributes, a, attributes as usize)?;
        }
        for k in 0..entities {
            self.scratch.clear();
            self.db.entity_image(first_entity + k, false, &mut self.scratch);
            emit(self, Table::Entities, k, entities)?;
        }
        let mut k = 0;
        for idx in first_entity..first_entity + entities {
            for c in 0..self.db.entities[idx].cold.len() {
                self.scratch.clear();
                self.db.value_image(idx, c, &mut self.scratch);
                emit(self, Table::EntityValues, k, values)?;
                k += 1;
            }
        }
        self.change_events += total;
        self.remaining -= total;
        self.wal += 4096 + self.rng.below(1 << 16);
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Streaming.

    fn next_kind(&mut self) -> Kind {
        if let Some(k) = self.tour.pop_front() {
            return k;
        }
        if self.add_attribute_at.front().is_some_and(|&at| at <= self.change_events) {
            self.add_attribute_at.pop_front();
            return Kind::AddAttribute;
        }
        if self.rng.below(1_000_000) < self.bulk_per_million {
            return Kind::Bulk;
        }
        let mut r = self.rng.below(1000);
        for &(kind, weight) in MIX {
            if r < weight {
                return kind;
            }
            r -= weight;
        }
        Kind::Update
    }

    /// Heartbeats, poison records and Debezium restarts, which all happen between transactions.
    fn between_transactions(&mut self) -> io::Result<()> {
        if self.rng.chance(15) {
            let start = self.sink.start();
            let ts_ms = self.clock_us / MS + self.rng.below(1000) as i64;
            dbz::heartbeat_record(&mut self.sink.buf, self.schemas.as_ref(), ts_ms);
            self.sink.end_line(start, false)?;
        }
        while self.poison_at.front().is_some_and(|&at| at <= self.change_events) {
            self.poison_at.pop_front();
            self.poison()?;
        }
        while self.resend_at.front().is_some_and(|&at| at <= self.change_events) && self.sink.recent_len() > 0 {
            self.resend_at.pop_front();
            let n = 1 + self.rng.below(self.sink.recent_len().min(RESEND_MAX) as u64);
            self.sink.resend(n as usize)?;
            self.sink.forget();
            self.duplicates += n;
        }
        Ok(())
    }

    /// The next transaction id and commit time.
    fn next_commit(&mut self) -> (i64, i64) {
        let xid = self.next_xid;
        self.next_xid += 1 + self.rng.below(3) as i64;
        self.clock_us = self.next_time();
        (xid, self.clock_us)
    }

    /// The next commit time: time follows the share of the workload already written (bulk loads
    /// move it further than single updates), with jitter, and never stands still.
    fn next_time(&mut self) -> i64 {
        let streaming = (self.events - self.snapshot_events).max(1);
        let done = self.change_events.saturating_sub(self.snapshot_events).min(streaming);
        let target = self.stream_start_us + (SPAN as i128 * done as i128 / streaming as i128) as i64;
        let jitter = self.rng.between(0, self.step_us);
        (target + jitter).max(self.clock_us + self.rng.between(MS / 2, 5 * MS))
    }

    /// How long a transaction of this kind ran before it committed.
    fn duration(&mut self, kind: Kind) -> i64 {
        match kind {
            Kind::Bulk => self.rng.between(100 * MS, 5 * SEC),
            _ => self.rng.between(MS, 80 * MS),
        }
    }

    /// Builds, schedules and writes one transaction (two for [`Kind::Interleaved`]). Returns the
    /// change events it emitted.
    fn transaction(&mut self, kind: Kind) -> io::Result<u64> {
        if kind == Kind::Interleaved {
            return self.interleaved();
        }
        let (xid, commit_us) = self.next_commit();
        let start_us = commit_us - self.duration(kind);
        let mut tx = std::mem::take(&mut self.a);
        tx.reset(start_us);
        let mut n = build(&mut self.db, &mut self.rng, kind, &mut tx, self.remaining, self.max_bulk, &[]);
        if n == 0 {
            // The chosen change found nothing to act on (no entity with TOASTed values, …):
            // the application inserts an entity instead.
            tx.reset(start_us);
            n = build(&mut self.db, &mut self.rng, Kind::Insert, &mut tx, self.remaining, self.max_bulk, &[]);
        }
        if n > 0 {
            self.remaining -= n;
            let commit_lsn = {
                let n = tx.changes.len();
                self.schedule_rows(&mut tx, 0..n, kind == Kind::Bulk)
            };
            self.emit(&tx, xid, commit_us, commit_lsn)?;
        }
        self.a = tx;
        Ok(n)
    }

    /// A long transaction that writes, a short one that writes and commits, the long one writes
    /// more and commits. Commit order (the stream's order) is short, long; change LSN order is
    /// long (part), short, long (rest).
    fn interleaved(&mut self) -> io::Result<u64> {
        let xid_long = self.next_xid;
        let xid_short = xid_long + 1 + self.rng.below(2) as i64;
        self.next_xid = xid_short + 1 + self.rng.below(2) as i64;
        let commit_short = self.next_time();
        let commit_long = commit_short + self.rng.between(MS, 400 * MS);
        self.clock_us = commit_long;
        let start_long = commit_short - self.rng.between(50 * MS, 3 * SEC);
        let start_short = self.rng.between(start_long + 1, commit_short - 1);

        let mut short = std::mem::take(&mut self.b);
        short.reset(start_short);
        let budget_short = (self.remaining / 4).clamp(1, 12);
        let n_short = build(&mut self.db, &mut self.rng, Kind::Update, &mut short, budget_short, self.max_bulk, &[]);
        self.remaining -= n_short;

        let mut long = std::mem::take(&mut self.a);
        long.reset(start_long);
        // The long one loads a few entities or updates several.
        let kind_long = if self.rng.chance(300) { Kind::Bulk } else { Kind::UpdateMany };
        let cap = self.max_bulk.min(20);
        let n_long = build(&mut self.db, &mut self.rng, kind_long, &mut long, self.remaining, cap, &short.touched);
        self.remaining -= n_long;

        match (n_short, n_long) {
            (0, 0) => {}
            (_, 0) => {
                let c = {
                    let n = short.changes.len();
                    self.schedule(&mut short, 0..n)
                };
                self.emit(&short, xid_short, commit_short, c)?;
            }
            (0, _) => {
                let c = {
                    let n = long.changes.len();
                    self.schedule(&mut long, 0..n)
                };
                self.emit(&long, xid_long, commit_long, c)?;
            }
            _ => {
                let len = long.changes.len();
                let split = if len >= 2 { 1 + self.rng.below(len as u64 - 1) as usize } else { len };
                self.schedule(&mut long, 0..split);
                let c_short = {
                    let n = short.changes.len();
                    self.schedule(&mut short, 0..n)
                };
                let c_long = self.schedule(&mut long, split..len);
                self.emit(&short, xid_short, commit_short, c_short)?;
                self.emit(&long, xid_long, commit_long, c_long)?;
            }
        }
        self.a = long;
        self.b = short;
        Ok(n_short + n_long)
    }

    /// Gives the changes `range` of the transaction their WAL positions; returns the LSN its
    /// commit record would get right after them.
    fn schedule(&mut self, tx: &mut TxBuf, range: std::ops::Range<usize>) -> u64 {
        self.schedule_rows(tx, range, false)
    }

    /// [`Self::schedule`]; with `copy`, consecutive inserts into one table are rows of one WAL
    /// record ([`ROWS_PER_WAL_RECORD`]) and share its LSN.
    fn schedule_rows(&mut self, tx: &mut TxBuf, range: std::ops::Range<usize>, copy: bool) -> u64 {
        // The open multi-row record: its table, LSN and rows so far.
        let mut record: Option<(Table, u64, usize)> = None;
        for ch in &mut tx.changes[range] {
            let row_bytes = 40 + self.rng.below(280);
            match &mut record {
                Some((table, lsn, rows)) if *table == ch.table && ch.op == b'c' && *rows < ROWS_PER_WAL_RECORD => {
                    ch.lsn = *lsn;
                    *rows += 1;
                }
                _ => {
                    ch.lsn = self.wal;
                    record = (copy && ch.op == b'c').then_some((ch.table, self.wal, 1));
                }
            }
            self.wal += row_bytes;
        }
        let commit = self.wal;
        self.wal += 48 + self.rng.below(100);
        commit
    }

    /// Writes a scheduled transaction: BEGIN, its changes (with a tombstone after each delete),
    /// END.
    fn emit(&mut self, tx: &TxBuf, xid: i64, commit_us: i64, commit_lsn: u64) -> io::Result<()> {
        let first_lsn = tx.changes.iter().map(|c| c.lsn).min().unwrap_or(commit_lsn);
        let id = format!("{xid}:{first_lsn}");
        let ts_ms = commit_us / MS;
        let schemas = self.schemas.as_ref();
        let start = self.sink.start();
        dbz::transaction_record(&mut self.sink.buf, schemas, &id, None, ts_ms);
        self.sink.end_line(start, false)?;
        let lag_ns = self.rng.between(3_000_000, 900_000_000);
        let mut counts: Vec<(Table, u64)> = Vec::with_capacity(3);
        for (i, ch) in tx.changes.iter().enumerate() {
            let order = match counts.iter_mut().find(|(t, _)| *t == ch.table) {
                Some((_, n)) => {
                    *n += 1;
                    *n
                }
                None => {
                    counts.push((ch.table, 1));
                    1
                }
            };
            let src = SourceInfo {
                table: ch.table,
                snapshot: "false",
                ts_us: commit_us,
                tx_id: xid,
                lsn: ch.lsn,
                last_commit: Some(self.last_commit),
            };
            // As Debezium's PostgreSQL connector writes it: `txId:LSN` of this very event.
            let event_id = format!("{xid}:{}", ch.lsn);
            let block = TxBlock { id: &event_id, total_order: i as u64 + 1, data_collection_order: order };
            let proc_ns = commit_us * 1000 + lag_ns + i as i64 * 1_711;
            let start = self.sink.start();
            dbz::change_record(
                &mut self.sink.buf,
                schemas,
                ch.op,
                tx.image(ch.before),
                tx.image(ch.after),
                &src,
                Some(&block),
                proc_ns,
            );
            // Only the records a coming restart may re-send are copied aside.
            let remember = tx.poison.is_none()
                && self.resend_at.front().is_some_and(|&at| at <= self.change_events + RESEND_MAX as u64);
            let line = self.sink.end_line(start, remember)?;
            match tx.poison {
                Some(reason) => self.dead_letters.push((line, reason)),
                None => self.change_events += 1,
            }
            if ch.op == b'd' {
                self.sink.tombstone()?;
            }
        }
        let start = self.sink.start();
        dbz::transaction_record(&mut self.sink.buf, schemas, &id, Some(&counts), ts_ms);
        self.sink.end_line(start, false)?;
        self.last_commit = commit_lsn;
        self.transactions += 1;
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Poison.

    fn poison(&mut self) -> io::Result<()> {
        let reason = POISON_REASONS[self.poison_seq % POISON_REASONS.len()];
        self.poison_seq += 1;
        let entity = self.db.pick_live(&mut self.rng, &[]);
        match (reason, entity) {
            ("unknown_attribute" | "type_mismatch", Some(idx)) => {
                let (xid, commit_us) = self.next_commit();
                let mut tx = std::mem::take(&mut self.a);
                tx.reset(commit_us - self.duration(Kind::Update));
                // A type mismatch needs an entity without a value of some cold int attribute.
                let mut mismatched = false;
                for _ in 0..16 {
                    if reason == "unknown_attribute" || mismatched {
                        break;
                    }
                    let other = self.db.pick_live(&mut self.rng, &[]).unwrap_or(idx);
                    mismatched = self.db.poison_type_mismatch(&mut self.rng, &mut tx, other);
                }
                if !mismatched {
                    let attribute_id = 900_000_000 + self.rng.below(1_000_000) as i64;
                    self.db.poison_unknown_attribute(&mut tx, idx, attribute_id);
                }
                let c = {
                    let n = tx.changes.len();
                    self.schedule(&mut tx, 0..n)
                };
                self.emit(&tx, xid, commit_us, c)?;
                self.a = tx;
            }
            ("not_debezium", _) => {
                let variants: &[&str] = match self.schemas {
                    None => &[r#"{"hello":"world"}"#, r#"{"id":42,"name":"widget","price":"9.99"}"#],
                    Some(_) => &[
                        r#"{"hello":"world"}"#,
                        r#"{"schema":{"type":"struct","fields":[{"type":"string","optional":false,"field":"hello"}],"optional":false,"name":"greeting"},"payload":{"hello":"world"}}"#,
                    ],
                };
                let text = self.rng.pick(variants);
                let start = self.sink.start();
                self.sink.buf.extend_from_slice(text.as_bytes());
                let line = self.sink.end_line(start, false)?;
                self.dead_letters.push((line, "not_debezium"));
            }
            _ => {
                // A record cut short (a producer killed mid-write): a plausible update of an
                // entity, truncated at an ASCII position so that the line stays valid UTF-8.
                self.scratch.clear();
                match entity {
                    Some(idx) => self.db.entity_image(idx, false, &mut self.scratch),
                    None => self.scratch.extend_from_slice(b"{\"entity_id\":1}"),
                }
                let src = SourceInfo {
                    table: Table::Entities,
                    snapshot: "false",
                    ts_us: self.clock_us,
                    tx_id: self.next_xid,
                    lsn: self.wal,
                    last_commit: Some(self.last_commit),
                };
                let mut record = Vec::with_capacity(self.scratch.len() * 2 + 512);
                let proc_ns = self.clock_us * 1000;
                let image = Some(&self.scratch[..]);
                dbz::change_record(&mut record, self.schemas.as_ref(), b'u', image, image, &src, None, proc_ns);
                let mut cut = (record.len() as u64 * (30 + self.rng.below(60)) / 100) as usize;
                while cut > 1 && !record[cut].is_ascii() {
                    cut -= 1;
                }
                let start = self.sink.start();
                self.sink.buf.extend_from_slice(&record[..cut.max(1)]);
                let line = self.sink.end_line(start, false)?;
                self.dead_letters.push((line, "invalid_json"));
            }
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Ground truth.

    fn ground_truth(self) -> io::Result<GroundTruth> {
        let Generator { db, sink, dead_letters, change_events, duplicates, transactions, .. } = self;
        let lines = sink.lines;
        let mut catalog = BTreeMap::new();
        for a in &db.attrs {
            let def = &db.defs[a.etype as usize][a.def as usize];
            catalog.insert(
                (model::tenant_id(a.tenant), ENTITY_TYPES[a.etype as usize].to_string(), def.name.to_string()),
                def.dtype,
            );
        }
        let mut current = BTreeMap::new();
        let defs = db.defs;
        for e in db.entities {
            if e.deleted {
                continue;
            }
            let names = &defs[e.etype as usize];
            let mut values = BTreeMap::new();
            for (d, v) in e.hot {
                if let Some(v) = v {
                    values.insert(names[d as usize].name.to_string(), expected(v)?);
                }
            }
            for c in e.cold {
                if let Some(v) = c.val {
                    values.insert(names[c.def as usize].name.to_string(), expected(v)?);
                }
            }
            current.insert((ENTITY_TYPES[e.etype as usize].to_string(), model::tenant_id(e.tenant), e.id), values);
        }
        Ok(GroundTruth { current, catalog, dead_letters, lines, change_events, duplicates, transactions })
    }
}

fn expected(v: Val) -> io::Result<Expected> {
    Ok(match v {
        Val::Text(t) => Expected::Text(t.into()),
        Val::Int(i) => Expected::Int(i),
        Val::Dec(d) => Expected::Decimal(d),
        Val::Bool(b) => Expected::Bool(b),
        Val::Ts(us) => Expected::Timestamp(us),
        Val::Json(j) => {
            Expected::Json(serde_json::from_str(&j).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?)
        }
    })
}

/// The size of a bulk load: mostly up to a hundred rows, sometimes up to `max_bulk`; never so
/// large that one load eats most of what is left of the workload.
fn bulk_size(rng: &mut Rng, max_bulk: u64, budget: u64) -> u64 {
    let n = if rng.chance(300) { 1 + rng.below(max_bulk) } else { 1 + rng.below(max_bulk.min(100)) };
    n.min((budget / 12).max(1))
}

/// Runs a transaction of `kind` against the model, writing at most `budget` changes into `tx`
/// and touching no entity of `exclude`. Returns the number of changes.
fn build(db: &mut Db, rng: &mut Rng, kind: Kind, tx: &mut TxBuf, budget: u64, max_bulk: u64, exclude: &[i64]) -> u64 {
    let mut used = 0;
    let tenants = db.tenants() as u64;
    let complete = |db: &Db, t: u32| db.catalog_complete(t);
    match kind {
        Kind::Bulk | Kind::Insert => {
            let t = rng.below(tenants) as u32;
            if !complete(db, t) {
                return 0;
            }
            let e = rng.below(2) as u8;
            let n = if kind == Kind::Bulk { bulk_size(rng, max_bulk, budget) } else { 1 + rng.below(3) };
            used += db.insert_entities(rng, tx, t, e, n, budget);
        }
        Kind::Update | Kind::UpdateMany => {
            let entities = if kind == Kind::UpdateMany { 3 + rng.below(4) } else { 1 + rng.below(3) };
            for _ in 0..entities {
                let Some(idx) = db.pick_live(rng, exclude) else { break };
                for _ in 0..1 + rng.below(4) {
                    if used >= budget {
                        return used;
                    }
                    used += match rng.below(100) {
                        0..=34 => db.update_hot(rng, tx, idx),
                        35..=69 => db.update_cold(rng, tx, idx, None).0,
                        70..=87 => db.insert_cold(rng, tx, idx).0,
                        _ => db.delete_cold(rng, tx, idx),
                    };
                }
            }
        }
        Kind::Twice => {
            if let Some(idx) = db.pick_live(rng, exclude) {
                if budget >= 2 {
                    let (n, def) = db.update_cold(rng, tx, idx, None);
                    used += n;
                    if def.is_some() {
                        used += db.update_cold(rng, tx, idx, def).0;
                    }
                }
                if used + 2 <= budget {
                    used += db.update_hot(rng, tx, idx);
                    used += db.update_hot(rng, tx, idx);
                }
            }
        }
        Kind::Toast => {
            if let Some(idx) = db.pick_live(rng, exclude) {
                used += db.touch_toasted(tx, idx);
            }
            for _ in 0..8 {
                if used >= budget {
                    break;
                }
                let Some(idx) = db.pick_live(rng, exclude) else { break };
                let n = db.touch_toasted_value(rng, tx, idx);
                used += n;
                if n > 0 {
                    break;
                }
            }
        }
        Kind::ValueDelete => {
            for _ in 0..1 + rng.below(2) {
                let Some(idx) = db.pick_live(rng, exclude) else { break };
                for _ in 0..1 + rng.below(3) {
                    if used >= budget {
                        return used;
                    }
                    used += db.delete_cold(rng, tx, idx);
                }
            }
        }
        Kind::LogicalDelete => {
            for _ in 0..1 + rng.below(2) {
                let Some(idx) = db.pick_live(rng, exclude) else { break };
                if used < budget && rng.chance(300) {
                    used += db.update_hot(rng, tx, idx);
                }
                if used >= budget {
                    break;
                }
                used += db.delete_logically(tx, idx);
            }
        }
        Kind::PhysicalDelete => {
            let mut chosen: Vec<usize> = Vec::new();
            let mut ids: Vec<i64> = exclude.to_vec();
            let mut cost = 0;
            for _ in 0..1 + rng.below(3) {
                // Half the time a purge of a logically deleted entity, else a hard delete.
                let pick = if rng.chance(500) { db.pick_deleted(rng, &ids) } else { None };
                let Some(idx) = pick.or_else(|| db.pick_live(rng, &ids)) else { break };
                let c = db.delete_cost(idx);
                if cost + c > budget {
                    break;
                }
                cost += c;
                ids.push(db.entities[idx].id);
                chosen.push(idx);
            }
            if !chosen.is_empty() {
                used += db.delete_physically(tx, &mut chosen);
            }
        }
        Kind::AddAttribute => {
            let t = rng.below(tenants) as u32;
            if !complete(db, t) {
                return 0;
            }
            let e = rng.below(2) as u8;
            let mut added = Vec::new();
            // A release adds two fields at once.
            for _ in 0..2 {
                if used >= budget {
                    return used;
                }
                let (n, def) = db.add_attribute(tx, t, e);
                used += n;
                added.push(def);
            }
            for _ in 0..3 {
                let Some(idx) = db.pick_of(rng, t, e, exclude) else { break };
                for &def in &added {
                    if used >= budget {
                        return used;
                    }
                    if db.def_known(t, e, def) {
                        used += db.use_new_attribute(rng, tx, idx, def);
                    }
                }
            }
        }
        Kind::Interleaved => {}
    }
    used
}
