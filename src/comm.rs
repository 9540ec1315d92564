//! Communicators and point-to-point messaging on typed slices.
//!
//! A [`Communicator`] is a group of ranks with private matching contexts:
//! context `c` carries point-to-point traffic and `c + 1` is reserved for the
//! collectives built on top, so traffic on one communicator never matches a
//! receive on another (MPI 4.1 §6.1).

use crate::error::{Error, Result};
use crate::group::Group;
use crate::ids::{Tag, TAG_UB};
use crate::progress::Driver;
use crate::request::{self, OwnedRecv, OwnedSend, Request, Scope};
use crate::status::Status;
use bytemuck::Pod;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
use std::sync::{Arc, OnceLock};

/// Which sender a receive accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Only this rank of the communicator.
    Rank(usize),
    /// Any rank (`MPI_ANY_SOURCE`).
    Any,
}

impl From<usize> for Source {
    fn from(r: usize) -> Self {
        Source::Rank(r)
    }
}

/// Which tag a receive accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagMatch {
    /// Only this tag.
    Tag(Tag),
    /// Any tag (`MPI_ANY_TAG`).
    Any,
}

impl From<Tag> for TagMatch {
    fn from(t: Tag) -> Self {
        TagMatch::Tag(t)
    }
}

/// Shorthand for [`Source::Any`].
pub const ANY_SOURCE: Source = Source::Any;
/// Shorthand for [`TagMatch::Any`].
pub const ANY_TAG: TagMatch = TagMatch::Any;

/// Context-id pairs in use by this rank: id `k` owns matching contexts `2k`
/// (point-to-point) and `2k + 1` (collectives). A new communicator takes the
/// lowest id free on every member, agreed by an all-reduce (bitwise and) of
/// the members' free masks, as MPICH's `contextid.c` does.
///
/// Threads that create communicators at once (from different parent
/// communicators) take turns with the mask: a thread brings it to the
/// agreement only when no other thread has it and no waiting parent has a
/// lower id; otherwise it brings nothing, the agreement fails on every
/// member, and they all try again. Every rank gives the mask to the lowest
/// parent first, so the turns end.
#[derive(Debug)]
pub(crate) struct ContextIds {
    used: Vec<u64>,
    /// A thread has the mask out for an agreement.
    lent: bool,
    /// Parents (by id) whose threads want the mask.
    waiting: Vec<usize>,
}

impl ContextIds {
    /// Number of ids (communicators alive at once per rank).
    pub(crate) const IDS: usize = 4096;

    pub(crate) fn new() -> Self {
        let mut used = vec![0u64; Self::IDS / 64];
        used[0] = 1; // the world
        ContextIds {
            used,
            lent: false,
            waiting: Vec::new(),
        }
    }

    /// The free mask for parent `parent`'s agreement, if it may have it now.
    fn lend_mask(&mut self, parent: usize) -> Option<Vec<u64>> {
        if !self.waiting.contains(&parent) {
            self.waiting.push(parent);
        }
        let first = self.waiting.iter().min() == Some(&parent);
        if self.lent || !first {
            return None;
        }
        self.lent = true;
        Some(self.used.iter().map(|w| !w).collect())
    }

    /// The mask is back; `agreed` is claimed for good (the agreement
    /// succeeded), and parent `parent` stops waiting when `done`.
    fn return_mask(&mut self, parent: usize, agreed: Option<usize>, done: bool) {
        self.lent = false;
        if let Some(k) = agreed {
            self.claim(k);
        }
        if done {
            self.waiting.retain(|&p| p != parent);
        }
    }

    /// Parent `parent` stops waiting without having had the mask.
    fn return_mask_unlent(&mut self, parent: usize) {
        self.waiting.retain(|&p| p != parent);
    }

    fn claim(&mut self, k: usize) {
        self.used[k / 64] |= 1 << (k % 64);
    }

    fn release(&mut self, k: usize) {
        if k > 0 && k < Self::IDS {
            self.used[k / 64] &= !(1 << (k % 64));
        }
    }
}

