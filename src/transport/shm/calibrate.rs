//! How this node moves bytes between two of its ranks, measured once at
//! start-up: whether copying through shared memory beats a single-copy
//! pull by cross-memory attach.
//!
//! The answer is not a property of the CPU alone. On one 2-vCPU VM the two
//! vCPUs sometimes share a physical core's caches (a cache line passes
//! between the ranks in about 45 ns) and sometimes do not (about 150 ns);
//! `process_vm_readv` costs about 1 µs of fixed work on one such CPU and
//! 0.45 µs on another. With shared caches a 32 KiB copy through shared
//! memory and out again takes 1.1 µs and the pull 2.6 µs, and the
//! shared-memory paths win at every size up to 1 MiB (eager messages
//! 2–4× the rendezvous' bandwidth, collectives through the arena 0.3–0.7×
//! the pulls' time); without, the two are level at 32 KiB and the pulls
//! win from about 16 KiB. So the node measures it.
//!
//! Local ranks 0 (the lead) and 1 (the partner) meet in a small area at
//! the end of the lead's segment:
//!
//! ```text
//!   0     turn: AtomicU64   1: the partner is here; 2k: the lead asks for
//!                           copy k; 2k + 1: the partner made it; DONE
//!   64    verdict: AtomicU32  0: not yet; Profile as u32
//!   128   source: AtomicU64   address of the partner's private probe buffer
//!   4096  PROBE bytes: what the partner copies in and the lead copies out
//! ```
//!
//! For each of [`ROUNDS`] rounds the lead times a copy through the area
//! (the partner copies its buffer in, the lead copies it out: both copies
//! and two line exchanges, as a shared-memory message pays them) and a pull
//! of the partner's buffer with `process_vm_readv`; the verdict is
//! [`Profile::Close`] when the median copy takes less than [`CLOSE_RATIO`]
//! of the median pull, [`Profile::Remote`] when it takes more than
//! [`REMOTE_RATIO`] of it, else [`Profile::Far`]. The other local ranks
//! read the verdict. Anything that goes wrong (a rank that does not come
//! within [`WAIT`], a refused pull) gives [`Profile::Far`], the tuning this
//! library had before it measured, so the measurement can only choose
//! between tested sets of defaults. Ranks that disagree (one timed out)
//! still work: the eager limit is the sender's own choice, and
//! collectives take their communicator's rank 0's view (`coll::node`).

use super::{ShmTransport, MAGIC};
use crate::ids::Rank;
use crate::sys::segment::Segment;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How a node's ranks best move medium and large data between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Profile {
    /// Pulls by cross-memory attach beat copies through shared memory from
    /// a few KiB (ranks on cores that do not share caches; the tuning
    /// measured on such machines).
    Far = 1,
    /// Copies through shared memory beat pulls up to large sizes (ranks
    /// whose cores share caches, or where the pull's system call is
    /// dear): larger eager messages and collectives through the arena.
    Close = 2,
    /// Copies through shared memory are much slower than pulls (ranks on
    /// cores far apart, where a line one writes reaches the other
    /// slowly): messages from a few KiB are pulled.
    Remote = 3,
}

impl Profile {
    /// Its name, as `COURIER_SHM_PROFILE` spells it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Profile::Far => "far",
            Profile::Close => "close",
            Profile::Remote => "remote",
        }
    }

    /// The profile a word of shared memory names (`self as u32`).
    pub(crate) fn from_word(w: u32) -> Option<Profile> {
        match w {
            1 => Some(Profile::Far),
            2 => Some(Profile::Close),
            3 => Some(Profile::Remote),
            _ => None,
        }
    }
}

/// Bytes copied per probe: the middle of the range the choice decides.
pub(crate) const PROBE: usize = 32 * 1024;
/// Timed rounds (each one copy and one pull); the medians decide.
pub(crate) const ROUNDS: usize = 24;
/// Rounds run before timing (faults in the area and both buffers).
const WARMUP: usize = 4;
/// The copy must take less than this fraction of the pull (1/2), so a
/// node where the two are near keeps the far tuning: with shared caches
/// the copy took 0.27 of the pull, without 0.75–1.1 (the same VM in its
/// other placement), where the ring lost to the pull from 8 KiB on
/// bandwidth.
pub(crate) const CLOSE_RATIO: (u32, u32) = (1, 2);
/// The copy taking more than this multiple of the pull (8/5) makes the
/// node [`Profile::Remote`]. The same 2-vCPU VM switches, every few
/// seconds to minutes, between placements where the copy took 0.8–1.2
/// of the pull and ones where it took 2.2–3.4 (and the ring's latency
/// at 64 KiB 4.5 against 20–22 µs); this splits the two.
pub(crate) const REMOTE_RATIO: (u32, u32) = (8, 5);
/// How long a rank waits for another at any step before giving up (the
/// ranks come from the same wire-up fence, so they meet within
/// milliseconds).
pub(crate) const WAIT: Duration = Duration::from_millis(200);
/// Bytes of the area at the end of every segment (only the lead's is used).
pub(crate) const AREA: usize = 4096 + PROBE;
const DONE: u64 = u64::MAX;

