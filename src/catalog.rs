//! The attribute catalog: which attributes exist, per tenant and entity type, with their data
//! types. It is what turns a narrow `entity_values` row (an attribute id) or a key of
//! `hot_attributes` (an attribute name) into a typed column of a wide row.
//!
//! It is built from the `attributes` table's own change events (snapshot and live), can be
//! bootstrapped from Postgres, and is saved in the lake (`_eavlake/catalog.json`, versioned) so a
//! later run starts with what earlier runs learnt.
//!
//! Every stream of a lake (each Kafka partition) carries the attributes' changes and saves the
//! catalog it knows, so the saved catalog is a merge ([`Catalog::merge`]), never an overwrite:
//! each attribute remembers the source position of the change that last set it (or removed it),
//! and the later change wins. A stream behind the others must not take back what they learnt:
//! after a restart it resumes past the attribute's creation and would never see it again.
//!
//! The reverse holds too: a stream must not type its changes by attribute states later than
//! them (a value written before its attribute was retyped keeps its old type). So each attribute
//! also keeps its earlier positioned states ([`MAX_EARLIER`] of them), a stream starts from the
//! catalog as of its resume position ([`Catalog::as_of`]), and the changes ahead of it are
//! applied when its own changes reach their positions (see `pipeline`). A change older than the
//! state an attribute has is only remembered, never applied over it.

use crate::decode::{AttributeRow, DataType, Op};
use crate::position::{Lsn, SourcePosition};
use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// One attribute of an entity type of a tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attribute {
    pub attribute_id: i64,
    pub tenant_id: i64,
    pub entity_type: Arc<str>,
    pub name: Arc<str>,
    pub data_type: DataType,
    pub is_hot: bool,
}

/// One positioned state of an attribute: what a change at `at` left (`None`: it removed it).
#[derive(Debug, Clone, PartialEq)]
pub struct AttributeVersion {
    pub attribute_id: i64,
    pub at: SourcePosition,
    pub state: Option<Attribute>,
}

/// Earlier states kept per attribute: enough for any stream's lag behind the others in
/// practice (a stream behind by more changes of one attribute than this resumes without the
/// older states, and its values written under them become dead letters).
pub const MAX_EARLIER: usize = 16;

/// What applying a catalog change did.
#[derive(Debug, Clone, PartialEq)]
pub enum CatalogChange {
    Unchanged,
    Added,
    /// Same attribute, other name, type or hotness. Open batches must be closed before rows of
    /// the new shape are added, so that no file mixes two types in one column.
    Altered {
        previous: Attribute,
    },
    Removed,
}

/// The catalog. Lookups are by id (cold values) and by (tenant, type, name) (hot values).
#[derive(Debug, Default, Clone)]
pub struct Catalog {
    by_id: FxHashMap<i64, Attribute>,
    /// Per tenant, per entity type: lookups that borrow `&str` keys without allocating.
    types: FxHashMap<i64, FxHashMap<Arc<str>, TypeAttributes>>,
    /// Source position of the change that last set each attribute; none for an attribute that
    /// came without one (bootstrapped from Postgres, or a catalog file written before positions
    /// were kept), which any positioned change replaces.
    positions: FxHashMap<i64, SourcePosition>,
    /// Attributes removed, and the position of their removal: a merge must not bring back an
    /// attribute that a later change removed.
    removed: FxHashMap<i64, SourcePosition>,
    /// States an attribute had before its current one, from positioned changes, oldest first.
    earlier: FxHashMap<i64, Vec<(SourcePosition, Option<Attribute>)>>,
    /// Bumped on every change, so that users can tell cheaply that something changed.
    version: u64,
    /// One allocation per entity type name, shared by its attributes and types of all tenants:
    /// the pivot tells types apart by the allocation before it compares names.
    type_names: FxHashSet<Arc<str>>,
}

#[derive(Debug, Default, Clone)]
struct TypeAttributes {
    by_name: FxHashMap<Arc<str>, i64>,
    /// Hot attribute ids, in id order.
    hot: Vec<i64>,
    /// All attribute ids, in id order.
    all: Vec<i64>,
}

/// One entity type of a tenant in the [`Catalog`] (see [`Catalog::entity_type`]).
#[derive(Clone, Copy)]
pub struct EntityType<'c> {
    catalog: &'c Catalog,
    name: &'c Arc<str>,
    attrs: &'c TypeAttributes,
}

