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

use super::Progress;
use crate::engine::ReqId;
use crate::error::{Error, Result};
use parking_lot::{Mutex, MutexGuard};
use std::cell::Cell;
use std::ops::{Deref, DerefMut};
use std::time::Duration;

/// How long a parked thread sleeps before it looks again by itself (a
/// safety net: the turn-holder wakes the parked threads when it matters).
const PARK_MAX: Duration = Duration::from_millis(20);

thread_local! {
    /// This thread is inside a library call that holds (or waits with) the driver.
    static INSIDE: Cell<bool> = const { Cell::new(false) };
}

/// A rank's progress state, shared by its threads.
#[derive(Debug)]
pub(crate) struct Driver {
    state: Mutex<Progress>,
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
    pub(crate) fn new(progress: Progress) -> Self {
        Driver {
            state: Mutex::new(progress),
        }
    }

    /// Takes the driver for one call: an error after finalize, or when the
    /// calling thread is already inside a library call.
    #[inline]
    pub(crate) fn lock(&self) -> Result<Held<'_>> {
        let held = self.enter()?;
        if held.is_finalized() {
            return Err(Progress::finalized_error());
        }
        Ok(held)
    }

    /// [`Driver::lock`] that also works after finalize (reports, teardown).
    #[inline]
    pub(crate) fn lock_any(&self) -> Result<Held<'_>> {
        self.enter()
    }

    /// Takes the driver from a `Drop` (which cannot fail). Destructors do
    /// not run inside library calls, so this succeeds; if that invariant
    /// were ever broken, a loan could outlive its buffer, so the process
    /// aborts instead.
    pub(crate) fn lock_for_drop(&self) -> Held<'_> {
        match self.enter() {
            Ok(h) => h,
            Err(_) => {
                eprintln!("courier: a request was dropped inside a Courier call; aborting");
                std::process::abort()
            }
        }
    }

    #[inline]
    fn enter(&self) -> Result<Held<'_>> {
        if INSIDE.with(Cell::get) {
            return Err(reentrant_error());
        }
        let g = self.state.lock();
        INSIDE.with(|c| c.set(true));
        Ok(Held { g })
    }
}

#[cold]
#[inline(never)]
fn reentrant_error() -> Error {
    Error::InvalidState("a Courier call was made from inside another Courier call".into())
}

/// The driver, held by this thread for one call.
pub(crate) struct Held<'a> {
    g: MutexGuard<'a, Progress>,
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
        &self.g
    }
}

impl DerefMut for Held<'_> {
    #[inline]
    fn deref_mut(&mut self) -> &mut Progress {
        &mut self.g
    }
}

impl Drop for Held<'_> {
    #[inline]
    fn drop(&mut self) {
        if self.g.turns.sleeping {
            // What this call queued is pushed now, not after the sleep.
            self.g.wake_sleeper();
        }
        if !self.g.turns.parked.is_empty() {
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
        MutexGuard::bump(&mut self.g);
    }

    /// Yields the core with the lock released (a thread of this rank that
    /// the scheduler runs instead may need it).
    pub(super) fn yield_unlocked(&mut self) {
        MutexGuard::unlocked(&mut self.g, std::thread::yield_now);
    }

    /// Runs `f` (a sleep) with the lock released, marked as the sleeping
    /// turn-holder so that other threads' calls wake it.
    pub(super) fn sleep_unlocked<R>(&mut self, f: impl FnOnce() -> R) -> R {
        self.g.turns.sleeping = true;
        let r = MutexGuard::unlocked(&mut self.g, f);
        self.g.turns.sleeping = false;
        r
    }

    /// Parks until the turn-holder finds the wait for `key` over, or
    /// leaves the turn (or a while passed: the caller looks again).
    pub(super) fn park(&mut self, key: WaitKey) {
        if self.g.turns.sleeping {
            // Its sleep may be long: it will look for what we wait for now.
            self.g.wake_sleeper();
        }
        let me = std::thread::current();
        let id = me.id();
        self.g.turns.parked.push(Parked {
            key,
            thread: me,
            woken: false,
        });
        // An unpark that comes before the park is kept: no wake-up is lost.
        MutexGuard::unlocked(&mut self.g, || std::thread::park_timeout(PARK_MAX));
        self.g.turns.parked.retain(|w| w.thread.id() != id);
    }

    /// Wakes the parked threads whose wait is over (after a round that
    /// made progress); returns whether it woke any.
    #[inline]
    pub(super) fn wake_finished(&mut self) -> bool {
        if self.g.turns.parked.is_empty() {
            return false;
        }
        self.wake_finished_slow()
    }

    #[cold]
    fn wake_finished_slow(&mut self) -> bool {
        let p = &mut *self.g;
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
        if self.g.turns.parked.is_empty() {
            return;
        }
        self.wake_finished_slow();
        if let Some(w) = self.g.turns.parked.iter_mut().find(|w| !w.woken) {
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
