//! The simulated EAV database: the attribute catalog, the live rows of `entities` and
//! `entity_values`, and the row-level operations an application performs on them.
//!
//! Every operation changes the model and, in the same step, records the row images Debezium
//! would publish for it (REPLICA IDENTITY FULL: whole before images) into a [`TxBuf`]. The model
//! is therefore both the source of the stream and its ground truth: whatever it holds at the end
//! is what the database holds, whatever order the stream's consumer sees things in.
//!
//! Only state that the database keeps is kept here (live and logically deleted entities with
//! their values); the events themselves are written out transaction by transaction.

use super::debezium::{self as dbz, ValueCols};
use super::rng::Rng;
use crate::decode::{DataType, Table};
use std::cmp::Ordering;

/// The entity types of the reference workload.
pub(crate) const ENTITY_TYPES: [&str; 2] = ["customer", "order"];

/// An attribute value as the database holds it. Decimals are unscaled at scale 9 (the column's
/// numeric(38, 9)); timestamps µs since the epoch; JSON is the text `jsonb_out` prints.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Val {
    Text(Box<str>),
    Int(i64),
    Dec(i128),
    Bool(bool),
    Ts(i64),
    Json(Box<str>),
}

/// An attribute definition of an entity type: every tenant that has the attribute gives it the
/// same name, type and hotness (so that one lake column per name is well typed), but each tenant
/// has its own `attributes` row with its own id.
#[derive(Debug, Clone)]
pub(crate) struct AttrDef {
    pub name: Box<str>,
    pub dtype: DataType,
    pub hot: bool,
}

/// An `attributes` row.
#[derive(Debug, Clone)]
pub(crate) struct Attr {
    pub id: i64,
    pub tenant: u32,
    pub etype: u8,
    pub def: u16,
    pub created_us: i64,
}

/// An `entity_values` row: the value of a cold attribute (`None`: every value column NULL).
#[derive(Debug, Clone)]
pub(crate) struct Cold {
    pub def: u16,
    pub val: Option<Val>,
    pub updated_us: i64,
}

/// An `entities` row and its `entity_values` rows.
#[derive(Debug, Clone)]
pub(crate) struct Entity {
    pub id: i64,
    pub tenant: u32,
    pub etype: u8,
    pub deleted: bool,
    pub version: i64,
    pub created_us: i64,
    pub updated_us: i64,
    /// `hot_attributes`, in jsonb key order; `None` is an explicit JSON null.
    pub hot: Vec<(u16, Option<Val>)>,
    pub cold: Vec<Cold>,
}

impl Entity {
    pub(crate) fn tenant_id(&self) -> i64 {
        tenant_id(self.tenant)
    }
}

/// Tenants are numbered 0.. inside the model and 1.. in the database.
pub(crate) fn tenant_id(tenant: u32) -> i64 {
    tenant as i64 + 1
}

use DataType::{Bool as B, Decimal as D, Int as I, Json as J, Text as T, Timestamp as Ts};

/// The catalog of the first snapshot; about 20% hot, every data type hot at least once across
/// the two entity types.
const INITIAL_DEFS: [&[(&str, DataType, bool)]; 2] = [
    &[
        ("full_name", T, true),
        ("email", T, false),
        ("notes", T, false),
        ("tier_level", I, true),
        ("age", I, false),
        ("balance", D, false),
        ("credit_limit", D, false),
        ("newsletter", B, false),
        ("verified", B, false),
        ("last_seen_at", Ts, true),
        ("birth_date", Ts, false),
        ("preferences", J, false),
        ("address", J, false),
    ],
    &[
        ("order_number", T, false),
        ("currency", T, false),
        ("comment", T, false),
        ("quantity", I, false),
        ("priority", I, false),
        ("total", D, true),
        ("discount", D, false),
        ("is_paid", B, true),
        ("gift", B, false),
        ("placed_at", Ts, false),
        ("shipped_at", Ts, false),
        ("metadata", J, false),
        ("tags", J, true),
    ],
];

/// Attributes tenants add while the system runs, in this order (then generated `custom_N`).
const EXTRA_DEFS: [&[(&str, DataType, bool)]; 2] = [
    &[
        ("nickname", T, true),
        ("loyalty_points", I, false),
        ("lifetime_value", D, false),
        ("sms_opt_in", B, false),
        ("churned_at", Ts, true),
        ("consents", J, false),
    ],
    &[
        ("carrier", T, false),
        ("weight_grams", I, true),
        ("tax_amount", D, false),
        ("express", B, true),
        ("delivered_at", Ts, false),
        ("gift_wrap", J, false),
    ],
];

