//! Waiting: how a rank spends the time until what it waits for happens.
//!
//! Poll without blocking for a short spin, then yield the core for a while,
//! then block (on the shared-memory futex, or in the poller). When the node
//! runs more ranks than it has cores, the spin is cut short so waiting ranks
//! give their cores away. However busy the rank, the poller (listener: new
//! and stale connections; the launcher: abort notices) is asked at least
//! every [`SERVICE_INTERVAL`].
//!
//! With several threads, one of them at a time runs this loop for all (see
//! [`driver`](super::driver)): it hands the lock over at every round and
//! sleeps with it released.

use super::driver::{Held, WaitKey};
use super::Progress;
use crate::error::{Error, Result};
use crate::ids::Rank;
use std::time::{Duration, Instant};

/// Busy polling reads sockets directly (no `epoll_wait`) up to this many links.
const DIRECT_SPIN_MAX_LINKS: usize = 4;
/// However busy the rank, the poller is asked at least this often while it waits.
pub(super) const SERVICE_INTERVAL: Duration = Duration::from_millis(5);
/// Rounds a direct receive from a shared-memory peer spins on that peer's
/// ring alone before the general wait (a few microseconds).
const DIRECT_SPIN_ROUNDS: u32 = 4096;
/// Rounds of a wait between two offers of the lock to another thread.
const RELAX_ROUNDS: u32 = 16;
/// Busy rounds between two looks at the clock for [`SERVICE_INTERVAL`].
const SERVICE_CLOCK_ROUNDS: u32 = 256;

/// How long to spin and yield before blocking.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WaitPolicy {
    pub(crate) spin: Duration,
    pub(crate) yield_for: Duration,
    pub(crate) block: Duration,
    /// More ranks on this node than cores.
    pub(crate) oversubscribed: bool,
    /// Cores this rank may use for its own work besides the one it runs
    /// on, counted with it: its CPU mask and its share of the node's
    /// cores, whichever is smaller (1: none spare).
    pub(crate) own_cores: usize,
    /// Ranks on this node.
    pub(crate) node_ranks: u32,
}

impl WaitPolicy {
    /// Spin long when every rank of the node has a core, briefly otherwise.
    pub(crate) fn for_node(local_size: u32) -> Self {
        // The CPUs the job may use on this node, not this process's
        // affinity mask: a rank bound to one core is not oversubscribed
        // when every rank has its own core. The launcher says how many its
        // own mask holds (a cpuset, `taskset`, a batch allocation may give
        // the job fewer than the node has: 2 ranks confined to one CPU
        // waited 0.5 ms per barrier when they counted 2); without it, the
        // node's online CPUs.
        let online = nix::unistd::sysconf(nix::unistd::SysconfVar::_NPROCESSORS_ONLN)
            .ok()
            .flatten()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|&n| n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32));
        let cores = crate::config::node_cores().map_or(online, |n| n.min(online));
        let oversubscribed = local_size > cores;
        let mask = crate::sys::cpu_mask().map_or(1, |(cpus, _)| cpus.len());
        let own_cores = mask.min((cores / local_size.max(1)) as usize).max(1);
        let (spin, yield_for) = if oversubscribed {
            // The rank waited for may need this very core: give it away at
            // once (spinning 5 µs first made 4 ranks on 2 cores 2-3x slower
            // in barriers and all-to-alls).
            (Duration::ZERO, Duration::from_micros(200))
        } else {
            (Duration::from_micros(500), Duration::from_millis(2))
        };
        let spin = crate::config::duration_us("COURIER_SPIN_US").unwrap_or(spin);
        let yield_for = crate::config::duration_us("COURIER_YIELD_US").unwrap_or(yield_for);
        WaitPolicy {
            spin,
            yield_for,
            block: Duration::from_millis(100),
            oversubscribed,
            own_cores,
            node_ranks: local_size,
        }
    }
}

