//! Start-up and shut-down of a rank: [`init`], [`Universe`].

use crate::bootstrap::pmi::{self, Pmi};
use crate::bootstrap::protocol::Request as ServiceRequest;
use crate::bootstrap::{auth::JobKey, hex, unhex, JobEnv, PeerCard, ServiceClient};
use crate::comm::Communicator;
use crate::config::TransportMode;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::progress::{Driver, LinkKind, Progress, WaitPolicy};
use crate::transport::shm::calibrate::Profile;
use crate::transport::shm::ShmTransport;
use crate::transport::tcp::{TcpOptions, TcpTransport};
use std::sync::Arc;

/// Where this rank runs, as the launcher placed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Host name of this machine.
    pub host: String,
    /// Node id given by the launcher (ranks on one node share it).
    pub node: u32,
    /// Rank among the ranks of this node.
    pub local_rank: usize,
    /// Number of ranks on this node.
    pub local_size: usize,
}

/// The running job as seen by this rank. Dropping it finalizes: pending sends
/// are flushed and every open link is closed cleanly.
///
/// A `Universe`, its communicators and requests are `Send` and `Sync`: any
/// thread may call any operation, concurrently with others
/// (`MPI_THREAD_MULTIPLE`). The runtime makes progress inside the calls
/// that wait, so no background thread competes for the cores; when several
/// threads wait at once, one of them polls for all while the others sleep.
#[derive(Debug)]
pub struct Universe {
    progress: Arc<Driver>,
    world: Communicator,
    placement: Placement,
    /// How this node's ranks move data between them (see
    /// [`Universe::node_profile`]).
    profile: Profile,
    finalized: bool,
    /// The process manager's connection, when started by one (PMI).
    pmi: Option<parking_lot::Mutex<Pmi>>,
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Starts this rank: reads the launcher's environment, publishes this rank's
/// endpoint, learns its peers', and returns the [`Universe`]. A program
/// started without `courier run` becomes a world of size 1 (MPI's singleton
/// init), in which messages to itself work.
///
/// Start-up costs one round trip to the launcher (put own card, one fence that
/// returns every card). Links to peers are opened lazily on first use.
///
/// ```
/// let universe = courier::init()?;
/// let world = universe.world();
/// println!("rank {} of {}", world.rank(), world.size());
/// # Ok::<(), courier::Error>(())
/// ```
pub fn init() -> Result<Universe> {
    init_thread(Threading::Multiple)
}

/// How much concurrency a program asks of the runtime (`MPI_Init_thread`'s
/// levels), ordered from least to most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Threading {
    /// One thread in the process (`MPI_THREAD_SINGLE`).
    Single,
    /// Several threads, only the one that initialized calls Courier
    /// (`MPI_THREAD_FUNNELED`).
    Funneled,
    /// Several threads call Courier, never two at once (`MPI_THREAD_SERIALIZED`).
    Serialized,
    /// Any thread calls anything at any time (`MPI_THREAD_MULTIPLE`).
    Multiple,
}

/// [`init`] for a program that needs thread support `required`
/// (`MPI_Init_thread`); the level provided is [`Universe::threading`].
///
/// * `Serialized` and `Multiple` (what [`init`] asks for) provide
///   `Multiple`: any thread may call anything at once. Each call takes an
///   uncontended lock (a few nanoseconds).
/// * `Single` and `Funneled` provide `Funneled`: only the thread that
///   called `init_thread` may call Courier (another thread's call is an
///   `Error::InvalidState`), and calls take no lock: the cost of a
///   single-threaded library, for programs that communicate from one
///   thread (their other threads may compute, e.g. with rayon).
///
/// ```
/// use courier::Threading;
/// let universe = courier::init_thread(Threading::Funneled)?;
/// assert_eq!(universe.threading(), Threading::Funneled);
/// let world = universe.world();
/// let elsewhere = std::thread::scope(|s| s.spawn(|| world.barrier()).join().unwrap());
/// assert!(matches!(elsewhere, Err(courier::Error::InvalidState(_))));
/// world.barrier()?; // the initializing thread may
/// # Ok::<(), courier::Error>(())
/// ```
pub fn init_thread(required: Threading) -> Result<Universe> {
    Lifecycle::begin()?;
    REQUIRED.store(required as u8, std::sync::atomic::Ordering::Relaxed);
    let r = init_once();
    Lifecycle::began(r.is_ok());
    r
}

