//! `courier bench`: OSU Micro-Benchmarks methodology on Courier.
//!
//! Started outside a job, `courier bench` launches itself as a job of `-n`
//! ranks (through the same code as `courier run`); started as a rank (by
//! `courier run`, or any launcher that set up `COURIER_RANK`), it runs the
//! benchmark body. Rank 0 prints the table in OSU's format so the lines can
//! be compared with `osu_latency`, `osu_bw` and `osu_bibw`.
//!
//! * latency: ping-pong between ranks 0 and 1; one-way latency = round trip / 2.
//! * bw: rank 0 posts a window of 64 nonblocking sends, rank 1 64 receives,
//!   then a 4-byte acknowledgement returns; bandwidth = bytes / time.
//! * bibw: both ranks post 64 receives and 64 sends per window.
//! * mbw_mr: n/2 pairs (rank i sends to rank i + n/2) run the bw pattern at
//!   once; aggregate bandwidth and messages per second over all pairs, from
//!   the slowest sender's time.
//!
//! Iterations and warm-up follow OSU: 10000/100 for sizes up to 8 KiB and
//! 1000/10 above for latency; 100/10 and 20/2 for the windowed tests.
//! `COURIER_BENCH_DEBUG=1` makes every rank print its link and protocol
//! counters (`Universe::debug_report`) at the end.

use crate::results::{Format, Run, Table};
use clap::{Args, ValueEnum};
use courier::{Communicator, Error};
use std::io::IsTerminal;
use std::time::Instant;

const WINDOW: usize = 64;
/// Default largest size of the point-to-point tests.
const P2P_MAX: usize = 4 << 20;
/// Default largest size of the collective tests (OSU's).
const COLL_MAX: usize = 1 << 20;
const LARGE: usize = 8192;
const TAG: u32 = 100;
const ACK_TAG: u32 = 101;
const SYNC_TAG: u32 = 102;

/// Which benchmark.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// One-way latency by ping-pong (osu_latency).
    Latency,
    /// Unidirectional bandwidth with a window of 64 messages (osu_bw).
    Bw,
    /// Bidirectional bandwidth (osu_bibw).
    Bibw,
    /// Multi-pair bandwidth and message rate: ranks 0..n/2 each stream
    /// windows of 64 messages to rank i + n/2 (osu_mbw_mr).
    #[value(name = "mbw_mr")]
    MbwMr,
    /// Multi-threaded latency: `--threads` threads on each of ranks 0 and
    /// 1 ping-pong at once, thread t with thread t; the average of their
    /// one-way latencies (osu_latency_mt).
    #[value(name = "latency_mt")]
    LatencyMt,
    /// Job start-up: wall time of a job that only initializes and finalizes,
    /// and the time spent in `courier::init()` (osu_init).
    Startup,
    /// Barrier latency (osu_barrier).
    Barrier,
    /// Broadcast latency by size (osu_bcast).
    Bcast,
    /// Reduce (sum of f32) latency by size (osu_reduce).
    Reduce,
    /// All-reduce (sum of f32) latency by size (osu_allreduce).
    Allreduce,
    /// All-gather latency by size per rank (osu_allgather).
    Allgather,
    /// All-to-all latency by size per rank pair (osu_alltoall).
    Alltoall,
}

