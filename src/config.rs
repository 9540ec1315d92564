//! Every `COURIER_*` environment variable, in one table.
//!
//! Tuning knobs (read by the library in every rank; `courier run -x VAR=...`
//! sets them for a whole job):
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `COURIER_TRANSPORT` | auto | `auto`: shared memory within a node, TCP across; `shm`: require shared memory within a node; `tcp`: TCP everywhere |
//! | `COURIER_EAGER_LIMIT` | 65536 | largest message (bytes) sent eagerly over TCP; larger ones use rendezvous |
//! | `COURIER_LONE_EAGER_LIMIT` | 2097152 | largest message (bytes) sent eagerly over TCP when it is alone: no other send to that peer in flight and the flow-control credit covers it (else rendezvous); the credit window grows to two such messages if it is smaller; 0 turns it off |
//! | `COURIER_SHM_EAGER_LIMIT` | 131072 (524288 on a `close` node, 8192 on a `remote` one) | the same between ranks of one node; larger ones are pulled single-copy |
//! | `COURIER_SHM_EXCHANGE_LIMIT` | 0 (unlimited on a `close` node) | largest message above the eager limit to a rank of this node whose data goes through the ring (RTS, CTS, then the data) instead of a pull, when a receive from that rank is posted (an exchange) or another send to it is in flight (a stream); 0: always pulled |
//! | `COURIER_SHM_PROFILE` | auto | how this node's ranks move data between them: `auto` measures it at start-up (local ranks 0 and 1 time a copy through shared memory against a single-copy pull; see `transport::shm::calibrate`); `close`: copies win (larger eager messages, an exchange's or a stream's large messages through the ring, collectives of two ranks through the arena up to large sizes); `far`: pulls win sooner (smaller eager messages, streams ask for their ring lines ahead, collectives pull medium operands); `remote`: copies through shared memory are much slower than pulls (cores far apart: messages above 8 KiB are pulled, collectives as on a `far` node) |
//! | `COURIER_SHM_BUDGET` | 4194304 | inbound ring bytes per rank, split among the node's other ranks |
//! | `COURIER_SHM_MEMBARRIER` | 1 | 0: a sender fences after every shared-memory write so a sleeping receiver is never missed; by default a receiver about to sleep issues one `membarrier(2)` instead (when the kernel offers it), and senders skip the fence |
//! | `COURIER_NODE_CORES` | set by the launcher | CPUs the job's ranks on this node may use (the launcher's CPU mask there): more ranks than that make the node oversubscribed (waits give the CPU away at once); unset, the node's online CPUs |
//! | `COURIER_CMA` | 1 | 0 disables cross-memory attach (large messages then stream through the rings; broadcast, reduce, all-reduce, all-gather and all-to-all copy through the arena instead of pulling); otherwise each rank of a node with others lets them attach to it (`PR_SET_PTRACER`, for Yama's `ptrace_scope` 1) |
//! | `COURIER_CMA_COOP_MIN` | 65536 (1048576 when oversubscribed) | from this size the sender pushes a part while the receiver pulls the rest (0: receiver pulls all); operands a reduction combines at once only from 1 MiB (pulled alone, they are in the receiver's cache) |
//! | `COURIER_CMA_COOP_SHARE` | 60 | percent (1–99) of a cooperatively copied message that the receiver copies |
//! | `COURIER_FLOW_WINDOW` | 4194304 | flow-control credit per sending peer: unmatched eager bytes (+128 per message) a receiver may hold from one peer before the sender waits |
//! | `COURIER_HANDSHAKE_TIMEOUT_MS` | 10000 | accepted connections that have not authenticated within this time are closed (rank listeners and the launcher's service) |
//! | `COURIER_MAX_MESSAGE` | 2^40 | largest message length accepted from a peer |
//! | `COURIER_TCP_BUFFER` | unset (kernel autotuning) | SO_SNDBUF/SO_RCVBUF of TCP data links, bytes |
//! | `COURIER_<COLL>_ALGORITHM` | by size | force a collective algorithm: `COURIER_BARRIER_ALGORITHM`, `COURIER_BCAST_ALGORITHM`, `COURIER_REDUCE_ALGORITHM`, `COURIER_ALLREDUCE_ALGORITHM`, `COURIER_ALLGATHER_ALGORITHM`, `COURIER_ALLTOALL_ALGORITHM`, `COURIER_REDUCE_SCATTER_ALGORITHM`, `COURIER_SCAN_ALGORITHM` (names in `coll::tune`) |
//! | `COURIER_SHM_COLL_SLOT` | 16384 | largest data bytes per rank and cell of a communicator's shared-memory arena (cells shrink on big communicators: 4 MiB of cells per arena, besides 4 KiB of state lines and, up to 128 ranks, 16 KiB of small cells per rank); collectives on a communicator within one node go through the arena, a cell's worth per turn; 0 disables |
//! | `COURIER_SHM_COLL_LARGE` | 65536 | largest data bytes per rank of a *large* cell of the arena, which operations of more than a cell's bytes per rank use, a large cell's worth per turn (4 MiB of large cells per arena at most, so 64 KiB up to 4 ranks, 32 KiB on 8; none once no larger than a cell, 16 ranks on); 0 disables |
//! | `COURIER_SHM_COLL_MAX` | per collective (`coll::tune`) | largest bytes per rank that broadcast, reduce, all-reduce and all-gather send through the arena (several turns above a cell) before point-to-point algorithms take over; when set, broadcast, reduce, all-reduce, all-gather and all-to-all of large blocks copy through the arena instead of pulling (`shm_pull`) |
//! | `COURIER_COLL_SEGMENT` | 65536 | segment size (bytes) of the pipelined tree collectives |
//! | `COURIER_HIERARCHICAL` | 1 | 0 turns off the node-aware all-reduce (reduce in each node, all-reduce among node leaders, broadcast in each node) |
//! | `COURIER_CHECK` | 0 | 1: every collective first checks that all ranks passed matching arguments; a mismatch is the same `Error::CollectiveMismatch` on every rank (costs one small all-gather per collective) |
//! | `COURIER_PAR_COMBINE_MIN` | 1048576 | from this many bytes, the local combine of a reduction with a predefined operation (reduce, all-reduce) is split over rayon threads, when the rank has spare cores (its CPU mask and its share of the node's cores both hold two or more); 0 never splits |
//! | `COURIER_PAR_COMBINE_THREADS` | the rank's spare cores | threads a split combine uses, overriding the count of the rank's own cores (1: never split) |
//! | `COURIER_SPREAD` | 1 | 0: a rank of an oversubscribed node waiting in a collective never moves itself off a CPU that holds two ranks more than another it may use (by default the highest-numbered rank there does, leaving its CPU mask as it was; see `coll::spread`) |
//! | `COURIER_SPIN_US` | 500 (0 when oversubscribed) | microseconds to busy-poll before yielding |
//! | `COURIER_YIELD_US` | 2000 (200 when oversubscribed) | microseconds to poll-and-yield before blocking |
//! | `COURIER_IFACE` | first interface up | network interface whose address ranks listen on across hosts (also `courier run --iface`) |
//! | `COURIER_PMI` | by environment | `1` or `2` forces the PMI wire protocol under a process manager (`mpiexec.hydra`, `srun --mpi=pmi2`) |
//!
//! Set by the launcher for each rank (the wire-up interface; see
//! `bootstrap`), not for users to set:
//!
//! | variable | meaning |
//! |---|---|
//! | `COURIER_RANK`, `COURIER_SIZE` | this rank and the job size |
//! | `COURIER_LOCAL_RANK`, `COURIER_LOCAL_SIZE` | position among the ranks of this node |
//! | `COURIER_NODE_ID` | the node (placement group) the launcher put this rank on |
//! | `COURIER_SERVICE` | `host:port` of the launcher's rendezvous service |
//! | `COURIER_JOB_KEY` | the per-job secret, hex (never sent on any connection) |
//! | `COURIER_BIND` | address the data listener binds to (default 127.0.0.1) |
//! | `COURIER_CARD_STORE` | the inherited descriptor of the host's card store (every rank's card, filled once at the fence) |

