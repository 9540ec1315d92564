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

use crate::engine::ReqId;
use std::any::Any;
use std::sync::Arc;

/// A note's shared object.
pub(crate) type Object = Arc<dyn Any + Send + Sync>;

/// The notes of the requests that have one, by slot.
#[derive(Default)]
pub(crate) struct Notes {
    /// The request each slot's note belongs to ([`ReqId::NONE`]: none).
    ids: Vec<ReqId>,
    words: Vec<usize>,
    objects: Vec<Option<Object>>,
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

    /// Takes request `id`'s note: its word and object (`None`: it has no
    /// note).
    #[inline(always)]
    pub(crate) fn take(&mut self, id: ReqId) -> Option<(usize, Option<Object>)> {
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
}
