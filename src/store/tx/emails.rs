//! The e-mail operations of a `Tx`: the lookup index (a buyer's e-mail →
//! their orders that carry a query password), the e-mail outbox, the sealed
//! order links its delivery e-mails carry, and the per-product low-stock
//! flags.

use super::Tx;
use crate::domain::model::{DeliveryState, EmailEvent, EmailKind, EmailTo};
use crate::error::{Error, Result};
use crate::store::codec;
use crate::store::tree::{self, Tree};

/// The next e-mail's seq, in the meta tree (the writer's `Counters` are a
/// stored record whose layout stays as it is).
const META_NEXT_EMAIL_SEQ: &[u8] = b"next_email_seq";

/// What an e-mail is about.
#[derive(Debug, Clone, Default)]
pub struct EmailAbout {
    pub order_no: Option<String>,
    pub product_id: Option<String>,
    pub detail: Option<String>,
}

impl Tx<'_> {
    /// Lists `order_no` under its buyer's e-mail for lookup.
    pub fn index_order_email(&mut self, email: &str, order_no: &str) {
        self.put_raw(
            Tree::EmailOrders,
            email_order_key(email, order_no),
            Vec::new(),
        );
    }

    /// Keeps an order's sealed token as shops before derived order tokens
    /// did (for tests of how such orders are still read).
    #[cfg(test)]
    pub(crate) fn put_order_link(&mut self, order_no: &str, sealed: Vec<u8>) {
        self.put_raw(Tree::OrderLinks, order_no.as_bytes().to_vec(), sealed);
    }

    /// Queues an e-mail in this command's batch. The e-mails a batch
    /// queues are written as one record per block of [`EMAIL_BLOCK`] seqs
    /// when it closes (`flush_emails`): the first e-mail of a batch starts
    /// a fresh block, the next ones follow it. A new sled row is the
    /// expensive kind of write (docs/BENCHMARKS.md, "Where the time goes"),
    /// so an e-mail per order costs a row per batch instead of per order.
    /// Seqs are therefore not dense; they only grow.
    pub fn queue_email(&mut self, kind: EmailKind, to: EmailTo, about: EmailAbout) -> Result<()> {
        let seq = match self.cmd_emails.last().or(self.batch_emails.last()) {
            Some(last) => last.seq + 1,
            None => {
                let next: u64 = self
                    .get(Tree::Meta, META_NEXT_EMAIL_SEQ)?
                    .unwrap_or(1u64)
                    .max(1);
                next.div_ceil(EMAIL_BLOCK) * EMAIL_BLOCK
            }
        };
        let now = self.now_ms;
        let e = EmailEvent {
            id: format!("eml_{seq:016}"),
            seq,
            kind,
            to,
            order_no: about.order_no,
            product_id: about.product_id,
            detail: about.detail,
            created_at_ms: now,
            state: DeliveryState::Pending,
            attempts: 0,
            next_attempt_ms: now,
            retry_from_ms: now,
            last_error: None,
        };
        // About what its share of the group record will take.
        self.written += 64 + e.order_no.as_ref().map_or(0, String::len);
        self.cmd_emails.push(e);
        Ok(())
    }

    /// The seq of the e-mail this batch queued last.
    #[cfg(test)]
    pub(crate) fn emails_queued_last(&self) -> Option<u64> {
        self.cmd_emails
            .last()
            .or(self.batch_emails.last())
            .map(|e| e.seq)
    }

    /// Writes the batch's queued e-mails, one record per block, into the
    /// batch, with the next seq (called once, as it closes; its commands
    /// are all settled, so a rolled-back one took no seq).
    pub(super) fn flush_emails(&mut self) {
        let queued = std::mem::take(&mut self.batch_emails);
        if let Some(last) = queued.last() {
            self.put(Tree::Meta, META_NEXT_EMAIL_SEQ.to_vec(), &(last.seq + 1));
        }
        for group in queued.chunk_by(|a, b| block_of(a.seq) == block_of(b.seq)) {
            let key = tree::u64_key(block_of(group[0].seq)).to_vec();
            self.put_raw(Tree::Emails, key, codec::encode_email_group(group));
        }
        let cmd = std::mem::take(&mut self.cmd);
        self.batch.extend(cmd);
    }

    /// E-mail `seq`: one of this batch's, or from the record holding it.
    pub fn email(&self, seq: u64) -> Result<Option<EmailEvent>> {
        let queued = self.cmd_emails.iter().chain(&self.batch_emails);
        if let Some(e) = queued.into_iter().find(|e| e.seq == seq) {
            return Ok(Some(e.clone()));
        }
        Ok(self
            .email_record(seq)?
            .and_then(|(_, g)| g.into_iter().find(|e| e.seq == seq)))
    }

    /// The record holding e-mail `seq` and its key: its block's group, or
    /// a one-e-mail record of the builds before groups (keyed by its seq).
    fn email_record(&self, seq: u64) -> Result<Option<(Vec<u8>, Vec<EmailEvent>)>> {
        for first in record_keys(seq) {
            let key = tree::u64_key(first);
            if let Some(v) = self.get_raw(Tree::Emails, &key)? {
                let group = codec::decode_email_group(&v).map_err(super::internal)?;
                if group.iter().any(|e| e.seq == seq) {
                    return Ok(Some((key.to_vec(), group)));
                }
            }
        }
        Ok(None)
    }

    /// Stores a changed e-mail back where it is kept.
    pub fn put_email(&mut self, e: &EmailEvent) -> Result<()> {
        let queued = self.cmd_emails.iter_mut().chain(&mut self.batch_emails);
        if let Some(slot) = queued.into_iter().find(|x| x.seq == e.seq) {
            *slot = e.clone();
            return Ok(());
        }
        let Some((key, mut group)) = self.email_record(e.seq)? else {
            return Err(Error::not_found(format!("e-mail {} not found", e.id)));
        };
        for slot in group.iter_mut().filter(|x| x.seq == e.seq) {
            *slot = e.clone();
        }
        self.put_raw(Tree::Emails, key, codec::encode_email_group(&group));
        Ok(())
    }

    /// Retention: deletes the e-mail record keyed `first` if every e-mail
    /// in it was sent before `cutoff_ms`; whether it did.
    pub fn prune_email_record(&mut self, first: u64, cutoff_ms: i64) -> Result<bool> {
        let key = tree::u64_key(first).to_vec();
        let Some(v) = self.get_raw(Tree::Emails, &key)? else {
            return Ok(false);
        };
        let group = codec::decode_email_group(&v).map_err(super::internal)?;
        if !emails_expired(&group, cutoff_ms) {
            return Ok(false);
        }
        self.del_raw(Tree::Emails, key);
        Ok(true)
    }

    /// Whether `product_id`'s low-stock alert went out and stock has not
    /// risen back since.
    pub fn low_stock_alerted(&self, product_id: &str) -> Result<bool> {
        Ok(self
            .get_raw(Tree::LowStock, product_id.as_bytes())?
            .is_some())
    }

    pub fn set_low_stock_alerted(&mut self, product_id: &str, alerted: bool) {
        let key = product_id.as_bytes().to_vec();
        if alerted {
            self.put_raw(Tree::LowStock, key, Vec::new());
        } else {
            self.del_raw(Tree::LowStock, key);
        }
    }
}