/// Default eager limit in bytes.
pub const DEFAULT_EAGER_LIMIT: usize = 64 * 1024;

fn parse_env<T: std::str::FromStr>(name: &str) -> Option<T> {
    let v = std::env::var(name).ok()?;
    if v.trim().is_empty() {
        return None;
    }
    match v.trim().parse() {
        Ok(x) => Some(x),
        Err(_) => {
            eprintln!("courier: ignoring {name}={v:?}: not a number");
            None
        }
    }
}

/// `COURIER_SHM_COLL_SLOT`: data bytes per rank and cell of the arena
/// (`None`: the arena's default; `coll::node` caches it).
pub(crate) fn shm_coll_slot() -> Option<usize> {
    parse_env("COURIER_SHM_COLL_SLOT")
}

/// `COURIER_SHM_COLL_LARGE`: data bytes of a large cell of the arena
/// (`None`: the arena's default; `coll::node` caches it).
pub(crate) fn shm_coll_large() -> Option<usize> {
    parse_env("COURIER_SHM_COLL_LARGE")
}

/// `COURIER_EAGER_LIMIT`.
pub(crate) fn eager_limit() -> usize {
    parse_env("COURIER_EAGER_LIMIT").unwrap_or(DEFAULT_EAGER_LIMIT)
}

