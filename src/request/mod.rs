//! The nonblocking request API, and why lending user buffers to in-flight
//! operations is sound.
//!
//! The driver reads a send's payload from, and writes a receive's payload
//! into, the caller's memory while the operation is in flight (through the
//! driver's loan table). This module decides when memory is lent and makes
//! the loans sound:
//!
//! * Blocking calls lend a buffer only for the duration of the call.
//! * Nonblocking calls on borrowed buffers need a [`scope`]: the scope's end
//!   waits for every request made in it, so a buffer outlives its requests
//!   even if a [`Request`] is leaked with `mem::forget` (waiting on drop alone
//!   would not be enough, as rsmpi's `request::scope` explains).
//! * Owned-buffer requests ([`OwnedSend`], [`OwnedRecv`]) keep their `Vec`;
//!   leaking one leaks the `Vec`, which stays valid.
//! * When a wait gives up with an error while bytes may still move (abort,
//!   lost launcher), or a panic unwinds through a scope, the request is
//!   *abandoned*: the driver swaps in private memory for the loan, after any
//!   peer that was given the buffer's address is done writing (see
//!   `Progress::abandon`), so no pointer to the caller's memory survives.

use crate::engine::{MsgInfo, ReqId};
use crate::error::{Error, Result};
use crate::group::Group;
use crate::progress::Progress;
use crate::status::Status;
use std::cell::{RefCell, RefMut};
use std::marker::PhantomData;
use std::rc::Rc;

mod owned;
pub use owned::{OwnedRecv, OwnedSend};

/// What posting a send did.
#[derive(Debug, Clone, Copy)]
enum Posted {
    /// Small, and written to the link (or copied aside) at once: the send
    /// is complete and nothing of it is in the engine or the loan table.
    Written,
    /// In flight as this request, with `bytes` lent to it.
    Req(ReqId),
}

/// Posts a send of `bytes`: written at once when small and the link takes
/// it (then complete, with no request and no loan), otherwise queued with
/// `bytes` lent.
///
/// # Safety
/// `bytes` must stay valid and unmodified until the request is finished or abandoned.
unsafe fn post_send_raw(
    p: &mut Progress,
    peer: u32,
    context: u32,
    tag: u32,
    bytes: &[u8],
    sync: bool,
) -> Posted {
    if !sync && p.send_eager_now(peer, context, tag, bytes) {
        return Posted::Written;
    }
    // SAFETY: forwarded from this function's contract.
    Posted::Req(unsafe { p.post_send(peer, context, tag, bytes, sync) })
}

/// Borrows the driver for one call. The driver is never borrowed while user
/// code runs, so a failure here means a call from inside the library's own
/// frame (e.g. a `Drop` of user data during a library call): an error, not a panic.
#[inline]
pub(crate) fn lock(p: &RefCell<Progress>) -> Result<RefMut<'_, Progress>> {
    match p.try_borrow_mut() {
        Ok(g) if !g.is_finalized() => Ok(g),
        Ok(_) => Err(Progress::finalized_error()),
        Err(_) => Err(reentrant_error()),
    }
}

#[cold]
#[inline(never)]
fn reentrant_error() -> Error {
    Error::InvalidState("a Courier call was made from inside another Courier call".into())
}

/// Borrows the driver from a `Drop` (which cannot fail). The driver is
/// never borrowed while user code runs and destructors do not run inside
/// it, so the borrow always succeeds; if that invariant were ever broken,
/// a loan could outlive its buffer, so the process aborts instead.
fn lock_for_drop(p: &RefCell<Progress>) -> RefMut<'_, Progress> {
    match p.try_borrow_mut() {
        Ok(g) => g,
        Err(_) => {
            eprintln!("courier: a request was dropped inside a Courier call; aborting");
            std::process::abort()
        }
    }
}

/// Waits for `id`; on failure abandons the request (see
/// [`Progress::abandon`]) so the caller's memory is free when this returns.
fn wait_or_detach(p: &mut Progress, id: ReqId) -> Result<MsgInfo> {
    match p.wait(id) {
        Ok(info) => Ok(info),
        Err(e) => {
            p.abandon(id);
            Err(e)
        }
    }
}