const ALL_TYPES: [DataType; 6] = [T, I, D, B, Ts, J];

/// Where a row image sits in a [`TxBuf`]'s arena.
pub(crate) type Span = (u32, u32);

/// One row change of a transaction, images already rendered.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Change {
    pub table: Table,
    pub op: u8,
    pub before: Option<Span>,
    pub after: Option<Span>,
    /// Change LSN, assigned when the transaction is scheduled into the WAL.
    pub lsn: u64,
}

/// The changes of one transaction, in execution order.
#[derive(Debug, Default)]
pub(crate) struct TxBuf {
    pub changes: Vec<Change>,
    pub arena: Vec<u8>,
    /// Existing entities this transaction changed (row locks a concurrent transaction must not
    /// wait for).
    pub touched: Vec<i64>,
    /// `now()` inside the transaction: its start time.
    pub now_us: i64,
    /// A transaction whose single change eavlake must dead-letter, with the reason.
    pub poison: Option<&'static str>,
}

impl TxBuf {
    pub(crate) fn reset(&mut self, now_us: i64) {
        self.changes.clear();
        self.arena.clear();
        self.touched.clear();
        self.now_us = now_us;
        self.poison = None;
    }

    pub(crate) fn image(&self, span: Option<Span>) -> Option<&[u8]> {
        span.map(|(s, e)| &self.arena[s as usize..e as usize])
    }

    fn push(&mut self, table: Table, op: u8, before: Option<Span>, after: Option<Span>) {
        self.changes.push(Change { table, op, before, after, lsn: 0 });
    }
}

/// Renders into the arena and returns where.
#[inline]
fn render(arena: &mut Vec<u8>, f: impl FnOnce(&mut Vec<u8>)) -> Span {
    let start = arena.len() as u32;
    f(arena);
    (start, arena.len() as u32)
}

/// The database.
pub(crate) struct Db {
    /// Attribute definitions per entity type.
    pub defs: [Vec<AttrDef>; 2],
    pub attrs: Vec<Attr>,
    /// Per tenant and entity type: index into `attrs` of each definition the tenant has; tenants
    /// acquire definitions in order, so the position is the definition index.
    pub by_tenant: Vec<[Vec<u32>; 2]>,
    /// Entities that exist (logically deleted ones included), in no particular order.
    pub entities: Vec<Entity>,
    next_entity_id: i64,
    next_attr_id: i64,
    /// Decimals as Kafka Connect Decimal bytes rather than text.
    precise: bool,
    scratch: Vec<u8>,
}

impl Db {
    pub(crate) fn new(tenants: u32, precise: bool) -> Db {
        let defs = INITIAL_DEFS.map(|list| {
            list.iter().map(|&(name, dtype, hot)| AttrDef { name: name.into(), dtype, hot }).collect::<Vec<_>>()
        });
        Db {
            defs,
            attrs: Vec::new(),
            by_tenant: (0..tenants.max(1)).map(|_| [Vec::new(), Vec::new()]).collect(),
            entities: Vec::new(),
            next_entity_id: 100_001,
            next_attr_id: 1,
            precise,
            scratch: Vec::with_capacity(1024),
        }
    }

    pub(crate) fn tenants(&self) -> u32 {
        self.by_tenant.len() as u32
    }

    pub(crate) fn initial_def_count(etype: u8) -> usize {
        INITIAL_DEFS[etype as usize].len()
    }

    fn attr_id(&self, tenant: u32, etype: u8, def: u16) -> i64 {
        self.attrs[self.by_tenant[tenant as usize][etype as usize][def as usize] as usize].id
    }

    // -----------------------------------------------------------------------------------------
    // Catalog.

    /// Gives the tenant its next attribute of the entity type (creating the definition when no
    /// tenant has had it yet). Returns the index into `attrs`.
    pub(crate) fn create_attribute(&mut self, tenant: u32, etype: u8, created_us: i64) -> usize {
        let e = etype as usize;
        let def = self.by_tenant[tenant as usize][e].len();
        if def == self.defs[e].len() {
            let extra = def - INITIAL_DEFS[e].len();
            let (name, dtype, hot) = match EXTRA_DEFS[e].get(extra) {
                Some(&(n, t, h)) => (n.to_string(), t, h),
                None => (format!("custom_{extra}"), ALL_TYPES[extra % 6], extra.is_multiple_of(5)),
            };
            self.defs[e].push(AttrDef { name: name.into(), dtype, hot });
        }
        let attr = Attr { id: self.next_attr_id, tenant, etype, def: def as u16, created_us };
        self.next_attr_id += 1;
        self.attrs.push(attr);
        let idx = self.attrs.len() - 1;
        self.by_tenant[tenant as usize][e].push(idx as u32);
        idx
    }