/// The level the running `init_thread` was asked for (one init per process).
static REQUIRED: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(3);

/// The level asked of the running `init_thread`.
fn required() -> Threading {
    match REQUIRED.load(std::sync::atomic::Ordering::Relaxed) {
        0 => Threading::Single,
        1 => Threading::Funneled,
        2 => Threading::Serialized,
        _ => Threading::Multiple,
    }
}

/// Where the process is in MPI's one-init, one-finalize life.
struct Lifecycle;

impl Lifecycle {
    const NEVER: u8 = 0;
    const STARTING: u8 = 1;
    const LIVE: u8 = 2;
    const FINALIZED: u8 = 3;

    fn state() -> &'static std::sync::atomic::AtomicU8 {
        static STATE: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);
        &STATE
    }

    /// Claims the right to initialize, or says why not.
    fn begin() -> Result<()> {
        use std::sync::atomic::Ordering::{AcqRel, Acquire};
        match Self::state().compare_exchange(Self::NEVER, Self::STARTING, AcqRel, Acquire) {
            Ok(_) => Ok(()),
            Err(Self::FINALIZED) => Err(Error::InvalidState(
                "courier::init called after the universe was finalized: \
                 a process initializes once (as MPI_Init)"
                    .into(),
            )),
            Err(_) => Err(Error::InvalidState(
                "courier::init called twice: this process already has a Universe \
                 (keep it and call Universe::world again)"
                    .into(),
            )),
        }
    }

    /// Records the end of an `init`: a failed one may be retried.
    fn began(ok: bool) {
        let next = if ok { Self::LIVE } else { Self::NEVER };
        Self::state().store(next, std::sync::atomic::Ordering::Release);
    }

    fn finalized() {
        Self::state().store(Self::FINALIZED, std::sync::atomic::Ordering::Release);
    }
}

fn init_once() -> Result<Universe> {
    let host = hostname();
    if let Some(env) = JobEnv::from_env()? {
        let mut client = None;
        return assemble(
            Layout {
                rank: env.rank,
                size: env.size,
                node: env.node,
                local_rank: env.local_rank,
                local_size: env.local_size,
                key: env.key.clone(),
                bind: env.bind,
            },
            host,
            |card| {
                let mut c = ServiceClient::connect(&env)?;
                let cards = c.exchange_cards(&env, card)?;
                client = Some(c);
                Ok(cards)
            },
        )
        .and_then(|u| {
            if let Some(c) = client {
                u.progress.lock_any()?.set_service(c.into_stream())?;
            }
            Ok(u)
        });
    }
    if let Some(pmi) = Pmi::from_env()? {
        return init_pmi(pmi, host);
    }
    if std::env::var_os("SLURM_PROCID").is_some()
        && std::env::var("SLURM_NTASKS").is_ok_and(|n| n.trim() != "1")
    {
        return Err(Error::Bootstrap(
            "started by srun without a process-management interface: \
             run `srun --mpi=pmi2 ...` (or start the job with `courier run`)"
                .into(),
        ));
    }
    let key = JobKey::generate().map_err(|e| Error::io(None, e))?;
    let eager = crate::config::eager_limit();
    let tcp = TcpTransport::new(0, 1, key, None, tcp_options()).map_err(|e| Error::io(None, e))?;
    let progress = Progress::new(Engine::new(0, 1, eager), 1, tcp, WaitPolicy::for_node(1));
    Ok(Universe::new(
        progress,
        0,
        1,
        Placement {
            host,
            node: 0,
            local_rank: 0,
            local_size: 1,
        },
    ))
}

/// The TCP settings of the configuration.
fn tcp_options() -> TcpOptions {
    TcpOptions {
        buffer: crate::config::tcp_buffer(),
        handshake_timeout: crate::config::handshake_timeout(),
    }
}

/// Where this rank stands in the job, however it was learned.
struct Layout {
    rank: u32,
    size: u32,
    node: u32,
    local_rank: u32,
    local_size: u32,
    key: JobKey,
    bind: std::net::IpAddr,
}

