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

use crate::engine::matching::Pattern;
use crate::engine::{MsgInfo, ReqId};
use crate::error::{Error, Result};
use crate::group::Group;
use crate::progress::notes::{Object, Received};
use crate::progress::{Driver, Held, Progress};
use crate::status::Status;
use std::marker::PhantomData;
use std::sync::{Arc, OnceLock};

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
/// it, or copied aside when it joins a burst of small sends to a TCP peer
/// (`Progress::isend_eager_now`; either way complete, with no request and
/// no loan), otherwise queued with `bytes` lent. The caller holds the
/// driver through `Driver::lock_for_isend`.
///
/// # Safety
/// `bytes` must stay valid and unmodified until the request is finished or abandoned.
#[inline]
unsafe fn post_send_raw(
    p: &mut Progress,
    peer: u32,
    context: u32,
    tag: u32,
    bytes: &[u8],
    sync: bool,
) -> Posted {
    if !sync && p.isend_eager_now(peer, context, tag, bytes) {
        return Posted::Written;
    }
    // SAFETY: forwarded from this function's contract.
    Posted::Req(unsafe { p.post_send(peer, context, tag, bytes, sync) })
}

/// Waits for `id`; on failure abandons the request (see
/// [`Progress::abandon`]) so the caller's memory is free when this returns.
#[inline]
fn wait_or_detach(p: &mut Held<'_>, id: ReqId) -> Result<MsgInfo> {
    // Finished already (most of a window by the time its first request
    // is collected): collected without the waiting loop's set-up, as
    // MPI_Wait returns at once for a complete request. (The wait that saw
    // it finish pushed what finishing it produced.)
    if p.is_done(id) {
        return p.finish(id);
    }
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
fn finish_on_drop(p: &mut Held<'_>, id: ReqId) {
    if std::thread::panicking() || p.is_finalized() {
        p.abandon(id);
    } else {
        let _ = wait_or_detach(p, id);
    }
}

/// Blocking send of `bytes`.
pub(crate) fn send_blocking(
    p: &Driver,
    peer: u32,
    context: u32,
    tag: u32,
    bytes: &[u8],
    sync: bool,
) -> Result<()> {
    let mut p = p.lock()?;
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
    p: &Driver,
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
    p: &Driver,
    context: u32,
    source: Option<u32>,
    tag: Option<u32>,
    bytes: &mut [u8],
    coop_min: usize,
) -> Result<MsgInfo> {
    let mut p = p.lock()?;
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
        reg: OnceLock::new(),
        _scope: PhantomData,
        _env: PhantomData,
    };
    struct End<'a, 's, 'env>(&'a Scope<'s, 'env>);
    impl Drop for End<'_, '_, '_> {
        fn drop(&mut self) {
            let Some((driver, slot)) = self.0.reg.get() else {
                return;
            };
            let mut p = driver.lock_for_drop();
            let mut ids = p.take_scope(*slot);
            for &id in &ids {
                if p.is_live(id) {
                    finish_on_drop(&mut p, id);
                    p.notes.take(id);
                }
            }
            ids.clear();
            p.close_scope(*slot, ids);
        }
    }
    let end = End(&s);
    let r = f(end.0);
    drop(end);
    r
}

