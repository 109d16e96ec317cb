//! E-mail reads: a buyer's orders by e-mail (for lookup), the e-mail
//! outbox's pages and due e-mails, and an order's sealed link token.

use super::storage;
use crate::domain::model::{DeliveryState, EmailEvent, Order};
use crate::error::Result;
use crate::store::codec;
use crate::store::tree::{self, Tree};
use crate::store::tx::emails::{block_of, email_order_key, emails_expired, record_keys};
use crate::store::{Expired, Store};

impl Store {
    /// The newest `limit` orders listed under `email` (any case) for lookup,
    /// newest first.
    pub fn orders_by_email(&self, email: &str, limit: usize) -> Result<Vec<Order>> {
        let prefix = email_order_key(email, "");
        let trees = self.trees()?;
        let mut out = Vec::new();
        for item in trees.get(Tree::EmailOrders).scan_prefix(&prefix).rev() {
            let (k, _) = item.map_err(storage)?;
            let Some(order_no) = std::str::from_utf8(&k[prefix.len()..]).ok() else {
                continue;
            };
            if let Some(o) = self.order(order_no)? {
                out.push(o);
            }
            if out.len() == limit {
                break;
            }
        }
        Ok(out)
    }

    /// E-mails oldest first from `cursor` (a seq, exclusive), in `state` if
    /// given; the next cursor when there are more.
    pub fn emails_page(
        &self,
        state: Option<DeliveryState>,
        limit: usize,
        cursor: Option<u64>,
    ) -> Result<(Vec<EmailEvent>, Option<u64>)> {
        let start = cursor.map_or(0, |c| c.saturating_add(1));
        let mut out: Vec<EmailEvent> = Vec::new();
        for e in self.emails_from(start)? {
            let e = e?;
            if state.is_some_and(|s| s != e.state) {
                continue;
            }
            if out.len() == limit {
                let next = out.last().map(|e| e.seq);
                return Ok((out, next));
            }
            out.push(e);
        }
        Ok((out, None))
    }

    /// Every e-mail from seq `from` on, oldest first, out of the records
    /// (groups, and single e-mails of the builds before groups) that hold
    /// them.
    fn emails_from(&self, from: u64) -> Result<impl Iterator<Item = Result<EmailEvent>>> {
        let trees = self.trees()?;
        let records = trees
            .get(Tree::Emails)
            .range(tree::u64_key(block_of(from))..)
            .values();
        Ok(records
            .flat_map(|v| {
                let group = v
                    .map_err(storage)
                    .and_then(|v| codec::decode_email_group(&v).map_err(storage));
                match group {
                    Ok(g) => g.into_iter().map(Ok).collect::<Vec<_>>(),
                    Err(e) => vec![Err(e)],
                }
            })
            .filter(move |e| e.as_ref().map_or(true, |e| e.seq >= from)))
    }

    /// Pending e-mails from seq `from` on, oldest first, at most `limit`;
    /// and the new low-water mark (the first pending seen, or past the end).
    pub fn pending_emails(&self, from: u64, limit: usize) -> Result<(Vec<EmailEvent>, u64)> {
        let mut out = Vec::new();
        let mut low = None;
        let mut next = from;
        for e in self.emails_from(from)? {
            let e = e?;
            next = e.seq + 1;
            if e.state == DeliveryState::Pending {
                low.get_or_insert(e.seq);
                out.push(e);
                if out.len() == limit {
                    break;
                }
            }
        }
        Ok((out, low.unwrap_or(next)))
    }

    /// E-mail `seq`, from its block's record or (the builds before groups)
    /// its own.
    pub fn email_event(&self, seq: u64) -> Result<Option<EmailEvent>> {
        for first in record_keys(seq) {
            if let Some(v) = self.read_raw(Tree::Emails, &tree::u64_key(first))? {
                let group = codec::decode_email_group(&v).map_err(storage)?;
                if let Some(e) = group.into_iter().find(|e| e.seq == seq) {
                    return Ok(Some(e));
                }
            }
        }
        Ok(None)
    }

    /// E-mail records whose e-mails were all sent before `cutoff_ms`, for
    /// retention: one step of the walk from key `from`.
    pub fn expired_emails(&self, cutoff_ms: i64, from: &[u8], scan: usize) -> Result<Expired> {
        self.expired_in(Tree::Emails, from, scan, |v| {
            let group = codec::decode_email_group(v).map_err(storage)?;
            Ok(emails_expired(&group, cutoff_ms))
        })
    }

    /// The order's token as sealed at its creation, if kept.
    pub fn order_link(&self, order_no: &str) -> Result<Option<Vec<u8>>> {
        self.read_raw(Tree::OrderLinks, order_no.as_bytes())
    }
}