/// Builds the transports, publishes this rank's card through `exchange`
/// (which returns every rank's card), and wires the engine to its peers.
fn assemble(
    l: Layout,
    host: String,
    exchange: impl FnOnce(&PeerCard) -> Result<Vec<PeerCard>>,
) -> Result<Universe> {
    let tcp = TcpTransport::new(l.rank, l.size, l.key.clone(), Some(l.bind), tcp_options())
        .map_err(|e| Error::io(None, e))?;
    let tcp_addr = tcp
        .local_addr()
        .ok_or_else(|| Error::Bootstrap("no listening address".into()))?;
    let mode = crate::config::transport_mode().map_err(Error::InvalidArgument)?;
    let shm = shm_transport(&l, mode)?;
    let card = PeerCard {
        node: l.node,
        tcp: tcp_addr,
        shm: shm.as_ref().map(ShmTransport::addr),
    };
    let cards = exchange(&card)?;
    if cards.len() != l.size as usize {
        return Err(Error::Bootstrap(format!(
            "wire-up returned {} cards for {} ranks",
            cards.len(),
            l.size
        )));
    }
    let progress = connect(&l, mode, &cards, tcp, shm)?;
    Ok(Universe::new(
        progress,
        l.rank as usize,
        l.size as usize,
        Placement {
            host,
            node: l.node,
            local_rank: l.local_rank as usize,
            local_size: l.local_size as usize,
        },
    ))
}

/// This rank's shared-memory transport, when it has ranks on its node and
/// the configuration allows (required with `COURIER_TRANSPORT=shm`).
fn shm_transport(l: &Layout, mode: TransportMode) -> Result<Option<ShmTransport>> {
    if mode == TransportMode::Tcp || l.local_size <= 1 {
        return Ok(None);
    }
    if crate::config::cma_enabled() {
        // Before any other rank of the node can look for this one (the
        // segments are exchanged after this): where Yama's ptrace_scope is
        // 1, sibling processes may not attach to each other unless allowed.
        crate::sys::cma::allow_peers();
    }
    let budget = crate::config::shm_budget();
    match ShmTransport::new(
        l.size,
        l.local_rank,
        l.local_size,
        budget,
        crate::config::shm_membarrier(),
    ) {
        Ok(s) => Ok(Some(s)),
        Err(e) if mode == TransportMode::Shm => Err(Error::Bootstrap(format!(
            "cannot create a shared-memory segment: {e}"
        ))),
        Err(_) => Ok(None),
    }
}

/// The engine and driver of a rank that knows every rank's card: TCP
/// addresses for all, shared memory for the ranks of its node that offer it.
fn connect(
    l: &Layout,
    mode: TransportMode,
    cards: &[PeerCard],
    mut tcp: TcpTransport,
    mut shm: Option<ShmTransport>,
) -> Result<Progress> {
    let mut engine = Engine::new(l.rank, l.size, crate::config::eager_limit());
    let policy = WaitPolicy::for_node(l.local_size);
    engine.set_coop_min(crate::config::cma_coop_min(policy.oversubscribed));
    if let Some(share) = crate::config::cma_coop_share() {
        engine.set_coop_share(share);
    }
    let cma = crate::config::cma_enabled();
    let mut shm_peers = Vec::new();
    for (r, c) in cards.iter().enumerate() {
        let r = r as u32;
        tcp.set_addr(r, c.tcp);
        if r == l.rank || c.node != l.node {
            continue;
        }
        match (shm.as_mut(), c.shm) {
            (Some(s), Some(addr)) => match s.add_peer(r, addr) {
                Ok(()) => shm_peers.push(r),
                Err(e) if mode == TransportMode::Shm => return Err(Error::Bootstrap(e.0)),
                Err(_) => {}
            },
            _ if mode == TransportMode::Shm => {
                return Err(Error::Bootstrap(format!(
                    "COURIER_TRANSPORT=shm, but rank {r} on this node offers no shared memory"
                )))
            }
            _ => {}
        }
    }
    let profile = match shm.as_ref() {
        Some(s) if !shm_peers.is_empty() => node_profile(l, cards, s, policy, cma)?,
        _ => Profile::Far,
    };
    let shm_eager = crate::config::shm_eager_limit().unwrap_or(match profile {
        Profile::Close => crate::config::CLOSE_SHM_EAGER_LIMIT,
        Profile::Far => crate::config::DEFAULT_SHM_EAGER_LIMIT,
        Profile::Remote => crate::config::REMOTE_SHM_EAGER_LIMIT,
    });
    let exchange = crate::config::shm_exchange_limit().unwrap_or(match profile {
        Profile::Close => crate::config::CLOSE_SHM_EXCHANGE_LIMIT,
        Profile::Far | Profile::Remote => 0,
    });
    for &r in &shm_peers {
        engine.set_peer_caps(r, shm_eager, cma);
        engine.set_exchange_limit(r, exchange);
    }
    let lone = crate::config::lone_eager_limit();
    if lone > 0 {
        // TCP peers: every rank but this one and those of its node's
        // shared memory (`shm_peers` is in rank order).
        for r in (0..l.size).filter(|&r| r != l.rank && shm_peers.binary_search(&r).is_err()) {
            engine.set_lone_eager_limit(r, lone);
        }
    }
    if let Some(window) = crate::config::flow_window() {
        engine.set_window(window);
    }
    let mut progress = Progress::new(engine, l.size, tcp, policy);
    progress.set_nodes(cards.iter().map(|c| c.node).collect());
    if let Some(s) = shm {
        progress.set_shm(s, profile);
    }
    Ok(progress)
}