/// Options of `courier bench`.
#[derive(Args, Debug, Clone)]
pub(crate) struct BenchArgs {
    /// Benchmark to run; without one, latency then bw.
    #[arg(value_enum)]
    kind: Option<Kind>,
    /// Number of ranks (point-to-point tests use ranks 0 and 1).
    #[arg(short = 'n', long = "np", default_value_t = 2)]
    np: usize,
    /// Smallest message size in bytes.
    #[arg(long, default_value_t = 1)]
    min_size: usize,
    /// Largest message size in bytes [default: 4 MiB; 1 MiB for the
    /// collectives, as OSU's].
    #[arg(long)]
    max_size: Option<usize>,
    /// Timed iterations per size (default: OSU's, by size); for startup, jobs to run (default 5).
    #[arg(long)]
    iterations: Option<usize>,
    /// Check every received byte and print "validation: passed".
    #[arg(long)]
    validate: bool,
    /// Transport between the ranks (default: auto, i.e. shared memory on one host).
    #[arg(long, value_enum, value_name = "KIND")]
    transport: Option<crate::run::TransportArg>,
    /// Threads per rank: latency_mt (default 2), mbw_mr (default 1; each
    /// thread of a sender streams to the same thread of its receiver).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: Option<u16>,
    /// Output: OSU's text tables, one JSON document per benchmark (with
    /// the machine, version, transport, iterations and settings), or CSV
    /// rows; `courier report` plots the JSON.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

impl BenchArgs {
    /// The largest size of a point-to-point test.
    fn p2p_max(&self) -> usize {
        self.max_size.unwrap_or(P2P_MAX)
    }

    /// The largest size of a collective test.
    fn coll_max(&self) -> usize {
        self.max_size.unwrap_or(COLL_MAX)
    }
}

/// This rank's node profile (`Universe::node_profile`), for rank 0's tables.
static NODE_PROFILE: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

/// The transport named in table titles.
fn transport_name() -> &'static str {
    match std::env::var("COURIER_TRANSPORT").as_deref() {
        Ok("tcp") => "TCP",
        Ok("shm") => "shared memory",
        _ => "auto: shared memory within a host, TCP across",
    }
}

/// Entry point: launch a job of ourselves, or run as a rank.
pub(crate) fn main(args: BenchArgs) -> i32 {
    if args.max_size.is_some_and(|max| args.min_size > max) {
        eprintln!("courier: error: --min-size must not exceed --max-size");
        return 2;
    }
    // Started as a rank (by `courier run`, or by a process manager that
    // speaks PMI: mpiexec.hydra, srun --mpi=pmi2): run as that rank.
    if std::env::var_os(courier::bootstrap::ENV_RANK).is_some()
        || std::env::var_os("PMI_FD").is_some()
    {
        return as_rank(&args);
    }
    if let Err(e) = check_launch(&args) {
        eprintln!("courier: error: {e}");
        return 2;
    }
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("courier: cannot find my own executable: {e}");
            return 1;
        }
    };
    let mut rank_args: Vec<String> = std::env::args().skip(1).collect();
    // The ranks inherit our arguments; `-n` is harmless there.
    if rank_args.first().map(String::as_str) != Some("bench") {
        rank_args.insert(0, "bench".into());
    }
    // On a terminal, rank 0 reports each size of a long run on stderr.
    let progress = std::io::stderr().is_terminal();
    let spec = crate::run::JobSpec {
        np: args.np,
        program: exe,
        args: rank_args,
        env: args
            .transport
            .map(|t| ("COURIER_TRANSPORT".to_string(), t.as_env().to_string()))
            .into_iter()
            .chain(progress.then(|| (crate::results::PROGRESS.to_string(), "1".to_string())))
            .collect(),
        tag_output: false,
        timeout: None,
        // Threads of a rank spread over the cores (as `--bind-to none`):
        // bound to one core each, latency_mt's threads would share it.
        bind: if args.kind == Some(Kind::LatencyMt) || args.threads.is_some_and(|t| t > 1) {
            crate::run::Binding::None
        } else {
            crate::run::Binding::Auto
        },
        hosts: vec![crate::hosts::Host {
            name: "localhost".into(),
            slots: args.np,
        }],
        placement: vec![0; args.np],
        agent: vec!["ssh".into()],
    };
    if args.kind == Some(Kind::Startup) {
        return startup(&spec, &args);
    }
    let t0 = Instant::now();
    let code = crate::run::run(&spec);
    if progress && crate::results::worth_a_total(t0.elapsed()) {
        eprintln!("courier bench: total {:.1} s", t0.elapsed().as_secs_f64());
    }
    code
}