/// The region in which nonblocking operations may borrow buffers. See [`scope`].
///
/// A scope may be shared between threads (`Sync`): requests made from any
/// of them are waited for when the scope ends, e.g. requests started from
/// rayon tasks inside `rayon::scope` inside `courier::scope`:
///
/// ```
/// let universe = courier::init()?;
/// let world = universe.world();
/// let me = world.rank(); // a world of one sends to itself
/// let out: Vec<u32> = (0..4000).collect();
/// let mut inc = vec![0u32; 4000];
/// courier::scope(|s| {
///     rayon::scope(|rs| {
///         for (b, (o, i)) in out.chunks(1000).zip(inc.chunks_mut(1000)).enumerate() {
///             let world = &world;
///             rs.spawn(move |_| {
///                 // Each task exchanges its own block; the scope waits for
///                 // whatever a task leaves unfinished.
///                 let r = world.irecv(s, i, me, b as u32).unwrap();
///                 world.isend(s, o, me, b as u32).unwrap().wait().unwrap();
///                 r.wait().unwrap();
///             });
///         }
///     });
/// });
/// assert_eq!(inc, out);
/// # Ok::<(), courier::Error>(())
/// ```
pub struct Scope<'s, 'env: 's> {
    /// The driver of the requests made in this scope, and the slot of the
    /// scope's list of them inside it (see `Progress::open_scope`); set by
    /// the first request.
    reg: OnceLock<(Arc<Driver>, u32)>,
    _scope: PhantomData<&'s mut &'s ()>,
    _env: PhantomData<&'env mut &'env ()>,
}

impl<'s> Scope<'s, '_> {
    /// Records request `id`, just posted on `driver` (held as `p`), as one
    /// to wait for at the scope's end. A send complete when posted
    /// ([`SENT`]) or a receive taken as posted has nothing to wait for,
    /// but it too sets the scope's driver, which every request borrows.
    fn record(&'s self, p: &mut Held<'_>, driver: &Arc<Driver>, id: ReqId) {
        let (_, slot) = self.reg.get_or_init(|| (driver.clone(), p.open_scope()));
        if id != SENT && !id.is_taken() {
            p.scope_push(*slot, id);
        }
    }

    /// The driver of the scope's requests, as the scope keeps it (requests
    /// borrow it from there: no reference count per request); set by the
    /// first request made in it.
    #[inline]
    fn driver(&'s self) -> Result<&'s Driver> {
        match self.reg.get() {
            Some((d, _)) => Ok(d),
            None => Err(Error::InvalidState(
                "a scope without a recorded request has no driver".into(),
            )),
        }
    }

    /// Before posting on `driver`: the scope's requests all belong to one
    /// driver (a process has one universe, so this always holds; checked
    /// before anything is posted, so that a refusal leaves nothing in
    /// flight that the scope would not wait for).
    fn check_driver(&self, driver: &Arc<Driver>) -> Result<()> {
        match self.reg.get() {
            Some((d, _)) if !Arc::ptr_eq(d, driver) => Err(Error::InvalidState(
                "a scope's requests must all belong to one universe".into(),
            )),
            _ => Ok(()),
        }
    }
}

impl std::fmt::Debug for Scope<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scope")
            .field("open", &self.reg.get().is_some())
            .finish()
    }
}

/// How a request's status names the sender.
#[derive(Debug, Clone)]
pub(crate) enum Names {
    /// Collectives' internal traffic: no status.
    Internal,
    /// A communicator whose ranks are the world's (the world, its dups):
    /// no translation, and no reference count per request.
    World,
    /// Another communicator's ranks.
    Group(Arc<Group>),
}

/// The group of `Names::World`: ranks translate to themselves.
static WORLD_NAMES: Group = Group::Identity(0);

impl Names {
    /// How requests on a communicator of group `g` name senders.
    #[inline]
    pub(crate) fn of(g: &Arc<Group>) -> Self {
        match **g {
            Group::Identity(_) => Names::World,
            Group::Map { .. } => Names::Group(g.clone()),
        }
    }
}

/// What the driver keeps with a receive in flight (see `progress::notes`):
/// the size of its elements, and its communicator's group unless its ranks
/// are the world's. Collectives' internal receives and sends have no note:
/// their status is empty. Kept by the driver so that a [`Request`] is two
/// words.
#[inline]
fn note(p: &mut Held<'_>, id: ReqId, names: Names, elem_size: usize) {
    let group: Option<Object> = match names {
        Names::Internal => return,
        Names::World => None,
        Names::Group(g) => Some(g),
    };
    p.notes.set(id, elem_size, group);
}