/// How this node's ranks move data between them (`COURIER_SHM_PROFILE`,
/// else measured by local ranks 0 and 1 and read by the others: see
/// `transport::shm::calibrate`). Not measured where the measure would
/// mislead or cannot run: more ranks than cores (the two would wait for
/// their turns on a core, not for each other), cross-memory attach off,
/// or local rank 0 or 1 without shared memory.
fn node_profile(
    l: &Layout,
    cards: &[PeerCard],
    shm: &ShmTransport,
    policy: WaitPolicy,
    cma: bool,
) -> Result<Profile> {
    match crate::config::shm_profile().map_err(Error::InvalidArgument)? {
        Some(crate::config::ForcedProfile::Close) => return Ok(Profile::Close),
        Some(crate::config::ForcedProfile::Far) => return Ok(Profile::Far),
        Some(crate::config::ForcedProfile::Remote) => return Ok(Profile::Remote),
        None => {}
    }
    if policy.oversubscribed || !cma {
        return Ok(Profile::Far);
    }
    let local = |k: u32| {
        cards
            .iter()
            .position(|c| c.node == l.node && c.shm.is_some_and(|a| a.local_rank == k))
    };
    let (Some(lead), Some(partner)) = (local(0), local(1)) else {
        return Ok(Profile::Far);
    };
    let verdict = match l.local_rank {
        0 => {
            let pid = cards[partner].shm.filter(|_| shm.has_peer(partner as u32));
            Some(shm.calibrate_lead(pid.map(|a| a.pid)))
        }
        1 if shm.has_peer(lead as u32) => shm.calibrate_partner(lead as u32),
        _ if shm.has_peer(lead as u32) => shm.calibrated_by(lead as u32),
        _ => None,
    };
    Ok(verdict.unwrap_or(Profile::Far))
}