/// This process is a rank of a benchmark job: runs its part.
fn as_rank(args: &BenchArgs) -> i32 {
    let r = if args.kind == Some(Kind::Startup) {
        startup_rank(args.format)
    } else {
        run_rank(args)
    };
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("courier bench: {e}");
            1
        }
    }
}

/// Whether the arguments make a job that can run.
fn check_launch(args: &BenchArgs) -> Result<(), String> {
    let collective = matches!(
        args.kind,
        Some(
            Kind::Barrier
                | Kind::Bcast
                | Kind::Reduce
                | Kind::Allreduce
                | Kind::Allgather
                | Kind::Alltoall
        )
    );
    if args.np < 2 && args.kind != Some(Kind::Startup) && !collective {
        return Err("point-to-point benchmarks need -n 2 or more".into());
    }
    if args.np == 0 {
        return Err("-n must be at least 1".into());
    }
    if args.kind == Some(Kind::MbwMr) && args.np % 2 != 0 {
        return Err("mbw_mr pairs ranks: -n must be even".into());
    }
    Ok(())
}

/// Runs the start-up job `--iterations` times (default 5); prints each
/// wall time and the median (in JSON and CSV: one row per job).
fn startup(spec: &crate::run::JobSpec, args: &BenchArgs) -> i32 {
    let repeat = args.iterations.unwrap_or(5).max(1);
    let title = format!("Courier Start-up Test: {} ranks, {repeat} jobs", spec.np);
    let text = args.format == Format::Text;
    let mut run = Run::courier("startup", &title, &["wall_ms"]);
    run.ranks = spec.np;
    run.transport = transport_name().into();
    run.iterations = Some(repeat);
    let mut table = Table::new(args.format, run, &[format!("# {title}")]);
    let mut walls = Vec::with_capacity(repeat);
    for _ in 0..repeat {
        let t0 = Instant::now();
        let code = crate::run::run(spec);
        let wall = t0.elapsed().as_secs_f64() * 1e3;
        if code != 0 {
            return code;
        }
        if text {
            println!("wall: {wall:.1} ms");
        } else {
            table.row(None, &[wall]);
        }
        walls.push(wall);
    }
    walls.sort_by(f64::total_cmp);
    if text {
        println!(
            "nprocs: {}, median wall time: {:.1} ms",
            spec.np,
            walls[walls.len() / 2]
        );
    }
    table.finish();
    0
}

/// The rank side of the start-up test (cf. osu_init): time `init`, reduce
/// min/max/avg to rank 0 over point-to-point, print, finalize.
fn startup_rank(format: Format) -> Result<(), String> {
    let t0 = Instant::now();
    let universe = courier::init().map_err(|e| e.to_string())?;
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    let w = universe.world();
    let e = |e: Error| e.to_string();
    if w.rank() == 0 {
        let (mut min, mut max, mut sum) = (ms, ms, ms);
        let mut t = [0f64];
        for _ in 1..w.size() {
            w.recv(&mut t, courier::ANY_SOURCE, SYNC_TAG).map_err(e)?;
            min = min.min(t[0]);
            max = max.max(t[0]);
            sum += t[0];
        }
        let line = format!(
            "nprocs: {}, min: {min:.2} ms, max: {max:.2} ms, avg: {:.2} ms",
            w.size(),
            sum / w.size() as f64
        );
        remark(format, &line);
    } else {
        w.send(&[ms], 0, SYNC_TAG).map_err(e)?;
    }
    universe.finalize().map_err(|e| e.to_string())
}

fn sizes(args: &BenchArgs) -> Vec<usize> {
    let mut v = Vec::new();
    let mut s = args.min_size.max(1);
    while s <= args.p2p_max() {
        v.push(s);
        s *= 2;
    }
    if args.min_size == 0 {
        v.insert(0, 0);
    }
    v
}

/// The byte at index `i` of a message of `size` bytes in iteration `iter`.
fn pattern(size: usize, iter: usize, i: usize) -> u8 {
    (i.wrapping_mul(31) ^ size.wrapping_add(iter.wrapping_mul(7))) as u8
}

