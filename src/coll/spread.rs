//! Spreading a node's ranks over its CPUs when there are more ranks than
//! CPUs, without binding them.
//!
//! Courier leaves the ranks of an oversubscribed node unbound, as Open MPI
//! does: the scheduler can then even out unequal load. But it does not
//! always even out equal load. With 4 ranks on 2 CPUs, a job sometimes
//! runs for its whole length with three ranks on one CPU and one on the
//! other, and every collective then waits for three hand-overs of one CPU
//! instead of two on each in parallel. Measured with each rank pinned
//! (`taskset`, 3 runs of 100,000 iterations each): all-to-all of 8 B
//! 4.2–5.2 µs and barrier 3.8–4.5 µs three-and-one, against 2.2–2.7 and
//! 2.1–2.4 µs two-and-two; unbound jobs land on either (one in three on
//! the slow one in session 20's sittings).
//!
//! So a rank waiting in a collective of an oversubscribed node, on a
//! communicator of all the node's ranks (the world, or its duplicates),
//! looks now and then at the CPUs the ranks said they run on (hints in the
//! collective arena; a communicator of some of them cannot tell, and
//! moving by what it sees could crowd the CPUs of the ranks it does not
//! hold). When its CPU holds at least two ranks more than another CPU it
//! may use that holds one of them, and it is the highest-numbered rank
//! there, it moves itself to the least-crowded such CPU: it narrows its
//! CPU mask to that CPU (the kernel migrates it) and at once gives the
//! whole mask back. The rank is not bound afterwards: the scheduler may
//! move it again whenever its load balancing wants to.
//!
//! Another process may be what keeps a CPU's share of ranks low. A CPU
//! that holds none of them is never a target (an idle CPU pulls work by
//! itself, so the kernel leaves one empty only when something else keeps
//! it busy), and a move is on trial for a few waits: when the rank's
//! collectives went slower since, it moves back and holds still for a
//! while, longer after each move that did not pay. A rank whose mask
//! holds one CPU (bound by the user, the launcher or a cpuset) never
//! moves, nor does any rank with `COURIER_SPREAD=0`.

use nix::sched::CpuSet;
use nix::unistd::Pid;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A rank looks at the spread once every this many waits of an
/// oversubscribed collective (a wait there takes a few microseconds, so
/// every 150-300 µs: a three-and-one placement ends within a few of them,
/// and a look costs one load per rank and one reading of the clock).
/// Every 256 waits instead read alike (10 interleaved job pairs at 4
/// ranks, before moves were on trial: all-to-all and all-reduce of 4 B -
/// 1 KiB 2.0-3.6 µs, against 2.4-3.2 µs every 64).
const LOOK_EVERY: u32 = 64;
/// A move is kept when the waits after it take at most this much longer
/// (in eighths) than the waits before it; otherwise the rank moves back.
/// Another process may keep the emptiest CPU busy: with a busy loop on
/// one of 2 CPUs, moving a rank there made a 4-rank barrier and all-to-all
/// 6-35x slower (two sets of 3 runs; the kernel had rightly put all four
/// ranks on the other CPU).
const KEEP_EIGHTHS: u32 = 10;
/// A move is judged this many waits after it (a move to a CPU another
/// process keeps busy costs every wait until it is undone).
const TRIAL_WAITS: u32 = 16;
/// Looks a rank lets pass before it tries to move again after its first
/// move that did not pay; doubled after each one that did not, up to
/// [`MAX_HOLD`] (a second or more), and reset by a move that paid.
const FIRST_HOLD: u32 = 16;
/// The longest hold, in looks.
const MAX_HOLD: u32 = 8192;

/// What a rank needs to move itself (see the module's documentation).
#[derive(Debug)]
pub(crate) struct Spread {
    /// The CPUs the rank may run on (its mask when the communicator was
    /// made), in order, and that mask; `None`: it never moves.
    allowed: Option<(Vec<u32>, CpuSet)>,
    /// Waits since the rank last looked.
    waits: AtomicU32,
    /// What its looks remember (taken once a look; only the thread
    /// running the communicator's collectives looks).
    looks: Mutex<Looks>,
}

