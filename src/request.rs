//! Buffers lent to in-flight operations, and the nonblocking request API.
//!
//! The driver reads a send's payload from, and writes a receive's payload
//! into, the caller's memory while the operation is in flight. This module is
//! the only place that turns those loans into raw pointers, and it makes them
//! sound:
//!
//! * Blocking calls lend a buffer only for the duration of the call.
//! * Nonblocking calls on borrowed buffers need a [`scope`]: the scope's end
//!   waits for every request made in it, so a buffer outlives its requests
//!   even if a [`Request`] is leaked with `mem::forget` (waiting on drop alone
//!   would not be enough, as rsmpi's `request::scope` explains).
//! * Owned-buffer requests ([`OwnedSend`], [`OwnedRecv`]) keep their `Vec`;
//!   leaking one leaks the `Vec`, which stays valid.
//! * When a wait gives up with an error while bytes may still move (abort,
//!   lost launcher), the loan is *detached*: the table swaps in a private copy
//!   (or scratch space) so that no pointer to the caller's memory survives.

use crate::comm::{CommShared, Status};
use crate::engine::{MsgInfo, ReqId};
use crate::error::{Error, Result};
use crate::progress::Progress;
use std::cell::RefCell;
use std::marker::PhantomData;
use std::rc::Rc;

#[derive(Debug)]
enum Loan {
    /// Caller memory: `ptr..ptr+len`, readable (send) or writable (recv).
    Borrowed { ptr: *mut u8, len: usize },
    /// Memory owned by the table after a detach.
    Detached(Vec<u8>),
}

/// Maps request ids to the bytes they read or write.
#[derive(Debug, Default)]
pub(crate) struct BufTable {
    loans: Vec<Option<Loan>>,
    orphans: Vec<ReqId>,
}

impl BufTable {
    /// Lends `len` bytes at `ptr` to request `id`.
    ///
    /// # Safety
    /// `ptr..ptr+len` must be valid for reads (and for writes, if `id` is a
    /// receive) and must not be used by anyone else until `remove(id)` or
    /// `detach(id)` is called.
    unsafe fn lend(&mut self, id: ReqId, ptr: *mut u8, len: usize) {
        let i = id.index();
        if self.loans.len() <= i {
            self.loans.resize_with(i + 1, || None);
        }
        self.loans[i] = Some(Loan::Borrowed { ptr, len });
    }

    /// Ends the loan of `id`.
    pub(crate) fn remove(&mut self, id: ReqId) {
        if let Some(l) = self.loans.get_mut(id.index()) {
            *l = None;
        }
    }

    /// Replaces the loan by a private copy; the caller's memory is free afterwards.
    pub(crate) fn detach(&mut self, id: ReqId) {
        let copy = self.send_bytes(id).to_vec();
        if let Some(l) = self.loans.get_mut(id.index()) {
            if l.is_some() {
                *l = Some(Loan::Detached(copy));
            }
        }
        self.orphans.push(id);
    }

    /// Detached requests whose owners are gone; the driver frees them when done.
    pub(crate) fn orphans(&mut self) -> &mut Vec<ReqId> {
        &mut self.orphans
    }

    /// The bytes a send request reads (empty if `id` has no loan).
    pub(crate) fn send_bytes(&self, id: ReqId) -> &[u8] {
        match self.loans.get(id.index()) {
            // SAFETY: 1. `lend`'s contract keeps ptr..ptr+len valid for reads
            // until the loan ends; 2. the returned slice borrows `self`, so it
            // cannot outlive the loan (which only `&mut self` can end).
            Some(Some(Loan::Borrowed { ptr, len })) => unsafe {
                std::slice::from_raw_parts(*ptr, *len)
            },
            Some(Some(Loan::Detached(v))) => v,
            _ => &[],
        }
    }

    /// The bytes a receive request writes (empty if `id` has no loan).
    pub(crate) fn recv_bytes_mut(&mut self, id: ReqId) -> &mut [u8] {
        match self.loans.get_mut(id.index()) {
            // SAFETY: 1. `lend`'s contract makes ptr..ptr+len valid for writes
            // and unaliased for receives until the loan ends; 2. the slice
            // borrows `self` mutably, so no second slice of the loan can exist.
            Some(Some(Loan::Borrowed { ptr, len })) => unsafe {
                std::slice::from_raw_parts_mut(*ptr, *len)
            },
            Some(Some(Loan::Detached(v))) => v,
            _ => &mut [],
        }
    }
}