fn fill(buf: &mut [u8], size: usize, iter: usize) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = pattern(size, iter, i);
    }
}

fn check(buf: &[u8], size: usize, iter: usize) -> Result<(), String> {
    match buf.iter().enumerate().find(|&(i, &b)| b != pattern(size, iter, i)) {
        Some((i, b)) => Err(format!(
            "validation failed: size {size}, iteration {iter}, byte {i}: got {b:#04x}, expected {:#04x}",
            pattern(size, iter, i)
        )),
        None => Ok(()),
    }
}

/// A dissemination barrier over point-to-point messages.
fn sync(w: &Communicator) -> Result<(), Error> {
    let (r, n) = (w.rank(), w.size());
    let mut dist = 1;
    while dist < n {
        let to = (r + dist) % n;
        let from = (r + n - dist) % n;
        w.sendrecv::<u8, u8>(&[], to, SYNC_TAG, &mut [], from, SYNC_TAG)?;
        dist *= 2;
    }
    Ok(())
}

/// A line beside the figures: on stdout with OSU's text tables, on stderr
/// otherwise, so that JSON and CSV on stdout stay parseable.
fn remark(format: Format, line: &str) {
    if format == Format::Text {
        println!("{line}");
    } else {
        eprintln!("{line}");
    }
}

/// Rank 0's table of benchmark `kind` (`None` on other ranks): `header`
/// holds the OSU text header lines, the first being the title.
fn table(
    w: &Communicator,
    args: &BenchArgs,
    kind: &str,
    header: &[String],
    columns: &[&str],
) -> Option<Table> {
    if w.rank() != 0 {
        return None;
    }
    let title = header.first().map_or("", |h| h.trim_start_matches("# "));
    let mut run = Run::courier(kind, title, columns);
    run.transport = transport_name().into();
    run.ranks = w.size();
    run.threads = args.threads;
    run.iterations = args.iterations;
    let mut header = header.to_vec();
    if std::env::var("COURIER_TRANSPORT").as_deref() != Ok("tcp") {
        if let Some(&profile) = NODE_PROFILE.get() {
            run.node_profile = Some(profile.into());
            // After the title, as a comment OSU-table readers skip.
            header.insert(
                header.len().min(1),
                format!("# Node profile: {profile} (see COURIER_SHM_PROFILE)"),
            );
        }
    }
    Some(Table::new(args.format, run, &header))
}

/// Adds a row to rank 0's table.
fn row(t: &mut Option<Table>, size: Option<usize>, values: &[f64]) {
    if let Some(t) = t.as_mut() {
        t.row(size, values);
    }
}

/// Ends rank 0's table.
fn finish(t: Option<Table>) {
    if let Some(t) = t {
        t.finish();
    }
}

fn run_rank(args: &BenchArgs) -> Result<(), String> {
    // One thread communicates, as in OSU's benchmarks (MPI_Init: the peers
    // run single-threaded, without locks); latency_mt's threads need
    // Multiple.
    let level = if args.kind == Some(Kind::LatencyMt) || args.threads.is_some_and(|t| t > 1) {
        courier::Threading::Multiple
    } else {
        courier::Threading::Funneled
    };
    let universe = courier::init_thread(level).map_err(|e| e.to_string())?;
    let _ = NODE_PROFILE.set(universe.node_profile());
    let world = universe.world();
    let kinds = match args.kind {
        Some(k) => vec![k],
        None => vec![Kind::Latency, Kind::Bw],
    };
    let mut failure = None;
    let dbg = std::env::var_os("COURIER_BENCH_DEBUG").is_some();
    for k in kinds {
        let r = match k {
            Kind::Latency => latency(&world, args),
            Kind::Bw => bandwidth(&world, args, false),
            Kind::Bibw => bandwidth(&world, args, true),
            Kind::MbwMr => message_rate(&world, args),
            Kind::LatencyMt => latency_mt(&world, args),
            Kind::Startup => Ok(()),
            coll => collective(&world, args, coll),
        };
        if let Err(e) = r {
            failure = Some(e);
            break;
        }
    }
    if dbg {
        eprintln!("{}", universe.debug_report());
    }
    if args.validate && world.rank() == 0 {
        let verdict = match &failure {
            None => "validation: passed",
            Some(_) => "validation: failed",
        };
        remark(args.format, verdict);
    }
    match failure {
        Some(e) => Err(e),
        None => universe.finalize().map_err(|e| e.to_string()),
    }
}

