//! The two production slots, by position in `promote.slots`.

use std::ops::{Index, IndexMut};

/// One of the two production slots: traffic flips from one to the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Slot {
    /// The first slot of `promote.slots` (`prod1` by default).
    First,
    /// The second (`prod2` by default).
    Second,
}

impl Slot {
    /// Both slots, in config order.
    pub const BOTH: [Slot; 2] = [Slot::First, Slot::Second];

    /// The slot traffic flips to from this one (and back).
    pub fn other(self) -> Slot {
        match self {
            Slot::First => Slot::Second,
            Slot::Second => Slot::First,
        }
    }

    fn index(self) -> usize {
        match self {
            Slot::First => 0,
            Slot::Second => 1,
        }
    }
}

/// A value per slot (`plan.slots[slot]`, `ports.balancers[slot]`).
impl<T> Index<Slot> for [T; 2] {
    type Output = T;

    fn index(&self, slot: Slot) -> &T {
        &self[slot.index()]
    }
}

impl<T> IndexMut<Slot> for [T; 2] {
    fn index_mut(&mut self, slot: Slot) -> &mut T {
        &mut self[slot.index()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_other_slot_of_the_other_is_the_first() {
        assert_eq!(Slot::First.other(), Slot::Second);
        assert_eq!(Slot::First.other().other(), Slot::First);
        let names = ["prod1", "prod2"];
        assert_eq!(names[Slot::Second], "prod2");
    }
}