/// Turns the engine's report on request `id` into the outcome the user
/// sees, as the request's note says, and forgets the note.
#[inline(always)]
fn outcome_of(p: &mut Held<'_>, id: ReqId, r: Result<MsgInfo>) -> Result<Status> {
    if id.is_taken() {
        return match p.notes.take_taken(id) {
            Some(r) => Ok(Status {
                source: r.source,
                tag: r.tag,
                bytes: r.bytes,
            }),
            None => Err(Error::InvalidArgument("request already completed".into())),
        };
    }
    match p.notes.take(id) {
        None => r.map(|_| Status::empty()),
        Some((elem_size, None)) => outcome(Some((&WORLD_NAMES, elem_size)), r),
        Some((elem_size, Some(g))) => match g.downcast::<Group>() {
            Ok(g) => outcome(Some((&g, elem_size)), r),
            Err(_) => Err(Error::InvalidState(
                "a receive's note holds something else than its group".into(),
            )),
        },
    }
}

/// The outcome the user sees of a request whose note names ranks as
/// `group` does and counts elements of `elem_size` bytes (`None`: no
/// note, an empty status).
#[inline(always)]
fn outcome(rep: Option<(&Group, usize)>, r: Result<MsgInfo>) -> Result<Status> {
    match rep {
        Some((g, elem_size)) => r
            .map_err(|e| g.local_error(e))
            .and_then(|info| g.status(info, elem_size)),
        None => r.map(|_| Status::empty()),
    }
}

/// A nonblocking operation on a borrowed buffer, alive within a [`Scope`].
///
/// A request is collected once (by [`wait`](Request::wait),
/// [`test`](Request::test) returning `Some`, [`wait_any`] or [`wait_all`]);
/// later calls return the same outcome again without touching the runtime.
/// Dropping an unfinished request waits for it (or abandons it while the
/// thread panics).
///
/// Two words (its driver and its id), so that making one and pushing it
/// onto a vector moves it in registers.
#[must_use = "a request must be waited for (dropping it waits)"]
pub struct Request<'s> {
    state: State<'s>,
}

/// Where a request stands.
enum State<'s> {
    /// On `driver` (as the scope keeps it): the engine's request `id`
    /// until it is collected; [`SENT`] for a send complete when posted
    /// (the engine never held it; its outcome is an empty status);
    /// [`COLLECTED`] once collected and handed to a caller that consumed
    /// the request.
    On { driver: &'s Driver, id: ReqId },
    /// Collected by `test` (or failed there) while the request lives on:
    /// the outcome, handed out again (boxed: rare, and it keeps requests
    /// two words).
    Kept(Box<Result<Status>>),
}

/// The id of a send complete when posted; never looked up.
const SENT: ReqId = ReqId::NONE;
/// The id of a collected request; never looked up.
const COLLECTED: ReqId = ReqId::SPENT;

impl std::fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("finished", &self.is_finished())
            .finish()
    }
}

/// What the out-of-line halves of [`Request::send`] and [`Request::recv`]
/// return: a request id, or an error boxed so that the whole value is two
/// words, returned in registers (a value returned in memory is read back
/// in wider moves than it was written with, and each such read waits for
/// the stores to drain: store-to-load forwarding fails).
type Posting = std::result::Result<ReqId, Box<Error>>;

/// Posts a send for [`Request::send`] and records it in `scope`: [`SENT`]
/// when it was written at once (complete, nothing in flight), otherwise
/// the request's id.
#[inline(never)]
fn post_send_scoped<'s>(
    scope: &'s Scope<'s, '_>,
    driver: &Arc<Driver>,
    peer: u32,
    context: u32,
    tag: u32,
    bytes: &'s [u8],
    sync: bool,
) -> Posting {
    scope.check_driver(driver)?;
    let mut p = driver.lock_for_isend()?;
    // SAFETY: `bytes` is borrowed for 's; the scope waits for (or
    // abandons) this request before 's ends.
    let id = match unsafe { post_send_raw(&mut p, peer, context, tag, bytes, sync) } {
        // Nothing in flight: nothing for the scope to wait for.
        Posted::Written => SENT,
        Posted::Req(id) => id,
    };
    scope.record(&mut p, driver, id);
    Ok(id)
}

