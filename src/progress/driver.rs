//! A rank's driver as its threads share it: the progress state behind one
//! lock, and how the threads that wait share the work
//! (`MPI_THREAD_MULTIPLE`).
//!
//! * Every call takes the lock for its own step (posting, collecting) and
//!   gives it back; a rank with one thread pays one uncontended lock and
//!   unlock per call.
//! * Waiting is shared: one thread at a time holds the *progress turn* and
//!   runs the spin → yield → block loop ([`wait`](super::wait)) for
//!   everyone. The others park, each saying what it waits for (a request,
//!   the direct receive, or anything); after a round that made progress
//!   the turn-holder wakes exactly the threads whose wait is over, and
//!   when it leaves it wakes one parked thread to take the turn over.
//!   Eight threads waiting on two cores therefore leave the cores to the
//!   one that polls, and a completion costs one wake-up, not one per
//!   parked thread.
//! * The turn-holder hands the lock to any thread queued for it at every
//!   round (`MutexGuard::bump`, a fair hand-over), and sleeps (futex or
//!   poller) with the lock released. A call that ends while it sleeps wakes
//!   it, so what that call queued (output, a new receive) is pushed without
//!   waiting for the sleep's timeout.
//! * A library call made from inside another on the same thread (a
//!   destructor run by the library) is an error, as before threads: the
//!   lock is not re-entrant, so it is refused rather than deadlocking.
//! * A program that asked for less than `Threading::Multiple`
//!   (`init_thread(Single | Funneled)`) gets an *owned* driver: only the
//!   thread that initialized may call, checked by a thread token at every
//!   call (another thread gets an error), and the calls take the state
//!   without the lock: no locked instruction per call, as a
//!   single-threaded MPI library.

use super::Progress;
use crate::engine::ReqId;
use crate::error::{Error, Result};
use parking_lot::{Mutex, MutexGuard};
use std::cell::Cell;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How long a parked thread sleeps before it looks again by itself (a
/// safety net: the turn-holder wakes the parked threads when it matters).
const PARK_MAX: Duration = Duration::from_millis(20);

thread_local! {
    /// This thread is inside a library call that holds (or waits with) the driver.
    static INSIDE: Cell<bool> = const { Cell::new(false) };
    /// This thread's token (see [`thread_token`]); 0 until first asked.
    static TOKEN: Cell<u64> = const { Cell::new(0) };
}

/// A number that names the calling thread for as long as the process
/// lives (never 0, never reused).
#[inline]
pub(crate) fn thread_token() -> u64 {
    TOKEN.with(|t| {
        let v = t.get();
        if v != 0 {
            return v;
        }
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let v = NEXT.fetch_add(1, Ordering::Relaxed);
        t.set(v);
        v
    })
}

/// A rank's progress state, shared by its threads.
#[derive(Debug)]
pub(crate) struct Driver {
    state: Mutex<Progress>,
    /// `Some(token)`: an owned driver (see the module's documentation):
    /// only that thread calls, and never through the lock. Fixed at
    /// creation.
    owner: Option<u64>,
}

/// What a parked thread waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WaitKey {
    /// Request `id` to finish.
    Req(ReqId),
    /// The direct receive to finish.
    Direct,
    /// Anything (probes, `wait_any`, finalize): woken after every round
    /// that made progress.
    Any,
}

/// A parked thread.
#[derive(Debug)]
struct Parked {
    key: WaitKey,
    thread: std::thread::Thread,
    /// Unparked already since it parked (not again for every round).
    woken: bool,
}

/// What the waiting threads of a rank share (inside the lock).
#[derive(Debug, Default)]
pub(super) struct Turns {
    /// A thread holds the progress turn.
    pub(super) taken: bool,
    /// The turn-holder sleeps (the lock released) in the poller or on the
    /// shared-memory doorbell.
    pub(super) sleeping: bool,
    /// Threads parked until their wait is over or the turn is free.
    parked: Vec<Parked>,
}

impl Driver {
    /// A driver shared by any threads (`owner: None`), or owned by the
    /// thread of token `owner`.
    pub(crate) fn new(progress: Progress, owner: Option<u64>) -> Self {
        Driver {
            state: Mutex::new(progress),
            owner,
        }
    }

    /// Whether only one thread may call (an owned driver).
    pub(crate) fn is_owned(&self) -> bool {
        self.owner.is_some()
    }