impl<'c> EntityType<'c> {
    /// The type's name, shared with the catalog.
    pub fn name(&self) -> &'c Arc<str> {
        self.name
    }

    /// The same as [`Catalog::by_name`] for this tenant and type.
    pub fn by_name(&self, name: &str) -> Option<&'c Attribute> {
        self.catalog.by_id.get(self.attrs.by_name.get(name)?)
    }

    /// The same as [`Catalog::hot_attributes`] for this tenant and type.
    pub fn hot_attributes(&self) -> impl Iterator<Item = &'c Attribute> + 'c {
        let by_id = &self.catalog.by_id;
        self.attrs.hot.iter().filter_map(move |id| by_id.get(id))
    }
}

/// On-disk form, versioned from the first release. Positions came later, as optional fields.
#[derive(Serialize, Deserialize)]
struct CatalogFile {
    format_version: u32,
    attributes: Vec<FileAttribute>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    removed: Vec<FileRemoval>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    earlier: Vec<FileEarlier>,
}

/// An earlier state of an attribute (`attribute` absent: it was removed then).
#[derive(Serialize, Deserialize)]
struct FileEarlier {
    attribute_id: i64,
    position: [u64; 2],
    #[serde(default, skip_serializing_if = "Option::is_none")]
    attribute: Option<Attribute>,
}

#[derive(Serialize, Deserialize)]
struct FileAttribute {
    #[serde(flatten)]
    attribute: Attribute,
    /// `[commit_lsn, lsn]` of the change that last set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    position: Option<[u64; 2]>,
}

#[derive(Serialize, Deserialize)]
struct FileRemoval {
    attribute_id: i64,
    position: [u64; 2],
}

fn to_pair(p: SourcePosition) -> [u64; 2] {
    [p.commit_lsn.0, p.lsn.0]
}

fn from_pair([commit, lsn]: [u64; 2]) -> SourcePosition {
    SourcePosition { commit_lsn: Lsn(commit), lsn: Lsn(lsn) }
}

const CATALOG_FORMAT_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog file: {0}")]
    File(String),
    #[error("catalog from Postgres ({what}): {message}")]
    Postgres { what: String, message: String },
}

impl Catalog {
    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub fn get(&self, attribute_id: i64) -> Option<&Attribute> {
        self.by_id.get(&attribute_id)
    }

    pub fn by_name(&self, tenant_id: i64, entity_type: &str, name: &str) -> Option<&Attribute> {
        let id = self.types.get(&tenant_id)?.get(entity_type)?.by_name.get(name)?;
        self.by_id.get(id)
    }

