//! The check's memory of what it has read: each order's status and
//! number, which order lists each key, and the order numbers for messages.
//! Sized for a store of 1M keys and 1M orders checked next to the running
//! shop.

use crate::domain::order::OrderStatus;
use rustc_hash::FxHashMap;
use std::cell::OnceCell;

/// Each order's status and its number in the order it was read, by order
/// number. faka's order numbers (17 bytes) are kept inline, with no string
/// of their own, because a crash start runs the check next to the shop and
/// its peak is the shop's. Any other number a damaged store
/// may hold is kept as a string.
pub(super) struct Statuses {
    ours: FxHashMap<[u8; ORDER_NO_LEN], (OrderStatus, u32)>,
    other: FxHashMap<String, (OrderStatus, u32)>,
}

const ORDER_NO_LEN: usize = 17;

impl Statuses {
    pub(super) fn with_capacity(n: usize) -> Self {
        let mut ours = FxHashMap::default();
        ours.reserve(n);
        Statuses {
            ours,
            other: FxHashMap::default(),
        }
    }

    pub(super) fn insert(&mut self, no: String, v: (OrderStatus, u32)) {
        match <[u8; ORDER_NO_LEN]>::try_from(no.as_bytes()) {
            Ok(b) => self.ours.insert(b, v),
            Err(_) => self.other.insert(no, v),
        };
    }

    pub(super) fn get(&self, no: &str) -> Option<&(OrderStatus, u32)> {
        match <&[u8; ORDER_NO_LEN]>::try_from(no.as_bytes()) {
            Ok(b) => self.ours.get(b),
            Err(_) => self.other.get(no),
        }
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&str, &(OrderStatus, u32))> {
        // The inline bytes were a whole `String`, so they are UTF-8.
        let ours = self
            .ours
            .iter()
            .map(|(b, v)| (std::str::from_utf8(b).unwrap_or("?"), v));
        ours.chain(self.other.iter().map(|(no, v)| (no.as_str(), v)))
    }
}

/// Which order (its number in `seen`) lists each key. Key ids are handed
/// out in blocks from a counter, so they are dense: the ids below the
/// stored blocks' end are slots of a vector (4 bytes a key id: 4 MiB at 1M
/// keys, several times less than a hash map of the claims), up to about
/// the size such a map would have. Any other id (one only a damaged store lists, or
/// the tail of a store with far more keys than orders) goes in a map.
pub(super) struct Owners {
    /// The order's number + 1; 0 = no order lists the key.
    dense: Vec<u32>,
    sparse: FxHashMap<u64, u32>,
}

impl Owners {
    pub(super) fn new(key_id_end: u64, orders: usize) -> Self {
        let len = key_id_end.min(6 * orders as u64 + 65_536);
        Owners {
            dense: vec![0; len as usize],
            sparse: FxHashMap::default(),
        }
    }

    /// Records that order `o` lists key `k`; the order that listed it before.
    pub(super) fn insert(&mut self, k: u64, o: u32) -> Option<u32> {
        match self.dense.get_mut(k as usize) {
            Some(slot) => std::mem::replace(slot, o + 1).checked_sub(1),
            None => self.sparse.insert(k, o),
        }
    }

    pub(super) fn remove(&mut self, k: u64) -> Option<u32> {
        match self.dense.get_mut(k as usize) {
            Some(slot) => std::mem::take(slot).checked_sub(1),
            None => self.sparse.remove(&k),
        }
    }

    /// The claims left, the dense ones in key order.
    pub(super) fn left(self) -> impl Iterator<Item = (u64, u32)> {
        let dense = self.dense.into_iter().enumerate();
        dense
            .filter_map(|(k, o)| Some((k as u64, o.checked_sub(1)?)))
            .chain(self.sparse)
    }
}

/// Order numbers by their number in `seen`, for messages only: made when a
/// message first needs one (16 MiB at 1M orders).
pub(super) struct Names<'a> {
    pub(super) statuses: &'a Statuses,
    seen: u32,
    names: OnceCell<Vec<&'a str>>,
}

impl<'a> Names<'a> {
    pub(super) fn new(statuses: &'a Statuses, seen: u32) -> Self {
        Names {
            statuses,
            seen,
            names: OnceCell::new(),
        }
    }

    /// The order number of claim `c`, if any.
    pub(super) fn of(&self, c: Option<u32>) -> Option<&'a str> {
        let names = self.names.get_or_init(|| {
            let mut names = vec![""; self.seen as usize];
            for (no, &(_, i)) in self.statuses.iter() {
                names[i as usize] = no;
            }
            names
        });
        c.and_then(|i| names.get(i as usize).copied())
    }
}