/// Posts a receive for [`Request::recv`], with its note (none for
/// collectives' internal traffic: see [`note`]), and records it in
/// `scope`; returns the request's id.
#[inline(never)]
#[allow(clippy::too_many_arguments)]
fn post_recv_scoped<'s>(
    scope: &'s Scope<'s, '_>,
    driver: &Arc<Driver>,
    names: Names,
    context: u32,
    source: Option<u32>,
    tag: Option<u32>,
    bytes: &'s mut [u8],
    elem_size: usize,
) -> Posting {
    scope.check_driver(driver)?;
    let mut p = driver.lock()?;
    if let Some(id) = take_at_post(&mut p, &names, context, source, tag, bytes, elem_size) {
        scope.record(&mut p, driver, id);
        return Ok(id);
    }
    // SAFETY: `bytes` is mutably borrowed for 's; the scope waits for (or
    // abandons) this request before 's ends.
    let id = unsafe { p.post_recv(context, source, tag, bytes) };
    note(&mut p, id, names, elem_size);
    scope.record(&mut p, driver, id);
    Ok(id)
}

/// A receive (of a communicator's, from a named source) that finds its
/// message at the front of the link as it is posted takes it there
/// (`Progress::take_at_post`): its status is kept with the driver's notes
/// under an id of its own, and the engine never sees it. `None`: post it.
#[inline]
fn take_at_post(
    p: &mut Held<'_>,
    names: &Names,
    context: u32,
    source: Option<u32>,
    tag: Option<u32>,
    bytes: &mut [u8],
    elem_size: usize,
) -> Option<ReqId> {
    if source.is_none() || !p.takes_at_post() {
        return None;
    }
    let group = match names {
        // Collectives' traffic takes the general way.
        Names::Internal => return None,
        Names::World => &WORLD_NAMES,
        Names::Group(g) => &**g,
    };
    let pattern = Pattern {
        context,
        source,
        tag,
    };
    let info = p.take_at_post(&pattern, bytes, elem_size)?;
    // (Whole elements: `take_at_post` checked.)
    Some(p.notes.put_taken(Received {
        source: group.comm_rank(info.source),
        tag: info.tag,
        bytes: info.len,
    }))
}

