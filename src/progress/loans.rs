//! The loan table: the user memory that in-flight requests read from or
//! write into, by request.
//!
//! The driver reads a send's payload from, and writes a receive's payload
//! into, the caller's memory while the operation is in flight. This module
//! is the only place that turns those loans into slices; the API layer
//! (`request`) makes the loans sound (a buffer outlives its request) and
//! states why.

use crate::engine::ReqId;
use std::io::IoSliceMut;
use std::ops::Range;

#[derive(Debug)]
enum Loan {
    /// Caller memory: `ptr..ptr+len`, readable (send) or writable (recv).
    Borrowed { ptr: *mut u8, len: usize },
    /// Memory owned by the table after a detach.
    Detached(Vec<u8>),
}

// SAFETY: a `Borrowed` loan is plain bytes (the API lends only `Pod`
// buffers: no interior mutability, no thread affinity) that its lender gave
// up for the loan's lifetime, exclusively for a receive (`&mut`), for
// reading only for a send (`&`; other threads may read it too, which is
// fine). Loans are reached only through the driver's lock, so whichever
// thread lent a buffer, the one that reads or writes it holds the lock and
// nobody else touches the bytes; `lend`'s contract keeps the memory valid
// until the loan ends (`remove`, `detach`, `end_direct`).
unsafe impl Send for Loan {}

/// Maps request ids to the bytes they read or write.
///
/// Entries are indexed by the request's slot and carry the whole id: the
/// engine reuses slots (with a new generation), so every lookup compares the
/// generation and a stale id never reaches the loan of the request that now
/// holds its slot.
#[derive(Debug, Default)]
pub(crate) struct BufTable {
    loans: Vec<Option<(ReqId, Loan)>>,
    orphans: Vec<ReqId>,
    /// The buffer of the direct receive (a blocking receive matched
    /// without a request), or the sink that takes the rest of a cancelled
    /// one's payload.
    direct: Option<Loan>,
}

impl BufTable {
    /// Lends `len` bytes at `ptr` to request `id`.
    ///
    /// # Safety
    /// `ptr..ptr+len` must be valid for reads (and for writes, if `id` is a
    /// receive) and must not be used by anyone else until `remove(id)` or
    /// `detach(id)` is called.
    pub(super) unsafe fn lend(&mut self, id: ReqId, ptr: *mut u8, len: usize) {
        let i = id.index();
        if self.loans.len() <= i {
            self.loans.resize_with(i + 1, || None);
        }
        self.loans[i] = Some((id, Loan::Borrowed { ptr, len }));
    }

    #[inline]
    fn get(&self, id: ReqId) -> Option<&Loan> {
        match self.loans.get(id.index()) {
            Some(Some((owner, loan))) if *owner == id => Some(loan),
            _ => None,
        }
    }

    #[inline]
    fn get_mut(&mut self, id: ReqId) -> Option<&mut Loan> {
        match self.loans.get_mut(id.index()) {
            Some(Some((owner, loan))) if *owner == id => Some(loan),
            _ => None,
        }
    }

    /// Ends the loan of `id` (nothing if `id` has none, e.g. a stale id).
    #[inline]
    pub(crate) fn remove(&mut self, id: ReqId) {
        if let Some(entry) = self.loans.get_mut(id.index()) {
            if entry.as_ref().is_some_and(|(owner, _)| *owner == id) {
                *entry = None;
            }
        }
    }

    /// Replaces the loan by a private copy; the caller's memory is free
    /// afterwards. The request becomes an orphan, freed by the driver once
    /// the engine finishes it. Detaching twice (or a stale id) does nothing.
    pub(crate) fn detach(&mut self, id: ReqId) {
        let copy = match self.get(id) {
            Some(Loan::Borrowed { .. }) => crate::sys::copy::to_vec(self.send_bytes(id)),
            _ => return,
        };
        if let Some(loan) = self.get_mut(id) {
            *loan = Loan::Detached(copy);
        }
        self.orphans.push(id);
    }

    /// Lends `len` bytes at `ptr` to the direct receive.
    ///
    /// # Safety
    /// `ptr..ptr+len` must be valid for writes and must not be used by
    /// anyone else until `end_direct` is called.
    pub(super) unsafe fn lend_direct(&mut self, ptr: *mut u8, len: usize) {
        self.direct = Some(Loan::Borrowed { ptr, len });
    }