/// Default limit of a lone eager message over TCP
/// (`COURIER_LONE_EAGER_LIMIT`). A message above the eager limit that is
/// alone (no other send to its peer in flight, credit for all of it) saves
/// rendezvous' round trip (RTS, CTS) by going eagerly: against rendezvous
/// (loopback, 8 rounds of ABBA quads), latency 128–512 KiB 0.69–0.84
/// (medians; 0.44–0.99 per round), 1 MiB 0.98–1.05. With a 4 MiB limit,
/// in interleaved rounds: `bw` 128 KiB – 4 MiB 1.04–1.17 (7 rounds),
/// `bibw` 1.0–1.33 (3); an exchange whose receives are posted late
/// (`isend`, then `recv`), so that a lone message waits unexpected and is
/// copied once more, 1 MiB 0.94–0.96, 2 MiB 0.76–0.98, 4 MiB 0.79–1.17
/// (3–4 runs; noise of that size). A
/// message sent while others are in flight (a window, a stream) still goes
/// by rendezvous, so the receiver never holds more than the credit window
/// of unmatched bytes, and a window's messages never wait for credit.
/// 2 MiB: two such messages, with their envelopes, take the default
/// credit window (4 MiB) and 256 bytes, so the receiver's bound on
/// unmatched bytes per peer stays where it was. Against the 1 MiB limit
/// of sessions 23–31 (session 32, 8 ABBA rounds, all in one placement):
/// latency 2 MiB 0.95 (0.81–1.07 per round), 1 and 4 MiB level;
/// `bibw` and `bw` at 1–4 MiB level (6 rounds). With 4 MiB (the window
/// then grows to 8 MiB) latency at 4 MiB was 0.98–0.99 of rendezvous,
/// within the noise, as at 1 MiB: the round trip saved is about 10 µs of
/// a transfer the kernel's copies take hundreds of microseconds over.
pub const DEFAULT_LONE_EAGER_LIMIT: usize = 2 << 20;

/// `COURIER_LONE_EAGER_LIMIT` (0: off).
pub(crate) fn lone_eager_limit() -> usize {
    parse_env("COURIER_LONE_EAGER_LIMIT").unwrap_or(DEFAULT_LONE_EAGER_LIMIT)
}

/// `COURIER_MAX_MESSAGE`.
pub(crate) fn max_message_len() -> u64 {
    parse_env("COURIER_MAX_MESSAGE").unwrap_or(1 << 40)
}

/// Which transports a job may use (`COURIER_TRANSPORT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportMode {
    /// Shared memory between ranks of one node, TCP otherwise.
    Auto,
    /// Shared memory required between ranks of one node (an error if it cannot be set up).
    Shm,
    /// TCP for every peer.
    Tcp,
}

/// `COURIER_TRANSPORT`: `auto` (default), `shm` or `tcp`.
pub(crate) fn transport_mode() -> Result<TransportMode, String> {
    match std::env::var("COURIER_TRANSPORT").as_deref().map(str::trim) {
        Err(_) | Ok("") | Ok("auto") => Ok(TransportMode::Auto),
        Ok("shm") => Ok(TransportMode::Shm),
        Ok("tcp") => Ok(TransportMode::Tcp),
        Ok(other) => Err(format!(
            "COURIER_TRANSPORT={other:?}: expected auto, shm or tcp"
        )),
    }
}