/// Wire-up under a standard process manager (PMI): rank 0 makes the job key;
/// node identity comes from the process manager (`SLURM_NODEID`, else its
/// `PMI_process_mapping`, else host names); two puts and two barriers.
fn init_pmi(mut pmi: Pmi, host: String) -> Result<Universe> {
    let (rank, size) = (pmi.rank, pmi.size);
    let node_key = std::env::var("SLURM_NODEID").unwrap_or_else(|_| host.clone());
    pmi.put(&format!("courier-n{rank}"), &hex(node_key.as_bytes()))?;
    if rank == 0 {
        let key = JobKey::generate().map_err(|e| Error::io(None, e))?;
        pmi.put("courier-key", &key.to_hex())?;
    }
    pmi.barrier()?;
    let key = pmi
        .get("courier-key")?
        .and_then(|k| JobKey::from_hex(&k))
        .ok_or_else(|| Error::Bootstrap("PMI: no job key from rank 0".into()))?;
    let mapping = if std::env::var_os("SLURM_NODEID").is_some() {
        None
    } else {
        pmi.process_mapping()?
            .and_then(|m| pmi::parse_process_mapping(&m, size as usize))
    };
    let nodes: Vec<u32> = match mapping {
        Some(m) => m,
        None => {
            let mut names: Vec<String> = Vec::new();
            let mut ids = Vec::with_capacity(size as usize);
            for r in 0..size {
                let name = pmi
                    .get(&format!("courier-n{r}"))?
                    .ok_or_else(|| Error::Bootstrap(format!("PMI: no node for rank {r}")))?;
                let id = names.iter().position(|n| *n == name).unwrap_or_else(|| {
                    names.push(name);
                    names.len() - 1
                });
                ids.push(id as u32);
            }
            ids
        }
    };
    let node = nodes[rank as usize];
    let local_rank = nodes[..rank as usize]
        .iter()
        .filter(|&&n| n == node)
        .count() as u32;
    let local_size = nodes.iter().filter(|&&n| n == node).count() as u32;
    let bind = if nodes.iter().all(|&n| n == node) {
        std::net::Ipv4Addr::LOCALHOST.into()
    } else {
        crate::bootstrap::outward_address().map_err(Error::Bootstrap)?
    };
    let layout = Layout {
        rank,
        size,
        node,
        local_rank,
        local_size,
        key,
        bind,
    };
    let pmi = parking_lot::Mutex::new(pmi);
    let mut u = assemble(layout, host, |card| {
        let mut p = pmi.lock();
        p.put(&format!("courier-c{rank}"), &hex(&card.encode()))?;
        p.barrier()?;
        (0..size)
            .map(|r| {
                p.get(&format!("courier-c{r}"))?
                    .and_then(|h| unhex(&h))
                    .and_then(|b| PeerCard::decode(&b))
                    .ok_or_else(|| Error::Bootstrap(format!("PMI: no valid card for rank {r}")))
            })
            .collect()
    })?;
    u.pmi = Some(pmi);
    Ok(u)
}

impl Universe {
    fn new(progress: Progress, rank: usize, size: usize, placement: Placement) -> Self {
        // Below Multiple the driver belongs to this thread: no lock per call.
        let owner = (required() <= Threading::Funneled).then(crate::progress::thread_token);
        let profile = progress.profile();
        let progress = Arc::new(Driver::new(progress, owner));
        let world = Communicator::world(progress.clone(), rank, size);
        Universe {
            progress,
            world,
            placement,
            profile,
            finalized: false,
            pmi: None,
        }
    }