/// Posts a send of `bytes` whose loan the caller keeps valid as `lend` requires.
///
/// # Safety
/// `bytes` must stay valid and unmodified until the request is finished or detached.
unsafe fn post_send_raw(
    p: &mut Progress,
    peer: u32,
    context: u32,
    tag: u32,
    bytes: &[u8],
    sync: bool,
) -> ReqId {
    // A small standard-mode send that the link takes at once (or that is
    // copied aside) is complete now: no loan, no queue.
    if !sync && p.send_eager_now(peer, context, tag, bytes) {
        return p.engine.completed_send(peer);
    }
    // SAFETY: forwarded from this function's contract.
    unsafe { post_send_queued(p, peer, context, tag, bytes, sync) }
}

/// [`post_send_raw`] without the direct path.
///
/// # Safety
/// As for [`post_send_raw`].
unsafe fn post_send_queued(
    p: &mut Progress,
    peer: u32,
    context: u32,
    tag: u32,
    bytes: &[u8],
    sync: bool,
) -> ReqId {
    let id = p.engine.post_send(peer, context, tag, bytes.len(), sync);
    // SAFETY: forwarded from this function's contract; sends only read.
    unsafe { p.bufs.lend(id, bytes.as_ptr().cast_mut(), bytes.len()) };
    p.pump();
    id
}

/// Posts a receive into `bytes`.
///
/// # Safety
/// `bytes` must stay valid and untouched by others until the request is finished or detached.
unsafe fn post_recv_raw(
    p: &mut Progress,
    context: u32,
    source: Option<u32>,
    tag: Option<u32>,
    bytes: &mut [u8],
) -> ReqId {
    let id = p.engine.post_recv(context, source, tag, bytes.len());
    // SAFETY: forwarded from this function's contract.
    unsafe { p.bufs.lend(id, bytes.as_mut_ptr(), bytes.len()) };
    // A queued eager message may have matched at once: copy it in now.
    p.pump();
    p.deliver_pending();
    id
}

/// Waits for `id`; on failure detaches the loan so the caller's memory is free.
fn wait_or_detach(p: &mut Progress, id: ReqId) -> Result<MsgInfo> {
    match p.wait(id) {
        Ok(info) => Ok(info),
        Err(e) => {
            if !p.engine.is_done(id) {
                p.bufs.detach(id);
            }
            Err(e)
        }
    }
}

/// Blocking send of `bytes`.
pub(crate) fn send_blocking(
    p: &RefCell<Progress>,
    peer: u32,
    context: u32,
    tag: u32,
    bytes: &[u8],
    sync: bool,
) -> Result<()> {
    let mut p = p.borrow_mut();
    if !sync && p.send_eager_now(peer, context, tag, bytes) {
        return Ok(());
    }
    // SAFETY: `bytes` is borrowed for this whole call, and `wait_or_detach`
    // either finishes the request or detaches the loan before we return.
    let id = unsafe { post_send_queued(&mut p, peer, context, tag, bytes, sync) };
    if !sync && bytes.len() <= p.eager_limit() && !p.engine.is_done(id) {
        p.buffer_eager_send(peer, id);
    }
    wait_or_detach(&mut p, id).map(|_| ())
}

/// Blocking receive into `bytes`.
pub(crate) fn recv_blocking(
    p: &RefCell<Progress>,
    context: u32,
    source: Option<u32>,
    tag: Option<u32>,
    bytes: &mut [u8],
) -> Result<MsgInfo> {
    let mut p = p.borrow_mut();
    // SAFETY: `bytes` is mutably borrowed for this whole call, and
    // `wait_or_detach` finishes the request or detaches the loan before we return.
    let id = unsafe { post_recv_raw(&mut p, context, source, tag, bytes) };
    wait_or_detach(&mut p, id)
}