/// `COURIER_SHM_BUDGET`: bytes of inbound ring space per rank.
pub(crate) fn shm_budget() -> usize {
    parse_env("COURIER_SHM_BUDGET").unwrap_or(4 << 20)
}

/// `COURIER_SHM_EAGER_LIMIT`: eager limit towards shared-memory peers
/// (`None`: by the node's profile, [`CLOSE_SHM_EAGER_LIMIT`],
/// [`DEFAULT_SHM_EAGER_LIMIT`] or [`REMOTE_SHM_EAGER_LIMIT`]).
pub(crate) fn shm_eager_limit() -> Option<usize> {
    parse_env("COURIER_SHM_EAGER_LIMIT")
}

/// A node profile forced by `COURIER_SHM_PROFILE` (the transport's
/// `calibrate::Profile` of the same names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ForcedProfile {
    /// `close`.
    Close,
    /// `far`.
    Far,
    /// `remote`.
    Remote,
}

/// `COURIER_SHM_PROFILE`: `close`, `far` or `remote` forces the node's profile;
/// `None` (unset, `auto`) measures it.
pub(crate) fn shm_profile() -> Result<Option<ForcedProfile>, String> {
    match std::env::var("COURIER_SHM_PROFILE")
        .as_deref()
        .map(str::trim)
    {
        Err(_) | Ok("") | Ok("auto") => Ok(None),
        Ok("close") => Ok(Some(ForcedProfile::Close)),
        Ok("far") => Ok(Some(ForcedProfile::Far)),
        Ok("remote") => Ok(Some(ForcedProfile::Remote)),
        Ok(other) => Err(format!(
            "COURIER_SHM_PROFILE={other:?}: expected auto, close, far or remote"
        )),
    }
}

/// `COURIER_SHM_MEMBARRIER`: 0 makes every shared-memory write fence
/// instead of leaving the barrier to a receiver about to sleep.
pub(crate) fn shm_membarrier() -> bool {
    parse_env::<u32>("COURIER_SHM_MEMBARRIER") != Some(0)
}

/// `COURIER_SPREAD`: 0 keeps the ranks of an oversubscribed node where
/// the scheduler puts them (see `coll::spread`).
pub(crate) fn spread_ranks() -> bool {
    parse_env::<u32>("COURIER_SPREAD") != Some(0)
}

/// The variable the launcher sets to the CPUs this node's ranks may use
/// (`bootstrap::ENV_NODE_CORES`).
pub(crate) const NODE_CORES: &str = "COURIER_NODE_CORES";

/// `COURIER_NODE_CORES` (set by the launcher): the CPUs this node's ranks
/// may use, if given and not zero.
pub(crate) fn node_cores() -> Option<u32> {
    parse_env::<u32>(NODE_CORES).filter(|&n| n > 0)
}

/// `COURIER_CMA`: 0 disables single-copy cross-memory attach.
pub(crate) fn cma_enabled() -> bool {
    parse_env::<u32>("COURIER_CMA") != Some(0)
}

/// `COURIER_CMA_COOP_MIN`: messages of at least this many bytes between ranks
/// of one node are copied by both sides at once (0 disables). 64 KiB
/// against 128 KiB (2 ranks, 10 interleaved rounds): at 64 KiB latency
/// 0.80x, window bandwidth 1.36x, bibw 1.02x; from 16 KiB it was slower
/// (bandwidth 0.69x: a push and its answer cost more than half the copy).
/// On a node with more ranks than cores the sender's core is seldom free
/// to push, so the default is 1 MiB there: 4 ranks on 2 cores, 5 rounds,
/// against 64 KiB: all-to-all 64-128 KiB 0.74-0.77x, broadcast 16-512 KiB
/// 0.86-0.93x, while a 1 MiB broadcast was 1.7x slower without it.
pub(crate) fn cma_coop_min(oversubscribed: bool) -> usize {
    parse_env("COURIER_CMA_COOP_MIN").unwrap_or(if oversubscribed { 1 << 20 } else { 64 * 1024 })
}