/// State shared by the handles of one communicator.
#[derive(Debug)]
pub(crate) struct CommShared {
    pub(crate) progress: Arc<Driver>,
    /// Scratch space reused by collectives (16-byte aligned for any element
    /// type); only the thread running this communicator's collective uses it.
    pub(crate) scratch: Mutex<Vec<u128>>,
    contexts: Arc<Mutex<ContextIds>>,
    id: usize,
    rank: usize,
    group: Arc<Group>,
    /// Sub-communicators for node-aware collectives, built on first use:
    /// `None` when this communicator does not span several nodes with
    /// several ranks on one of them. (A `OnceLock`: read without a lock
    /// by every all-reduce.)
    pub(crate) hier: OnceLock<Option<Hierarchy>>,
    /// The thread running a collective on this communicator (a
    /// `coll::check` thread token; 0: none), and how deeply it is nested
    /// (nested calls are internal steps). A second thread entering a
    /// collective meanwhile is refused (see `coll::check`).
    pub(crate) coll_owner: AtomicU64,
    pub(crate) coll_depth: AtomicU32,
    /// A user's reduction operation is running on this communicator.
    pub(crate) in_user_op: AtomicBool,
    /// The arena for collectives over shared memory (see `coll::node`).
    pub(crate) node: std::sync::OnceLock<Option<crate::coll::node::NodeColl>>,
}

/// A communicator cut by node: the ranks of this rank's node, and one leader
/// (node rank 0) per node.
#[derive(Debug)]
pub(crate) struct Hierarchy {
    pub(crate) node: Communicator,
    /// Present on leaders only.
    pub(crate) leaders: Option<Communicator>,
}

impl Drop for CommShared {
    fn drop(&mut self) {
        self.contexts.lock().release(self.id);
    }
}

impl CommShared {
    /// A communicator with context id `id`, where this rank is `rank` of `group`.
    fn communicator(
        progress: Arc<Driver>,
        contexts: Arc<Mutex<ContextIds>>,
        id: usize,
        rank: usize,
        group: Arc<Group>,
    ) -> Communicator {
        Communicator {
            shared: Arc::new(CommShared {
                progress,
                scratch: Mutex::new(Vec::new()),
                hier: OnceLock::new(),
                coll_owner: AtomicU64::new(0),
                coll_depth: AtomicU32::new(0),
                in_user_op: AtomicBool::new(false),
                node: std::sync::OnceLock::new(),
                contexts,
                id,
                rank,
                group,
            }),
        }
    }

    pub(crate) fn p2p_context(&self) -> u32 {
        2 * self.id as u32
    }

    pub(crate) fn coll_context(&self) -> u32 {
        2 * self.id as u32 + 1
    }

    pub(crate) fn size(&self) -> usize {
        self.group.size()
    }

    pub(crate) fn rank(&self) -> usize {
        self.rank
    }

    /// The world rank of communicator rank `r`.
    pub(crate) fn world_rank(&self, r: usize) -> Result<u32> {
        self.group.world_rank(r)
    }

    /// The ranks of this communicator, to name senders in statuses and errors.
    pub(crate) fn group(&self) -> &Arc<Group> {
        &self.group
    }

    fn source(&self, s: Source) -> Result<Option<u32>> {
        match s {
            Source::Any => Ok(None),
            Source::Rank(r) => self.world_rank(r).map(Some),
        }
    }
}

fn check_tag(tag: Tag) -> Result<Tag> {
    if tag > TAG_UB {
        return Err(Error::InvalidTag { tag, max: TAG_UB });
    }
    Ok(tag)
}

fn tag_match(t: TagMatch) -> Result<Option<u32>> {
    match t {
        TagMatch::Any => Ok(None),
        TagMatch::Tag(t) => check_tag(t).map(Some),
    }
}

impl Communicator {
    pub(crate) fn shared(&self) -> &CommShared {
        &self.shared
    }

    /// A new communicator with the same ranks and a separate matching
    /// context (`MPI_Comm_dup`). Collective: every rank must call it.
    pub fn dup(&self) -> Result<Communicator> {
        use crate::coll::check::{Coll, Signature};
        let _in = self
            .shared
            .enter(|| Signature::new(Coll::Dup), None, || Ok(()))?;
        let id = self.agree_context_id()?;
        Ok(self.derived(id, self.rank(), self.shared.group.clone()))
    }