    pub(crate) fn attribute_image(&self, idx: usize, out: &mut Vec<u8>) {
        let a = &self.attrs[idx];
        let def = &self.defs[a.etype as usize][a.def as usize];
        dbz::attribute_row(out, a.id, tenant_id(a.tenant), ENTITY_TYPES[a.etype as usize], def, a.created_us);
    }

    /// `INSERT INTO attributes`: the tenant's next attribute.
    pub(crate) fn add_attribute(&mut self, tx: &mut TxBuf, tenant: u32, etype: u8) -> (u64, u16) {
        let idx = self.create_attribute(tenant, etype, tx.now_us);
        let after = render(&mut tx.arena, |o| self.attribute_image(idx, o));
        tx.push(Table::Attributes, b'c', None, Some(after));
        (1, self.attrs[idx].def)
    }

    /// Whether the tenant's entities of this type may use definition `def` yet.
    pub(crate) fn def_known(&self, tenant: u32, etype: u8, def: u16) -> bool {
        (def as usize) < self.by_tenant[tenant as usize][etype as usize].len()
    }

    /// Whether a tenant has its whole initial catalog (a snapshot cut short may leave it without).
    pub(crate) fn catalog_complete(&self, tenant: u32) -> bool {
        (0..2u8).all(|e| self.by_tenant[tenant as usize][e as usize].len() >= INITIAL_DEFS[e as usize].len())
    }

    // -----------------------------------------------------------------------------------------
    // Entities.

    /// A new entity with typical values: most hot attributes set, a bit under half of the cold
    /// ones (at most `cold_budget` of them, which it decrements).
    pub(crate) fn new_entity(
        &mut self,
        rng: &mut Rng,
        tenant: u32,
        etype: u8,
        now_us: i64,
        cold_budget: &mut u64,
    ) -> Entity {
        let id = self.next_entity_id;
        self.next_entity_id += 1;
        let defs = &self.defs[etype as usize];
        let known = self.by_tenant[tenant as usize][etype as usize].len();
        let mut hot = Vec::new();
        let mut cold = Vec::new();
        for (d, def) in defs.iter().enumerate().take(known) {
            if def.hot {
                if rng.chance(800) {
                    let v = if rng.chance(20) { None } else { Some(gen_val(rng, def, true)) };
                    hot.push((d as u16, v));
                }
            } else if *cold_budget > 0 && rng.chance(450) {
                *cold_budget -= 1;
                let val = if rng.chance(10) { None } else { Some(gen_val(rng, def, false)) };
                cold.push(Cold { def: d as u16, val, updated_us: now_us });
            }
        }
        hot.sort_by(|a, b| jsonb_key_cmp(defs, a.0, b.0));
        Entity { id, tenant, etype, deleted: false, version: 1, created_us: now_us, updated_us: now_us, hot, cold }
    }

    pub(crate) fn entity_image(&mut self, idx: usize, toasted: bool, out: &mut Vec<u8>) {
        let e = &self.entities[idx];
        let et = e.etype as usize;
        dbz::entity_row(out, &mut self.scratch, ENTITY_TYPES[et], &self.defs[et], e, toasted);
    }

    pub(crate) fn value_image(&self, idx: usize, cold: usize, out: &mut Vec<u8>) {
        let e = &self.entities[idx];
        let c = &e.cold[cold];
        let attr = self.attr_id(e.tenant, e.etype, c.def);
        dbz::value_row(out, self.precise, e.id, attr, e.tenant_id(), ValueCols::Value(c.val.as_ref()), c.updated_us);
    }

    /// `INSERT INTO entities … ; INSERT INTO entity_values …` for `n` new entities of one tenant
    /// and type, as a bulk load writes them: all entity rows, then all their values. Emits at
    /// most `budget` changes (fewer values, or fewer entities, when it must).
    pub(crate) fn insert_entities(
        &mut self,
        rng: &mut Rng,
        tx: &mut TxBuf,
        tenant: u32,
        etype: u8,
        n: u64,
        budget: u64,
    ) -> u64 {
        let n = n.min(budget);
        let mut cold_budget = budget - n;
        let first = self.entities.len();
        for _ in 0..n {
            let e = self.new_entity(rng, tenant, etype, tx.now_us, &mut cold_budget);
            self.entities.push(e);
        }
        let mut count = 0;
        for idx in first..self.entities.len() {
            let after = render(&mut tx.arena, |o| self.entity_image(idx, false, o));
            tx.push(Table::Entities, b'c', None, Some(after));
            count += 1;
        }
        for idx in first..self.entities.len() {
            for c in 0..self.entities[idx].cold.len() {
                let after = render(&mut tx.arena, |o| self.value_image(idx, c, o));
                tx.push(Table::EntityValues, b'c', None, Some(after));
                count += 1;
            }
        }
        count
    }