/// `COURIER_CMA_COOP_SHARE`: percent (1–99) of a cooperatively copied
/// message that the receiver copies; the sender copies the rest.
/// `None`: the engine's default.
pub(crate) fn cma_coop_share() -> Option<u32> {
    parse_env("COURIER_CMA_COOP_SHARE")
}

/// `COURIER_FLOW_WINDOW`: flow-control credit per peer, in bytes (eager
/// payload plus 128 per message); at least twice the largest eager message.
/// `None`: the engine's default.
pub(crate) fn flow_window() -> Option<u64> {
    parse_env("COURIER_FLOW_WINDOW")
}

/// `COURIER_HANDSHAKE_TIMEOUT_MS`: an accepted connection that has not
/// completed its authentication handshake within this time is closed.
pub(crate) fn handshake_timeout() -> std::time::Duration {
    std::time::Duration::from_millis(parse_env("COURIER_HANDSHAKE_TIMEOUT_MS").unwrap_or(10_000))
}

/// Default eager limit between ranks of one node, in bytes, on a `far` node
/// (see `COURIER_SHM_PROFILE`); larger messages are pulled single-copy
/// (CMA). Eager through the ring against the pull, interleaved rounds,
/// median of per-round ratios (AMD EPYC VM, 2 ranks):
/// * vCPUs not sharing a core's caches (5–8 rounds), since the reader takes
///   any whole record straight into its receive: latency 16, 32, 64 KiB
///   0.49–0.51, 0.60–0.62, 0.80–0.81 and 128 KiB 1.04; `bw` 16–64 KiB
///   1.8–2.8×, 128 KiB 1.28×; `bibw` 16–64 KiB 1.36–1.82×, 128 KiB 1.26×.
///   (It was 8 KiB there while a record above 2 KiB went header first,
///   payload in place: then 16 KiB eager took 1.24× the pull's latency.)
/// * 4 ranks on 2 cores (such a node is always `far`; 5 rounds):
///   `mbw_mr` 16–128 KiB 2.1–3.1×, all-to-all of 128 KiB blocks (pairwise)
///   0.59 of its time.
/// * 256 KiB eager took 1.29× the pull's latency at 256 KiB, 512 KiB
///   eager 1.37× at 512 KiB (5 rounds), so the limit stops at 128 KiB.
pub const DEFAULT_SHM_EAGER_LIMIT: usize = 128 * 1024;

/// Default eager limit between ranks of one `close` node (one core's two
/// hardware threads on this VM), where the ring's copies stay in the
/// shared caches. Against 128 KiB (4–6 interleaved rounds): latency 256
/// KiB 0.61, 512 KiB 0.82–0.85; `bw` 256–512 KiB 1.6×, `bibw` 1.8–1.9×,
/// `mbw_mr` 1.6–1.7×. At 1 MiB eager moved 1.6× (`bw`) and 1.9× (`bibw`)
/// as much, but its latency was 1.07× the pull's, so the limit stops at
/// 512 KiB.
/// (Session 12, eager against the pull before the reader took whole
/// records: latency 8–64 KiB 0.16–0.54, `bw` 8–128 KiB 1.6–3.8×, `bibw`
/// 1.2–2.1×; 256 KiB level.)
pub const CLOSE_SHM_EAGER_LIMIT: usize = 512 * 1024;

/// Default eager limit between ranks of one `remote` node, whose ranks
/// copy through shared memory at less than 5/8 of the pull's speed (the
/// same 2-vCPU VM when its vCPUs sit far apart: a cache line
/// written by one rank reaches the other slowly, and both of a ring's
/// copies pay for it). Latency there, eager against pulled (AMD EPYC VM,
/// runs tagged by the profile they measured, 4 each): 8 KiB 3.3 against
/// 3.0 µs, 16 KiB 6.0 against 3.7, 32 KiB 11.3 against 4.7, 64 KiB 22.2
/// against 7.2, 128 KiB 42.9 against 14.3; `bibw` 16–128 KiB 4.6–6.1
/// against 8.7–18.4 GB/s, `bw` 16–128 KiB 5.1–5.4 against 6.5–11.4; 4 KiB
/// level (2.0 against 2.1 µs). So messages above 8 KiB are pulled.
pub const REMOTE_SHM_EAGER_LIMIT: usize = 8 * 1024;