/// The verdict from medians of the timed copies and pulls.
pub(crate) fn decide(copies: &mut [Duration], pulls: &mut [Duration]) -> Profile {
    let (Some(copy), Some(pull)) = (median(copies), median(pulls)) else {
        return Profile::Far;
    };
    let (copy, pull) = (copy.as_nanos(), pull.as_nanos());
    if copy * u128::from(CLOSE_RATIO.1) < pull * u128::from(CLOSE_RATIO.0) {
        Profile::Close
    } else if copy * u128::from(REMOTE_RATIO.1) > pull * u128::from(REMOTE_RATIO.0) {
        Profile::Remote
    } else {
        Profile::Far
    }
}

fn median(v: &mut [Duration]) -> Option<Duration> {
    v.sort_unstable();
    v.get(v.len() / 2).copied()
}

/// The area's words and data in a mapped segment.
struct Area<'a> {
    turn: &'a AtomicU64,
    verdict: &'a AtomicU32,
    source: &'a AtomicU64,
    data: *mut u8,
}

fn area(seg: &Segment) -> Option<Area<'_>> {
    let at = seg.len().checked_sub(AREA)?;
    if at % 4096 != 0 {
        return None;
    }
    let base = seg.as_ptr();
    // SAFETY: 1. the area's AREA bytes lie at the end of the mapping (checked
    // above), page aligned, so the words at 0, 64 and 128 are aligned and
    // inside it; 2. the references borrow `seg`, which keeps the mapping; 3.
    // ranks touch the words only atomically; the data bytes are reached only
    // through `copy_in`/`copy_out`, which the turn protocol serializes.
    unsafe {
        let a = base.add(at);
        Some(Area {
            turn: &*(a as *const AtomicU64),
            verdict: &*(a.add(64) as *const AtomicU32),
            source: &*(a.add(128) as *const AtomicU64),
            data: a.add(4096),
        })
    }
}

impl Area<'_> {
    /// The partner's copy in, while the turn is even (the lead does not read).
    fn copy_in(&self, from: &[u8]) {
        let n = from.len().min(PROBE);
        // SAFETY: `data` has PROBE bytes inside the mapping (`area`); `from`
        // is a private buffer, so the ranges do not overlap; no rank reads
        // the data while the turn is even (a peer breaking the protocol can
        // only make the measurement wrong: the bytes are never interpreted).
        unsafe { std::ptr::copy_nonoverlapping(from.as_ptr(), self.data, n) }
    }

    /// The lead's copy out, while the turn is odd (the partner does not write).
    fn copy_out(&self, to: &mut [u8]) {
        let n = to.len().min(PROBE);
        // SAFETY: as in `copy_in`, with the roles swapped.
        unsafe { std::ptr::copy_nonoverlapping(self.data, to.as_mut_ptr(), n) }
    }
}

/// Spins (then yields) until `done` holds or [`WAIT`] passes (`false`).
fn wait_step(mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + WAIT;
    let mut rounds = 0u32;
    loop {
        if done() {
            return true;
        }
        rounds = rounds.wrapping_add(1);
        if rounds % 256 == 0 {
            if Instant::now() >= deadline {
                return false;
            }
            if rounds >= 64 * 1024 {
                std::thread::yield_now();
            }
        }
        std::hint::spin_loop();
    }
}

impl ShmTransport {
    /// Local rank 0: measures against the partner (local rank 1, process
    /// `partner_pid`; `None`: not reachable, so `Far`) and publishes the
    /// verdict in our segment, where the others wait for it.
    pub(crate) fn calibrate_lead(&self, partner_pid: Option<u32>) -> Profile {
        let verdict = partner_pid.map_or(Profile::Far, |pid| self.measure(pid));
        if let Some(a) = area(&self.own) {
            a.verdict.store(verdict as u32, Ordering::Release);
            a.turn.store(DONE, Ordering::Release);
        }
        verdict
    }