impl<'s> Request<'s> {
    /// A send of `bytes` to world rank `peer` on `context` (its status is
    /// empty, whatever its communicator).
    ///
    /// Inline, around an out-of-line post ([`post_send_scoped`]) that
    /// returns only the request's id: the request, two words, is then
    /// built in registers where the caller keeps it (a window's vector),
    /// not built by a callee in memory and copied out in wider moves than
    /// it was written with (each such copy waits for the stores to drain:
    /// store-to-load forwarding fails; on a node without shared caches,
    /// behind the stores to the ring's lines).
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub(crate) fn send<'env>(
        scope: &'s Scope<'s, 'env>,
        driver: &Arc<Driver>,
        peer: u32,
        context: u32,
        tag: u32,
        bytes: &'s [u8],
        sync: bool,
    ) -> Result<Request<'s>> {
        let id =
            post_send_scoped(scope, driver, peer, context, tag, bytes, sync).map_err(|e| *e)?;
        Ok(Request::on(scope.driver()?, id))
    }

    /// A receive into `bytes` on `context`, of elements of `elem_size`
    /// bytes (its status counts them and names the sender as `names`
    /// does). Inline, as [`Request::send`].
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub(crate) fn recv<'env>(
        scope: &'s Scope<'s, 'env>,
        driver: &Arc<Driver>,
        names: Names,
        context: u32,
        source: Option<u32>,
        tag: Option<u32>,
        bytes: &'s mut [u8],
        elem_size: usize,
    ) -> Result<Request<'s>> {
        let id = post_recv_scoped(scope, driver, names, context, source, tag, bytes, elem_size)
            .map_err(|e| *e)?;
        Ok(Request::on(scope.driver()?, id))
    }

    #[inline]
    fn on(driver: &'s Driver, id: ReqId) -> Self {
        Request {
            state: State::On { driver, id },
        }
    }

    /// The driver and id of a request the engine still holds.
    #[inline]
    fn held(&self) -> Option<(&'s Driver, ReqId)> {
        match self.state {
            State::On { driver, id } if id != SENT && id != COLLECTED => Some((driver, id)),
            _ => None,
        }
    }

    /// Marks the request collected: its drop has nothing left to do.
    #[inline]
    fn set_collected(&mut self) {
        if let State::On { id, .. } = &mut self.state {
            *id = COLLECTED;
        }
    }

    /// Waits for an internal request and returns what the engine reported.
    pub(crate) fn wait_info(mut self) -> Result<MsgInfo> {
        let Some((driver, id)) = self.held() else {
            // Complete when posted (internal requests are never kept).
            return match &self.state {
                State::Kept(o) => duplicate(o).map(|_| MsgInfo::EMPTY),
                State::On { .. } => Ok(MsgInfo::EMPTY),
            };
        };
        let r = {
            let mut p = driver.lock()?;
            wait_or_detach(&mut p, id)
        };
        // Collected (or abandoned): nothing is left for the drop to do.
        self.set_collected();
        r
    }

    /// Waits for an internal request; only success or failure matters.
    pub(crate) fn wait_raw(self) -> Result<()> {
        self.wait_info().map(|_| ())
    }

    /// Keeps the outcome (the request lives on) and hands out a copy of it.
    fn keep(&mut self, r: Result<Status>) -> Result<Status> {
        let copy = duplicate(&r);
        self.state = State::Kept(Box::new(r));
        copy
    }

    /// The outcome of a request the engine no longer holds (`None` while
    /// it does).
    fn again(&self) -> Option<Result<Status>> {
        match &self.state {
            State::Kept(o) => Some(duplicate(o)),
            // Complete when posted, or (not reachable through the API:
            // consuming calls take the request) collected.
            State::On { id, .. } if *id == SENT || *id == COLLECTED => Some(Ok(Status::empty())),
            State::On { .. } => None,
        }
    }

    /// Waits until the operation completes. The status of a send is empty
    /// ([`Status::is_empty`]); a receive's names its message.
    pub fn wait(mut self) -> Result<Status> {
        let Some((driver, id)) = self.held() else {
            return self.again().unwrap_or_else(|| Ok(Status::empty()));
        };
        let mut p = driver.lock()?;
        let r = wait_or_detach(&mut p, id);
        let o = outcome_of(&mut p, id, r);
        drop(p);
        self.set_collected();
        o
    }

    /// Makes progress and returns the outcome if the operation has
    /// completed (`None` while it runs). Once it has returned `Some`, the
    /// request is finished and every later call (or a `wait`) returns the
    /// same outcome again.
    pub fn test(&mut self) -> Option<Result<Status>> {
        let Some((driver, id)) = self.held() else {
            return self.again();
        };
        let o = {
            let mut p = match driver.lock() {
                Ok(p) => p,
                Err(e) => return Some(Err(e)),
            };
            let r = if let Err(e) = p.progress_once(Some(std::time::Duration::ZERO)) {
                p.abandon(id);
                Err(e)
            } else if !p.is_done(id) {
                return None;
            } else {
                p.finish(id)
            };
            outcome_of(&mut p, id, r)
        };
        Some(self.keep(o))
    }

    /// Whether the request has already been collected (by `test`,
    /// `wait_any` or an error).
    pub fn is_finished(&self) -> bool {
        match self.state {
            State::Kept(_) => true,
            State::On { id, .. } => id == COLLECTED,
        }
    }
}

fn duplicate(r: &Result<Status>) -> Result<Status> {
    match r {
        Ok(s) => Ok(*s),
        Err(e) => Err(e.duplicate()),
    }
}