    /// Takes the driver for one call: an error after finalize, or when the
    /// calling thread is already inside a library call. Ends any burst of
    /// nonblocking sends the calls before left (`Progress::end_burst`).
    #[inline(always)]
    pub(crate) fn lock(&self) -> Result<Held<'_>> {
        let mut held = self.lock_for_isend()?;
        held.end_burst();
        Ok(held)
    }

    /// [`Driver::lock`] for a nonblocking send, which may join a burst of
    /// them rather than end it (see `Progress::isend_eager_now`).
    #[inline(always)]
    pub(crate) fn lock_for_isend(&self) -> Result<Held<'_>> {
        let held = self.enter_in_burst()?;
        if held.is_finalized() {
            return Err(Progress::finalized_error());
        }
        Ok(held)
    }

    /// What [`Driver::lock`] checks (not finalized, not inside another
    /// call, an owned driver's own thread), without taking the state: for
    /// calls that only need to know they may go on (a collective over the
    /// arena, which never touches the driver on its way). An owned driver
    /// reads the flag directly, with no guard to build and drop.
    #[inline]
    pub(crate) fn check_callable(&self) -> Result<()> {
        match self.owner {
            Some(owner) => {
                if INSIDE.with(Cell::get) {
                    return Err(reentrant_error());
                }
                if owner != thread_token() {
                    return Err(foreign_thread_error());
                }
                // SAFETY: as in `enter`: only the owner thread gets here,
                // outside any call of its own (`INSIDE` is clear), so no
                // other reference to the state exists while this read runs.
                let (finalized, held) = unsafe {
                    let state = &*self.state.data_ptr();
                    (state.is_finalized(), state.holds_burst())
                };
                if finalized {
                    return Err(Progress::finalized_error());
                }
                if held {
                    // A burst of sends waits to be written: the collective
                    // may wait on a rank that waits for them.
                    return self.lock().map(drop);
                }
                Ok(())
            }
            None => self.lock().map(drop),
        }
    }

    /// [`Driver::lock`] that also works after finalize (reports, teardown).
    #[inline]
    pub(crate) fn lock_any(&self) -> Result<Held<'_>> {
        self.enter()
    }

    /// Takes the driver from a `Drop` (which cannot fail). Destructors do
    /// not run inside library calls, so this succeeds, unless an owned
    /// driver's request is dropped on another thread (the program broke
    /// the level it asked for); then a loan could outlive its buffer, so
    /// the process aborts instead.
    pub(crate) fn lock_for_drop(&self) -> Held<'_> {
        match self.enter() {
            Ok(h) => h,
            Err(e) => {
                // Inside another call, or on a thread an owned driver
                // refuses: the request cannot be finished, and its buffer
                // must not be freed under it.
                eprintln!("courier: an unfinished request was dropped where it cannot be waited for ({e}); aborting");
                std::process::abort()
            }
        }
    }

    /// Takes the state for one call, ending any burst of nonblocking sends
    /// the calls before left (see `Progress::end_burst`).
    #[inline(always)]
    fn enter(&self) -> Result<Held<'_>> {
        let mut held = self.enter_in_burst()?;
        held.end_burst();
        Ok(held)
    }

    /// Takes the state for one call.
    #[inline(always)]
    fn enter_in_burst(&self) -> Result<Held<'_>> {
        if INSIDE.with(Cell::get) {
            return Err(reentrant_error());
        }
        let g = match self.owner {
            None => Access::Locked(self.state.lock()),
            Some(owner) if owner == thread_token() => {
                // SAFETY: an owned driver's lock is never taken (`owner`
                // is fixed at creation, so every entry comes here), and
                // only the owner thread reaches this line; `INSIDE` (set
                // below until this `Held` drops) keeps that thread from
                // making a second reference while this one lives, and a
                // `Held` never leaves its thread (it is not `Send`). So
                // this is the only reference to the state.
                Access::Owned(unsafe { &mut *self.state.data_ptr() })
            }
            Some(_) => return Err(foreign_thread_error()),
        };
        INSIDE.with(|c| c.set(true));
        Ok(Held {
            g,
            _not_send: PhantomData,
        })
    }
}

#[cold]
#[inline(never)]
fn foreign_thread_error() -> Error {
    Error::InvalidState(
        "this universe was initialized for one thread (init_thread with Threading::Single \
         or Funneled): only the thread that initialized it may call Courier; use \
         Threading::Multiple (the default of courier::init) to call from any thread"
            .into(),
    )
}

#[cold]
#[inline(never)]
fn reentrant_error() -> Error {
    Error::InvalidState("a Courier call was made from inside another Courier call".into())
}

/// How a call holds the state.
enum Access<'a> {
    /// Through the lock (a shared driver).
    Locked(MutexGuard<'a, Progress>),
    /// Directly, on the owner thread of an owned driver.
    Owned(&'a mut Progress),
}

/// The driver, held by this thread for one call.
pub(crate) struct Held<'a> {
    g: Access<'a>,
    /// Stays on the thread that took it (an owned driver's access is
    /// sound only there).
    _not_send: PhantomData<*const ()>,
}