/// Runs `f` with a [`Scope`] for nonblocking operations on borrowed buffers.
/// When `f` returns (or unwinds), every request made in the scope that is
/// still in flight is waited for; errors of requests nobody waited on are
/// dropped (wait on a request to see its error).
///
/// ```no_run
/// let universe = courier::init()?;
/// let world = universe.world();
/// let right = (world.rank() + 1) % world.size();
/// let left = (world.rank() + world.size() - 1) % world.size();
/// let out = vec![world.rank() as u64; 1 << 20];
/// let mut inc = vec![0u64; 1 << 20];
/// courier::scope(|s| -> courier::Result<()> {
///     let send = world.isend(s, &out, right, 7)?;
///     world.recv(&mut inc, left, 7)?;
///     send.wait()?;
///     Ok(())
/// })?;
/// # Ok::<(), courier::Error>(())
/// ```
pub fn scope<'env, F, R>(f: F) -> R
where
    F: for<'s> FnOnce(&'s Scope<'s, 'env>) -> R,
{
    let s = Scope {
        pending: RefCell::new(Vec::new()),
        _scope: PhantomData,
        _env: PhantomData,
    };
    struct End<'a, 's, 'env>(&'a Scope<'s, 'env>);
    impl Drop for End<'_, '_, '_> {
        fn drop(&mut self) {
            let pending = std::mem::take(&mut *self.0.pending.borrow_mut());
            for (progress, id) in pending {
                let mut p = progress.borrow_mut();
                if p.is_live(id) {
                    let _ = wait_or_detach(&mut p, id);
                }
            }
        }
    }
    let end = End(&s);
    let r = f(end.0);
    drop(end);
    r
}

/// The region in which nonblocking operations may borrow buffers. See [`scope`].
pub struct Scope<'s, 'env: 's> {
    pending: RefCell<Vec<(Rc<RefCell<Progress>>, ReqId)>>,
    _scope: PhantomData<&'s mut &'s ()>,
    _env: PhantomData<&'env mut &'env ()>,
}

impl std::fmt::Debug for Scope<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scope")
            .field("requests", &self.pending.borrow().len())
            .finish()
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Send,
    Recv { elem_size: usize },
}

/// A nonblocking operation on a borrowed buffer, alive within a [`Scope`].
///
/// Dropping an unfinished request waits for it.
#[must_use = "a request must be waited for (dropping it waits)"]
pub struct Request<'s> {
    progress: Rc<RefCell<Progress>>,
    /// The communicator, to translate statuses (None: internal traffic).
    comm: Option<Rc<CommShared>>,
    id: ReqId,
    kind: Kind,
    done: bool,
    _scope: PhantomData<&'s ()>,
}

impl std::fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("kind", &self.kind)
            .field("done", &self.done)
            .finish()
    }
}