    /// A random entity that is not logically deleted and not in `exclude`.
    pub(crate) fn pick_live(&self, rng: &mut Rng, exclude: &[i64]) -> Option<usize> {
        if self.entities.is_empty() {
            return None;
        }
        for _ in 0..32 {
            let idx = rng.index(self.entities.len());
            let e = &self.entities[idx];
            if !e.deleted && !exclude.contains(&e.id) {
                return Some(idx);
            }
        }
        None
    }

    /// A random live entity of the tenant and type.
    pub(crate) fn pick_of(&self, rng: &mut Rng, tenant: u32, etype: u8, exclude: &[i64]) -> Option<usize> {
        if self.entities.is_empty() {
            return None;
        }
        for _ in 0..64 {
            let idx = rng.index(self.entities.len());
            let e = &self.entities[idx];
            if !e.deleted && e.tenant == tenant && e.etype == etype && !exclude.contains(&e.id) {
                return Some(idx);
            }
        }
        None
    }

    /// A random logically deleted entity (for a purge).
    pub(crate) fn pick_deleted(&self, rng: &mut Rng, exclude: &[i64]) -> Option<usize> {
        if self.entities.is_empty() {
            return None;
        }
        for _ in 0..16 {
            let idx = rng.index(self.entities.len());
            let e = &self.entities[idx];
            if e.deleted && !exclude.contains(&e.id) {
                return Some(idx);
            }
        }
        None
    }

    /// `UPDATE entities SET hot_attributes = …, version = version + 1, updated_at = now()`: one
    /// or two hot attributes set, changed, nulled or removed. Returns the number of changes.
    pub(crate) fn update_hot(&mut self, rng: &mut Rng, tx: &mut TxBuf, idx: usize) -> u64 {
        if self.pick_def(rng, idx, |def, _| def.hot).is_none() {
            return 0;
        }
        let before = render(&mut tx.arena, |o| self.entity_image(idx, false, o));
        for _ in 0..1 + rng.below(2) {
            let Some(d) = self.pick_def(rng, idx, |def, _| def.hot) else { break };
            let e = &mut self.entities[idx];
            let defs = &self.defs[e.etype as usize];
            match e.hot.iter().position(|(x, _)| *x == d) {
                Some(p) => match rng.below(10) {
                    0 => {
                        e.hot.remove(p);
                    }
                    1 => e.hot[p].1 = None,
                    _ => e.hot[p].1 = Some(gen_val(rng, &defs[d as usize], true)),
                },
                None => {
                    let v = Some(gen_val(rng, &defs[d as usize], true));
                    set_hot(defs, e, d, v);
                }
            }
        }
        self.finish_entity_update(tx, idx, Some(before), false);
        1
    }

    /// Sets hot attribute `def` of an entity (a new attribute's first value).
    fn set_hot_value(&mut self, rng: &mut Rng, tx: &mut TxBuf, idx: usize, def: u16) -> u64 {
        let before = render(&mut tx.arena, |o| self.entity_image(idx, false, o));
        let e = &mut self.entities[idx];
        let defs = &self.defs[e.etype as usize];
        let v = Some(gen_val(rng, &defs[def as usize], true));
        set_hot(defs, e, def, v);
        self.finish_entity_update(tx, idx, Some(before), false);
        1
    }

    /// Bumps version and updated_at, renders the after image, records the update.
    fn finish_entity_update(&mut self, tx: &mut TxBuf, idx: usize, before: Option<Span>, toasted: bool) {
        let e = &mut self.entities[idx];
        e.version += 1;
        e.updated_us = tx.now_us;
        tx.touched.push(e.id);
        let after = render(&mut tx.arena, |o| self.entity_image(idx, toasted, o));
        tx.push(Table::Entities, b'u', before, Some(after));
    }

    /// An update that leaves `hot_attributes` alone (a version bump, a touch): PostgreSQL does not
    /// log the unchanged TOASTed JSONB, so Debezium sends its placeholder in both images.
    pub(crate) fn touch_toasted(&mut self, tx: &mut TxBuf, idx: usize) -> u64 {
        let before = render(&mut tx.arena, |o| self.entity_image(idx, true, o));
        self.finish_entity_update(tx, idx, Some(before), true);
        1
    }