/// Runs `body(i)` for `skip` warm-up and `n` timed iterations; returns the
/// seconds the timed ones took.
fn timed(
    n: usize,
    skip: usize,
    mut body: impl FnMut(usize) -> Result<(), String>,
) -> Result<f64, String> {
    let mut t0 = Instant::now();
    for i in 0..n + skip {
        if i == skip {
            t0 = Instant::now();
        }
        body(i)?;
    }
    Ok(t0.elapsed().as_secs_f64())
}

fn iters(
    args: &BenchArgs,
    size: usize,
    small: (usize, usize),
    large: (usize, usize),
) -> (usize, usize) {
    let (n, skip) = if size > LARGE { large } else { small };
    (args.iterations.unwrap_or(n), skip)
}

fn latency(w: &Communicator, args: &BenchArgs) -> Result<(), String> {
    let e = |e: Error| e.to_string();
    let me = w.rank();
    let mut t = table(
        w,
        args,
        "latency",
        &[
            format!("# Courier Latency Test ({})", transport_name()),
            "# Size          Latency (us)".into(),
        ],
        &["latency_us"],
    );
    let max = args.p2p_max();
    let (mut sbuf, mut rbuf) = p2p_buffers(max, max);
    for size in sizes(args) {
        let (n, skip) = iters(args, size, (10000, 100), (1000, 10));
        sync(w).map_err(e)?;
        if me > 1 {
            continue;
        }
        let peer = 1 - me;
        let secs = timed(n, skip, |i| {
            if args.validate {
                fill(&mut sbuf[..size], size, i);
            }
            if me == 0 {
                w.send(&sbuf[..size], peer, TAG).map_err(e)?;
                w.recv(&mut rbuf[..size], peer, TAG).map_err(e)?;
            } else {
                w.recv(&mut rbuf[..size], peer, TAG).map_err(e)?;
                w.send(&sbuf[..size], peer, TAG).map_err(e)?;
            }
            if args.validate {
                check(&rbuf[..size], size, i)?;
            }
            Ok(())
        })?;
        let us = secs * 1e6 / (2.0 * n as f64);
        row(&mut t, Some(size), &[us]);
    }
    finish(t);
    sync(w).map_err(e)
}

/// A point-to-point benchmark's send and receive buffers, written through
/// before the first message as OSU's are (`'a'` and `'b'`). Zeroed ones
/// (`vec![0; n]`) would be fresh pages the kernel maps to its one zero
/// page until written: sending from those measured something no program
/// sends from (over TCP, a 1 MiB latency 200–209 µs against 167–181 from
/// written buffers, 4 runs each).
fn p2p_buffers(send: usize, recv: usize) -> (Vec<u8>, Vec<u8>) {
    (vec![b'a'; send], vec![b'b'; recv])
}

/// Runs `f(t, &mut items[t])` on one thread per item, all at once, and
/// returns their results in order (the first error, or a panicking
/// thread, is the error).
fn on_threads<B: Send>(
    items: &mut [B],
    f: impl Fn(usize, &mut B) -> Result<f64, String> + Sync,
) -> Result<Vec<f64>, String> {
    std::thread::scope(|ts| {
        let f = &f;
        let handles: Vec<_> = items
            .iter_mut()
            .enumerate()
            .map(|(t, b)| ts.spawn(move || f(t, b)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("a thread panicked".into())))
            .collect()
    })
}