/// What the `Drop` of an unfinished request does: wait for it, or, while
/// the thread unwinds from a panic (or after the universe was finalized),
/// abandon it: waiting could hang the dying rank on a peer that never
/// matches, and the job is ending anyway.
fn finish_on_drop(p: &mut Progress, id: ReqId) {
    if std::thread::panicking() || p.is_finalized() {
        p.abandon(id);
    } else {
        let _ = wait_or_detach(p, id);
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
    let mut p = lock(p)?;
    if !sync && p.send_eager_now(peer, context, tag, bytes) {
        return Ok(());
    }
    // SAFETY: `bytes` is borrowed for this whole call, and `wait_or_detach`
    // either finishes the request or abandons it before we return.
    let id = unsafe { p.post_send(peer, context, tag, bytes, sync) };
    if !sync && bytes.len() <= p.eager_limit() && !p.is_done(id) {
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
    recv_blocking_coop_min(p, context, source, tag, bytes, 0)
}

/// [`recv_blocking`] with copies cooperative only from `coop_min` bytes
/// (see `Progress::with_coop_min`; 0: as configured).
pub(crate) fn recv_blocking_coop_min(
    p: &RefCell<Progress>,
    context: u32,
    source: Option<u32>,
    tag: Option<u32>,
    bytes: &mut [u8],
    coop_min: usize,
) -> Result<MsgInfo> {
    let mut p = lock(p)?;
    if let Some(r) = p.recv_direct(context, source, tag, bytes) {
        return r;
    }
    p.with_coop_min(coop_min, |p| {
        // SAFETY: `bytes` is mutably borrowed for this whole call, and
        // `wait_or_detach` finishes the request or detaches the loan before
        // we return.
        let id = unsafe { p.post_recv(context, source, tag, bytes) };
        wait_or_detach(p, id)
    })
}

/// Requests a scope has room for before its list of them grows.
const SCOPE_ROOM: usize = 16;

/// Runs `f` with a [`Scope`] for nonblocking operations on borrowed buffers.
/// When `f` returns, every request made in the scope that is still in
/// flight is waited for; errors of requests nobody waited on are dropped
/// (wait on a request to see its error). When `f` panics, the requests are
/// abandoned instead of waited for (a receive that will never match must
/// not keep the dying rank alive): the unwinding goes on, and the job ends
/// with this rank's failure.
///
/// ```
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
/// assert_eq!(inc[0], left as u64);
/// # Ok::<(), courier::Error>(())
/// ```
pub fn scope<'env, F, R>(f: F) -> R
where
    F: for<'s> FnOnce(&'s Scope<'s, 'env>) -> R,
{
    let s = Scope {
        // Room for a typical exchange or window without regrowing (one
        // allocation, as the first push would make anyway).
        pending: RefCell::new(Vec::with_capacity(SCOPE_ROOM)),
        _scope: PhantomData,
        _env: PhantomData,
    };
    struct End<'a, 's, 'env>(&'a Scope<'s, 'env>);
    impl Drop for End<'_, '_, '_> {
        fn drop(&mut self) {
            let pending = std::mem::take(&mut *self.0.pending.borrow_mut());
            for (progress, id) in pending {
                let mut p = lock_for_drop(&progress);
                if p.is_live(id) {
                    finish_on_drop(&mut p, id);
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
/// A request is collected once (by [`wait`](Request::wait),
/// [`test`](Request::test) returning `Some`, [`wait_any`] or [`wait_all`]);
/// later calls return the same outcome again without touching the runtime.
/// Dropping an unfinished request waits for it (or abandons it while the
/// thread panics).
#[must_use = "a request must be waited for (dropping it waits)"]
pub struct Request<'s> {
    progress: Rc<RefCell<Progress>>,
    /// The communicator's ranks, to translate statuses (None: internal traffic).
    group: Option<Rc<Group>>,
    id: ReqId,
    kind: Kind,
    state: Collected,
    _scope: PhantomData<&'s ()>,
}

/// The id of a request in state [`Collected::Sent`]; never looked up.
const SENT: ReqId = ReqId::NONE;

/// Whether a request's outcome has been taken from the engine (whose slot
/// may then already serve another request).
#[derive(Debug)]
enum Collected {
    /// A send complete when posted (written at once): the engine never
    /// held it; its outcome is an empty status.
    Sent,
    /// Not yet: the engine still holds it.
    No,
    /// Yes, and handed to a caller that consumed the request.
    Yes,
    /// Yes, by `test` or `wait_any` on a request that lives on: kept to be
    /// handed out again (boxed: rare, and it keeps requests small).
    Kept(Box<Result<Status>>),
}

impl std::fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("kind", &self.kind)
            .field("finished", &self.is_finished())
            .finish()
    }
}

impl<'s> Request<'s> {
    /// A send of `bytes` to world rank `peer` on `context`. `group` names
    /// ranks in its status (`None`: collectives' internal traffic).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn send<'env>(
        scope: &'s Scope<'s, 'env>,
        progress: Rc<RefCell<Progress>>,
        group: Option<Rc<Group>>,
        peer: u32,
        context: u32,
        tag: u32,
        bytes: &'s [u8],
        sync: bool,
    ) -> Result<Request<'s>> {
        let posted = {
            let mut p = lock(&progress)?;
            // SAFETY: `bytes` is borrowed for 's; the scope waits for (or
            // abandons) this request before 's ends.
            unsafe { post_send_raw(&mut p, peer, context, tag, bytes, sync) }
        };
        let id = match posted {
            // Nothing in flight: nothing for the scope to wait for.
            Posted::Written => {
                let mut r = Request::new(progress, group, SENT, Kind::Send);
                r.state = Collected::Sent;
                return Ok(r);
            }
            Posted::Req(id) => id,
        };
        scope.pending.borrow_mut().push((progress.clone(), id));
        Ok(Request::new(progress, group, id, Kind::Send))
    }

    /// A receive into `bytes` on `context`, of elements of `elem_size`
    /// bytes (its status counts them).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn recv<'env>(
        scope: &'s Scope<'s, 'env>,
        progress: Rc<RefCell<Progress>>,
        group: Option<Rc<Group>>,
        context: u32,
        source: Option<u32>,
        tag: Option<u32>,
        bytes: &'s mut [u8],
        elem_size: usize,
    ) -> Result<Request<'s>> {
        let id = {
            let mut p = lock(&progress)?;
            // SAFETY: `bytes` is mutably borrowed for 's; the scope waits for
            // (or abandons) this request before 's ends.
            unsafe { p.post_recv(context, source, tag, bytes) }
        };
        scope.pending.borrow_mut().push((progress.clone(), id));
        Ok(Request::new(progress, group, id, Kind::Recv { elem_size }))
    }

    fn new(
        progress: Rc<RefCell<Progress>>,
        group: Option<Rc<Group>>,
        id: ReqId,
        kind: Kind,
    ) -> Self {
        Request {
            progress,
            group,
            id,
            kind,
            state: Collected::No,
            _scope: PhantomData,
        }
    }

    /// Waits for an internal request and returns what the engine reported.
    pub(crate) fn wait_info(mut self) -> Result<MsgInfo> {
        if let Collected::Sent = self.state {
            self.state = Collected::Yes;
            return Ok(MsgInfo {
                source: 0,
                tag: 0,
                len: 0,
            });
        }
        let r = {
            let mut p = lock(&self.progress)?;
            wait_or_detach(&mut p, self.id)
        };
        // Collected (or abandoned): nothing is left for the drop to do.
        self.state = Collected::Yes;
        r
    }

    /// Waits for an internal request; only success or failure matters.
    pub(crate) fn wait_raw(self) -> Result<()> {
        self.wait_info().map(|_| ())
    }

    /// Turns the engine's report into the outcome the user sees.
    fn outcome_of(&self, r: Result<MsgInfo>) -> Result<Status> {
        match (self.kind, &self.group) {
            (Kind::Recv { elem_size }, Some(g)) => r
                .map_err(|e| g.local_error(e))
                .and_then(|info| g.status(info, elem_size)),
            _ => r.map(|_| Status::empty()),
        }
    }

    /// Keeps the outcome (the request lives on) and hands out a copy of it.
    fn keep(&mut self, r: Result<Status>) -> Result<Status> {
        let copy = duplicate(&r);
        self.state = Collected::Kept(Box::new(r));
        copy
    }

    fn again(&self) -> Option<Result<Status>> {
        match &self.state {
            Collected::No => None,
            Collected::Sent => Some(Ok(Status::empty())),
            Collected::Kept(o) => Some(duplicate(o)),
            // Not reachable through the API: consuming calls take the request.
            Collected::Yes => Some(Ok(Status::empty())),
        }
    }

    /// Waits until the operation completes. The status of a send is empty
    /// ([`Status::is_empty`]); a receive's names its message.
    pub fn wait(mut self) -> Result<Status> {
        if let Some(o) = self.again() {
            return o;
        }
        let r = match lock(&self.progress) {
            Ok(mut p) => wait_or_detach(&mut p, self.id),
            Err(e) => return Err(e),
        };
        self.state = Collected::Yes;
        self.outcome_of(r)
    }

    /// Makes progress and returns the outcome if the operation has
    /// completed (`None` while it runs). Once it has returned `Some`, the
    /// request is finished and every later call (or a `wait`) returns the
    /// same outcome again.
    pub fn test(&mut self) -> Option<Result<Status>> {
        if let Some(o) = self.again() {
            return Some(o);
        }
        let r = {
            let mut p = match lock(&self.progress) {
                Ok(p) => p,
                Err(e) => return Some(Err(e)),
            };
            if let Err(e) = p.progress_once(Some(std::time::Duration::ZERO)) {
                p.abandon(self.id);
                Err(e)
            } else if !p.is_done(self.id) {
                return None;
            } else {
                p.finish(self.id)
            }
        };
        let o = self.outcome_of(r);
        Some(self.keep(o))
    }

    /// Whether the request has already been collected (by `test`,
    /// `wait_any` or an error).
    pub fn is_finished(&self) -> bool {
        !matches!(self.state, Collected::No | Collected::Sent)
    }
}