    fn measure(&self, partner_pid: u32) -> Profile {
        let Some(a) = area(&self.own) else {
            return Profile::Far;
        };
        if !wait_step(|| a.turn.load(Ordering::Acquire) == 1) {
            return Profile::Far;
        }
        let source = a.source.load(Ordering::Acquire);
        let mut private = vec![0u8; PROBE];
        let mut copies = Vec::with_capacity(ROUNDS);
        let mut pulls = Vec::with_capacity(ROUNDS);
        for k in 0..(WARMUP + ROUNDS) as u64 {
            let t0 = Instant::now();
            a.turn.store(2 + 2 * k, Ordering::Release);
            if !wait_step(|| a.turn.load(Ordering::Acquire) == 3 + 2 * k) {
                return Profile::Far;
            }
            a.copy_out(&mut private);
            let copied = t0.elapsed();
            let t1 = Instant::now();
            if crate::sys::cma::read(partner_pid, source, &mut private).is_err() {
                return Profile::Far;
            }
            if k as usize >= WARMUP {
                copies.push(copied);
                pulls.push(t1.elapsed());
            }
        }
        decide(&mut copies, &mut pulls)
    }

    /// Local rank 1: serves the lead's copies, then reads its verdict
    /// (`None`: the lead did not come, or gave none in time).
    pub(crate) fn calibrate_partner(&self, lead: Rank) -> Option<Profile> {
        self.serve_lead(lead, || {})
    }