/// osu_latency_mt: `args.threads` threads per rank, thread t of rank 0
/// ping-pongs with thread t of rank 1 (tag TAG + 1 + t), all at once; each
/// thread times its own round trips, rank 0 prints the mean one-way
/// latency over its threads.
fn latency_mt(w: &Communicator, args: &BenchArgs) -> Result<(), String> {
    let e = |e: Error| e.to_string();
    let me = w.rank();
    let threads = usize::from(args.threads.unwrap_or(2));
    let mut t = table(
        w,
        args,
        "latency_mt",
        &[
            format!(
                "# Courier Multi-threaded Latency Test ({})",
                transport_name()
            ),
            format!("# [ threads per rank: {threads} ]"),
            "# Size          Latency (us)".into(),
        ],
        &["latency_us"],
    );
    for size in sizes(args) {
        let (n, skip) = iters(args, size, (10000, 100), (1000, 10));
        sync(w).map_err(e)?;
        if me > 1 {
            continue;
        }
        let peer = 1 - me;
        let mut bufs: Vec<(Vec<u8>, Vec<u8>)> =
            (0..threads).map(|_| p2p_buffers(size, size)).collect();
        let per_thread = on_threads(&mut bufs, |t, (sbuf, rbuf)| {
            let tag = TAG + 1 + t as u32;
            let secs = timed(n, skip, |i| {
                if args.validate {
                    fill(sbuf, size, i + t);
                }
                if me == 0 {
                    w.send(sbuf, peer, tag).map_err(e)?;
                    w.recv(rbuf, peer, tag).map_err(e)?;
                } else {
                    w.recv(rbuf, peer, tag).map_err(e)?;
                    w.send(sbuf, peer, tag).map_err(e)?;
                }
                if args.validate {
                    check(rbuf, size, i + t)?;
                }
                Ok(())
            })?;
            Ok(secs * 1e6 / (2.0 * n as f64))
        })?;
        let sum: f64 = per_thread.iter().sum();
        row(&mut t, Some(size), &[sum / threads as f64]);
    }
    finish(t);
    sync(w).map_err(e)
}

fn bandwidth(w: &Communicator, args: &BenchArgs, bidirectional: bool) -> Result<(), String> {
    let e = |e: Error| e.to_string();
    let me = w.rank();
    let title = if bidirectional {
        format!(
            "# Courier Bi-Directional Bandwidth Test ({})",
            transport_name()
        )
    } else {
        format!("# Courier Bandwidth Test ({})", transport_name())
    };
    let mut t = table(
        w,
        args,
        if bidirectional { "bibw" } else { "bw" },
        &[title, "# Size      Bandwidth (MB/s)".into()],
        &["bandwidth_MBps"],
    );
    let max = args.p2p_max();
    let (mut sbuf, mut rbufs) = p2p_buffers(max, max * WINDOW);
    for size in sizes(args) {
        let (n, skip) = iters(args, size, (100, 10), (20, 2));
        sync(w).map_err(e)?;
        if me > 1 {
            continue;
        }
        let peer = 1 - me;
        let secs = timed(n, skip, |i| {
            if args.validate {
                fill(&mut sbuf[..size], size, i);
            }
            let sender = me == 0 || bidirectional;
            let receiver = me == 1 || bidirectional;
            courier::scope(|s| -> Result<(), Error> {
                let mut reqs = Vec::with_capacity(2 * WINDOW);
                if receiver {
                    for chunk in rbufs.chunks_mut(size.max(1)).take(WINDOW) {
                        reqs.push(w.irecv(s, &mut chunk[..size], peer, TAG)?);
                    }
                }
                if sender {
                    for _ in 0..WINDOW {
                        reqs.push(w.isend(s, &sbuf[..size], peer, TAG)?);
                    }
                }
                courier::wait_all(reqs)?;
                Ok(())
            })
            .map_err(e)?;
            if !bidirectional {
                let mut ack = [0u8; 4];
                if me == 0 {
                    w.recv(&mut ack, peer, ACK_TAG).map_err(e)?;
                } else {
                    w.send(&ack, peer, ACK_TAG).map_err(e)?;
                }
            }
            if args.validate && (me == 1 || bidirectional) {
                for chunk in rbufs.chunks(size.max(1)).take(WINDOW) {
                    check(&chunk[..size], size, i)?;
                }
            }
            Ok(())
        })?;
        let factor = if bidirectional { 2.0 } else { 1.0 };
        let mbps = factor * (size * n * WINDOW) as f64 / 1e6 / secs;
        row(&mut t, Some(size), &[mbps]);
    }
    finish(t);
    sync(w).map_err(e)
}