    /// How this rank's node moves data between its ranks, as local ranks
    /// 0 and 1 measured it at start-up (a copy through shared memory
    /// against a single-copy pull) or `COURIER_SHM_PROFILE` forced it:
    /// `"close"` (copies win: larger eager messages, collectives of two
    /// ranks through shared memory up to large sizes), `"far"` (pulls win
    /// from a few tens of KiB), `"remote"` (copies lose by far: messages
    /// and two ranks' collectives above 8 KiB are pulled). `"far"` too
    /// where nothing was measured: one rank on the node, shared memory or
    /// cross-memory attach off, more ranks than cores. For diagnostics and
    /// benchmark records: the same job runs faster or slower by it.
    ///
    /// ```
    /// let universe = courier::init()?;
    /// assert!(["close", "far", "remote"].contains(&universe.node_profile()));
    /// # Ok::<(), courier::Error>(())
    /// ```
    pub fn node_profile(&self) -> &'static str {
        self.profile.name()
    }

    /// The thread support provided (`MPI_Query_thread`): `Multiple`, or
    /// `Funneled` when [`init_thread`] was asked for `Single` or `Funneled`.
    pub fn threading(&self) -> Threading {
        if self.progress.is_owned() {
            Threading::Funneled
        } else {
            Threading::Multiple
        }
    }

    /// The communicator of all ranks of the job.
    pub fn world(&self) -> Communicator {
        self.world.clone()
    }

    /// Host name of this rank's machine (`MPI_Get_processor_name`).
    pub fn processor_name(&self) -> &str {
        &self.placement.host
    }

    /// Where the launcher placed this rank.
    pub fn placement(&self) -> &Placement {
        &self.placement
    }

    /// The links this rank has open, by world rank and transport. Links are
    /// opened lazily: a rank that never talked to a peer has no link to it.
    pub fn links(&self) -> Vec<(usize, LinkKind)> {
        self.progress
            .lock_any()
            .map(|p| p.links())
            .unwrap_or_default()
            .into_iter()
            .map(|(r, k)| (r as usize, k))
            .collect()
    }

    /// A human-readable report of links and counters, for debugging.
    pub fn debug_report(&self) -> String {
        let Ok(p) = self.progress.lock_any() else {
            return String::from("(report unavailable inside another Courier call)");
        };
        let t = p.tcp_stats();
        let (e, (posted, unexpected)) = p.engine_stats();
        let links: Vec<String> = p
            .links()
            .iter()
            .map(|(r, k)| format!("{r}:{k:?}"))
            .collect();
        format!(
            "rank {} links [{}] node_profile={} oversubscribed={} tcp connects={} accepts={} declined_duplicates={} \
             rejected={} eager_sent={} rendezvous_sent={} pulls_offered={} unexpected_arrivals={} \
             taken_at_post={} posted={} unexpected={} credit_alone_writes={} tcp_writes={}",
            self.world.rank(),
            links.join(" "),
            p.profile().name(),
            p.oversubscribed(),
            t.connects,
            t.accepts,
            t.declined_duplicates,
            t.rejected,
            e.eager_sent,
            e.rendezvous_sent,
            e.pulls_offered,
            e.unexpected_arrivals,
            e.taken_at_post,
            posted,
            unexpected,
            p.credit_alone_writes(),
            t.writes
        )
    }

    /// The address this rank accepts links on (`None` for a singleton).
    pub fn local_endpoint(&self) -> Option<std::net::SocketAddr> {
        self.progress.lock_any().ok()?.local_addr()
    }

    /// Number of connection attempts rejected so far (wrong key, garbage).
    pub fn rejected_connections(&self) -> u64 {
        self.progress
            .lock_any()
            .map_or(0, |p| p.tcp_stats().rejected)
    }

    /// Ends the whole job with exit code `code` (`MPI_Abort`): the launcher
    /// terminates every rank and exits with `code`. Never returns.
    pub fn abort(&self, code: i32) -> ! {
        if let Some(pmi) = &self.pmi {
            if let Some(mut p) = pmi.try_lock() {
                p.abort(code);
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
            std::process::exit(code)
        }
        let msg = ServiceRequest::Abort { code }.encode();
        if let Ok(mut p) = self.progress.lock_any() {
            if p.service_send(&msg).is_ok() {
                p.await_abort_notice(std::time::Duration::from_secs(2));
            }
        }
        std::process::exit(code)
    }

    /// Finalizes explicitly, reporting errors (dropping the universe does the
    /// same but can only print them).
    pub fn finalize(mut self) -> Result<()> {
        self.finalized = true;
        Lifecycle::finalized();
        let r = {
            let mut p = self.progress.lock_any()?;
            let r = p.finalize();
            p.tell_service_finalized();
            r
        };
        let pm = match &self.pmi {
            Some(pmi) => pmi.lock().finalize().map_err(Error::from),
            None => Ok(()),
        };
        r.and(pm)
    }
}

impl Drop for Universe {
    fn drop(&mut self) {
        if !self.finalized && std::thread::panicking() {
            // The rank is dying of a panic: finalizing would wait for peers
            // that may wait for us. Leave without a word; the launcher
            // reports this rank's failure and ends the job.
            self.finalized = true;
            Lifecycle::finalized();
            if let Ok(mut p) = self.progress.lock_any() {
                p.mark_finalized();
            }
            return;
        }
        if !self.finalized {
            self.finalized = true;
            Lifecycle::finalized();
            match self.progress.lock_any() {
                Err(e) => eprintln!(
                    "courier[rank {}]: the universe was dropped where it cannot finalize: {e}",
                    self.world.rank()
                ),
                Ok(mut p) => {
                    if let Err(e) = p.finalize() {
                        if !matches!(e, Error::Aborted { .. }) {
                            eprintln!("courier[rank {}]: finalize: {e}", self.world.rank());
                        }
                    }
                    p.tell_service_finalized();
                }
            }
            if let Some(pmi) = &self.pmi {
                let _ = pmi.lock().finalize();
            }
        }
    }
}