    /// Splits the communicator (`MPI_Comm_split`): ranks passing the same
    /// `color` form a new communicator, ordered by `key` then by their rank
    /// here; `None` (MPI's `MPI_UNDEFINED`) takes part but gets no
    /// communicator. Collective: every rank must call it.
    pub fn split(&self, color: Option<u32>, key: i32) -> Result<Option<Communicator>> {
        use crate::coll::check::{Coll, Signature};
        let _in = self
            .shared
            .enter(|| Signature::new(Coll::Split), None, || Ok(()))?;
        // Everyone learns everyone's (color, key): [has_color, color, key].
        let mine = [u32::from(color.is_some()), color.unwrap_or(0), key as u32];
        let mut all = vec![0u32; 3 * self.size()];
        self.all_gather(&mine, &mut all)?;
        let id = self.agree_context_id()?;
        let Some(color) = color else { return Ok(None) };
        let mut members: Vec<(i32, usize)> = all
            .chunks_exact(3)
            .enumerate()
            .filter(|(_, c)| c[0] == 1 && c[1] == color)
            .map(|(r, c)| (c[2] as i32, r))
            .collect();
        members.sort_unstable();
        let ranks: Vec<u32> = members
            .iter()
            .map(|&(_, r)| self.shared.world_rank(r))
            .collect::<Result<_>>()?;
        let me = members
            .iter()
            .position(|&(_, r)| r == self.rank())
            .ok_or_else(|| {
                Error::InvalidArgument("split: this rank is missing from its own color".into())
            })?;
        Ok(Some(self.derived(id, me, Arc::new(Group::of(ranks)))))
    }

    /// The node-aware split of this communicator, built on first use (a
    /// collective call: every rank reaches it in the same collective).
    #[inline]
    pub(crate) fn hierarchy(&self) -> Result<Option<&Hierarchy>> {
        match self.shared.hier.get() {
            Some(h) => Ok(h.as_ref()),
            None => self.hierarchy_first(),
        }
    }

    /// [`Communicator::hierarchy`] on first use: built (one thread at a
    /// time runs the communicator's collectives, so nobody else sets it
    /// meanwhile).
    #[cold]
    #[inline(never)]
    fn hierarchy_first(&self) -> Result<Option<&Hierarchy>> {
        let nodes: Vec<u32> = {
            let p = self.shared.progress.lock()?;
            (0..self.size())
                .map(|r| self.shared.world_rank(r).map(|w| p.node_of(w)))
                .collect::<Result<_>>()?
        };
        let mut distinct = nodes.clone();
        distinct.sort_unstable();
        distinct.dedup();
        let shared_node = distinct
            .iter()
            .any(|n| nodes.iter().filter(|&&m| m == *n).count() > 1);
        let h = if distinct.len() > 1 && shared_node {
            let me = self.rank();
            let node = self
                .split(Some(nodes[me]), me as i32)?
                .ok_or_else(|| Error::InvalidArgument("node split lost this rank".into()))?;
            let leaders = self.split((node.rank() == 0).then_some(0), me as i32)?;
            Some(Hierarchy { node, leaders })
        } else {
            None
        };
        Ok(self.shared.hier.get_or_init(|| h).as_ref())
    }

    /// Splits by node (`MPI_Comm_split_type(MPI_COMM_TYPE_SHARED)`): the ranks
    /// that the launcher placed on this rank's node.
    pub fn split_by_node(&self, node: u32) -> Result<Communicator> {
        self.split(Some(node), self.rank() as i32)?
            .ok_or_else(|| Error::InvalidArgument("split_by_node produced no communicator".into()))
    }

    fn derived(&self, id: usize, rank: usize, group: Arc<Group>) -> Communicator {
        let s = &self.shared;
        CommShared::communicator(s.progress.clone(), s.contexts.clone(), id, rank, group)
    }

    /// The lowest context id free on every rank of this communicator,
    /// claimed (see [`ContextIds`] for threads doing this at once).
    fn agree_context_id(&self) -> Result<usize> {
        let contexts = &self.shared.contexts;
        let me = self.shared.id;
        loop {
            let lent = contexts.lock().lend_mask(me);
            let held = lent.is_some();
            let mut agreed = lent.unwrap_or_else(|| vec![0; ContextIds::IDS / 64]);
            // The last word says whether every member brought its mask.
            agreed.push(u64::from(held));
            // Flat on purpose: a node-aware all-reduce would create communicators.
            let r = self.all_reduce_flat(&mut agreed, crate::Op::BitAnd);
            let everyone = r.is_ok() && agreed.pop() == Some(1);
            let k = agreed
                .iter()
                .enumerate()
                .find(|(_, w)| **w != 0)
                .map(|(i, w)| 64 * i + w.trailing_zeros() as usize)
                .filter(|_| everyone);
            let done = r.is_err() || everyone;
            if held {
                contexts.lock().return_mask(me, k, done);
            } else if done {
                contexts.lock().return_mask_unlent(me);
            }
            r?;
            if everyone {
                return k.ok_or_else(|| {
                    Error::InvalidArgument("out of communicator context ids".into())
                });
            }
            // Another thread of some member had the mask: try again.
            std::thread::yield_now();
        }
    }
}