/// osu_mbw_mr: `n/2` sender-receiver pairs stream windows at once.
fn message_rate(w: &Communicator, args: &BenchArgs) -> Result<(), String> {
    let e = |e: Error| e.to_string();
    let (p, me) = (w.size(), w.rank());
    let pairs = p / 2;
    let threads = usize::from(args.threads.unwrap_or(1));
    let sender = me < pairs;
    let peer = if sender { me + pairs } else { me - pairs };
    let mut t = table(
        w,
        args,
        "mbw_mr",
        &[
            format!(
                "# Courier Multiple Bandwidth / Message Rate Test ({})",
                transport_name()
            ),
            if threads > 1 {
                format!(
                    "# [ pairs: {pairs} ] [ threads per rank: {threads} ] [ window size: {WINDOW} ]"
                )
            } else {
                format!("# [ pairs: {pairs} ] [ window size: {WINDOW} ]")
            },
            "# Size                  MB/s        Messages/s".into(),
        ],
        &["bandwidth_MBps", "messages_per_s"],
    );
    let max = args.p2p_max();
    let mut bufs: Vec<(Vec<u8>, Vec<u8>)> = (0..threads)
        .map(|_| p2p_buffers(max, max * WINDOW))
        .collect();
    for size in sizes(args) {
        let (n, skip) = iters(args, size, (100, 10), (20, 2));
        w.barrier().map_err(e)?;
        // Thread t streams on tags TAG + 2t (data) and TAG + 2t + 1 (acks).
        let stream = |t: usize, (sbuf, rbufs): &mut (Vec<u8>, Vec<u8>)| {
            let (tag, ack_tag) = (TAG + 10 + 2 * t as u32, TAG + 11 + 2 * t as u32);
            timed(n, skip, |i| {
                if args.validate && sender {
                    fill(&mut sbuf[..size], size, i + t);
                }
                courier::scope(|s| -> Result<(), Error> {
                    let mut reqs = Vec::with_capacity(WINDOW);
                    if sender {
                        for _ in 0..WINDOW {
                            reqs.push(w.isend(s, &sbuf[..size], peer, tag)?);
                        }
                    } else {
                        for chunk in rbufs.chunks_mut(size.max(1)).take(WINDOW) {
                            reqs.push(w.irecv(s, &mut chunk[..size], peer, tag)?);
                        }
                    }
                    courier::wait_all(reqs)?;
                    Ok(())
                })
                .map_err(e)?;
                let mut ack = [0u8; 4];
                if sender {
                    w.recv(&mut ack, peer, ack_tag).map_err(e)?;
                } else {
                    w.send(&ack, peer, ack_tag).map_err(e)?;
                    if args.validate {
                        for chunk in rbufs.chunks(size.max(1)).take(WINDOW) {
                            check(&chunk[..size], size, i + t)?;
                        }
                    }
                }
                Ok(())
            })
        };
        let secs = if threads == 1 {
            stream(0, &mut bufs[0])?
        } else {
            // The threads stream at once; the slowest one's time is the rank's.
            on_threads(&mut bufs, stream)?
                .into_iter()
                .fold(0f64, f64::max)
        };
        // The pairs ran at once: the slowest sender's time is the job's.
        let mut slowest = [0f64];
        w.all_reduce(
            &[if sender { secs } else { 0.0 }],
            &mut slowest,
            courier::Op::Max,
        )
        .map_err(e)?;
        let rate = (pairs * threads * n * WINDOW) as f64 / slowest[0];
        let mbps = rate * size as f64 / 1e6;
        row(&mut t, Some(size), &[mbps, rate]);
    }
    finish(t);
    w.barrier().map_err(e)
}

