//! The e-mail operations of a `Tx`: the lookup index (a buyer's e-mail →
//! their orders that carry a query password), the e-mail outbox, the sealed
//! order links its delivery e-mails carry, and the per-product low-stock
//! flags.

use super::Tx;
use crate::domain::model::{DeliveryState, EmailEvent, EmailKind, EmailTo};
use crate::error::{Error, Result};
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

    /// Keeps an order's sealed token for the link in its e-mails.
    pub fn put_order_link(&mut self, order_no: &str, sealed: Vec<u8>) {
        self.put_raw(Tree::OrderLinks, order_no.as_bytes().to_vec(), sealed);
    }

    /// Queues an e-mail in this command's batch.
    pub fn queue_email(&mut self, kind: EmailKind, to: EmailTo, about: EmailAbout) -> Result<()> {
        let seq: u64 = self
            .get(Tree::Meta, META_NEXT_EMAIL_SEQ)?
            .unwrap_or(1u64)
            .max(1);
        self.put(Tree::Meta, META_NEXT_EMAIL_SEQ.to_vec(), &(seq + 1));
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
        self.put(Tree::Emails, tree::u64_key(seq).to_vec(), &e);
        Ok(())
    }

    pub fn email(&self, seq: u64) -> Result<Option<EmailEvent>> {
        self.get(Tree::Emails, &tree::u64_key(seq))
    }

    /// Stores a changed e-mail event back.
    pub fn put_email(&mut self, e: &EmailEvent) -> Result<()> {
        if self.email(e.seq)?.is_none() {
            return Err(Error::not_found(format!("e-mail {} not found", e.id)));
        }
        self.put(Tree::Emails, tree::u64_key(e.seq).to_vec(), e);
        Ok(())
    }

    /// Retention: deletes e-mail `seq` if it was sent before `cutoff_ms`;
    /// whether it did.
    pub fn prune_sent_email(&mut self, seq: u64, cutoff_ms: i64) -> Result<bool> {
        let sent = self
            .email(seq)?
            .is_some_and(|e| e.state == DeliveryState::Delivered && e.created_at_ms < cutoff_ms);
        if sent {
            self.del_raw(Tree::Emails, tree::u64_key(seq).to_vec());
        }
        Ok(sent)
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

/// The lookup index's key: the e-mail lower-cased (buyers type it in any
/// case), 0, the order number (time-ordered, so newest last).
pub fn email_order_key(email: &str, order_no: &str) -> Vec<u8> {
    tree::scoped(&email.to_lowercase(), order_no.as_bytes())
}
