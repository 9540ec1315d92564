//! A rank's driver as its threads share it: the progress state behind one
//! lock, and how the threads that wait share the work
//! (`MPI_THREAD_MULTIPLE`).
//!
//! * Every call takes the lock for its own step (posting, collecting) and
//!   gives it back; a rank with one thread pays one uncontended lock and
//!   unlock per call.
//! * Waiting is shared: one thread at a time holds the *progress turn* and
//!   runs the spin → yield → block loop ([`wait`](super::wait)) for
//!   everyone. The others park on a condition variable; the turn-holder
//!   wakes them when a round made progress (a request may have completed)
//!   and when it leaves, so one of them takes the turn over. Eight threads
//!   waiting on two cores therefore leave the cores to the one that polls.
//! * The turn-holder hands the lock to any thread queued for it at every
//!   round (`MutexGuard::bump`, a fair hand-over), and sleeps (futex or
//!   poller) with the lock released. A call that ends while it sleeps wakes
//!   it, so what that call queued (output, a new receive) is pushed without
//!   waiting for the sleep's timeout.
//! * A library call made from inside another on the same thread (a
//!   destructor run by the library) is an error, as before threads: the
//!   lock is not re-entrant, so it is refused rather than deadlocking.

use super::Progress;
use crate::error::{Error, Result};
use parking_lot::{Condvar, Mutex, MutexGuard};
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
    /// Threads parked until the turn-holder completed something or left.
    parked: Condvar,
}

/// What the waiting threads of a rank share (inside the lock).
#[derive(Debug, Default)]
pub(super) struct Turns {
    /// A thread holds the progress turn.
    pub(super) taken: bool,
    /// The turn-holder sleeps (the lock released) in the poller or on the
    /// shared-memory doorbell.
    pub(super) sleeping: bool,
    /// Threads parked until the turn-holder makes progress or leaves.
    pub(super) parked: u32,
}

impl Driver {
    pub(crate) fn new(progress: Progress) -> Self {
        Driver {
            state: Mutex::new(progress),
            parked: Condvar::new(),
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
        Ok(Held {
            g,
            parked: &self.parked,
        })
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
    parked: &'a Condvar,
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

    /// Runs `f` (a sleep) with the lock released, marked as the sleeping
    /// turn-holder so that other threads' calls wake it.
    pub(super) fn sleep_unlocked<R>(&mut self, f: impl FnOnce() -> R) -> R {
        self.g.turns.sleeping = true;
        let r = MutexGuard::unlocked(&mut self.g, f);
        self.g.turns.sleeping = false;
        r
    }

    /// Parks until the turn-holder made progress or left (or a while passed).
    pub(super) fn park(&mut self) {
        if self.g.turns.sleeping {
            // Its sleep may be long: it will look for what we wait for now.
            self.g.wake_sleeper();
        }
        self.g.turns.parked += 1;
        self.parked.wait_for(&mut self.g, PARK_MAX);
        self.g.turns.parked -= 1;
    }

    /// Wakes the parked threads (after progress, or when leaving the turn).
    #[inline]
    pub(super) fn wake_parked(&mut self) {
        if self.g.turns.parked > 0 {
            self.parked.notify_all();
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
