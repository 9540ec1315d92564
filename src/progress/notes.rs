//! What the API layer keeps with each request while it runs: a number and,
//! for some requests, a shared object (for a receive: the size of its
//! elements and, on a communicator whose ranks are not the world's, its
//! group; see `request::Request`). The driver only stores them, under its
//! lock, so that the API's request handles stay two words.
//!
//! Kept as separate columns by request slot, each entry with its request's
//! whole id (slots are reused) and each field written with its own store:
//! an entry built as one value was copied into its slot in wider moves
//! than it was written with, which waits for the stores to drain.
//!
//! Receives that took their message as they were posted
//! (`Progress::take_at_post`) never enter the engine: their statuses wait
//! here until collected, in slots of their own named by ids of their own
//! (`ReqId::taken`).

use crate::engine::ReqId;
use std::any::Any;
use std::sync::Arc;

/// What a receive taken as posted reports, until it is collected: its
/// sender's rank in the receive's communicator, its tag and its length in
/// bytes (the API's status, by parts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Received {
    pub(crate) source: usize,
    pub(crate) tag: u32,
    pub(crate) bytes: usize,
}

/// A note's shared object.
pub(crate) type Object = Arc<dyn Any + Send + Sync>;

/// The notes of the requests that have one, by slot.
#[derive(Default)]
pub(crate) struct Notes {
    /// The request each slot's note belongs to ([`ReqId::NONE`]: none).
    ids: Vec<ReqId>,
    words: Vec<usize>,
    objects: Vec<Option<Object>>,
    /// Statuses of receives taken as posted, with their ids
    /// ([`ReqId::NONE`]: a free slot), the free slots, and the next
    /// generation.
    taken: Vec<(ReqId, Received)>,
    taken_free: Vec<u32>,
    taken_gen: u32,
}

impl std::fmt::Debug for Notes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let live = self.ids.iter().filter(|&&id| id != ReqId::NONE).count();
        f.debug_struct("Notes").field("live", &live).finish()
    }
}

impl Notes {
    /// Keeps `word` and `object` with request `id` (replacing what an
    /// earlier request of its slot left).
    #[inline]
    pub(crate) fn set(&mut self, id: ReqId, word: usize, object: Option<Object>) {
        let i = id.index();
        if self.ids.len() <= i {
            self.ids.resize(i + 1, ReqId::NONE);
            self.words.resize(i + 1, 0);
            self.objects.resize(i + 1, None);
        }
        if let (Some(x), Some(w), Some(o)) = (
            self.ids.get_mut(i),
            self.words.get_mut(i),
            self.objects.get_mut(i),
        ) {
            *x = id;
            *w = word;
            // Usually `None` over `None`: nothing to release.
            if o.is_some() || object.is_some() {
                *o = object;
            }
        }
    }

    /// Keeps the status of a receive taken as posted; returns the id that
    /// names it.
    #[inline]
    pub(crate) fn put_taken(&mut self, status: Received) -> ReqId {
        self.taken_gen = self.taken_gen.wrapping_add(1);
        match self.taken_free.pop() {
            Some(slot) => {
                let id = ReqId::taken(slot, self.taken_gen);
                if let Some(e) = self.taken.get_mut(slot as usize) {
                    *e = (id, status);
                }
                id
            }
            None => {
                let id = ReqId::taken(self.taken.len() as u32, self.taken_gen);
                self.taken.push((id, status));
                id
            }
        }
    }

    /// Takes the status of receive `id`, taken as posted (`None`: an id
    /// of another kind, or collected already).
    #[inline]
    pub(crate) fn take_taken(&mut self, id: ReqId) -> Option<Received> {
        let slot = id.taken_slot();
        let e = self.taken.get_mut(slot).filter(|e| e.0 == id)?;
        e.0 = ReqId::NONE;
        self.taken_free.push(slot as u32);
        Some(e.1)
    }

    /// Takes request `id`'s note: its word and object (`None`: it has no
    /// note). A receive taken as posted has none: its status is forgotten.
    #[inline(always)]
    pub(crate) fn take(&mut self, id: ReqId) -> Option<(usize, Option<Object>)> {
        if id.is_taken() {
            self.take_taken(id);
            return None;
        }
        let i = id.index();
        let x = self.ids.get_mut(i).filter(|x| **x == id)?;
        *x = ReqId::NONE;
        let word = self.words.get(i).copied().unwrap_or(0);
        Some((word, self.objects.get_mut(i).and_then(Option::take)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_note_belongs_to_its_request_only() {
        let mut n = Notes::default();
        let a = ReqId::new(3, 1);
        n.set(a, 8, Some(Arc::new(5u32)));
        // The slot's next request (a new generation) sees nothing of it.
        assert!(n.take(ReqId::new(3, 2)).is_none());
        assert!(n.take(ReqId::new(2, 1)).is_none());
        let (w, o) = n.take(a).unwrap();
        assert_eq!(w, 8);
        assert_eq!(o.unwrap().downcast::<u32>().ok().map(|x| *x), Some(5));
        // Taken once.
        assert!(n.take(a).is_none());
        // A later request of the slot replaces the object.
        let b = ReqId::new(3, 2);
        n.set(b, 4, Some(Arc::new(1u8)));
        n.set(ReqId::new(3, 3), 2, None);
        let (w, o) = n.take(ReqId::new(3, 3)).unwrap();
        assert_eq!((w, o.is_none()), (2, true));
    }

    #[test]
    fn a_taken_receive_s_status_belongs_to_its_id_only() {
        let st = |bytes| Received {
            source: 1,
            tag: 2,
            bytes,
        };
        let mut n = Notes::default();
        let a = n.put_taken(st(8));
        let b = n.put_taken(st(16));
        assert!(a.is_taken() && b.is_taken() && a != b);
        // Never an engine's id, nor the ids no request has.
        assert!(!ReqId::new(3, 1).is_taken());
        assert!(!ReqId::NONE.is_taken() && !ReqId::SPENT.is_taken());
        assert!(ReqId::taken(5, u32::MAX).is_taken());
        // An engine's id (of the same index bits) finds no status.
        assert!(n.take_taken(ReqId::new(0, 1)).is_none());
        assert_eq!(n.take_taken(b), Some(st(16)));
        assert_eq!(n.take_taken(b), None, "taken once");
        // The slot's next status has a new id: the old one finds nothing.
        let c = n.put_taken(st(32));
        assert_eq!(c.taken_slot(), b.taken_slot());
        assert_eq!(n.take_taken(b), None);
        // A dropped request's note is taken: its status goes with it.
        assert!(n.take(a).is_none());
        assert_eq!(n.take_taken(a), None);
        assert_eq!(n.take_taken(c), Some(st(32)));
    }
}