/// What a rank's looks remember.
#[derive(Debug, Default)]
struct Looks {
    /// When it last looked.
    last: Option<Instant>,
    /// A move on trial: the time per wait before it, and the CPU it left.
    trial: Option<(Duration, u32)>,
    /// Looks to let pass before the next move.
    hold: u32,
    /// The hold after the next move that does not pay.
    next_hold: u32,
}

impl Spread {
    /// Moves when `wanted` (a communicator of all the ranks of an
    /// oversubscribed node) and the rank may run on two CPUs or more,
    /// unless `COURIER_SPREAD=0`.
    pub(crate) fn new(wanted: bool) -> Self {
        let allowed = (wanted && crate::config::spread_ranks())
            .then(crate::sys::cpu_mask)
            .flatten()
            .filter(|(cpus, _)| cpus.len() >= 2);
        Spread {
            allowed,
            waits: AtomicU32::new(0),
            looks: Mutex::new(Looks {
                next_hold: FIRST_HOLD,
                ..Looks::default()
            }),
        }
    }

    /// Never moves (tests, and communicators off an oversubscribed node).
    #[cfg(test)]
    pub(crate) fn off() -> Self {
        Spread {
            allowed: None,
            waits: AtomicU32::new(0),
            looks: Mutex::new(Looks::default()),
        }
    }

    /// Called at each wait of an oversubscribed collective by rank `me`,
    /// on CPU `mine`, where `hints` gives the CPU each rank last said it
    /// runs on: every [`LOOK_EVERY`] calls, judges the last move (moving
    /// back if the waits since took longer, see [`KEEP_EIGHTHS`]) or moves
    /// the rank if its CPU is crowded (see [`target`]). Returns whether it
    /// moved.
    pub(crate) fn maybe_move(
        &self,
        me: usize,
        mine: Option<u32>,
        hints: impl Iterator<Item = Option<u32>>,
    ) -> bool {
        let Some((cpus, mask)) = &self.allowed else {
            return false;
        };
        let n = self.waits.load(Ordering::Relaxed).wrapping_add(1);
        self.waits.store(n, Ordering::Relaxed);
        if n % LOOK_EVERY != 0 {
            return false;
        }
        let mut looks = self.looks.lock();
        let step = looks.look(Instant::now(), || {
            mine.and_then(|mine| target(me, mine, hints, cpus).map(|to| (mine, to)))
        });
        match step {
            Step::Stay => false,
            Step::Back(from) => move_to(from, mask),
            Step::Try { to, .. } => {
                if !move_to(to, mask) {
                    looks.trial = None;
                    return false;
                }
                // Judged after TRIAL_WAITS more waits, not a whole look's.
                self.waits
                    .store(LOOK_EVERY - TRIAL_WAITS, Ordering::Relaxed);
                true
            }
        }
    }
}

/// What a look decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Nothing to do.
    Stay,
    /// The last move did not pay: back to this CPU.
    Back(u32),
    /// Try a move from CPU `from` to `to` (on trial until the next look).
    Try { from: u32, to: u32 },
}

impl Looks {
    /// A look at time `now`, `want` telling where the rank should move
    /// from and to (it is asked only when a move may be tried).
    fn look(&mut self, now: Instant, want: impl FnOnce() -> Option<(u32, u32)>) -> Step {
        let window = if self.trial.is_some() {
            TRIAL_WAITS
        } else {
            LOOK_EVERY
        };
        let per_wait = self.last.map(|t| now.saturating_duration_since(t) / window);
        self.last = Some(now);
        if let Some((before, from)) = self.trial.take() {
            if per_wait.is_some_and(|p| p * 8 <= before * KEEP_EIGHTHS) {
                self.next_hold = FIRST_HOLD;
                return Step::Stay;
            }
            self.hold = self.next_hold;
            self.next_hold = (self.next_hold * 2).min(MAX_HOLD);
            return Step::Back(from);
        }
        if self.hold > 0 {
            self.hold -= 1;
            return Step::Stay;
        }
        // A first look only starts the clock: a move needs the time per
        // wait before it.
        let Some(before) = per_wait else {
            return Step::Stay;
        };
        match want() {
            Some((from, to)) => {
                self.trial = Some((before, from));
                Step::Try { from, to }
            }
            None => Step::Stay,
        }
    }
}