impl<'s> Request<'s> {
    pub(crate) fn send<'env, T: bytemuck::Pod>(
        scope: &'s Scope<'s, 'env>,
        comm: Rc<CommShared>,
        peer: u32,
        tag: u32,
        buf: &'s [T],
        sync: bool,
    ) -> Request<'s> {
        let mut r = Self::send_on(
            scope,
            comm.progress.clone(),
            peer,
            comm.p2p_context(),
            tag,
            bytemuck::cast_slice(buf),
            sync,
        );
        r.comm = Some(comm);
        r
    }

    /// A send of raw bytes on any context (collectives' internal traffic).
    pub(crate) fn send_on<'env>(
        scope: &'s Scope<'s, 'env>,
        progress: Rc<RefCell<Progress>>,
        peer: u32,
        context: u32,
        tag: u32,
        bytes: &'s [u8],
        sync: bool,
    ) -> Request<'s> {
        let id = {
            let mut p = progress.borrow_mut();
            // SAFETY: `bytes` is borrowed for 's; the scope waits for (or
            // detaches) this request before 's ends.
            unsafe { post_send_raw(&mut p, peer, context, tag, bytes, sync) }
        };
        scope.pending.borrow_mut().push((progress.clone(), id));
        Request {
            progress,
            comm: None,
            id,
            kind: Kind::Send,
            done: false,
            _scope: PhantomData,
        }
    }

    /// A receive of raw bytes on any context (collectives' internal traffic).
    pub(crate) fn recv_on<'env>(
        scope: &'s Scope<'s, 'env>,
        progress: Rc<RefCell<Progress>>,
        context: u32,
        source: Option<u32>,
        tag: Option<u32>,
        bytes: &'s mut [u8],
    ) -> Request<'s> {
        let id = {
            let mut p = progress.borrow_mut();
            // SAFETY: `bytes` is mutably borrowed for 's; the scope waits for
            // (or detaches) this request before 's ends.
            unsafe { post_recv_raw(&mut p, context, source, tag, bytes) }
        };
        scope.pending.borrow_mut().push((progress.clone(), id));
        Request {
            progress,
            comm: None,
            id,
            kind: Kind::Recv { elem_size: 1 },
            done: false,
            _scope: PhantomData,
        }
    }

    /// Waits for an internal request and returns what the engine reported.
    pub(crate) fn wait_info(mut self) -> Result<MsgInfo> {
        self.done = true;
        let mut p = self.progress.borrow_mut();
        wait_or_detach(&mut p, self.id)
    }

    /// Waits for an internal request; only success or failure matters.
    pub(crate) fn wait_raw(mut self) -> Result<()> {
        self.done = true;
        let mut p = self.progress.borrow_mut();
        wait_or_detach(&mut p, self.id).map(|_| ())
    }

    pub(crate) fn recv<'env, T: bytemuck::Pod>(
        scope: &'s Scope<'s, 'env>,
        comm: Rc<CommShared>,
        source: Option<u32>,
        tag: Option<u32>,
        buf: &'s mut [T],
    ) -> Request<'s> {
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(buf);
        let progress = comm.progress.clone();
        let id = {
            let mut p = progress.borrow_mut();
            // SAFETY: `buf` is mutably borrowed for 's; the scope waits for
            // (or detaches) this request before 's ends.
            unsafe { post_recv_raw(&mut p, comm.p2p_context(), source, tag, bytes) }
        };
        scope.pending.borrow_mut().push((progress.clone(), id));
        Request {
            progress,
            comm: Some(comm),
            id,
            kind: Kind::Recv {
                elem_size: std::mem::size_of::<T>(),
            },
            done: false,
            _scope: PhantomData,
        }
    }

    fn status(&self, info: MsgInfo) -> Result<Status> {
        match self.kind {
            Kind::Send => Ok(Status::for_send()),
            Kind::Recv { elem_size } => match &self.comm {
                Some(c) => c.status(info, elem_size),
                None => Ok(Status::for_send()),
            },
        }
    }

    /// Waits until the operation completes.
    pub fn wait(mut self) -> Result<Status> {
        self.done = true;
        let info = {
            let mut p = self.progress.borrow_mut();
            wait_or_detach(&mut p, self.id)?
        };
        self.status(info)
    }

    /// Makes progress and returns the outcome if the operation has completed.
    /// After `Some`, the request is finished; further calls return `None`.
    pub fn test(&mut self) -> Option<Result<Status>> {
        if self.done {
            return None;
        }
        let info = {
            let mut p = self.progress.borrow_mut();
            if let Err(e) = p.progress_once(Some(std::time::Duration::ZERO)) {
                self.done = true;
                p.bufs.detach(self.id);
                return Some(Err(e));
            }
            if !p.engine.is_done(self.id) {
                return None;
            }
            self.done = true;
            p.finish(self.id)
        };
        Some(info.and_then(|i| self.status(i)))
    }

    /// Whether the request has already been completed by `test` or `wait_any`.
    pub fn is_finished(&self) -> bool {
        self.done
    }
}

impl Drop for Request<'_> {
    fn drop(&mut self) {
        if !self.done {
            let mut p = self.progress.borrow_mut();
            let _ = wait_or_detach(&mut p, self.id);
        }
    }
}

