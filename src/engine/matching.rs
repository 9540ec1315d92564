//! Posted-receive and unexpected-message queues.
//!
//! Both queues are kept in arrival order and searched front to back, which is
//! what gives MPI's non-overtaking rule: between one pair of ranks on one
//! context, the first message sent that matches a receive is the one it gets.
//! Wildcards are `None` in [`Envelope`] patterns.

use std::collections::VecDeque;

/// What a receive asks for. `None` matches anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pattern {
    pub(crate) context: u32,
    pub(crate) source: Option<u32>,
    pub(crate) tag: Option<u32>,
}

/// What a message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Envelope {
    pub(crate) context: u32,
    pub(crate) source: u32,
    pub(crate) tag: u32,
}

impl Pattern {
    pub(crate) fn matches(&self, e: &Envelope) -> bool {
        self.context == e.context
            && self.source.is_none_or(|s| s == e.source)
            && self.tag.is_none_or(|t| t == e.tag)
    }
}

/// A queue searched front to back by a predicate; removal keeps order.
#[derive(Debug)]
pub(crate) struct OrderedQueue<T> {
    items: VecDeque<T>,
}

impl<T> Default for OrderedQueue<T> {
    fn default() -> Self {
        Self {
            items: VecDeque::new(),
        }
    }
}

impl<T> OrderedQueue<T> {
    pub(crate) fn push(&mut self, item: T) {
        self.items.push_back(item);
    }

    /// Index of the first item satisfying `pred`.
    pub(crate) fn position(&self, mut pred: impl FnMut(&T) -> bool) -> Option<usize> {
        // The front first: the usual match, without a two-slice iterator.
        match self.items.front() {
            None => None,
            Some(first) if pred(first) => Some(0),
            Some(_) => self.items.iter().skip(1).position(pred).map(|i| i + 1),
        }
    }

    pub(crate) fn get(&self, i: usize) -> Option<&T> {
        self.items.get(i)
    }

    pub(crate) fn remove(&mut self, i: usize) -> Option<T> {
        // The usual match is the first item (messages and receives in
        // order): a plain pop, not the general shifting removal.
        if i == 0 {
            self.items.pop_front()
        } else {
            self.items.remove(i)
        }
    }

    /// Removes every item satisfying `pred`, keeping the others in order.
    pub(crate) fn drain_where(&mut self, mut pred: impl FnMut(&T) -> bool) -> Vec<T> {
        let mut out = Vec::new();
        let mut keep = VecDeque::with_capacity(self.items.len());
        for item in self.items.drain(..) {
            if pred(&item) {
                out.push(item);
            } else {
                keep.push_back(item);
            }
        }
        self.items = keep;
        out
    }

    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    /// The first item.
    #[inline]
    pub(crate) fn front(&self) -> Option<&T> {
        self.items.front()
    }

    /// Removes the first item.
    #[inline]
    pub(crate) fn pop_front(&mut self) -> Option<T> {
        self.items.pop_front()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.items.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match() {
        let e = Envelope {
            context: 1,
            source: 2,
            tag: 3,
        };
        let p = |source, tag| Pattern {
            context: 1,
            source,
            tag,
        };
        assert!(p(Some(2), Some(3)).matches(&e));
        assert!(p(None, Some(3)).matches(&e));
        assert!(p(Some(2), None).matches(&e));
        assert!(p(None, None).matches(&e));
        assert!(!p(Some(1), None).matches(&e));
        assert!(!p(None, Some(4)).matches(&e));
        let other_ctx = Pattern {
            context: 0,
            source: None,
            tag: None,
        };
        assert!(!other_ctx.matches(&e));
    }

    #[test]
    fn queue_keeps_order_on_removal() {
        let mut q = OrderedQueue::default();
        for i in 0..6 {
            q.push(i);
        }
        assert_eq!(q.position(|&x| x % 2 == 0), Some(0));
        assert_eq!(q.position(|&x| x % 2 == 1), Some(1));
        assert_eq!(q.position(|&x| x > 9), None);
        assert_eq!(q.remove(1), Some(1));
        assert_eq!(q.drain_where(|&x| x > 3), vec![4, 5]);
        assert_eq!(q.iter().copied().collect::<Vec<_>>(), vec![0, 2, 3]);
    }
}