impl std::fmt::Debug for Held<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held").finish_non_exhaustive()
    }
}

impl Deref for Held<'_> {
    type Target = Progress;
    #[inline]
    fn deref(&self) -> &Progress {
        match &self.g {
            Access::Locked(g) => g,
            Access::Owned(p) => p,
        }
    }
}

impl DerefMut for Held<'_> {
    #[inline]
    fn deref_mut(&mut self) -> &mut Progress {
        match &mut self.g {
            Access::Locked(g) => g,
            Access::Owned(p) => p,
        }
    }
}

impl Drop for Held<'_> {
    #[inline]
    fn drop(&mut self) {
        if let Access::Owned(_) = self.g {
            // The owner thread is the only one: nobody sleeps with the
            // turn or is parked while it is inside a call.
            INSIDE.with(|c| c.set(false));
            return;
        }
        if self.turns.sleeping {
            // What this call queued is pushed now, not after the sleep.
            self.wake_sleeper();
        }
        if !self.turns.parked.is_empty() {
            // This call may have completed a parked thread's request (a
            // receive posted here can take a queued message; a test
            // makes progress): its wait is over now, not at the
            // turn-holder's next busy round.
            self.wake_finished_slow();
        }
        INSIDE.with(|c| c.set(false));
    }
}

impl Held<'_> {
    /// Lets a thread queued for the lock have it, then takes it back (a
    /// fair hand-over; nearly free when nobody is queued).
    #[inline]
    pub(super) fn relax(&mut self) {
        if let Access::Locked(g) = &mut self.g {
            MutexGuard::bump(g);
        }
    }

    /// Runs `f` with the lock released (on an owned driver, just runs it:
    /// no other thread is in the library).
    fn unlocked<R>(&mut self, f: impl FnOnce() -> R) -> R {
        match &mut self.g {
            Access::Locked(g) => MutexGuard::unlocked(g, f),
            Access::Owned(_) => f(),
        }
    }

    /// Yields the core with the lock released (a thread of this rank that
    /// the scheduler runs instead may need it).
    pub(super) fn yield_unlocked(&mut self) {
        self.unlocked(std::thread::yield_now);
    }

    /// Runs `f` (a sleep) with the lock released, marked as the sleeping
    /// turn-holder so that other threads' calls wake it.
    pub(super) fn sleep_unlocked<R>(&mut self, f: impl FnOnce() -> R) -> R {
        self.turns.sleeping = true;
        let r = self.unlocked(f);
        self.turns.sleeping = false;
        r
    }

    /// Parks until the turn-holder finds the wait for `key` over, or
    /// leaves the turn (or a while passed: the caller looks again).
    pub(super) fn park(&mut self, key: WaitKey) {
        if self.turns.sleeping {
            // Its sleep may be long: it will look for what we wait for now.
            self.wake_sleeper();
        }
        let me = std::thread::current();
        let id = me.id();
        self.turns.parked.push(Parked {
            key,
            thread: me,
            woken: false,
        });
        // An unpark that comes before the park is kept: no wake-up is lost.
        self.unlocked(|| std::thread::park_timeout(PARK_MAX));
        self.turns.parked.retain(|w| w.thread.id() != id);
    }

    /// Wakes the parked threads whose wait is over (after a round that
    /// made progress); returns whether it woke any.
    #[inline]
    pub(super) fn wake_finished(&mut self) -> bool {
        if self.turns.parked.is_empty() {
            return false;
        }
        self.wake_finished_slow()
    }

    #[cold]
    fn wake_finished_slow(&mut self) -> bool {
        let p: &mut Progress = self;
        let mut woke = false;
        for w in p.turns.parked.iter_mut().filter(|w| !w.woken) {
            let over = match w.key {
                WaitKey::Req(id) => p.engine.is_done(id),
                WaitKey::Direct => p.engine.direct_finished(),
                WaitKey::Any => true,
            };
            if over {
                w.woken = true;
                w.thread.unpark();
                woke = true;
            }
        }
        woke
    }

    /// Leaving the turn: wakes one parked thread (not woken yet) to take it.
    #[inline]
    pub(super) fn pass_turn(&mut self) {
        if self.turns.parked.is_empty() {
            return;
        }
        self.wake_finished_slow();
        if let Some(w) = self.turns.parked.iter_mut().find(|w| !w.woken) {
            w.woken = true;
            w.thread.unpark();
        }
    }
}

impl Progress {
    /// Ends the turn-holder's sleep (the doorbell and the poller).
    #[cold]
    fn wake_sleeper(&mut self) {
        // Once is enough: it looks at everything when it wakes.
        self.turns.sleeping = false;
        if let Some(shm) = self.links.shm.as_ref() {
            shm.wake_own();
        }
        self.links.tcp.wake();
    }
}