    /// `UPDATE entities SET is_deleted = true`: the entity leaves the current state.
    pub(crate) fn delete_logically(&mut self, tx: &mut TxBuf, idx: usize) -> u64 {
        let before = render(&mut tx.arena, |o| self.entity_image(idx, false, o));
        self.entities[idx].deleted = true;
        self.finish_entity_update(tx, idx, Some(before), false);
        1
    }

    /// A random definition that the entity's tenant has for its type and that satisfies `pred`.
    fn pick_def(&self, rng: &mut Rng, idx: usize, pred: impl Fn(&AttrDef, u16) -> bool) -> Option<u16> {
        let e = &self.entities[idx];
        let n = self.by_tenant[e.tenant as usize][e.etype as usize].len();
        let defs = &self.defs[e.etype as usize];
        pick_matching(rng, n, |i| pred(&defs[i], i as u16)).map(|i| i as u16)
    }

    /// `UPDATE entity_values SET value_x = …, updated_at = now()` of an existing value (of
    /// definition `def` when given, else a random one); inserts one when the entity has none.
    /// Returns the changes made and the definition changed.
    pub(crate) fn update_cold(
        &mut self,
        rng: &mut Rng,
        tx: &mut TxBuf,
        idx: usize,
        def: Option<u16>,
    ) -> (u64, Option<u16>) {
        let e = &self.entities[idx];
        let pos = match def.and_then(|d| e.cold.iter().position(|c| c.def == d)) {
            Some(p) => p,
            None if e.cold.is_empty() => return self.insert_cold(rng, tx, idx),
            None => rng.index(e.cold.len()),
        };
        let before = render(&mut tx.arena, |o| self.value_image(idx, pos, o));
        let e = &mut self.entities[idx];
        let c = &mut e.cold[pos];
        let def = &self.defs[e.etype as usize][c.def as usize];
        // Now and then a value is cleared without deleting its row (all value columns NULL).
        c.val = if c.val.is_some() && rng.chance(40) { None } else { Some(gen_val(rng, def, false)) };
        c.updated_us = tx.now_us;
        let d = c.def;
        tx.touched.push(e.id);
        let after = render(&mut tx.arena, |o| self.value_image(idx, pos, o));
        tx.push(Table::EntityValues, b'u', Some(before), Some(after));
        (1, Some(d))
    }

    /// `INSERT INTO entity_values` for a cold attribute the entity has no row for (an update
    /// when it has them all).
    pub(crate) fn insert_cold(&mut self, rng: &mut Rng, tx: &mut TxBuf, idx: usize) -> (u64, Option<u16>) {
        let cold = &self.entities[idx].cold;
        let Some(d) = self.pick_def(rng, idx, |def, d| !def.hot && !cold.iter().any(|c| c.def == d)) else {
            if cold.is_empty() {
                return (0, None);
            }
            return self.update_cold(rng, tx, idx, None);
        };
        (self.insert_cold_def(rng, tx, idx, d), Some(d))
    }

    fn insert_cold_def(&mut self, rng: &mut Rng, tx: &mut TxBuf, idx: usize, d: u16) -> u64 {
        let e = &mut self.entities[idx];
        let val = Some(gen_val(rng, &self.defs[e.etype as usize][d as usize], false));
        e.cold.push(Cold { def: d, val, updated_us: tx.now_us });
        tx.touched.push(e.id);
        let pos = e.cold.len() - 1;
        let after = render(&mut tx.arena, |o| self.value_image(idx, pos, o));
        tx.push(Table::EntityValues, b'c', None, Some(after));
        1
    }

    /// `DELETE FROM entity_values` of one value: the attribute becomes null.
    pub(crate) fn delete_cold(&mut self, rng: &mut Rng, tx: &mut TxBuf, idx: usize) -> u64 {
        let n = self.entities[idx].cold.len();
        if n == 0 {
            return 0;
        }
        let pos = rng.index(n);
        let before = render(&mut tx.arena, |o| self.value_image(idx, pos, o));
        let e = &mut self.entities[idx];
        e.cold.swap_remove(pos);
        tx.touched.push(e.id);
        tx.push(Table::EntityValues, b'd', Some(before), None);
        1
    }