fn duplicate(r: &Result<Status>) -> Result<Status> {
    match r {
        Ok(s) => Ok(*s),
        Err(e) => Err(e.duplicate()),
    }
}

impl Drop for Request<'_> {
    fn drop(&mut self) {
        if matches!(self.state, Collected::No) {
            let mut p = lock_for_drop(&self.progress);
            finish_on_drop(&mut p, self.id);
        }
    }
}

/// Waits for every request; returns their statuses in order, or the first
/// error (after waiting for all of them). Requests already collected by
/// `test` give their outcome again.
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

/// Waits until one of the unfinished requests in `reqs` completes, removes
/// it from the vector and returns its former index and outcome. Requests
/// already collected (by [`Request::test`]) are ignored, as MPI ignores
/// null requests; `None` when no unfinished request is left.
///
/// A failure of the whole job while waiting (abort, lost launcher) is
/// returned with the first unfinished request, which is abandoned.
pub fn wait_any(reqs: &mut Vec<Request<'_>>) -> Option<(usize, Result<Status>)> {
    if let Some(i) = reqs.iter().position(|r| matches!(r.state, Collected::Sent)) {
        let mut r = reqs.remove(i);
        r.state = Collected::Yes;
        return Some((i, Ok(Status::empty())));
    }
    let live: Vec<(usize, ReqId)> = reqs
        .iter()
        .enumerate()
        .filter(|(_, r)| !r.is_finished())
        .map(|(i, r)| (i, r.id))
        .collect();
    let &(first, _) = live.first()?;
    let progress = reqs[first].progress.clone();
    let waited = match lock(&progress) {
        Ok(mut p) => p
            .wait_until(|p| live.iter().any(|&(_, id)| p.is_done(id)))
            .inspect_err(|_| p.abandon(live[0].1)),
        Err(e) => Err(e),
    };
    if let Err(e) = waited {
        let mut r = reqs.remove(first);
        r.state = Collected::Yes;
        return Some((first, Err(e)));
    }
    let i = {
        let p = progress.borrow();
        live.iter().find(|&&(_, id)| p.is_done(id))?.0
    };
    let mut r = reqs.remove(i);
    let res = match lock(&progress) {
        Ok(mut p) => p.finish(r.id),
        Err(e) => Err(e),
    };
    r.state = Collected::Yes;
    Some((i, r.outcome_of(res)))
}

impl From<crate::engine::ReqError> for Error {
    fn from(e: crate::engine::ReqError) -> Self {
        match e {
            // The source is a world rank here; the communicator layer
            // translates it (`CommShared::local_error`).
            crate::engine::ReqError::Truncated {
                source,
                tag,
                capacity,
                incoming,
            } => Error::Truncated {
                rank: source as usize,
                tag,
                capacity,
                incoming,
            },
            crate::engine::ReqError::PeerLost { peer, reason } => Error::PeerLost {
                rank: peer as usize,
                reason,
            },
        }
    }
}