impl Progress {
    /// One round: push output, poll links (waiting up to `timeout`), read input.
    /// Returns whether anything happened.
    pub(crate) fn progress_once(&mut self, timeout: Option<Duration>) -> Result<bool> {
        self.pump();
        let mut did = false;
        if self.links.selfloop.pending() > 0 {
            did |= self.read_one(self.me);
        }
        let service = self
            .links
            .tcp
            .poll(if did { Some(Duration::ZERO) } else { timeout })
            .map_err(|e| Error::io(None, e))?;
        self.progress_polled(service, did)
    }

    /// The rest of a round once the poller has been asked (`service`: the
    /// launcher's connection is readable; `did`: the round already found work).
    fn progress_polled(&mut self, service: bool, mut did: bool) -> Result<bool> {
        if service {
            self.service.read();
        }
        self.links.tcp.take_lost(&mut self.lost);
        self.handle_lost();
        let mut ready = std::mem::take(&mut self.ready);
        self.links.tcp.take_ready(&mut ready);
        if let Some(shm) = self.links.shm.as_mut() {
            shm.readable(&mut ready);
        }
        for &peer in &ready {
            did |= self.read_one(peer);
        }
        ready.clear();
        self.ready = ready;
        self.pump_deferring();
        if !self.bufs.orphans().is_empty() {
            self.reap_orphans();
        }
        self.service.check()?;
        Ok(did | std::mem::take(&mut self.wrote))
    }

    /// A cheap busy-poll round for few links: read every established socket
    /// directly instead of asking the poller. Returns whether anything happened.
    pub(super) fn spin_once(&mut self) -> Result<bool> {
        self.pump();
        let mut did = false;
        if self.links.selfloop.pending() > 0 {
            did |= self.read_one(self.me);
        }
        let mut peers = std::mem::take(&mut self.ready);
        if self.links.tcp.established_count() > 0 {
            for &peer in &self.pending_out {
                self.links.tcp.assume_writable(peer);
            }
            self.links.tcp.assume_readable(&mut peers);
        }
        if let Some(shm) = self.links.shm.as_mut() {
            shm.readable(&mut peers);
        }
        for &peer in &peers {
            did |= self.read_one(peer);
        }
        peers.clear();
        self.ready = peers;
        self.pump_deferring();
        Ok(did | std::mem::take(&mut self.wrote))
    }

    /// Whether a spin round would certainly find nothing to do: no output
    /// queued, no socket links to read, and no ring holding bytes. Much
    /// cheaper than the round itself, so a spinning rank notices a message
    /// sooner.
    fn quiet(&mut self) -> bool {
        self.pending_out.is_empty()
            && self.lost.is_empty()
            && !self.engine.has_transmits()
            && self.links.selfloop.pending() == 0
            && self.links.tcp.established_count() == 0
            && self.links.shm.as_mut().is_none_or(|s| !s.any_ready())
    }

    /// Whether a busy rank must ask the poller now: idle rounds reach the
    /// poller by count, but rounds that keep finding messages restart that
    /// count, so a rank busy with traffic would otherwise never accept (or
    /// close) a connection, nor hear the launcher. Counted on busy rounds
    /// only (quiet rounds cost nothing extra): the clock is read every
    /// [`SERVICE_CLOCK_ROUNDS`] of them, the poller asked every
    /// [`SERVICE_INTERVAL`].
    fn service_due(&mut self) -> bool {
        self.busy_rounds = self.busy_rounds.wrapping_add(1);
        if self.busy_rounds % SERVICE_CLOCK_ROUNDS != 0 {
            return false;
        }
        let now = Instant::now();
        if now < self.next_service {
            return false;
        }
        self.next_service = now + SERVICE_INTERVAL;
        true
    }
}