/// OSU collective methodology: for each size, warm-up iterations, then the
/// average time per call over all ranks (each rank times its own calls; rank
/// 0 prints the mean of the ranks' averages). Sizes 4 B to 1 MiB (in bytes of
/// the per-rank contribution; f32 elements where the operation reduces).
fn collective(w: &Communicator, args: &BenchArgs, kind: Kind) -> Result<(), String> {
    let e = |e: Error| e.to_string();
    let p = w.size();
    let (name, id) = match kind {
        Kind::Barrier => ("Barrier", "barrier"),
        Kind::Bcast => ("Broadcast", "bcast"),
        Kind::Reduce => ("Reduce", "reduce"),
        Kind::Allreduce => ("Allreduce", "allreduce"),
        Kind::Allgather => ("Allgather", "allgather"),
        _ => ("All-to-All", "alltoall"),
    };
    let mut t = table(
        w,
        args,
        id,
        &[
            format!(
                "# Courier {name} Latency Test, {p} ranks ({})",
                transport_name()
            ),
            if kind == Kind::Barrier {
                "# Avg Latency(us)".into()
            } else {
                "# Size       Avg Latency(us)".into()
            },
        ],
        &["avg_latency_us"],
    );
    let sizes: Vec<usize> = if kind == Kind::Barrier {
        vec![0]
    } else {
        let mut v = Vec::new();
        let mut s = args.min_size.max(4);
        while s <= args.coll_max() {
            v.push(s);
            s *= 2;
        }
        v
    };
    for size in sizes {
        let (n, skip) = iters(args, size, (1000, 100), (100, 10));
        let elems = size / 4;
        let send = vec![1.0f32; elems * if kind == Kind::Alltoall { p } else { 1 }];
        let mut recv = vec![
            0f32;
            elems
                * if matches!(kind, Kind::Allgather | Kind::Alltoall) {
                    p
                } else {
                    1
                }
        ];
        let mine = time_collective(w, kind, n, skip, &send, &mut recv).map_err(e)?;
        let mut sum = [0f64];
        w.reduce(&[mine], &mut sum, courier::Op::Sum, 0)
            .map_err(e)?;
        if args.validate && kind == Kind::Allreduce && recv.iter().any(|&x| x != p as f32) {
            return Err(format!("validation failed: allreduce of {size} bytes"));
        }
        let avg = sum[0] / p as f64;
        row(&mut t, (kind != Kind::Barrier).then_some(size), &[avg]);
    }
    finish(t);
    Ok(())
}

/// Microseconds per call of collective `kind`, over `n` timed calls after
/// `skip` warm-up calls, between barriers.
fn time_collective(
    w: &Communicator,
    kind: Kind,
    n: usize,
    skip: usize,
    send: &[f32],
    recv: &mut [f32],
) -> Result<f64, Error> {
    let mut t0 = Instant::now();
    w.barrier()?;
    for i in 0..n + skip {
        if i == skip {
            w.barrier()?;
            t0 = Instant::now();
        }
        match kind {
            Kind::Barrier => w.barrier(),
            Kind::Bcast => w.broadcast(recv, 0),
            Kind::Reduce => w.reduce(send, recv, courier::Op::Sum, 0),
            Kind::Allreduce => w.all_reduce(send, recv, courier::Op::Sum),
            Kind::Allgather => w.all_gather(send, recv),
            _ => w.all_to_all(send, recv),
        }?;
    }
    Ok(t0.elapsed().as_secs_f64() * 1e6 / n as f64)
}