/// How many seqs one e-mail record spans: a batch's e-mails start at the
/// next multiple of it, so the record holding an e-mail is found from its
/// seq alone.
pub const EMAIL_BLOCK: u64 = 64;

/// The first seq of `seq`'s block: its record's key.
pub fn block_of(seq: u64) -> u64 {
    seq - seq % EMAIL_BLOCK
}

/// The keys of the records that may hold e-mail `seq`, in the order to
/// try them: its block's group, then (the builds before groups) a record
/// of its own, unless that is the same key.
pub fn record_keys(seq: u64) -> impl Iterator<Item = u64> {
    let own = (seq != block_of(seq)).then_some(seq);
    std::iter::once(block_of(seq)).chain(own)
}

/// Whether an e-mail record may go by retention: every e-mail in it was
/// sent and created before `cutoff_ms`.
pub(crate) fn emails_expired(group: &[EmailEvent], cutoff_ms: i64) -> bool {
    group
        .iter()
        .all(|e| e.state == DeliveryState::Delivered && e.created_at_ms < cutoff_ms)
}

/// The lookup index's key: the e-mail lower-cased (buyers type it in any
/// case), 0, the order number (time-ordered, so newest last).
pub fn email_order_key(email: &str, order_no: &str) -> Vec<u8> {
    tree::scoped(&email.to_lowercase(), order_no.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Store, StoreOptions};

    fn queue(tx: &mut Tx, n: usize) -> Result<Vec<u64>> {
        let mut seqs = Vec::new();
        for i in 0..n {
            let about = EmailAbout {
                order_no: Some(format!("FK{i}")),
                ..EmailAbout::default()
            };
            tx.queue_email(EmailKind::OrderDelivered, EmailTo::Buyer, about)?;
            seqs.push(tx.emails_queued_last().unwrap_or(0));
        }
        Ok(seqs)
    }

    fn records(store: &Store) -> Vec<(u64, Vec<u64>)> {
        let trees = store.trees().unwrap();
        trees
            .get(Tree::Emails)
            .iter()
            .map(|r| {
                let (k, v) = r.unwrap();
                let group = codec::decode_email_group(&v).unwrap();
                let seqs = group.iter().map(|e| e.seq).collect();
                (tree::read_u64(&k).unwrap(), seqs)
            })
            .collect()
    }

    /// A batch's e-mails are one record per block of 64 seqs; the next
    /// batch starts a fresh block; a rolled-back command leaves neither its
    /// e-mails nor their seqs; every e-mail reads and changes alone.
    #[test]
    fn a_batchs_emails_are_one_record_per_block() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreOptions::for_test(dir.path())).unwrap();
        // One e-mail at a block's start: the next batch must not reuse the
        // block (its record would overwrite this one).
        // Each e-mail counts towards the batch's size, which closes a batch.
        let lone = store
            .write_blocking(|tx| {
                let before = tx.written_bytes();
                let about = EmailAbout::default();
                tx.queue_email(EmailKind::StockLow, EmailTo::Merchant, about)?;
                assert!(tx.written_bytes() >= before + 64);
                Ok(tx.emails_queued_last().into_iter().collect::<Vec<_>>())
            })
            .unwrap();
        assert_eq!(lone, [64]);
        let first = store
            .write_blocking(|tx| {
                let before = tx.written_bytes();
                let seqs = queue(tx, 3)?;
                assert!(tx.written_bytes() >= before + 3 * 64);
                Ok(seqs)
            })
            .unwrap();
        assert_eq!(first, [128, 129, 130]);
        assert_eq!(
            records(&store),
            [(64, vec![64]), (128, vec![128, 129, 130])]
        );

        // A command that fails queues nothing; the batch's next e-mails
        // start the next block.
        let failed = store.write_blocking(|tx| {
            queue(tx, 2)?;
            Err::<(), _>(Error::Conflict("no".into()))
        });
        assert!(failed.is_err());
        let second = store.write_blocking(|tx| queue(tx, 70)).unwrap();
        assert_eq!(second[0], 192);
        assert_eq!(second[69], 261);
        let blocks: Vec<u64> = records(&store).iter().map(|r| r.0).collect();
        assert_eq!(blocks, [64, 128, 192, 256]);
        assert_eq!(records(&store)[3].1.len(), 6);

        // One e-mail changes alone, in a later batch.
        store
            .write_blocking(|tx| {
                let mut e = tx.email(194)?.unwrap();
                e.state = DeliveryState::Delivered;
                tx.put_email(&e)
            })
            .unwrap();
        for seq in lone.iter().chain(&first).chain(&second) {
            let e = store.email_event(*seq).unwrap().unwrap();
            assert_eq!(e.seq, *seq);
            assert_eq!(e.id, format!("eml_{seq:016}"));
            let sent = *seq == 194;
            assert_eq!(e.state == DeliveryState::Delivered, sent, "{seq}");
        }
        assert_eq!(store.email_event(65).unwrap(), None);
        assert_eq!(store.email_event(131).unwrap(), None);
        let (pending, low) = store.pending_emails(0, 1000).unwrap();
        assert_eq!(pending.len(), 73);
        assert_eq!(low, 64);
        let (pending, _) = store.pending_emails(193, 1000).unwrap();
        assert_eq!(pending.first().map(|e| e.seq), Some(193));
        assert_eq!(pending.len(), 68);
        let (page, next) = store.emails_page(None, 5, Some(129)).unwrap();
        let seqs: Vec<u64> = page.iter().map(|e| e.seq).collect();
        assert_eq!((seqs, next), (vec![130, 192, 193, 194, 195], Some(195)));
        store.close();
    }

    /// A record goes by retention only when every e-mail in it was sent
    /// strictly before the cutoff.
    #[test]
    fn a_record_expires_when_all_its_emails_were_sent_before_the_cutoff() {
        let email = |state, created_at_ms| EmailEvent {
            id: "eml_0000000000000064".into(),
            seq: 64,
            kind: EmailKind::OrderDelivered,
            to: EmailTo::Buyer,
            order_no: None,
            product_id: None,
            detail: None,
            created_at_ms,
            state,
            attempts: 1,
            next_attempt_ms: 0,
            retry_from_ms: 0,
            last_error: None,
        };
        let sent = DeliveryState::Delivered;
        assert!(emails_expired(&[email(sent, 99), email(sent, 0)], 100));
        assert!(!emails_expired(&[email(sent, 99), email(sent, 100)], 100));
        assert!(!emails_expired(
            &[email(sent, 0), email(DeliveryState::Dead, 0)],
            100
        ));
        assert!(!emails_expired(&[email(DeliveryState::Pending, 0)], 100));
    }

    /// E-mails stored one per record by the builds before groups read,
    /// change and list as before, beside the groups written after them.
    #[test]
    fn emails_stored_one_per_record_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreOptions::for_test(dir.path())).unwrap();
        store
            .write_blocking(|tx| {
                for seq in [1u64, 2, 64, 65] {
                    let e = EmailEvent {
                        id: format!("eml_{seq:016}"),
                        seq,
                        kind: EmailKind::StockLow,
                        to: EmailTo::Merchant,
                        order_no: None,
                        product_id: Some("p".into()),
                        detail: None,
                        created_at_ms: 0,
                        state: DeliveryState::Dead,
                        attempts: 3,
                        next_attempt_ms: 0,
                        retry_from_ms: 0,
                        last_error: Some("smtp".into()),
                    };
                    tx.put_raw(Tree::Emails, tree::u64_key(seq).to_vec(), codec::encode(&e));
                }
                tx.put(Tree::Meta, META_NEXT_EMAIL_SEQ.to_vec(), &66u64);
                Ok(())
            })
            .unwrap();
        let new = store.write_blocking(|tx| queue(tx, 1)).unwrap();
        assert_eq!(new, [128]);
        for seq in [1, 2, 64, 65] {
            let e = store.email_event(seq).unwrap().unwrap();
            assert_eq!((e.seq, e.state), (seq, DeliveryState::Dead));
        }
        store
            .write_blocking(|tx| {
                let mut e = tx.email(65)?.unwrap();
                e.state = DeliveryState::Pending;
                tx.put_email(&e)
            })
            .unwrap();
        let (dead, _) = store
            .emails_page(Some(DeliveryState::Dead), 10, None)
            .unwrap();
        let dead: Vec<u64> = dead.iter().map(|e| e.seq).collect();
        assert_eq!(dead, [1, 2, 64]);
        let (pending, low) = store.pending_emails(0, 10).unwrap();
        let pending: Vec<u64> = pending.iter().map(|e| e.seq).collect();
        assert_eq!((pending, low), (vec![65, 128], 65));
        store.close();
    }
}