impl Held<'_> {
    /// Waits for the direct receive. From a named shared-memory source, a
    /// short spin first watches that peer's ring alone and reads it as
    /// soon as bytes arrive (no general progress round between the
    /// message landing and its copy); then, or for any other receive, the
    /// general wait.
    pub(super) fn wait_direct(&mut self, source: Option<Rank>) -> Result<()> {
        if self.turns.taken {
            // Another thread progresses for everyone.
            return self.wait_for(WaitKey::Direct, |p| p.engine.direct_finished());
        }
        self.pump();
        // However often the spin below finds its message at once, the
        // poller (new and stale connections, the launcher) is asked at
        // least every SERVICE_INTERVAL, as in the general wait.
        if self.service_due() {
            self.progress_once(Some(Duration::ZERO))?;
        }
        if let Some(src) = source.filter(|_| !self.policy.oversubscribed) {
            if self.links.kind(src) == Some(super::LinkKind::Shm) {
                self.turns.taken = true;
                let finished = self.spin_on_ring(src);
                self.turns.taken = false;
                self.pass_turn();
                if finished {
                    return Ok(());
                }
            }
        }
        self.wait_for(WaitKey::Direct, |p| p.engine.direct_finished())
    }

    /// The spin of [`Held::wait_direct`] on shared-memory peer `src`'s
    /// ring; returns whether the direct receive finished.
    fn spin_on_ring(&mut self, src: Rank) -> bool {
        for round in 0..DIRECT_SPIN_ROUNDS {
            if round % RELAX_ROUNDS == RELAX_ROUNDS - 1 {
                self.relax();
            }
            if self.engine.direct_finished() {
                return true;
            }
            if !self.pending_out.is_empty() || !self.lost.is_empty() || self.engine.has_transmits()
            {
                // Output to flush (an answer to what was read): the
                // general wait does.
                return false;
            }
            if self.links.shm_ready(src) {
                if self.read_for_direct(src) {
                    // It may have been another thread's message.
                    self.wake_finished();
                }
            } else {
                std::hint::spin_loop();
            }
        }
        false
    }

    /// Drives progress until `done` holds, spinning, then yielding, then
    /// blocking; or, while another thread holds the progress turn, parks
    /// until it finds the wait over (see [`driver`](super::driver)).
    pub(crate) fn wait_until(&mut self, done: impl FnMut(&mut Progress) -> bool) -> Result<()> {
        self.wait_for(WaitKey::Any, done)
    }

    /// [`Held::wait_until`] for a wait that `key` names to the turn-holder
    /// (it wakes a parked thread when that is over).
    pub(crate) fn wait_for(
        &mut self,
        key: WaitKey,
        mut done: impl FnMut(&mut Progress) -> bool,
    ) -> Result<()> {
        // Control frames produced by the last call (CTS, FIN, acks) go out now,
        // not at the next call, which may be far away.
        self.pump();
        if done(self) {
            return Ok(());
        }
        while self.turns.taken {
            self.park(key);
            if done(self) {
                return Ok(());
            }
        }
        self.turns.taken = true;
        let r = self.progress_until(&mut done);
        self.turns.taken = false;
        self.pass_turn();
        r
    }

    /// The turn-holder's loop of [`Held::wait_for`].
    fn progress_until(&mut self, done: &mut impl FnMut(&mut Progress) -> bool) -> Result<()> {
        // The clock is read only once spinning has begun, then every 64th
        // round while spinning (a read costs several quiet rounds), every
        // 16th on oversubscribed nodes (their spin is short and must end on
        // time, so the core goes to another rank: reading every 64th made 8
        // ranks on 2 cores 1.2-1.3x slower), and every round while yielding
        // (a yield may hand the core away for a whole time slice). The
        // poller (new connections, the launcher: system calls) is asked
        // every 4096th round while spinning, every 32nd while yielding,
        // every round when there are too many sockets to read directly, and
        // at least every SERVICE_INTERVAL while rounds keep finding work.
        let mut idle_since: Option<Instant> = None;
        let mut now_idle = Duration::ZERO;
        let mut rounds = 0u32;
        // Counted apart from `rounds`, which restarts at every busy round:
        // a stream of traffic must not keep other threads off the lock.
        let mut since_relax = 0u32;
        let mut yielding = false;
        let clock_every = if self.policy.oversubscribed { 16 } else { 64 };
        loop {
            rounds = rounds.wrapping_add(1);
            since_relax += 1;
            if since_relax == RELAX_ROUNDS {
                since_relax = 0;
                self.relax();
            }
            if yielding || rounds % clock_every == 0 {
                now_idle = idle_since.get_or_insert_with(Instant::now).elapsed();
            }
            let spinning = now_idle < self.policy.spin;
            yielding = !spinning && now_idle < self.policy.spin + self.policy.yield_for;
            let poll_due = rounds % if yielding { 32 } else { 4096 } == 0
                || self.links.tcp.established_count() > DIRECT_SPIN_MAX_LINKS;
            let did = if (spinning || yielding) && !poll_due {
                if self.quiet() {
                    std::hint::spin_loop();
                    false
                } else if self.service_due() {
                    self.progress_once(Some(Duration::ZERO))?
                } else {
                    self.spin_once()?
                }
            } else if spinning || yielding {
                self.progress_once(Some(Duration::ZERO))?
            } else {
                self.block()?
            };
            if done(self) {
                return Ok(());
            }
            if did {
                if self.wake_finished() {
                    // The woken threads need a core, perhaps this one
                    // (threads may outnumber cores), and the lock.
                    self.yield_unlocked();
                }
                idle_since = None;
                now_idle = Duration::ZERO;
                rounds = 0;
            } else if yielding {
                // Give the core to a rank that shares it (oversubscribed
                // nodes) or a thread of this rank: it is usually the one
                // we are waiting for. Not holding the lock, which that
                // thread may need.
                self.yield_unlocked();
            }
        }
    }

    /// Sleeps until something may have happened, then makes progress.
    /// With shared-memory peers the rank sleeps on its futex (senders wake
    /// it); TCP links and the launcher are then polled at short intervals.
    ///
    /// The lock is released while the thread sleeps; a call made by another
    /// thread meanwhile wakes it (see [`driver`](super::driver)).
    fn block(&mut self) -> Result<bool> {
        if self.links.shm.is_none() {
            let t = self.policy.block;
            return self.sleep_in_poller(t);
        }
        if self.links.tcp.established_count() > 0 {
            return self.sleep_in_poller(Duration::from_millis(1));
        }
        let timeout = if self.pending_out.is_empty() {
            Duration::from_millis(20)
        } else {
            // Our output waits for a peer to drain its ring; it does not wake us.
            Duration::from_micros(200)
        };
        let p: &mut Progress = self;
        let mut ready = std::mem::take(&mut p.ready);
        let selfloop = p.links.selfloop.pending();
        let sleep = p.links.shm.as_mut().and_then(|shm| {
            let seq = shm.prepare_sleep();
            shm.readable(&mut ready);
            if ready.is_empty() && selfloop == 0 {
                Some((seq, shm.sleeper()))
            } else {
                shm.cancel_sleep();
                None
            }
        });
        ready.clear();
        p.ready = ready;
        if let Some((seq, sleeper)) = sleep {
            self.sleep_unlocked(|| sleeper.sleep(seq, timeout));
        }
        self.progress_once(Some(Duration::ZERO))
    }

    /// A progress round that first sleeps in the poller for up to
    /// `timeout`, with the lock released.
    fn sleep_in_poller(&mut self, timeout: Duration) -> Result<bool> {
        self.pump();
        if self.links.selfloop.pending() > 0 {
            return self.progress_once(Some(Duration::ZERO));
        }
        let Some(mut poller) = self.links.tcp.lend_poller() else {
            return self.progress_once(Some(Duration::ZERO));
        };
        let waited = self.sleep_unlocked(|| poller.wait(Some(timeout)));
        let service = self.links.tcp.return_poller(poller);
        waited.map_err(|e| Error::io(None, e))?;
        self.progress_polled(service, false)
    }
}
