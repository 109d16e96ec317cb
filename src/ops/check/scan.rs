//! Reading a tree as two halves on two threads, for the check's passes
//! over large stores.

use crate::error::{Error, Result};

/// Items handed from a reading thread to the checking one at a time.
const CHUNK: usize = 512;

/// Reads two parts of a tree on two threads (`scan`) and hands every item
/// to `visit` on this thread, in whatever order they come. The checks do
/// not depend on that order. A part whose thread cannot be started is read
/// here afterwards; an error in `visit` stops the readers.
pub(super) fn scan_in_two<P: Sync, T: Send>(
    parts: &[P; 2],
    scan: impl Fn(&P, &mut dyn FnMut(T) -> Result<()>) -> Result<()> + Sync,
    mut visit: impl FnMut(T) -> Result<()>,
) -> Result<()> {
    let (tx, rx) = crossbeam_channel::bounded::<Vec<T>>(8);
    std::thread::scope(|s| {
        let mut readers = Vec::new();
        let mut left = Vec::new();
        for part in parts {
            let (tx, scan) = (tx.clone(), &scan);
            let spawned = std::thread::Builder::new()
                .name("faka-check".into())
                .spawn_scoped(s, move || {
                    let mut chunk = Vec::with_capacity(CHUNK);
                    scan(part, &mut |t| {
                        chunk.push(t);
                        if chunk.len() == CHUNK {
                            let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK));
                            tx.send(full)
                                .map_err(|_| Error::unavailable("the check stopped"))?;
                        }
                        Ok(())
                    })?;
                    if !chunk.is_empty() {
                        let _ = tx.send(chunk);
                    }
                    Ok(())
                });
            match spawned {
                Ok(h) => readers.push(h),
                Err(_) => left.push(part),
            }
        }
        drop(tx);
        let mut visited = Ok(());
        'chunks: for chunk in &rx {
            for t in chunk {
                visited = visit(t);
                if visited.is_err() {
                    break 'chunks;
                }
            }
        }
        drop(rx);
        let mut read = Ok(());
        for h in readers {
            let r = h
                .join()
                .unwrap_or_else(|_| Err(Error::unavailable("a check thread panicked")));
            read = read.and(r);
        }
        visited?;
        read?;
        for part in left {
            scan(part, &mut visit)?;
        }
        Ok(())
    })
}