/// Waits for every request; returns their statuses in order, or the first error
/// (after waiting for all of them).
pub fn wait_all(reqs: Vec<Request<'_>>) -> Result<Vec<Status>> {
    let mut out = Vec::with_capacity(reqs.len());
    let mut first_err = None;
    for r in reqs {
        match r.wait() {
            Ok(s) => out.push(s),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// Waits until one of `reqs` completes, removes it from the vector and
/// returns its former index and outcome. `None` if `reqs` is empty.
pub fn wait_any(reqs: &mut Vec<Request<'_>>) -> Option<(usize, Result<Status>)> {
    let progress = reqs.first()?.progress.clone();
    let ids: Vec<ReqId> = reqs.iter().map(|r| r.id).collect();
    let waited = progress
        .borrow_mut()
        .wait_until(|p| ids.iter().any(|&id| p.engine.is_done(id)));
    if let Err(e) = waited {
        let mut r = reqs.remove(0);
        r.done = true;
        progress.borrow_mut().bufs.detach(r.id);
        return Some((0, Err(e)));
    }
    let i = {
        let p = progress.borrow();
        ids.iter().position(|&id| p.engine.is_done(id))?
    };
    let mut r = reqs.remove(i);
    r.done = true;
    let res = progress.borrow_mut().finish(r.id);
    Some((i, res.and_then(|info| r.status(info))))
}

/// A nonblocking send that owns its buffer; `wait` gives the buffer back.
/// Dropping it waits for the send.
#[must_use = "a request must be waited for (dropping it waits)"]
#[derive(Debug)]
pub struct OwnedSend<T: bytemuck::Pod> {
    comm: Rc<CommShared>,
    id: ReqId,
    buf: Option<Vec<T>>,
}

impl<T: bytemuck::Pod> OwnedSend<T> {
    pub(crate) fn new(comm: Rc<CommShared>, peer: u32, tag: u32, buf: Vec<T>, sync: bool) -> Self {
        let id = {
            let mut p = comm.progress.borrow_mut();
            let bytes: &[u8] = bytemuck::cast_slice(&buf);
            // SAFETY: the Vec's heap block stays put while `self` owns it (it
            // is never resized), and is only released after the request has
            // finished or been detached; a leaked `OwnedSend` leaks the block.
            unsafe { post_send_raw(&mut p, peer, comm.p2p_context(), tag, bytes, sync) }
        };
        OwnedSend {
            comm,
            id,
            buf: Some(buf),
        }
    }

    /// Waits for the send and returns the buffer.
    pub fn wait(mut self) -> Result<Vec<T>> {
        let r = {
            let mut p = self.comm.progress.borrow_mut();
            wait_or_detach(&mut p, self.id)
        };
        let buf = self.buf.take().unwrap_or_default();
        r.map(|_| buf)
    }

    /// Whether the send has completed (makes progress first).
    pub fn test(&mut self) -> Result<bool> {
        let mut p = self.comm.progress.borrow_mut();
        p.progress_once(Some(std::time::Duration::ZERO))?;
        Ok(p.engine.is_done(self.id))
    }
}

impl<T: bytemuck::Pod> Drop for OwnedSend<T> {
    fn drop(&mut self) {
        if self.buf.is_some() {
            let mut p = self.comm.progress.borrow_mut();
            let _ = wait_or_detach(&mut p, self.id);
        }
    }
}

/// A nonblocking receive that owns its buffer; `wait` gives it back with the status.
/// Dropping it waits for the receive.
#[must_use = "a request must be waited for (dropping it waits)"]
#[derive(Debug)]
pub struct OwnedRecv<T: bytemuck::Pod> {
    comm: Rc<CommShared>,
    id: ReqId,
    buf: Option<Vec<T>>,
}

impl<T: bytemuck::Pod> OwnedRecv<T> {
    pub(crate) fn new(
        comm: Rc<CommShared>,
        source: Option<u32>,
        tag: Option<u32>,
        mut buf: Vec<T>,
    ) -> Self {
        let id = {
            let mut p = comm.progress.borrow_mut();
            let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut buf);
            // SAFETY: as in `OwnedSend::new`; nothing reads or writes the Vec
            // until the request has finished or been detached.
            unsafe { post_recv_raw(&mut p, comm.p2p_context(), source, tag, bytes) }
        };
        OwnedRecv {
            comm,
            id,
            buf: Some(buf),
        }
    }

    /// Waits for the message; returns the buffer and the status.
    pub fn wait(mut self) -> Result<(Vec<T>, Status)> {
        let r = {
            let mut p = self.comm.progress.borrow_mut();
            wait_or_detach(&mut p, self.id)
        };
        let buf = self.buf.take().unwrap_or_default();
        let info = r?;
        let status = self.comm.status(info, std::mem::size_of::<T>())?;
        Ok((buf, status))
    }

    /// Whether the receive has completed (makes progress first).
    pub fn test(&mut self) -> Result<bool> {
        let mut p = self.comm.progress.borrow_mut();
        p.progress_once(Some(std::time::Duration::ZERO))?;
        Ok(p.engine.is_done(self.id))
    }
}

impl<T: bytemuck::Pod> Drop for OwnedRecv<T> {
    fn drop(&mut self) {
        if self.buf.is_some() {
            let mut p = self.comm.progress.borrow_mut();
            let _ = wait_or_detach(&mut p, self.id);
        }
    }
}

impl From<crate::engine::ReqError> for Error {
    fn from(e: crate::engine::ReqError) -> Self {
        match e {
            crate::engine::ReqError::Truncated { capacity, incoming } => {
                Error::Truncated { capacity, incoming }
            }
            crate::engine::ReqError::PeerLost { peer, reason } => Error::PeerLost {
                rank: peer as usize,
                reason,
            },
        }
    }
}
