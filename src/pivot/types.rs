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

/// Up to how many names are looked up by pointer first: a deployment's handful of types, whose
/// names are the catalog's own `Arc`s (the same allocation change after change).
const BY_POINTER: usize = 8;

#[derive(Default)]
pub struct EntityTypes {
    names: Vec<Arc<str>>,
    by_name: FxHashMap<Arc<str>, TypeId>,
}

impl EntityTypes {
    /// The number of `name`, issued on first sight.
    pub fn id(&mut self, name: &Arc<str>) -> TypeId {
        // Comparing pointers is safe here: `names` holds the `Arc`s compared against, so their
        // allocations cannot be freed and reused for another name.
        if let Some(at) = self.names.iter().take(BY_POINTER).position(|n| Arc::ptr_eq(n, name)) {
            return TypeId(at as u32);
        }
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
        // Past the names looked up by pointer.
        let many: Vec<Arc<str>> = (0..20).map(|i| Arc::from(format!("t{i}"))).collect();
        let ids: Vec<TypeId> = many.iter().map(|n| types.id(n)).collect();
        for (n, id) in many.iter().zip(&ids) {
            assert_eq!(types.id(&Arc::from(&**n)), *id);
            assert_eq!(types.name(*id), n);
        }
    }
}