    /// One entity type of a tenant, looked up once for many lookups by name (the pivot reads
    /// every key of a `hot_attributes` object); its name is the catalog's own `Arc`, so callers
    /// can keep it without allocating. `None` when the catalog never had an attribute of it.
    pub fn entity_type(&self, tenant_id: i64, entity_type: &str) -> Option<EntityType<'_>> {
        let (name, attrs) = self.types.get(&tenant_id)?.get_key_value(entity_type)?;
        Some(EntityType { catalog: self, name, attrs })
    }

    /// Hot attributes of an entity type of a tenant, in attribute id order.
    pub fn hot_attributes(&self, tenant_id: i64, entity_type: &str) -> impl Iterator<Item = &Attribute> {
        self.types
            .get(&tenant_id)
            .and_then(|t| t.get(entity_type))
            .into_iter()
            .flat_map(|t| t.hot.iter())
            .filter_map(|id| self.by_id.get(id))
    }

    /// All attributes of an entity type of a tenant, in attribute id order.
    pub fn attributes_of(&self, tenant_id: i64, entity_type: &str) -> Vec<&Attribute> {
        self.types
            .get(&tenant_id)
            .and_then(|t| t.get(entity_type))
            .into_iter()
            .flat_map(|t| t.all.iter())
            .filter_map(|id| self.by_id.get(id))
            .collect()
    }

    /// Every attribute, in id order.
    pub fn all(&self) -> Vec<&Attribute> {
        let mut out: Vec<&Attribute> = self.by_id.values().collect();
        out.sort_by_key(|a| a.attribute_id);
        out
    }

    /// Applies a change event of the `attributes` table, made at source position `at` (none
    /// when the change has no place in the source's history). Applied whatever the position: a
    /// stream replaying its history goes through the catalog's past states in order.
    pub fn apply(
        &mut self,
        op: Op,
        before: Option<&AttributeRow>,
        after: Option<&AttributeRow>,
        at: Option<SourcePosition>,
    ) -> CatalogChange {
        match Catalog::state_after(op, before, after) {
            Some((id, state)) => self.set_version(id, state, at),
            None => CatalogChange::Unchanged,
        }
    }

    /// The attribute a change of the `attributes` table is about, and its state after it
    /// (`None`: removed); `None` for a change that names no attribute.
    pub fn state_after(
        op: Op,
        before: Option<&AttributeRow>,
        after: Option<&AttributeRow>,
    ) -> Option<(i64, Option<Attribute>)> {
        match (op, after) {
            (Op::Delete, _) | (_, None) => before.map(|b| (b.attribute_id, None)),
            (_, Some(a)) => Some((
                a.attribute_id,
                Some(Attribute {
                    attribute_id: a.attribute_id,
                    tenant_id: a.tenant_id,
                    entity_type: Arc::from(a.entity_type.as_str()),
                    name: Arc::from(a.name.as_str()),
                    data_type: a.data_type,
                    is_hot: a.is_hot,
                }),
            )),
        }
    }

    /// Sets an attribute's state (`None`: removes it) from a change at `at`. A positioned
    /// change older than the attribute's current state is only remembered among its earlier
    /// states; the current one, when a later change replaces it, joins them.
    pub fn set_version(
        &mut self,
        attribute_id: i64,
        state: Option<Attribute>,
        at: Option<SourcePosition>,
    ) -> CatalogChange {
        if let (Some(at), Some(current)) = (at, self.position(attribute_id)) {
            if at < current {
                self.remember(attribute_id, at, state);
                return CatalogChange::Unchanged;
            }
            if at > current {
                let was = self.by_id.get(&attribute_id).cloned();
                self.remember(attribute_id, current, was);
            }
        }
        match state {
            Some(attr) => self.upsert_at(attr, at),
            None if self.remove_at(attribute_id, at).is_some() => CatalogChange::Removed,
            None => CatalogChange::Unchanged,
        }
    }

    /// Whether a change at `at` would set the attribute's current state (it is not older).
    pub fn is_current_at(&self, attribute_id: i64, at: Option<SourcePosition>) -> bool {
        match (at, self.position(attribute_id)) {
            (Some(at), Some(current)) => at >= current,
            _ => true,
        }
    }

    /// Position of the change that set (or removed) the attribute's current state.
    fn position(&self, attribute_id: i64) -> Option<SourcePosition> {
        self.positions.get(&attribute_id).or(self.removed.get(&attribute_id)).copied()
    }

    /// Adds an earlier state, keeping the newest [`MAX_EARLIER`]; news to save when it is new.
    fn remember(&mut self, attribute_id: i64, at: SourcePosition, state: Option<Attribute>) {
        let list = self.earlier.entry(attribute_id).or_default();
        match list.binary_search_by(|(p, _)| p.cmp(&at)) {
            Ok(_) => return,
            Err(i) => list.insert(i, (at, state)),
        }
        if list.len() > MAX_EARLIER {
            list.remove(0);
        }
        self.version += 1;
    }

    /// Every positioned state this catalog knows (earlier ones, current ones and removals),
    /// ordered by position.
    pub fn versions(&self) -> Vec<AttributeVersion> {
        let mut out: Vec<AttributeVersion> = self.earlier_versions().collect();
        for (&attribute_id, &at) in &self.positions {
            out.push(AttributeVersion { attribute_id, at, state: self.by_id.get(&attribute_id).cloned() });
        }
        for (&attribute_id, &at) in &self.removed {
            out.push(AttributeVersion { attribute_id, at, state: None });
        }
        out.sort_by_key(|v| (v.at, v.attribute_id));
        out
    }

    /// The states attributes had before their current ones, unordered.
    fn earlier_versions(&self) -> impl Iterator<Item = AttributeVersion> + '_ {
        self.earlier.iter().flat_map(|(&attribute_id, list)| {
            list.iter().map(move |(at, state)| AttributeVersion { attribute_id, at: *at, state: state.clone() })
        })
    }

    /// The catalog as a stream resuming after position `at` (none: from its beginning) must
    /// start with: attributes without a position, and each positioned attribute as its last
    /// change at or before `at` left it; and, in order of position, the changes after `at`,
    /// which the stream applies as its own changes reach them.
    pub fn as_of(&self, at: Option<SourcePosition>) -> (Catalog, Vec<AttributeVersion>) {
        let mut past = Catalog::default();
        for attr in self.all() {
            if !self.positions.contains_key(&attr.attribute_id) {
                past.upsert_at(attr.clone(), None);
            }
        }
        let mut ahead = Vec::new();
        for v in self.versions() {
            if at.is_some_and(|at| v.at <= at) {
                past.set_version(v.attribute_id, v.state, Some(v.at));
            } else {
                ahead.push(v);
            }
        }
        (past, ahead)
    }

    /// Adds or replaces one attribute, with no source position (see [`Catalog::apply`]).
    pub fn upsert(&mut self, attr: Attribute) -> CatalogChange {
        self.upsert_at(attr, None)
    }

    fn upsert_at(&mut self, attr: Attribute, at: Option<SourcePosition>) -> CatalogChange {
        let id = attr.attribute_id;
        self.removed.remove(&id);
        let moved = match at {
            Some(p) => self.positions.insert(id, p) != Some(p),
            None => self.positions.remove(&id).is_some(),
        };
        let change = self.set(attr);
        if moved && change == CatalogChange::Unchanged {
            self.version += 1; // Nothing to retype, but there is news to save.
        }
        change
    }

    /// Merges `other` into this catalog: for each attribute, the later of the two changes that
    /// set or removed it wins; without positions on either side, `other`'s. What the lake keeps
    /// when a stream saves its catalog (see the module's documentation).
    pub fn merge(&mut self, other: &Catalog) {
        // Positioned states, in order: each is applied or, older than what this catalog
        // has, remembered (see `set_version`).
        for v in other.versions() {
            self.set_version(v.attribute_id, v.state, Some(v.at));
        }
        // Unpositioned ones lose to any positioned change.
        for attr in other.all() {
            let id = attr.attribute_id;
            if !other.positions.contains_key(&id) && self.position(id).is_none() {
                self.upsert_at(attr.clone(), None);
            }
        }
    }

    /// Removes an attribute by a change at `at`, remembered (when known) so that a merge does not
    /// bring it back.
    fn remove_at(&mut self, attribute_id: i64, at: Option<SourcePosition>) -> Option<Attribute> {
        self.positions.remove(&attribute_id);
        if let Some(at) = at {
            if self.removed.insert(attribute_id, at) != Some(at) {
                self.version += 1; // News to save even if the attribute was unknown.
            }
        }
        self.remove(attribute_id)
    }

    /// Sets one attribute; its position is the caller's business.
    fn set(&mut self, mut attr: Attribute) -> CatalogChange {
        let change = match self.by_id.get(&attr.attribute_id) {
            Some(existing) if *existing == attr => return CatalogChange::Unchanged,
            Some(existing) => CatalogChange::Altered { previous: existing.clone() },
            None => CatalogChange::Added,
        };
        self.remove(attr.attribute_id);
        attr.entity_type = match self.type_names.get(&*attr.entity_type) {
            Some(shared) => shared.clone(),
            None => {
                self.type_names.insert(attr.entity_type.clone());
                attr.entity_type
            }
        };
        let t = self.types.entry(attr.tenant_id).or_default().entry(attr.entity_type.clone()).or_default();
        t.by_name.insert(attr.name.clone(), attr.attribute_id);
        let at = t.all.partition_point(|id| *id < attr.attribute_id);
        t.all.insert(at, attr.attribute_id);
        if attr.is_hot {
            let at = t.hot.partition_point(|id| *id < attr.attribute_id);
            t.hot.insert(at, attr.attribute_id);
        }
        self.by_id.insert(attr.attribute_id, attr);
        self.version += 1;
        change
    }

    fn remove(&mut self, attribute_id: i64) -> Option<Attribute> {
        let attr = self.by_id.remove(&attribute_id)?;
        if let Some(t) = self.types.get_mut(&attr.tenant_id).and_then(|t| t.get_mut(&*attr.entity_type)) {
            if t.by_name.get(&*attr.name) == Some(&attribute_id) {
                t.by_name.remove(&*attr.name);
            }
            t.hot.retain(|id| *id != attribute_id);
            t.all.retain(|id| *id != attribute_id);
        }
        self.version += 1;
        Some(attr)
    }

    pub fn to_json(&self) -> Vec<u8> {
        let attributes = self
            .all()
            .into_iter()
            .map(|a| FileAttribute {
                attribute: a.clone(),
                position: self.positions.get(&a.attribute_id).copied().map(to_pair),
            })
            .collect();
        let mut removed: Vec<FileRemoval> =
            self.removed.iter().map(|(&attribute_id, &p)| FileRemoval { attribute_id, position: to_pair(p) }).collect();
        removed.sort_by_key(|r| r.attribute_id);
        let mut earlier: Vec<FileEarlier> = self
            .earlier_versions()
            .map(|v| FileEarlier { attribute_id: v.attribute_id, position: to_pair(v.at), attribute: v.state })
            .collect();
        earlier.sort_by_key(|e| (e.attribute_id, e.position));
        let file = CatalogFile { format_version: CATALOG_FORMAT_VERSION, attributes, removed, earlier };
        // Serialising plain owned data cannot fail.
        serde_json::to_vec_pretty(&file).unwrap_or_default()
    }

    pub fn from_json(bytes: &[u8]) -> Result<Catalog, CatalogError> {
        let file: CatalogFile = serde_json::from_slice(bytes).map_err(|e| CatalogError::File(e.to_string()))?;
        if file.format_version != CATALOG_FORMAT_VERSION {
            return Err(CatalogError::File(format!(
                "format_version {} is not supported (this eavlake reads {CATALOG_FORMAT_VERSION})",
                file.format_version
            )));
        }
        let mut catalog = Catalog::default();
        for a in file.attributes {
            catalog.upsert_at(a.attribute, a.position.map(from_pair));
        }
        for r in file.removed {
            catalog.removed.insert(r.attribute_id, from_pair(r.position));
        }
        for e in file.earlier {
            catalog.remember(e.attribute_id, from_pair(e.position), e.attribute);
        }
        Ok(catalog)
    }

    /// Loads every attribute from the live `attributes` table (when the Debezium topic of the
    /// catalog has been compacted away or the file source holds no snapshot of it).
    pub async fn bootstrap_from_postgres(url: &str, table: &str) -> Result<Catalog, CatalogError> {
        let pg = |what: &str, e: &dyn std::fmt::Display| CatalogError::Postgres {
            what: what.to_string(),
            message: e.to_string(),
        };
        let target = crate::pg::parse(url).map_err(|e| pg("connection string", &e))?;
        let manager = deadpool_postgres::Manager::new(target.config, target.tls);
        let pool = deadpool_postgres::Pool::builder(manager).max_size(1).build().map_err(|e| pg("pool", &e))?;
        let client = pool.get().await.map_err(|e| pg("connect", &e))?;
        let sql =
            format!("SELECT attribute_id, tenant_id, entity_type, name, data_type, is_hot FROM {}", quote_ident(table));
        let rows = client.query(&sql, &[]).await.map_err(|e| pg("query", &e))?;
        let mut catalog = Catalog::default();
        for row in rows {
            let data_type: String = row.try_get(4).map_err(|e| pg("data_type", &e))?;
            catalog.upsert(Attribute {
                attribute_id: row.try_get(0).map_err(|e| pg("attribute_id", &e))?,
                tenant_id: row.try_get(1).map_err(|e| pg("tenant_id", &e))?,
                entity_type: Arc::from(row.try_get::<_, String>(2).map_err(|e| pg("entity_type", &e))?),
                name: Arc::from(row.try_get::<_, String>(3).map_err(|e| pg("name", &e))?),
                data_type: DataType::parse(&data_type)
                    .ok_or_else(|| pg("data_type", &format!("unknown data type `{data_type}`")))?,
                is_hot: row.try_get(5).map_err(|e| pg("is_hot", &e))?,
            });
        }
        Ok(catalog)
    }
}

