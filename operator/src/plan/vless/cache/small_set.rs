//! [`SmallSet`]: an ordered set for the cache's many tiny sets.

/// An ordered set kept as a sorted vector. The cache holds one per email
/// group and one per traffic user: 100,000 keys make 100,000 sets of one
/// member each, where a `BTreeSet` allocates a whole B-tree leaf (eleven
/// slots, ~800 bytes) and this a single slot. Inserts and removals are
/// linear in the set's size, which is the number of keys sharing one
/// email on one server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct SmallSet<T>(Vec<T>);

impl<T> Default for SmallSet<T> {
    fn default() -> Self {
        SmallSet(Vec::new())
    }
}

impl<T: Ord> SmallSet<T> {
    /// Adds `item`; false when it was there already.
    pub fn insert(&mut self, item: T) -> bool {
        match self.0.binary_search(&item) {
            Ok(_) => false,
            Err(at) => {
                self.0.insert(at, item);
                true
            }
        }
    }

    /// Removes `item`; false when it was not there.
    pub fn remove(&mut self, item: &T) -> bool {
        match self.0.binary_search(item) {
            Ok(at) => {
                self.0.remove(at);
                true
            }
            Err(_) => false,
        }
    }

    /// The smallest member.
    pub fn first(&self) -> Option<&T> {
        self.0.first()
    }

    /// The members in order.
    pub fn iter(&self) -> std::slice::Iter<'_, T> {
        self.0.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::SmallSet;

    #[test]
    fn keeps_members_sorted_and_unique_like_an_ordered_set() {
        let mut set = SmallSet::default();
        assert!(set.insert(3));
        assert!(set.insert(1));
        assert!(!set.insert(3), "a second insert of 3 is refused");
        assert!(set.insert(2));
        assert_eq!(set.iter().copied().collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(set.first(), Some(&1));
        assert!(set.remove(&1));
        assert!(!set.remove(&1), "1 is gone already");
        assert_eq!(set.first(), Some(&2));
        assert!(set.remove(&2) && set.remove(&3));
        assert!(set.is_empty());
    }
}
