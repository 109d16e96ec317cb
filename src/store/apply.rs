//! Copying a durable batch into sled: the one place rows reach sled's trees,
//! used by the committer after each batch and by recovery when it replays
//! the journal.

use super::journal::Write;
use super::tree::{Tree, Trees};

/// Copies a committed batch into sled row by row, one tree after another in
/// id order (keys before orders, see ARCHITECTURE "Reads").
///
/// Not with `sled::Batch`: sled's first `apply_batch` switches its global
/// concurrency control on for good, after which every reader's `get` takes a
/// shared lock that each batch takes exclusively (readers stall behind the
/// commit thread); and a batch pins one epoch, so none of the node copies it
/// makes can be freed before it ends (replaying the journal of 1M imported
/// keys, 30,000 rows per batch, held gigabytes). sled here is a view
/// rebuilt from the journal and never trusted after a crash, so the copy need
/// not be atomic; the writer's own reads see the batch through its in-flight
/// overlay until the copy is complete.
pub(crate) fn apply_writes(trees: &Trees, writes: &[Write]) -> sled::Result<()> {
    // A staged upload's record names blocks readers must skip: written
    // before the blocks it names, removed after they are published or gone.
    let uploads = writes.partition_point(|w| w.tree < Tree::Uploads as u8);
    let after = writes.partition_point(|w| w.tree <= Tree::Uploads as u8);
    let (writes, uploads, later) = (
        &writes[..uploads],
        &writes[uploads..after],
        &writes[after..],
    );
    let (added, removed): (Vec<Write>, Vec<Write>) =
        uploads.iter().cloned().partition(|w| w.value.is_some());
    apply_rows(trees, &added)?;
    // Key blocks, then keys (and the trees before them), then orders and the
    // rest: a reader that finds a key's id finds the key.
    let split = writes.partition_point(|w| w.tree < Tree::Orders as u8);
    let blocks = writes.partition_point(|w| w.tree < Tree::KeyBlocks as u8);
    apply_phase(trees, &writes[blocks..])?;
    apply_phase(trees, &writes[..split])?;
    apply_phase(trees, &writes[split..blocks])?;
    // The trees after the uploads' (coupons; the e-mail index and outbox,
    // which name orders) go after the orders.
    apply_phase(trees, later)?;
    apply_rows(trees, &removed)
}

/// Below this many rows a batch is copied on the commit thread alone.
const PARALLEL_MIN_ROWS: usize = 2048;

/// Copies rows sorted by tree; a big batch (a key import) is split at a tree
/// boundary and the two halves copied on two threads. Per-row sled writes on
/// different trees take no common lock, and sled's per-insert node copies
/// are what bounds an import.
fn apply_phase(trees: &Trees, writes: &[Write]) -> sled::Result<()> {
    if writes.len() >= PARALLEL_MIN_ROWS {
        let half = writes.len() / 2;
        let t = writes[half].tree;
        let mut cut = writes.partition_point(|w| w.tree < t);
        if cut == 0 {
            cut = writes.partition_point(|w| w.tree <= t);
        }
        if cut > 0 && cut < writes.len() {
            let (a, b) = writes.split_at(cut);
            return std::thread::scope(|s| {
                let other = std::thread::Builder::new()
                    .name("faka-apply".into())
                    .spawn_scoped(s, || apply_rows(trees, b));
                let mine = apply_rows(trees, a);
                let theirs = match other {
                    Ok(h) => h.join().unwrap_or_else(|_| {
                        Err(sled::Error::ReportableBug("apply thread panicked".into()))
                    }),
                    // No thread to be had: this one copies the other half too.
                    Err(_) => apply_rows(trees, b),
                };
                mine.and(theirs)
            });
        }
    }
    apply_rows(trees, writes)
}

fn apply_rows(trees: &Trees, writes: &[Write]) -> sled::Result<()> {
    for w in writes {
        let Some(tree) = Tree::from_u8(w.tree) else {
            continue;
        };
        let t = trees.get(tree);
        match &w.value {
            Some(v) => t.insert(w.key.as_slice(), v.as_slice())?,
            None => t.remove(w.key.as_slice())?,
        };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// A batch is copied into sled whole, whatever its size: small ones on
    /// the commit thread, big ones split over two threads at a tree
    /// boundary (also when one tree holds more than half the rows), with
    /// deletes applied after the rows they remove were put there.
    #[test]
    fn apply_writes_copies_every_row_of_small_and_big_batches() {
        use super::*;
        let dir = tempfile::tempdir().unwrap();
        let trees = Trees::open(dir.path(), 1 << 20).unwrap();
        let put = |tree: Tree, i: u32| Write {
            tree: tree as u8,
            key: i.to_be_bytes().to_vec(),
            value: Some(format!("{}-{i}", tree.name()).into_bytes()),
        };
        let del = |tree: Tree, i: u32| Write {
            tree: tree as u8,
            key: i.to_be_bytes().to_vec(),
            value: None,
        };
        // Sizes below and above PARALLEL_MIN_ROWS; the big one has one tree
        // with most rows (the half point falls in the first tree).
        let shapes: [&[(Tree, u32)]; 3] = [
            &[
                (Tree::Keys, 10),
                (Tree::Orders, 5),
                (Tree::Uploads, 2),
                (Tree::Coupons, 2),
                (Tree::CouponEmails, 3),
            ],
            &[
                (Tree::Keys, 3000),
                (Tree::Avail, 1000),
                (Tree::Orders, 1500),
            ],
            &[
                (Tree::Products, 1),
                (Tree::KeyFingerprints, 5000),
                (Tree::Idem, 3000),
            ],
        ];
        // The premise: the last two shapes take the two-thread path.
        for shape in &shapes[1..] {
            let rows: u32 = shape.iter().map(|s| s.1).sum();
            assert!(rows as usize > PARALLEL_MIN_ROWS);
        }
        for shape in shapes {
            let writes: Vec<Write> = shape
                .iter()
                .flat_map(|&(t, n)| (0..n).map(move |i| put(t, i)))
                .collect();
            apply_writes(&trees, &writes).unwrap();
            for &(t, n) in shape {
                assert_eq!(trees.get(t).len(), n as usize, "{}", t.name());
                let last = trees.get(t).get((n - 1).to_be_bytes()).unwrap();
                assert_eq!(
                    last.as_deref(),
                    Some(format!("{}-{}", t.name(), n - 1).as_bytes())
                );
            }
            // The same rows deleted again, as one big batch.
            let deletes: Vec<Write> = shape
                .iter()
                .flat_map(|&(t, n)| (0..n).map(move |i| del(t, i)))
                .collect();
            apply_writes(&trees, &deletes).unwrap();
            for &(t, _) in shape {
                assert!(trees.get(t).is_empty(), "{}", t.name());
            }
        }
    }
}