    /// `UPDATE entity_values SET updated_at = now()` of a text or JSON value: the unchanged
    /// TOASTed column arrives as Debezium's placeholder. Returns 0 when the entity has none.
    pub(crate) fn touch_toasted_value(&mut self, rng: &mut Rng, tx: &mut TxBuf, idx: usize) -> u64 {
        let e = &self.entities[idx];
        let toastable = |i: usize| matches!(e.cold[i].val, Some(Val::Text(_)) | Some(Val::Json(_)));
        let Some(pos) = pick_matching(rng, e.cold.len(), toastable) else { return 0 };
        let c = &e.cold[pos];
        let dtype = self.defs[e.etype as usize][c.def as usize].dtype;
        let attr = self.attr_id(e.tenant, e.etype, c.def);
        let (id, tenant) = (e.id, e.tenant_id());
        let (precise, old) = (self.precise, c.updated_us);
        let before =
            render(&mut tx.arena, |o| dbz::value_row(o, precise, id, attr, tenant, ValueCols::Toasted(dtype), old));
        self.entities[idx].cold[pos].updated_us = tx.now_us;
        let now = tx.now_us;
        let after =
            render(&mut tx.arena, |o| dbz::value_row(o, precise, id, attr, tenant, ValueCols::Toasted(dtype), now));
        tx.touched.push(id);
        tx.push(Table::EntityValues, b'u', Some(before), Some(after));
        1
    }

    /// Changes needed to delete the entity physically (its row and the cascaded values).
    pub(crate) fn delete_cost(&self, idx: usize) -> u64 {
        1 + self.entities[idx].cold.len() as u64
    }

    /// `DELETE FROM entities WHERE entity_id IN (…)`: the entity rows, then (ON DELETE CASCADE
    /// runs after the statement) every value row of each. `idxs` must be distinct.
    pub(crate) fn delete_physically(&mut self, tx: &mut TxBuf, idxs: &mut [usize]) -> u64 {
        let mut count = 0;
        for &idx in idxs.iter() {
            let before = render(&mut tx.arena, |o| self.entity_image(idx, false, o));
            tx.push(Table::Entities, b'd', Some(before), None);
            tx.touched.push(self.entities[idx].id);
            count += 1;
        }
        for &idx in idxs.iter() {
            for c in 0..self.entities[idx].cold.len() {
                let before = render(&mut tx.arena, |o| self.value_image(idx, c, o));
                tx.push(Table::EntityValues, b'd', Some(before), None);
                count += 1;
            }
        }
        // Highest index first, so that swap_remove never moves an entity still to be removed.
        idxs.sort_unstable_by(|a, b| b.cmp(a));
        for &idx in idxs.iter() {
            self.entities.swap_remove(idx);
        }
        count
    }

    /// Gives an entity its first value of a new attribute. Returns the changes made.
    pub(crate) fn use_new_attribute(&mut self, rng: &mut Rng, tx: &mut TxBuf, idx: usize, def: u16) -> u64 {
        let e = &self.entities[idx];
        let hot = self.defs[e.etype as usize][def as usize].hot;
        if hot {
            self.set_hot_value(rng, tx, idx, def)
        } else if e.cold.iter().any(|c| c.def == def) {
            0
        } else {
            self.insert_cold_def(rng, tx, idx, def)
        }
    }

    // -----------------------------------------------------------------------------------------
    // Poison: rows that reach the stream although they break the catalog. The model does not
    // keep them: the ground truth is what eavlake must show after dead-lettering them.

    /// An `entity_values` insert whose attribute_id no attribute has.
    pub(crate) fn poison_unknown_attribute(&mut self, tx: &mut TxBuf, idx: usize, attribute_id: i64) {
        let e = &self.entities[idx];
        let (id, tenant, precise, now) = (e.id, e.tenant_id(), self.precise, tx.now_us);
        let after = render(&mut tx.arena, |o| {
            dbz::value_row(o, precise, id, attribute_id, tenant, ValueCols::TextOnly("orphan value"), now)
        });
        tx.push(Table::EntityValues, b'c', None, Some(after));
        tx.poison = Some("unknown_attribute");
    }

    /// An `entity_values` insert for a cold int attribute with the value in `value_text`.
    /// False when the entity's tenant has no cold int attribute the entity lacks.
    pub(crate) fn poison_type_mismatch(&mut self, rng: &mut Rng, tx: &mut TxBuf, idx: usize) -> bool {
        let e = &self.entities[idx];
        let free = |def: &AttrDef, d: u16| !def.hot && def.dtype == DataType::Int && !e.cold.iter().any(|c| c.def == d);
        let Some(d) = self.pick_def(rng, idx, free) else { return false };
        let attr = self.attr_id(e.tenant, e.etype, d);
        let (id, tenant, precise, now) = (e.id, e.tenant_id(), self.precise, tx.now_us);
        let text = rng.pick(&["42", "forty-two", "12 apples", "1.5"]);
        let after =
            render(&mut tx.arena, |o| dbz::value_row(o, precise, id, attr, tenant, ValueCols::TextOnly(text), now));
        tx.push(Table::EntityValues, b'c', None, Some(after));
        tx.poison = Some("type_mismatch");
        true
    }
}