/// `COURIER_SHM_EXCHANGE_LIMIT`: largest message to a shared-memory peer
/// from which a receive is posted whose data goes through the ring
/// (`None`: by the node's profile, [`CLOSE_SHM_EXCHANGE_LIMIT`] or 0).
pub(crate) fn shm_exchange_limit() -> Option<usize> {
    parse_env("COURIER_SHM_EXCHANGE_LIMIT")
}

/// Default exchange limit of a `close` node (`COURIER_SHM_EXCHANGE_LIMIT`):
/// every size. In an exchange or a stream both cores are busy anyway, so
/// the cooperative pull's second half finds no idle core, and a pull, the
/// kernel pinning every page, moves fewer bytes per second here than the
/// ring's two copies in the caches the two ranks share. Against pulls (2
/// ranks, 5 interleaved rounds): `bibw` 1–4 MiB 1.79–2.03×, `bw` 1–4 MiB
/// 1.42–1.95× (after a window's first message, which is still pulled);
/// latency, whose messages are lone, unchanged. A `far` node keeps
/// pulling: without shared caches a stream's `bw` 1–4 MiB through the
/// ring was 0.86–1.02 of the pulls (3 rounds), and 4 ranks on 2 cores
/// (always far), a pairwise all-to-all of 64 KiB – 1 MiB blocks through
/// the rings 0.79–1.13 of the default.
pub const CLOSE_SHM_EXCHANGE_LIMIT: usize = usize::MAX;

/// `COURIER_TCP_BUFFER`: socket buffer size for data links, if set.
pub(crate) fn tcp_buffer() -> Option<usize> {
    parse_env("COURIER_TCP_BUFFER")
}

/// `COURIER_PAR_COMBINE_MIN`: bytes from which a reduction's local combine
/// is split over rayon threads (`None`: never).
pub(crate) fn par_combine_min() -> Option<usize> {
    static MIN: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    *MIN.get_or_init(
        || match parse_env::<usize>("COURIER_PAR_COMBINE_MIN").unwrap_or(1 << 20) {
            0 => None,
            n => Some(n),
        },
    )
}

/// `COURIER_PAR_COMBINE_THREADS`: threads a split combine uses, if set.
pub(crate) fn par_combine_threads() -> Option<usize> {
    static N: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    *N.get_or_init(|| parse_env::<usize>("COURIER_PAR_COMBINE_THREADS").map(|n| n.max(1)))
}

/// A duration given in microseconds.
pub(crate) fn duration_us(name: &str) -> Option<std::time::Duration> {
    parse_env::<u64>(name).map(std::time::Duration::from_micros)
}

#[cfg(test)]
mod tests {
    /// Every `COURIER_*` name used anywhere in the library's sources is in
    /// the tables of this module's documentation.
    #[test]
    fn every_variable_in_the_sources_is_in_the_table() {
        let here = include_str!("config.rs");
        let table: String = here
            .lines()
            .filter(|l| l.starts_with("//! | `"))
            .collect::<Vec<_>>()
            .join("\n");
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
        let mut missing = std::collections::BTreeSet::new();
        let mut seen = 0;
        let mut dirs = vec![std::path::PathBuf::from(root)];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                    continue;
                }
                if path.extension().is_none_or(|e| e != "rs") {
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                let mut rest = text.as_str();
                while let Some(i) = rest.find("COURIER_") {
                    let name: String = rest[i..]
                        .chars()
                        .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                        .collect();
                    rest = &rest[i + name.len()..];
                    // `COURIER_` alone is a prefix being assembled (format!).
                    if name.len() > "COURIER_".len() && !name.ends_with('_') {
                        seen += 1;
                        if !table.contains(&format!("`{name}`")) {
                            missing.insert(name);
                        }
                    }
                }
            }
        }
        assert!(seen > 20, "found only {seen} mentions: wrong directory?");
        assert!(
            missing.is_empty(),
            "not in the table of src/config.rs: {missing:?}"
        );
    }
}
