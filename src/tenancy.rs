//! Tenant isolation: which tenants a run writes at all ([`TenantFilter`], `[tenants]` in the
//! configuration), and which tenant each entity was last seen under ([`EntityTenants`]), so that
//! a row of one tenant is never folded into, or written under, another tenant's entity.
//!
//! Both checks sit on the pivot's hot path and compare integers already parsed: an empty filter
//! is one branch, the entity memory one multiply and one slot compare.

/// The tenants a run writes: all but `deny`, and only `allow` when it is not empty.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TenantFilter {
    /// Sorted; empty means every tenant.
    allow: Vec<i64>,
    /// Sorted.
    deny: Vec<i64>,
}

impl TenantFilter {
    pub fn new(allow: &[i64], deny: &[i64]) -> TenantFilter {
        let sorted = |v: &[i64]| {
            let mut v = v.to_vec();
            v.sort_unstable();
            v.dedup();
            v
        };
        TenantFilter { allow: sorted(allow), deny: sorted(deny) }
    }

    /// Whether the filter lets every tenant through (the common case: nothing to check).
    pub fn is_open(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }

    /// Whether rows of `tenant_id` may be written.
    #[inline]
    pub fn allows(&self, tenant_id: i64) -> bool {
        if self.is_open() {
            return true;
        }
        (self.allow.is_empty() || self.allow.binary_search(&tenant_id).is_ok())
            && self.deny.binary_search(&tenant_id).is_err()
    }
}

/// The tenant each recently seen entity belongs to, from its `entities` rows: a fixed table of
/// slots indexed by the entity id's low bits, a newer entity taking an older one's slot. Memory
/// is bounded (16 bytes a slot, pages touched only when used) at the price of forgetting: a value
/// row is checked against its entity's tenant while the entity is still remembered.
pub struct EntityTenants {
    /// `[entity_id, tenant_id ^ OCCUPIED]`; zero is an empty slot.
    slots: Vec<[u64; 2]>,
}

/// Marks an occupied slot (a zeroed slot is empty). Tenant `i64::MIN` is not remembered.
const OCCUPIED: u64 = 1 << 63;

impl EntityTenants {
    /// A memory of about `capacity` entities (rounded up to a power of two; 0 disables it).
    pub fn new(capacity: usize) -> EntityTenants {
        if capacity == 0 {
            return EntityTenants { slots: Vec::new() };
        }
        let n = capacity.next_power_of_two().max(2);
        // `vec![..; n]` of zeroes is calloc: pages come into memory as slots are used.
        EntityTenants { slots: vec![[0, 0]; n] }
    }

    /// Entity ids come from a sequence, and a snapshot's value rows come in entity order long
    /// after the entity rows: neighbouring ids in neighbouring slots make those lookups hit the
    /// cache (a multiplicative hash scattered them: a cache miss per value row, 2% of a run).
    /// The high bits are folded in so that ids a table size apart still spread.
    #[inline]
    fn slot(&self, entity_id: i64) -> usize {
        let (id, n) = (entity_id as u64, self.slots.len());
        ((id ^ (id >> n.trailing_zeros())) as usize) & (n - 1)
    }

    /// The tenant `entity_id` was last seen under, if remembered.
    #[inline]
    pub fn get(&self, entity_id: i64) -> Option<i64> {
        if self.slots.is_empty() {
            return None;
        }
        let [id, tenant] = self.slots[self.slot(entity_id)];
        (tenant != 0 && id == entity_id as u64).then_some((tenant ^ OCCUPIED) as i64)
    }

    /// Asks the CPU for `entity_id`'s slot, to be read by [`Self::get`] after some other work:
    /// an update's entity is seldom in cache (the table is 4 MiB), and the wait for its slot
    /// was a quarter of the pivot's own time (perf).
    #[inline]
    pub fn prefetch(&self, entity_id: i64) {
        if !self.slots.is_empty() {
            crate::prefetch::prefetch(&self.slots[self.slot(entity_id)]);
        }
    }

    #[inline]
    pub fn remember(&mut self, entity_id: i64, tenant_id: i64) {
        if self.slots.is_empty() {
            return;
        }
        let at = self.slot(entity_id);
        self.slots[at] = [entity_id as u64, tenant_id as u64 ^ OCCUPIED];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_allows_and_denies() {
        let open = TenantFilter::default();
        assert!(open.is_open() && open.allows(1) && open.allows(-5));
        let deny = TenantFilter::new(&[], &[3, 1]);
        assert!(!deny.allows(1) && deny.allows(2) && !deny.allows(3));
        let allow = TenantFilter::new(&[2, 4], &[]);
        assert!(allow.allows(2) && allow.allows(4) && !allow.allows(3));
        let both = TenantFilter::new(&[2, 4], &[5]);
        assert!(both.allows(2) && !both.allows(5) && !both.allows(1));
    }

    #[test]
    fn entity_memory_remembers_and_forgets_by_slot() {
        let mut m = EntityTenants::new(4);
        assert_eq!(m.get(5), None);
        m.remember(5, 0);
        m.remember(6, -2);
        assert_eq!((m.get(5), m.get(6)), (Some(0), Some(-2)));
        m.remember(5, 3);
        assert_eq!(m.get(5), Some(3));
        // More entities than slots: some are forgotten, none is ever answered wrongly.
        for id in 0..100 {
            m.remember(id, id * 10);
        }
        let remembered: Vec<i64> = (0..100).filter_map(|id| m.get(id).inspect(|t| assert_eq!(*t, id * 10))).collect();
        assert!(!remembered.is_empty() && remembered.len() <= 4, "{remembered:?}");
        // Neighbouring ids (an aligned block as large as the table) never push each other out.
        for id in 200..204 {
            m.remember(id, -id);
        }
        assert!((200..204).all(|id| m.get(id) == Some(-id)));
        let off = EntityTenants::new(0);
        assert_eq!(off.get(1), None);
    }
}