impl Drop for Request<'_> {
    /// Inline: nearly every request is dropped collected, which costs a
    /// test; only an uncollected one goes out of line to the driver.
    #[inline]
    fn drop(&mut self) {
        if let Some((driver, id)) = self.held() {
            drop_uncollected(driver, id);
        }
    }
}

/// Finishes (or abandons) request `id`, dropped without being collected.
#[cold]
#[inline(never)]
fn drop_uncollected(d: &Driver, id: ReqId) {
    let mut p = d.lock_for_drop();
    finish_on_drop(&mut p, id);
    p.notes.take(id);
}

/// Waits for every request; returns their statuses in order, or the first
/// error (after waiting for all of them). Requests already collected by
/// `test` give their outcome again.
pub fn wait_all(reqs: Vec<Request<'_>>) -> Result<Vec<Status>> {
    let mut out = Vec::with_capacity(reqs.len());
    let mut first_err = None;
    // One lock for all of them (one driver per process), taken at the first
    // request the engine holds.
    let mut held: Option<Held<'_>> = None;
    let mut reqs = reqs;
    for r in reqs.iter_mut() {
        let Some((driver, id)) = r.held() else {
            // Complete when posted, or collected already by `test`.
            match r.again() {
                Some(Ok(s)) => out.push(s),
                Some(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                None => {}
            }
            continue;
        };
        let p = match &mut held {
            Some(p) => p,
            None => match driver.lock() {
                Ok(p) => held.insert(p),
                // Not locked: the drop below finishes it.
                Err(e) => {
                    first_err.get_or_insert(e);
                    continue;
                }
            },
        };
        // Collected (or abandoned) below: its drop has nothing to do.
        r.set_collected();
        let o = if p.is_done(id) {
            // Finished already (most of a window): collected here, where
            // `finish` is inline and the result stays in registers on its
            // way into `out` (a result stored to memory and read back in
            // wider moves waits for the stores to drain).
            let res = p.finish(id);
            outcome_of(p, id, res)
        } else {
            let res = wait_or_detach(p, id);
            outcome_of(p, id, res)
        };
        match o {
            Ok(s) => out.push(s),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    // Uncollected ones (the driver's lock failed) are finished by their
    // drop, which takes the lock itself.
    drop(held);
    drop(reqs);
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
    if let Some(i) = reqs
        .iter()
        .position(|r| matches!(r.state, State::On { id, .. } if id == SENT))
    {
        let mut r = reqs.remove(i);
        r.set_collected();
        return Some((i, Ok(Status::empty())));
    }
    let live: Vec<(usize, &Driver, ReqId)> = reqs
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.held().map(|(d, id)| (i, d, id)))
        .collect();
    let &(first, driver, first_id) = live.first()?;
    let mut p = match driver.lock() {
        Ok(p) => p,
        Err(e) => {
            let mut r = reqs.remove(first);
            r.set_collected();
            return Some((first, Err(e)));
        }
    };
    if let Err(e) = p.wait_until(|p| live.iter().any(|&(_, _, id)| p.is_done(id))) {
        p.abandon(first_id);
        p.notes.take(first_id);
        drop(p);
        let mut r = reqs.remove(first);
        r.set_collected();
        return Some((first, Err(e)));
    }
    let &(i, _, id) = live.iter().find(|&&(_, _, id)| p.is_done(id))?;
    let res = p.finish(id);
    let o = outcome_of(&mut p, id, res);
    drop(p);
    let mut r = reqs.remove(i);
    r.set_collected();
    Some((i, o))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Two words: built in registers and pushed onto a vector without a
    /// copy through memory (see `Request::send`); a kept outcome's box
    /// takes the id's place.
    #[test]
    fn a_request_is_two_words() {
        assert_eq!(
            std::mem::size_of::<Request<'static>>(),
            2 * std::mem::size_of::<usize>()
        );
    }
}