    /// Ends the direct receive's loan. With `draining` (its payload is
    /// still arriving), the rest of it goes to a private sink of the same
    /// size, never to the caller's memory.
    pub(super) fn end_direct(&mut self, draining: bool) {
        self.direct = match (&self.direct, draining) {
            (Some(Loan::Borrowed { len, .. }), true) => Some(Loan::Detached(vec![0; *len])),
            _ => None,
        };
    }

    /// Whether the direct receive lends caller memory right now.
    pub(super) fn direct_is_borrowed(&self) -> bool {
        matches!(self.direct, Some(Loan::Borrowed { .. }))
    }

    /// The bytes the direct receive writes (empty if there is none).
    pub(crate) fn direct_bytes_mut(&mut self) -> &mut [u8] {
        match &mut self.direct {
            // SAFETY: 1. `lend_direct`'s contract makes ptr..ptr+len valid
            // for writes and unaliased until `end_direct`; 2. the slice
            // borrows `self` mutably, so it cannot outlive the loan (only
            // `&mut self` ends it) and no second slice can exist.
            Some(Loan::Borrowed { ptr, len }) => unsafe {
                std::slice::from_raw_parts_mut(*ptr, *len)
            },
            Some(Loan::Detached(v)) => v,
            None => &mut [],
        }
    }