    /// [`ShmTransport::calibrate_partner`], calling `before_copy` before
    /// each copy it makes for the lead (the tests slow it down there).
    fn serve_lead(&self, lead: Rank, mut before_copy: impl FnMut()) -> Option<Profile> {
        let seg = self.lead_segment(lead)?;
        let a = area(&seg)?;
        let private = vec![0x5au8; PROBE];
        a.source.store(private.as_ptr() as u64, Ordering::Release);
        if a.turn
            .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            // The lead gave up on us already (DONE): its verdict stands.
            return Profile::from_word(a.verdict.load(Ordering::Acquire));
        }
        let mut expect = 2u64;
        loop {
            let mut now = 0;
            if !wait_step(|| {
                now = a.turn.load(Ordering::Acquire);
                now == expect || now == DONE
            }) {
                return None;
            }
            if now == DONE {
                break;
            }
            before_copy();
            a.copy_in(&private);
            a.turn.store(expect + 1, Ordering::Release);
            expect += 2;
        }
        // The lead pulls from `private` until it says DONE: keep it until then.
        drop(private);
        Profile::from_word(a.verdict.load(Ordering::Acquire))
    }

    /// Any other local rank: waits for the lead's verdict, as long as the
    /// lead and its partner move on (a step of theirs may take up to
    /// [`WAIT`], and they give up after one that takes longer).
    pub(crate) fn calibrated_by(&self, lead: Rank) -> Option<Profile> {
        let seg = self.lead_segment(lead)?;
        let a = area(&seg)?;
        let mut seen = a.turn.load(Ordering::Acquire);
        loop {
            let mut verdict = None;
            let mut look = || {
                verdict = Profile::from_word(a.verdict.load(Ordering::Acquire));
                let now = a.turn.load(Ordering::Acquire);
                let moved = now != seen;
                seen = now;
                verdict.is_some() || moved
            };
            // Two steps' time: the step under way may have begun before we
            // looked, and the lead publishes its verdict after its last.
            let moving = wait_step(&mut look) || wait_step(&mut look);
            if verdict.is_some() || !moving {
                return verdict;
            }
        }
    }

    /// A mapping of the lead's segment of our own (not the producer's: a
    /// rank reading the verdict need not announce itself as a sender).
    fn lead_segment(&self, lead: Rank) -> Option<Segment> {
        let addr = self.peers.get(lead as usize)?.as_ref()?.addr;
        let seg = Segment::open_peer(addr.pid, addr.fd, addr.size).ok()?;
        (seg.len() >= AREA && super::word(&seg, 0) == MAGIC).then_some(seg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&x| Duration::from_micros(x)).collect()
    }

    #[test]
    fn copies_well_under_the_pull_make_the_node_close() {
        // Shared caches: 1.1 µs copies against 2.6 µs pulls.
        assert_eq!(
            decide(
                &mut us(&[11, 10, 12, 40, 11]),
                &mut us(&[26, 25, 27, 26, 90])
            ),
            Profile::Close
        );
    }

    #[test]
    fn copies_level_with_the_pull_keep_the_far_tuning() {
        // 2.6 against 2.9 µs: within the margin.
        assert_eq!(
            decide(&mut us(&[26, 27, 25]), &mut us(&[29, 28, 30])),
            Profile::Far
        );
        assert_eq!(decide(&mut us(&[30, 30]), &mut us(&[20, 20])), Profile::Far);
        assert_eq!(decide(&mut [], &mut []), Profile::Far);
    }

    #[test]
    fn copies_well_over_the_pull_make_the_node_remote() {
        // Cores far apart: 11.5 µs copies against 4.1 µs pulls.
        assert_eq!(
            decide(&mut us(&[115, 120, 110, 40]), &mut us(&[41, 40, 42, 45])),
            Profile::Remote
        );
        // 1.5×: still far; 1.65×: remote.
        assert_eq!(decide(&mut us(&[30, 30]), &mut us(&[20, 20])), Profile::Far);
        assert_eq!(
            decide(&mut us(&[33, 33]), &mut us(&[20, 20])),
            Profile::Remote
        );
    }

    /// The transports of an `n`-rank node in one process, every one a
    /// peer of every other.
    fn node(n: u32) -> Vec<ShmTransport> {
        let mut t: Vec<ShmTransport> = (0..n)
            .map(|k| ShmTransport::new(n, k, n, 64 * 1024, false).unwrap())
            .collect();
        let addrs: Vec<_> = t.iter().map(ShmTransport::addr).collect();
        for (k, tk) in t.iter_mut().enumerate() {
            for (j, a) in addrs.iter().enumerate() {
                if j != k {
                    tk.add_peer(j as Rank, *a).unwrap();
                }
            }
        }
        t
    }

    #[test]
    fn lead_partner_and_a_third_rank_get_the_same_verdict() {
        let mut t = node(3);
        let [lead, partner, third] = &mut t[..] else {
            unreachable!()
        };
        let (a, b, c) = std::thread::scope(|s| {
            let a = s.spawn(move || lead.calibrate_lead(Some(std::process::id())));
            let b = s.spawn(move || partner.calibrate_partner(0));
            let c = s.spawn(move || third.calibrated_by(0));
            (a.join().unwrap(), b.join().unwrap(), c.join().unwrap())
        });
        assert_eq!(Some(a), b);
        assert_eq!(Some(a), c);
    }

    /// A partner whose every step is slow (a busy node, or valgrind) but
    /// well within [`WAIT`]: the whole measure takes several `WAIT`s, and
    /// still nobody gives up and all three agree.
    #[test]
    fn slow_steps_within_the_wait_take_as_long_as_they_need() {
        let mut t = node(3);
        let [lead, partner, third] = &mut t[..] else {
            unreachable!()
        };
        let step = WAIT / 8;
        let started = Instant::now();
        let (a, b, c) = std::thread::scope(|s| {
            let a = s.spawn(move || lead.calibrate_lead(Some(std::process::id())));
            let b = s.spawn(move || partner.serve_lead(0, || std::thread::sleep(step)));
            let c = s.spawn(move || third.calibrated_by(0));
            (a.join().unwrap(), b.join().unwrap(), c.join().unwrap())
        });
        assert!(started.elapsed() > 2 * WAIT, "the steps were not slow");
        assert_eq!(Some(a), b);
        assert_eq!(Some(a), c);
    }

    #[test]
    fn a_partner_that_comes_after_the_lead_gave_up_takes_its_verdict() {
        let t = node(2);
        assert_eq!(t[0].calibrate_lead(None), Profile::Far);
        let t0 = Instant::now();
        assert_eq!(t[1].calibrate_partner(0), Some(Profile::Far));
        assert!(
            t0.elapsed() < WAIT,
            "it did not wait for a lead that is gone"
        );
    }

    #[test]
    fn a_lead_whose_partner_never_comes_says_far_and_says_it_to_the_others() {
        let t = ShmTransport::new(2, 0, 2, 64 * 1024, false).unwrap();
        let t0 = Instant::now();
        assert_eq!(t.calibrate_lead(Some(std::process::id())), Profile::Far);
        assert!(t0.elapsed() >= WAIT);
        let a = area(&t.own).unwrap();
        assert_eq!(a.verdict.load(Ordering::Acquire), Profile::Far as u32);
        assert_eq!(a.turn.load(Ordering::Acquire), DONE);
    }
}