/// A group of ranks that exchange messages. Cheap to clone.
///
/// ```
/// let universe = courier::init()?;
/// let world = universe.world();
/// let (rank, size) = (world.rank(), world.size());
/// // A ring: every rank sends to the next and receives from the previous
/// // (a world of one sends to itself).
/// world.send(&[rank as f64, 2.5], (rank + 1) % size, 0)?;
/// let mut buf = [0f64; 2];
/// let status = world.recv(&mut buf, (rank + size - 1) % size, 0)?;
/// assert_eq!(status.count::<f64>()?, 2);
/// assert_eq!(buf, [status.source as f64, 2.5]);
/// # Ok::<(), courier::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Communicator {
    shared: Arc<CommShared>,
}

impl Communicator {
    pub(crate) fn world(progress: Arc<Driver>, rank: usize, size: usize) -> Self {
        let contexts = Arc::new(Mutex::new(ContextIds::new()));
        CommShared::communicator(progress, contexts, 0, rank, Arc::new(Group::Identity(size)))
    }

    /// This process's rank in the communicator.
    pub fn rank(&self) -> usize {
        self.shared.rank
    }

    /// Number of ranks in the communicator.
    pub fn size(&self) -> usize {
        self.shared.size()
    }

    fn dest(&self, dest: usize) -> Result<u32> {
        self.shared.world_rank(dest)
    }

    /// Sends `buf` to `dest` (standard mode: small messages are buffered, so
    /// this may return before the receiver has matched; large ones wait for
    /// the receiver).
    pub fn send<T: Pod>(&self, buf: &[T], dest: usize, tag: Tag) -> Result<()> {
        self.send_mode(buf, dest, tag, false)
    }

    /// Synchronous send: returns once the receiver has matched the message.
    pub fn ssend<T: Pod>(&self, buf: &[T], dest: usize, tag: Tag) -> Result<()> {
        self.send_mode(buf, dest, tag, true)
    }

    fn send_mode<T: Pod>(&self, buf: &[T], dest: usize, tag: Tag, sync: bool) -> Result<()> {
        let peer = self.dest(dest)?;
        let tag = check_tag(tag)?;
        let ctx = self.shared.p2p_context();
        request::send_blocking(
            &self.shared.progress,
            peer,
            ctx,
            tag,
            bytemuck::cast_slice(buf),
            sync,
        )
    }

    /// Receives a message into `buf`. The message may be shorter than `buf`
    /// (`status.count::<T>()` says how long); a longer one fails with
    /// [`Error::Truncated`] and stays queued for a later receive.
    pub fn recv<T: Pod>(
        &self,
        buf: &mut [T],
        source: impl Into<Source>,
        tag: impl Into<TagMatch>,
    ) -> Result<Status> {
        let src = self.shared.source(source.into())?;
        let tag = tag_match(tag.into())?;
        let info = request::recv_blocking(
            &self.shared.progress,
            self.shared.p2p_context(),
            src,
            tag,
            bytemuck::cast_slice_mut(buf),
        )
        .map_err(|e| self.shared.group.local_error(e))?;
        self.shared.group.status(info, std::mem::size_of::<T>())
    }

    /// Receives a message of any length into a new vector of the right size.
    pub fn recv_vec<T: Pod>(
        &self,
        source: impl Into<Source>,
        tag: impl Into<TagMatch>,
    ) -> Result<(Vec<T>, Status)> {
        let st = self.probe(source, tag)?;
        let elem = std::mem::size_of::<T>().max(1);
        if st.bytes % elem != 0 {
            return Err(Error::LengthMismatch {
                bytes: st.bytes,
                elem_size: std::mem::size_of::<T>(),
            });
        }
        let mut v = vec![T::zeroed(); st.bytes / elem];
        // The probed message is the first from its source with its tag, so
        // this receive gets exactly it (messages from one source do not overtake).
        let status = self.recv(&mut v, st.source, st.tag)?;
        Ok((v, status))
    }

    /// Sends `send` to `dest` and receives into `recv` from `source`, without deadlock.
    pub fn sendrecv<S: Pod, R: Pod>(
        &self,
        send: &[S],
        dest: usize,
        send_tag: Tag,
        recv: &mut [R],
        source: impl Into<Source>,
        recv_tag: impl Into<TagMatch>,
    ) -> Result<Status> {
        let source = source.into();
        let recv_tag = recv_tag.into();
        request::scope(|s| {
            let r = self.irecv(s, recv, source, recv_tag)?;
            self.send(send, dest, send_tag)?;
            r.wait()
        })
    }