/// A uniformly random index below `n` that satisfies `pred`, without allocating.
fn pick_matching(rng: &mut Rng, n: usize, pred: impl Fn(usize) -> bool) -> Option<usize> {
    let count = (0..n).filter(|&i| pred(i)).count();
    if count == 0 {
        return None;
    }
    let k = rng.index(count);
    (0..n).filter(|&i| pred(i)).nth(k)
}

fn jsonb_key_cmp(defs: &[AttrDef], a: u16, b: u16) -> Ordering {
    dbz::jsonb_key_cmp(&defs[a as usize].name, &defs[b as usize].name)
}

/// Puts a hot value at its jsonb key position.
fn set_hot(defs: &[AttrDef], e: &mut Entity, def: u16, v: Option<Val>) {
    match e.hot.binary_search_by(|(x, _)| jsonb_key_cmp(defs, *x, def)) {
        Ok(p) => e.hot[p].1 = v,
        Err(p) => e.hot.insert(p, (def, v)),
    }
}

// ---------------------------------------------------------------------------------------------
// Values.

const FIRST: &[&str] = &[
    "Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Margaret", "Linus", "Zoë", "Jürgen",
    "Søren", "Łukasz", "José", "Chloé", "Aiko", "Olu",
];
const LAST: &[&str] = &[
    "Lovelace",
    "Hopper",
    "Turing",
    "Dijkstra",
    "Liskov",
    "Knuth",
    "Allen",
    "Thompson",
    "Hamilton",
    "Torvalds",
    "O'Brien",
    "Müller",
    "Núñez",
    "李",
    "Ólafsson",
    "Nakamura",
];
const WORDS: &[&str] = &[
    "please",
    "deliver",
    "before",
    "noon",
    "invoice",
    "attached",
    "fragile",
    "returned",
    "gift",
    "express",
    "called",
    "twice",
    "customer",
    "prefers",
    "email",
    "backorder",
    "discount",
    "applied",
    "net-30",
    "VAT",
    "ok",
];
/// Text that breaks naive JSON, CSV or SQL handling.
const ODD: &[&str] = &[
    "\"quoted\"",
    "back\\slash",
    "tab\there",
    "line\nbreak",
    "東京",
    "🚀",
    "naïve",
    "\u{7}bell",
    "{not json}",
    "50% off",
    "</script>",
    "C:\\temp\\",
    "__debezium",
];
const CURRENCIES: &[&str] = &["EUR", "USD", "GBP", "JPY", "CHF", "SEK"];
const CARRIERS: &[&str] = &["DHL", "UPS", "FedEx", "La Poste", "Royal Mail", "ヤマト運輸"];

fn push_words(rng: &mut Rng, n: u64, out: &mut String) {
    for i in 0..n {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(if rng.chance(60) { rng.pick(ODD) } else { rng.pick(WORDS) });
    }
}

/// 2024-03-01T00:00:00Z in µs.
pub(crate) const MARCH_2024_US: i64 = 1_709_251_200_000_000;
const DAY_US: i64 = 86_400_000_000;
const CENTS: i128 = 10_000_000;

