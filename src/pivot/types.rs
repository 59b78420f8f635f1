//! Entity type names as small numbers, for the pivot's rows and the batch set's keys.
//!
//! A wide row used to hold its type's name as an `Arc<str>`: a clone when the row is made, a
//! clone and a drop to find its batch, a drop when the batch took it. Those atomic
//! read-modify-writes were about 1.5% of a file run in perf (the locked instruction waits for
//! the stores before it). A number issued here costs none; the name is looked up only where a
//! batch starts or an error names the type.
//!
//! Numbers are never reused within a pivot: a name keeps its number for the pivot's life.
//! There are as many as distinct type names in the stream (a schema-level count).

use rustc_hash::FxHashMap;
use std::sync::Arc;

/// The number of an entity type name within one [`EntityTypes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TypeId(u32);

/// Up to how many name allocations are remembered by pointer; past that, they are forgotten
/// and remembered again as they come. The catalog shares one allocation per type name (see
/// `Catalog`), so a stream meets as many as it has types, and more only when its catalog is
/// replaced.
const BY_POINTER: usize = 1024;

#[derive(Default)]
pub struct EntityTypes {
    names: Vec<Arc<str>>,
    by_name: FxHashMap<Arc<str>, TypeId>,
    /// Lasting allocations seen, by address, with their number. Looking up by address is
    /// safe: the `Arc`s held here keep their allocations from being freed and reused for
    /// another name.
    by_pointer: FxHashMap<usize, (Arc<str>, TypeId)>,
}

impl EntityTypes {
    /// The number of `name`, an allocation that lasts (the catalog's), issued on first sight.
    pub fn id(&mut self, name: &Arc<str>) -> TypeId {
        let address = Arc::as_ptr(name) as *const u8 as usize;
        if let Some((_, id)) = self.by_pointer.get(&address) {
            return *id;
        }
        let id = self.id_of_name(name);
        if self.by_pointer.len() >= BY_POINTER {
            self.by_pointer.clear();
        }
        self.by_pointer.insert(address, (name.clone(), id));
        id
    }

    /// The number of `name`, an allocation of its own (not worth remembering by pointer).
    pub fn id_of_name(&mut self, name: &Arc<str>) -> TypeId {
        if let Some(&id) = self.by_name.get(&**name) {
            return id;
        }
        let id = TypeId(u32::try_from(self.names.len()).expect("fewer than 2^32 entity type names"));
        self.names.push(name.clone());
        self.by_name.insert(name.clone(), id);
        id
    }

    /// The name numbered `id` (issued by this table).
    pub fn name(&self, id: TypeId) -> &Arc<str> {
        &self.names[id.0 as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_number_per_name_whatever_the_allocation() {
        let mut types = EntityTypes::default();
        let customer: Arc<str> = Arc::from("customer");
        let order: Arc<str> = Arc::from("order");
        let a = types.id(&customer);
        let b = types.id(&order);
        assert_ne!(a, b);
        // The same name from another allocation (a catalog reloaded, a type the catalog does
        // not know) gets the same number.
        assert_eq!(types.id(&Arc::from("customer")), a);
        assert_eq!(types.id(&customer), a);
        assert_eq!((&**types.name(a), &**types.name(b)), ("customer", "order"));
        assert_eq!(types.id_of_name(&Arc::from("order")), b);
        // Past the names looked up by pointer.
        let many: Vec<Arc<str>> = (0..20).map(|i| Arc::from(format!("t{i}"))).collect();
        let ids: Vec<TypeId> = many.iter().map(|n| types.id(n)).collect();
        for (n, id) in many.iter().zip(&ids) {
            assert_eq!(types.id(&Arc::from(&**n)), *id);
            assert_eq!(types.name(*id), n);
        }
    }
}