    /// Waits for a matching message and describes it without receiving it.
    pub fn probe(&self, source: impl Into<Source>, tag: impl Into<TagMatch>) -> Result<Status> {
        let src = self.shared.source(source.into())?;
        let tag = tag_match(tag.into())?;
        let ctx = self.shared.p2p_context();
        let mut p = self.shared.progress.lock()?;
        let mut found = None;
        p.wait_until(|p| {
            found = p.probe(ctx, src, tag);
            found.is_some()
        })?;
        drop(p);
        let info =
            found.ok_or_else(|| Error::InvalidArgument("probe ended without a message".into()))?;
        self.shared.group.status(info, 1)
    }

    /// Describes a matching message if one has arrived, without receiving it.
    pub fn iprobe(
        &self,
        source: impl Into<Source>,
        tag: impl Into<TagMatch>,
    ) -> Result<Option<Status>> {
        let src = self.shared.source(source.into())?;
        let tag = tag_match(tag.into())?;
        let mut p = self.shared.progress.lock()?;
        p.progress_once(Some(std::time::Duration::ZERO))?;
        match p.probe(self.shared.p2p_context(), src, tag) {
            Some(info) => {
                drop(p);
                self.shared.group.status(info, 1).map(Some)
            }
            None => Ok(None),
        }
    }

    /// Starts a send of a borrowed buffer; see [`scope`](crate::scope).
    ///
    /// Sends in a burst are gathered: a message of up to 16 KiB to a peer
    /// reached over TCP, posted right after another nonblocking send to
    /// that peer (no other Courier call in between), is copied aside and
    /// written with the rest of the burst at the next call that is not
    /// such a send (a wait, a test, a receive, a collective), so a window
    /// of small sends costs a few system calls rather than one each. The
    /// burst's first message is written at once. As in MPI, a nonblocking
    /// send is only promised to move while the program is inside Courier
    /// calls.
    pub fn isend<'s, 'env, T: Pod>(
        &self,
        scope: &'s Scope<'s, 'env>,
        buf: &'s [T],
        dest: usize,
        tag: Tag,
    ) -> Result<Request<'s>> {
        self.isend_mode(scope, buf, dest, tag, false)
    }

    /// Starts a synchronous send of a borrowed buffer.
    pub fn issend<'s, 'env, T: Pod>(
        &self,
        scope: &'s Scope<'s, 'env>,
        buf: &'s [T],
        dest: usize,
        tag: Tag,
    ) -> Result<Request<'s>> {
        self.isend_mode(scope, buf, dest, tag, true)
    }

    #[inline]
    fn isend_mode<'s, 'env, T: Pod>(
        &self,
        scope: &'s Scope<'s, 'env>,
        buf: &'s [T],
        dest: usize,
        tag: Tag,
        sync: bool,
    ) -> Result<Request<'s>> {
        let peer = self.dest(dest)?;
        let tag = check_tag(tag)?;
        Request::send(
            scope,
            &self.shared.progress,
            peer,
            self.shared.p2p_context(),
            tag,
            bytemuck::cast_slice(buf),
            sync,
        )
    }

    /// Starts a receive into a borrowed buffer; see [`scope`](crate::scope).
    pub fn irecv<'s, 'env, T: Pod>(
        &self,
        scope: &'s Scope<'s, 'env>,
        buf: &'s mut [T],
        source: impl Into<Source>,
        tag: impl Into<TagMatch>,
    ) -> Result<Request<'s>> {
        let src = self.shared.source(source.into())?;
        let tag = tag_match(tag.into())?;
        Request::recv(
            scope,
            &self.shared.progress,
            request::Names::of(&self.shared.group),
            self.shared.p2p_context(),
            src,
            tag,
            bytemuck::cast_slice_mut(buf),
            std::mem::size_of::<T>(),
        )
    }

    /// Starts a send that owns its buffer; `wait` returns the buffer.
    pub fn isend_owned<T: Pod>(&self, buf: Vec<T>, dest: usize, tag: Tag) -> Result<OwnedSend<T>> {
        let peer = self.dest(dest)?;
        let tag = check_tag(tag)?;
        OwnedSend::new(
            &self.shared.progress,
            peer,
            self.shared.p2p_context(),
            tag,
            buf,
        )
    }

    /// Starts a receive into an owned buffer; `wait` returns it with the status.
    pub fn irecv_owned<T: Pod>(
        &self,
        buf: Vec<T>,
        source: impl Into<Source>,
        tag: impl Into<TagMatch>,
    ) -> Result<OwnedRecv<T>> {
        let src = self.shared.source(source.into())?;
        let tag = tag_match(tag.into())?;
        OwnedRecv::new(
            &self.shared.progress,
            self.shared.group.clone(),
            self.shared.p2p_context(),
            src,
            tag,
            buf,
        )
    }
}
