//! Credit-based flow control towards and from one peer.
//!
//! A receiver must keep every eager message (and every rendezvous envelope)
//! that arrives before its receive is posted. So that a fast sender cannot
//! grow a slow receiver's memory without bound, each sender holds credit for
//! `window` bytes per peer: an EAGER costs its payload plus
//! [`ENVELOPE_COST`], an RTS costs [`ENVELOPE_COST`]. A message the credit
//! does not cover waits, in order, among the held messages (a blocking send
//! blocks; a nonblocking one stays incomplete). The receiver counts what it
//! has matched and returns it with a CREDIT frame once a quarter of the
//! window has accumulated. The receiver's unmatched messages from one peer
//! thus never exceed one window. Messages to self are not counted.

use super::Transmit;
use crate::wire::Frame;
use std::collections::VecDeque;

/// Credit charged for a message's envelope besides its eager payload: the
/// receiver's bookkeeping for one unexpected message (queue entry, buffer
/// header), so the window bounds message counts as well as bytes.
pub(crate) const ENVELOPE_COST: u64 = 128;

/// Credit a message frame costs (0 for control frames).
pub(super) fn message_cost(frame: &Frame) -> u64 {
    match *frame {
        Frame::Eager { len, .. } => eager_cost(len),
        Frame::Rts { .. } => ENVELOPE_COST,
        _ => 0,
    }
}

/// Credit of an eager message of `len` payload bytes.
pub(super) fn eager_cost(len: u64) -> u64 {
    len.saturating_add(ENVELOPE_COST)
}

/// Credit state for one peer.
#[derive(Debug, Default)]
pub(super) struct Flow {
    /// Bytes we may still send to the peer.
    credit: u64,
    /// Messages to the peer waiting for credit, in posting order.
    held: VecDeque<Transmit>,
    /// Bytes of the peer's messages matched here but not yet returned.
    owed: u64,
}

impl Flow {
    pub(super) fn new(window: u64) -> Self {
        Flow {
            credit: window,
            ..Flow::default()
        }
    }

    /// Sets the credit to a new window (before any message).
    pub(super) fn reset(&mut self, window: u64) {
        self.credit = window;
    }

    /// Whether [`Flow::try_charge`] of `cost` would succeed now.
    pub(super) fn covers(&self, cost: u64) -> bool {
        self.held.is_empty() && self.credit >= cost
    }

    /// Takes `cost` credit if no message waits before this one and the
    /// credit covers it; otherwise takes nothing.
    pub(super) fn try_charge(&mut self, cost: u64) -> bool {
        if self.covers(cost) {
            self.credit -= cost;
            true
        } else {
            false
        }
    }

    /// Keeps a message until credit covers it (after those already held).
    pub(super) fn hold(&mut self, t: Transmit) {
        self.held.push_back(t);
    }

    /// The peer returned `bytes` of credit: moves the held messages it now
    /// covers, in order, to `out`.
    pub(super) fn grant(&mut self, bytes: u64, out: &mut VecDeque<Transmit>) {
        self.credit = self.credit.saturating_add(bytes);
        while let Some(t) = self.held.front() {
            let cost = message_cost(&t.frame);
            if cost > self.credit {
                break;
            }
            self.credit -= cost;
            if let Some(t) = self.held.pop_front() {
                out.push_back(t);
            }
        }
    }

    /// A message from the peer costing `cost` was matched: returns the
    /// credit to send back once `threshold` has accumulated.
    pub(super) fn owe(&mut self, cost: u64, threshold: u64) -> Option<u64> {
        self.owed += cost;
        (self.owed >= threshold).then(|| std::mem::take(&mut self.owed))
    }

    /// The peer is gone: nothing held will ever go.
    pub(super) fn drop_held(&mut self) {
        self.held.clear();
    }
}