/// A value of the definition's type, shaped by its name. Hot values stay JSON-friendly (integers
/// within ±2^53, decimals of at most 15 digits); cold ones sometimes hit the column limits.
pub(crate) fn gen_val(rng: &mut Rng, def: &AttrDef, hot: bool) -> Val {
    match def.dtype {
        DataType::Text => {
            let mut s = String::new();
            if rng.chance(10) {
                return Val::Text(s.into());
            }
            match &*def.name {
                "full_name" | "nickname" => {
                    s.push_str(rng.pick(FIRST));
                    s.push(' ');
                    s.push_str(rng.pick(LAST));
                }
                "email" => {
                    s.push_str(&rng.pick(FIRST).to_lowercase());
                    s.push('.');
                    s.push_str(&rng.below(100_000).to_string());
                    s.push_str("@example.com");
                }
                "currency" => s.push_str(rng.pick(CURRENCIES)),
                "carrier" => s.push_str(rng.pick(CARRIERS)),
                "order_number" => s.push_str(&format!("ORD-{:07}", rng.below(10_000_000))),
                "notes" | "comment" => {
                    let n = 3 + rng.below(28);
                    push_words(rng, n, &mut s)
                }
                _ => {
                    let n = 1 + rng.below(4);
                    push_words(rng, n, &mut s)
                }
            }
            Val::Text(s.into())
        }
        DataType::Int => Val::Int(match &*def.name {
            "age" => rng.between(18, 95),
            "tier_level" => rng.between(1, 5),
            "quantity" => rng.between(1, 20),
            "priority" => rng.between(0, 9),
            "weight_grams" => rng.between(50, 30_000),
            "loyalty_points" => rng.between(0, 100_000),
            _ if !hot && rng.chance(30) => rng.pick(&[i64::MIN, i64::MAX, 0, -1]),
            _ if hot => rng.between(-(1 << 53), 1 << 53),
            _ => rng.between(-1_000, 1_000_000),
        }),
        DataType::Decimal => Val::Dec(match &*def.name {
            "balance" => rng.between(-500_000, 10_000_000) as i128 * CENTS,
            "credit_limit" => rng.between(0, 500) as i128 * 100_000_000_000,
            "total" | "tax_amount" | "lifetime_value" => rng.between(0, 1_000_000) as i128 * CENTS,
            "discount" => rng.between(0, 5_000) as i128 * 100_000,
            _ if hot => rng.between(-999_999_999_999_999, 999_999_999_999_999) as i128,
            // numeric(38, 9) at its limits: 29 integer digits.
            _ if rng.chance(20) => {
                let big = rng.next_u64() as i128 * 1_000_000_000_000_000_000 + rng.below(1 << 60) as i128;
                let big = big.min(10i128.pow(38) - 1);
                if rng.chance(500) {
                    -big
                } else {
                    big
                }
            }
            _ => rng.between(-1_000_000_000_000_000, 1_000_000_000_000_000) as i128,
        }),
        DataType::Bool => Val::Bool(rng.chance(500)),
        DataType::Timestamp => Val::Ts(match &*def.name {
            // Dates of birth: midnight UTC, mostly before 1970 (negative µs).
            "birth_date" => rng.between(-12_784, 13_514) * DAY_US,
            "last_seen_at" | "churned_at" | "delivered_at" | "shipped_at" | "placed_at" => {
                rng.between(MARCH_2024_US - 270 * DAY_US, MARCH_2024_US + 5 * DAY_US)
            }
            _ if rng.chance(200) => rng.between(1_420_070_400, 1_767_225_600) * 1_000_000,
            _ => rng.between(1_420_070_400_000_000, 1_767_225_600_000_000),
        }),
        DataType::Json => {
            let mut out = Vec::with_capacity(64);
            if hot || rng.chance(900) {
                gen_json_object(rng, &mut out, 0);
            } else {
                gen_json_array(rng, &mut out, 0);
            }
            Val::Json(String::from_utf8_lossy(&out).into())
        }
    }
}

const JSON_KEYS: &[&str] = &[
    "id", "tags", "score", "theme", "lang", "street", "city", "zip", "country", "geo", "lat", "lon", "items", "sku",
    "qty", "source", "flags", "v", "opt_in", "note",
];

/// A JSON object as `jsonb_out` prints it: keys unique, ordered by length then bytes.
fn gen_json_object(rng: &mut Rng, out: &mut Vec<u8>, depth: u32) {
    let n = if rng.chance(50) { 0 } else { 1 + rng.below(4) };
    let mut keys: Vec<&str> = (0..n).map(|_| rng.pick(JSON_KEYS)).collect();
    keys.sort_by(|a, b| dbz::jsonb_key_cmp(a, b));
    keys.dedup();
    out.push(b'{');
    for (i, k) in keys.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b", ");
        }
        dbz::push_pg_str(out, k);
        out.extend_from_slice(b": ");
        gen_json_value(rng, out, depth + 1);
    }
    out.push(b'}');
}

fn gen_json_array(rng: &mut Rng, out: &mut Vec<u8>, depth: u32) {
    out.push(b'[');
    for i in 0..rng.below(4) {
        if i > 0 {
            out.extend_from_slice(b", ");
        }
        gen_json_value(rng, out, depth + 1);
    }
    out.push(b']');
}

fn gen_json_value(rng: &mut Rng, out: &mut Vec<u8>, depth: u32) {
    match rng.below(10) {
        0..=2 => {
            let w = if rng.chance(200) { rng.pick(ODD) } else { rng.pick(WORDS) };
            dbz::push_pg_str(out, w)
        }
        3 => dbz::push_i64(out, rng.between(-1_000_000, 1_000_000)),
        4 => dbz::push_decimal_short(out, rng.between(-100_000, 100_000) as i128 * CENTS),
        5 => out.extend_from_slice(if rng.chance(500) { b"true" } else { b"false" }),
        6 => out.extend_from_slice(b"null"),
        7 if depth < 3 => gen_json_array(rng, out, depth),
        _ if depth < 3 => gen_json_object(rng, out, depth),
        _ => dbz::push_i64(out, rng.between(0, 100)),
    }
}