/// Quotes a possibly schema-qualified identifier (`public.attributes`).
fn quote_ident(name: &str) -> String {
    name.split('.').map(|p| format!("\"{}\"", p.replace('"', "\"\""))).collect::<Vec<_>>().join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, name: &str, dt: DataType, hot: bool) -> AttributeRow {
        AttributeRow {
            attribute_id: id,
            tenant_id: 1,
            entity_type: "customer".into(),
            name: name.into(),
            data_type: dt,
            is_hot: hot,
        }
    }

    #[test]
    fn learns_alters_and_forgets_attributes() {
        let mut c = Catalog::default();
        assert_eq!(c.apply(Op::Read, None, Some(&row(2, "age", DataType::Int, true)), None), CatalogChange::Added);
        assert_eq!(c.apply(Op::Create, None, Some(&row(1, "name", DataType::Text, true)), None), CatalogChange::Added);
        assert_eq!(
            c.apply(Op::Update, None, Some(&row(1, "name", DataType::Text, true)), None),
            CatalogChange::Unchanged
        );
        assert_eq!(c.by_name(1, "customer", "age").map(|a| a.attribute_id), Some(2));
        let hot: Vec<i64> = c.hot_attributes(1, "customer").map(|a| a.attribute_id).collect();
        assert_eq!(hot, vec![1, 2]);
        let ty = c.entity_type(1, "customer").unwrap();
        assert_eq!(&**ty.name(), "customer");
        assert_eq!(ty.by_name("age").map(|a| a.attribute_id), Some(2));
        assert_eq!(ty.hot_attributes().map(|a| a.attribute_id).collect::<Vec<_>>(), hot);
        assert!(c.entity_type(2, "customer").is_none() && c.entity_type(1, "order").is_none());
        // One allocation of the type's name, for its attributes and its tenants (the pivot
        // tells types apart by it).
        let other_tenant = AttributeRow { tenant_id: 2, ..row(3, "age", DataType::Int, false) };
        assert_eq!(c.apply(Op::Create, None, Some(&other_tenant), None), CatalogChange::Added);
        let (one, two) = (c.entity_type(1, "customer").unwrap(), c.entity_type(2, "customer").unwrap());
        assert!(Arc::ptr_eq(one.name(), two.name()));
        assert!([1, 2, 3].iter().all(|id| Arc::ptr_eq(&c.get(*id).unwrap().entity_type, one.name())));
        assert_eq!(c.apply(Op::Delete, Some(&other_tenant), None, None), CatalogChange::Removed);

        let changed = c.apply(Op::Update, None, Some(&row(2, "age", DataType::Text, false)), None);
        assert!(matches!(changed, CatalogChange::Altered { previous } if previous.data_type == DataType::Int));
        assert_eq!(c.hot_attributes(1, "customer").count(), 1);
        assert_eq!(c.get(2).map(|a| a.data_type), Some(DataType::Text));

        assert_eq!(
            c.apply(Op::Delete, Some(&row(1, "name", DataType::Text, true)), None, None),
            CatalogChange::Removed
        );
        assert!(c.by_name(1, "customer", "name").is_none());
        assert_eq!(c.len(), 1);
    }

    fn at(lsn: u64) -> Option<SourcePosition> {
        Some(SourcePosition { commit_lsn: Lsn(lsn), lsn: Lsn(lsn) })
    }

    /// Two streams' catalogs merged as the lake saves them: the later change of each attribute
    /// wins, whichever side it is on; a removal too; an attribute one side never saw stays.
    #[test]
    fn merge_keeps_the_later_change_of_each_attribute() {
        let (name, tier, old) = (
            row(1, "name", DataType::Text, true),
            row(2, "tier", DataType::Text, true),
            row(3, "old", DataType::Int, false),
        );
        // Ahead: has seen `tier` created (20), `name` retyped (30) and `old` removed (40).
        let mut ahead = Catalog::default();
        ahead.apply(Op::Create, None, Some(&name), at(10));
        ahead.apply(Op::Create, None, Some(&old), at(11));
        ahead.apply(Op::Create, None, Some(&tier), at(20));
        let name_int = row(1, "name", DataType::Int, true);
        ahead.apply(Op::Update, Some(&name), Some(&name_int), at(30));
        ahead.apply(Op::Delete, Some(&old), None, at(40));
        // Behind: up to position 11 only.
        let mut behind = Catalog::default();
        behind.apply(Op::Create, None, Some(&name), at(10));
        behind.apply(Op::Create, None, Some(&old), at(11));

        for (mut lake, saving) in [(ahead.clone(), &behind), (behind.clone(), &ahead)] {
            lake.merge(saving);
            assert_eq!(lake.get(1).map(|a| a.data_type), Some(DataType::Int), "the retype at 30 stands");
            assert!(lake.get(2).is_some(), "tier, created at 20, stays");
            assert!(lake.get(3).is_none(), "old, removed at 40, is not brought back");
            assert_eq!(lake.to_json(), ahead.to_json());
        }

        // Without positions (bootstrapped from Postgres), the incoming side wins, and a
        // positioned change wins over it.
        let mut boot = Catalog::default();
        boot.upsert(Attribute { data_type: DataType::Bool, ..ahead.get(2).unwrap().clone() });
        boot.upsert(Attribute { attribute_id: 9, ..ahead.get(2).unwrap().clone() });
        let mut lake = ahead.clone();
        lake.merge(&boot);
        assert_eq!(lake.get(2).map(|a| a.data_type), Some(DataType::Text));
        assert!(lake.get(9).is_some());
        let v = lake.version();
        lake.merge(&ahead);
        assert_eq!(lake.version(), v, "merging what it holds changes nothing");
    }

    /// A stream resuming at a position gets each attribute as it was then, and the changes after
    /// it, in order; a change older than an attribute's state is remembered, not applied.
    #[test]
    fn as_of_a_position_gives_the_states_then_and_the_changes_ahead() {
        let (score, score_text, tier) = (
            row(1, "score", DataType::Int, false),
            row(1, "score", DataType::Text, false),
            row(2, "tier", DataType::Text, true),
        );
        let mut c = Catalog::default();
        c.apply(Op::Create, None, Some(&score), at(10));
        c.apply(Op::Create, None, Some(&tier), at(20));
        c.apply(Op::Update, Some(&score), Some(&score_text), at(30));
        c.apply(Op::Delete, Some(&tier), None, at(40));
        c.upsert(Attribute { attribute_id: 9, name: Arc::from("nine"), ..c.get(1).unwrap().clone() });

        let (then, ahead) = c.as_of(at(25));
        assert_eq!(then.get(1).map(|a| a.data_type), Some(DataType::Int), "score before its retype");
        assert!(then.get(2).is_some(), "tier before its removal");
        assert!(then.get(9).is_some(), "an attribute without a position is always there");
        let ahead: Vec<(i64, u64, bool)> =
            ahead.iter().map(|v| (v.attribute_id, v.at.lsn.0, v.state.is_some())).collect();
        assert_eq!(ahead, [(1, 30, true), (2, 40, false)]);
        let (start, ahead) = c.as_of(None);
        assert!(start.get(1).is_none() && start.get(9).is_some());
        assert_eq!(ahead.len(), 4);
        let (now, ahead) = c.as_of(at(40));
        assert!(ahead.is_empty());
        assert_eq!(now.to_json(), c.to_json(), "as of its last change, the catalog itself");

        // The creation at 10 again (a replay): remembered already, nothing changes.
        let v = c.version();
        assert_eq!(c.apply(Op::Create, None, Some(&score), at(10)), CatalogChange::Unchanged);
        assert_eq!((c.get(1).map(|a| a.data_type), c.version()), (Some(DataType::Text), v));
        // Earlier states survive the file.
        let back = Catalog::from_json(&c.to_json()).unwrap();
        assert_eq!(back.as_of(at(25)).0.to_json(), c.as_of(at(25)).0.to_json());
    }

    #[test]
    fn round_trips_through_json() {
        let mut c = Catalog::default();
        c.apply(Op::Read, None, Some(&row(7, "balance", DataType::Decimal, false)), at(5));
        c.apply(Op::Read, None, Some(&row(8, "gone", DataType::Int, false)), at(5));
        c.apply(Op::Delete, Some(&row(8, "gone", DataType::Int, false)), None, at(6));
        let back = Catalog::from_json(&c.to_json()).unwrap();
        assert_eq!(back.get(7), c.get(7));
        assert_eq!(back.to_json(), c.to_json(), "positions and removals too");
        // A file written before positions were kept reads as attributes without positions.
        let old = br#"{"format_version": 1, "attributes": [{"attribute_id": 3, "tenant_id": 1,
            "entity_type": "customer", "name": "x", "data_type": "int", "is_hot": false}]}"#;
        assert_eq!(Catalog::from_json(old).unwrap().get(3).map(|a| &*a.name), Some("x"));
        let err = Catalog::from_json(br#"{"format_version": 99, "attributes": []}"#).unwrap_err();
        assert!(err.to_string().contains("format_version 99"));
    }
}