    /// Runs `f` with the byte ranges `parts` of several receive requests'
    /// buffers at once (one system call fills them all). `None`, without
    /// calling `f`, if an id repeats, has no loan or a range does not fit.
    pub(crate) fn with_recv_ranges<R>(
        &mut self,
        parts: &[(ReqId, Range<usize>)],
        f: impl FnOnce(&mut [IoSliceMut<'_>]) -> R,
    ) -> Option<R> {
        let mut raw: Vec<(*mut u8, usize)> = Vec::with_capacity(parts.len());
        for (i, (id, range)) in parts.iter().enumerate() {
            if parts[..i].iter().any(|(other, _)| other == id) {
                return None;
            }
            let (ptr, len) = match self.get_mut(*id)? {
                Loan::Borrowed { ptr, len } => (*ptr, *len),
                Loan::Detached(v) => (v.as_mut_ptr(), v.len()),
            };
            if range.start > range.end || range.end > len {
                return None;
            }
            // `range.start <= len`: the offset stays inside the buffer.
            raw.push((ptr.wrapping_add(range.start), range.len()));
        }
        let mut slices: Vec<IoSliceMut<'_>> = raw
            .into_iter()
            .map(|(ptr, len)| {
                // SAFETY: 1. each range lies inside its loan (checked
                // above), which `lend`'s contract keeps valid for writes
                // and unaliased (a detached loan is the table's own Vec);
                // 2. the ids are distinct, and distinct loans never
                // overlap, so no two slices alias; 3. the slices live only
                // for this call, which holds `&mut self`, so no loan can
                // end or be reached otherwise meanwhile.
                IoSliceMut::new(unsafe { std::slice::from_raw_parts_mut(ptr, len) })
            })
            .collect();
        Some(f(&mut slices))
    }

    /// Whether `id` lends caller memory right now.
    pub(crate) fn is_borrowed(&self, id: ReqId) -> bool {
        matches!(self.get(id), Some(Loan::Borrowed { .. }))
    }

    /// Detached requests whose owners are gone; the driver frees them when done.
    pub(crate) fn orphans(&mut self) -> &mut Vec<ReqId> {
        &mut self.orphans
    }

    /// The bytes a send request reads (empty if `id` has no loan).
    pub(crate) fn send_bytes(&self, id: ReqId) -> &[u8] {
        match self.get(id) {
            // SAFETY: 1. `lend`'s contract keeps ptr..ptr+len valid for reads
            // until the loan ends; 2. the returned slice borrows `self`, so it
            // cannot outlive the loan (which only `&mut self` can end);
            // 3. `get` compared the whole id, so this is `id`'s own loan.
            Some(Loan::Borrowed { ptr, len }) => unsafe { std::slice::from_raw_parts(*ptr, *len) },
            Some(Loan::Detached(v)) => v,
            None => &[],
        }
    }

    /// The bytes a receive request writes (empty if `id` has no loan).
    pub(crate) fn recv_bytes_mut(&mut self, id: ReqId) -> &mut [u8] {
        match self.get_mut(id) {
            // SAFETY: 1. `lend`'s contract makes ptr..ptr+len valid for writes
            // and unaliased for receives until the loan ends; 2. the slice
            // borrows `self` mutably, so no second slice of the loan can
            // exist; 3. `get_mut` compared the whole id.
            Some(Loan::Borrowed { ptr, len }) => unsafe {
                std::slice::from_raw_parts_mut(*ptr, *len)
            },
            Some(Loan::Detached(v)) => v,
            None => &mut [],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::BufTable;
    use crate::engine::ReqId;

    /// A stale id (the slot's previous generation) reaches nothing: not the
    /// loan of the request that now holds the slot, not for reading, writing,
    /// removing or detaching.
    #[test]
    fn loans_check_the_generation() {
        let mut t = BufTable::default();
        let mut old = vec![1u8; 8];
        let mut new = vec![2u8; 8];
        let (a, b) = (ReqId::new(3, 0), ReqId::new(3, 1));
        // SAFETY: both vectors outlive the table's use of them below.
        unsafe { t.lend(a, old.as_mut_ptr(), old.len()) };
        t.remove(a);
        // SAFETY: as above.
        unsafe { t.lend(b, new.as_mut_ptr(), new.len()) };
        assert!(t.send_bytes(a).is_empty());
        assert!(t.recv_bytes_mut(a).is_empty());
        t.remove(a);
        t.detach(a);
        assert!(t.orphans().is_empty());
        assert_eq!(t.send_bytes(b), &[2u8; 8][..]);
        t.recv_bytes_mut(b)[0] = 9;
        t.remove(b);
        assert!(t.send_bytes(b).is_empty());
        assert_eq!((old[0], new[0]), (1, 9));
    }

    /// After a detach the caller's memory is never touched again: writes go
    /// to the table's copy, which starts as the loaned bytes.
    #[test]
    fn a_detached_loan_uses_its_own_copy() {
        let mut t = BufTable::default();
        let mut user = vec![5u8; 16];
        let id = ReqId::new(0, 7);
        // SAFETY: `user` outlives the loan, which is detached below.
        unsafe { t.lend(id, user.as_mut_ptr(), user.len()) };
        assert!(t.is_borrowed(id));
        t.detach(id);
        t.detach(id);
        assert_eq!(t.orphans().len(), 1, "detaching twice orphans once");
        assert!(!t.is_borrowed(id));
        user.fill(0);
        assert_eq!(t.send_bytes(id), &[5u8; 16][..]);
        t.recv_bytes_mut(id).fill(1);
        assert_eq!(user, vec![0u8; 16]);
        t.remove(id);
        assert!(t.send_bytes(id).is_empty());
    }

    /// Several receives' ranges at once: each lands in its own buffer (a
    /// detached one in the table's copy); a repeated id, a range past the
    /// end or an id without a loan refuses the whole call.
    #[test]
    fn ranges_of_several_receives_at_once() {
        let mut t = BufTable::default();
        let (mut a, mut b, mut c) = (vec![0u8; 8], vec![0u8; 8], vec![0u8; 8]);
        let (x, y, z) = (ReqId::new(0, 0), ReqId::new(1, 0), ReqId::new(2, 0));
        // SAFETY: the vectors outlive the table's use of them below.
        unsafe {
            t.lend(x, a.as_mut_ptr(), a.len());
            t.lend(y, b.as_mut_ptr(), b.len());
            t.lend(z, c.as_mut_ptr(), c.len());
        }
        t.detach(z);
        let filled = t.with_recv_ranges(&[(x, 2..6), (y, 0..8), (z, 4..8)], |s| {
            for (k, slice) in s.iter_mut().enumerate() {
                slice.fill(k as u8 + 1);
            }
            s.len()
        });
        assert_eq!(filled, Some(3));
        assert_eq!(a, [0, 0, 1, 1, 1, 1, 0, 0]);
        assert_eq!(b, [2u8; 8]);
        assert_eq!(c, [0u8; 8], "a detached loan never reaches the caller");
        assert_eq!(t.recv_bytes_mut(z), &[0, 0, 0, 0, 3, 3, 3, 3][..]);
        let never = |_: &mut [std::io::IoSliceMut<'_>]| panic!("must not run");
        assert!(t.with_recv_ranges(&[(x, 0..1), (x, 1..2)], never).is_none());
        assert!(t.with_recv_ranges(&[(y, 4..9)], never).is_none());
        assert!(t
            .with_recv_ranges(&[(ReqId::new(1, 1), 0..1)], never)
            .is_none());
        t.remove(x);
        t.remove(y);
        t.remove(z);
    }
}