/// Moves the calling thread to `cpu`, leaving its CPU mask `mask` as it
/// was. Returns whether it moved.
fn move_to(cpu: u32, mask: &CpuSet) -> bool {
    let mut one = CpuSet::new();
    if one.set(cpu as usize).is_err() {
        return false;
    }
    // Narrowed, the kernel moves this thread to `cpu` before the call
    // returns; widened again at once, it stays there until the scheduler
    // moves it. A failure leaves the mask as it was.
    let moved = nix::sched::sched_setaffinity(Pid::from_raw(0), &one).is_ok();
    if moved {
        // If this failed the rank would stay bound to `cpu`: still a CPU
        // it was allowed, so nothing breaks, it only loses the freedom to
        // move.
        let _ = nix::sched::sched_setaffinity(Pid::from_raw(0), mask);
    }
    moved
}

/// The CPU rank `me`, on CPU `mine`, should move to, given the CPU each
/// rank last said it runs on (`hints`, by rank; `None`: not said) and the
/// CPUs it may use (`cpus`): the least-crowded of those that hold a rank
/// (the lowest on a tie) when `mine` holds at least two ranks more and
/// `me` is the highest-numbered rank said to be on `mine` (so that one
/// rank moves, not all of them). `None` when `mine` is not among `cpus`.
pub(crate) fn target(
    me: usize,
    mine: u32,
    hints: impl Iterator<Item = Option<u32>>,
    cpus: &[u32],
) -> Option<u32> {
    let at = cpus.iter().position(|&c| c == mine)?;
    let mut count = vec![0usize; cpus.len()];
    let mut highest_here = true;
    for (r, hint) in hints.enumerate() {
        let cpu = if r == me { Some(mine) } else { hint };
        let Some(i) = cpu.and_then(|c| cpus.iter().position(|&x| x == c)) else {
            continue;
        };
        count[i] += 1;
        if i == at && r > me {
            highest_here = false;
        }
    }
    // Not to a CPU none of them runs on (see the module's documentation).
    let (least, &fewest) = count
        .iter()
        .enumerate()
        .filter(|&(_, &n)| n > 0)
        .min_by_key(|&(i, &n)| (n, i))?;
    (highest_here && count[at] >= fewest + 2).then(|| cpus[least])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hints(cpus: &[Option<u32>]) -> impl Iterator<Item = Option<u32>> + '_ {
        cpus.iter().copied()
    }

    #[test]
    fn the_highest_rank_of_a_crowded_cpu_moves_to_the_emptiest() {
        let three_one = [Some(0), Some(0), Some(0), Some(1)];
        assert_eq!(target(2, 0, hints(&three_one), &[0, 1]), Some(1));
        // The others on CPU 0 stay: one move is enough.
        assert_eq!(target(0, 0, hints(&three_one), &[0, 1]), None);
        assert_eq!(target(1, 0, hints(&three_one), &[0, 1]), None);
        // Nor does the lone rank move.
        assert_eq!(target(3, 1, hints(&three_one), &[0, 1]), None);
        // All four on CPU 1: nobody goes to CPU 0, which something else
        // must keep busy (an idle CPU pulls work by itself).
        let four = [Some(1); 4];
        assert_eq!(target(3, 1, hints(&four), &[0, 1]), None);
        // Five and one on three CPUs: to the one that holds a rank.
        let five = [Some(0), Some(0), Some(0), Some(0), Some(0), Some(2)];
        assert_eq!(target(4, 0, hints(&five), &[0, 1, 2]), Some(2));
    }

    #[test]
    fn an_even_or_nearly_even_spread_stays() {
        for spread in [
            [Some(0), Some(0), Some(1), Some(1)],
            [Some(0), Some(1), Some(0), Some(1)],
            [Some(0), Some(0), Some(1), None],
        ] {
            // (A rank that has not said where it runs is not counted.)
            for (me, mine) in spread.iter().enumerate() {
                if let Some(mine) = *mine {
                    assert_eq!(
                        target(me, mine, hints(&spread), &[0, 1]),
                        None,
                        "{spread:?}, {me}"
                    );
                }
            }
        }
        // Three ranks on two CPUs: two and one is as even as it gets.
        let three = [Some(0), Some(0), Some(1)];
        assert_eq!(target(1, 0, hints(&three), &[0, 1]), None);
    }

    #[test]
    fn only_allowed_cpus_count_and_receive() {
        // CPU 5 is not this rank's to use: ranks said to be there do not
        // count, and nobody moves there.
        let h = [Some(5), Some(5), Some(2), Some(2), Some(2), Some(3)];
        assert_eq!(target(4, 2, hints(&h), &[2, 3]), Some(3));
        assert_eq!(target(4, 2, hints(&h), &[2, 3, 4]), Some(3));
        assert_eq!(target(4, 2, hints(&h), &[2]), None);
        // Running outside its own list (a stale mask): no move.
        assert_eq!(target(0, 5, hints(&h), &[2, 3]), None);
        // This rank's own hint is where it runs now, whatever it said.
        let stale = [Some(0), Some(0), Some(1), Some(1)];
        assert_eq!(target(2, 0, hints(&stale), &[0, 1]), Some(1));
    }

    /// A rank's looks before its first.
    fn looks() -> Looks {
        Looks {
            next_hold: FIRST_HOLD,
            ..Looks::default()
        }
    }

    #[test]
    fn a_move_that_pays_is_kept_and_one_that_does_not_is_undone() {
        let t0 = Instant::now();
        let us = |n: u64| Duration::from_micros(n);
        let mut l = looks();
        // The first look starts the clock; the second, 4 µs a wait, tries.
        assert_eq!(l.look(t0, || Some((0, 1))), Step::Stay);
        let t1 = t0 + us(4) * LOOK_EVERY;
        assert_eq!(l.look(t1, || Some((0, 1))), Step::Try { from: 0, to: 1 });
        // 2 µs a wait since: kept, and the next look may try again.
        let t2 = t1 + us(2) * TRIAL_WAITS;
        assert_eq!(l.look(t2, || None), Step::Stay);
        let t3 = t2 + us(2) * LOOK_EVERY;
        assert_eq!(l.look(t3, || Some((1, 0))), Step::Try { from: 1, to: 0 });
        // 40 µs a wait since (another process on that CPU): back, then
        // FIRST_HOLD looks without asking where to go.
        let t4 = t3 + us(40) * TRIAL_WAITS;
        assert_eq!(
            l.look(t4, || panic!("not asked while judging")),
            Step::Back(1)
        );
        let mut t = t4;
        for _ in 0..FIRST_HOLD {
            t += us(2) * LOOK_EVERY;
            assert_eq!(l.look(t, || panic!("not asked while holding")), Step::Stay);
        }
        t += us(2) * LOOK_EVERY;
        assert_eq!(l.look(t, || Some((1, 0))), Step::Try { from: 1, to: 0 });
        // Undone again: the hold doubles.
        t += us(40) * TRIAL_WAITS;
        assert_eq!(l.look(t, || None), Step::Back(1));
        assert_eq!(l.hold, 2 * FIRST_HOLD);
        // A quarter slower is still kept (noise), a little more is not.
        let mut l = looks();
        l.look(t0, || None);
        l.look(t1, || Some((0, 1)));
        assert_eq!(l.look(t1 + us(5) * TRIAL_WAITS, || None), Step::Stay);
        let mut l = looks();
        l.look(t0, || None);
        l.look(t1, || Some((0, 1)));
        assert_eq!(l.look(t1 + us(6) * TRIAL_WAITS, || None), Step::Back(0));
    }

    #[test]
    fn holds_stop_doubling_at_the_longest() {
        let mut l = looks();
        let mut t = Instant::now();
        l.look(t, || None);
        for _ in 0..20 {
            while l.hold > 0 {
                t += Duration::from_micros(100);
                l.look(t, || None);
            }
            t += Duration::from_micros(100);
            assert!(matches!(l.look(t, || Some((0, 1))), Step::Try { .. }));
            t += Duration::from_millis(100);
            assert_eq!(l.look(t, || None), Step::Back(0));
        }
        assert_eq!(l.hold, MAX_HOLD);
    }

    #[test]
    fn a_spread_that_is_off_never_moves() {
        let s = Spread::off();
        for _ in 0..2 * LOOK_EVERY {
            assert!(!s.maybe_move(2, Some(0), hints(&[Some(0), Some(0), Some(0), Some(1)])));
        }
    }
}
