//! The fault matrix: every fault kind (clean exit without finalizing, exit
//! with an error code, panic, abort, segfault, SIGKILL) × every point of a
//! rank's life (before wire-up, inside point-to-point traffic, inside
//! collectives, inside a large single-copy transfer, inside a scope with a
//! receive that will never match or a large send nobody receives, after the
//! loop) × 2, 4 and 8 ranks, with the failing rank and iteration drawn at random. Every
//! run must end within 2 seconds of the fault, with a non-zero exit and a
//! report naming the failed rank, and leave no process, no file in
//! `/dev/shm` and no listening socket behind.
//!
//! `COURIER_FAULT_SEED=N` replays a matrix; `COURIER_FAULT_ROUNDS` repeats it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{courier, processes_with, Job};
use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

/// The tests of this file run one at a time: the leftover checks look at
/// the whole machine's processes and listening sockets.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

const KINDS: [&str; 6] = ["exit0", "exit3", "panic", "abort", "segv", "kill"];
const POINTS: [&str; 7] = [
    "init",
    "p2p",
    "collective",
    "large",
    "scope-recv",
    "scope-send",
    "end",
];
const ITERS: u32 = 40;

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

/// Listening TCP sockets on this machine (local address:port, hex), from procfs.
fn listeners() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for f in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(f) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() > 3 && cols[3] == "0A" {
                out.insert(cols[1].to_string());
            }
        }
    }
    out
}

fn dev_shm() -> BTreeSet<String> {
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// xorshift, seeded from the clock unless `COURIER_FAULT_SEED` is set.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

struct Outcome {
    job: Job,
    /// Milliseconds from the fault to the end of the launcher.
    detect_ms: Option<u128>,
    pids: Vec<i32>,
    /// The environment entry every process of the job carries.
    marker: String,
}

fn run_fault(transport: &str, np: usize, kind: &str, rank: usize, at: u32, point: &str) -> Outcome {
    let exe = std::env::current_exe().unwrap();
    // The nonce marks every process of this job, found again through /proc.
    let spec = format!("{kind}:{rank}:{at}:{point}:{}", now_ms());
    let out = Command::new(courier())
        .args(["run", "-n", &np.to_string(), "--timeout", "60"])
        .args(["--transport", transport])
        .args(["-x", &format!("COURIER_TEST_FAULT={spec}")])
        .arg(&exe)
        .args(["--exact", "body_fault", "--include-ignored", "--nocapture"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let ended = now_ms();
    let job = Job::from_output(out);
    let fault_at = job
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("FAULT "))
        .and_then(|t| t.trim().parse::<u128>().ok());
    let pids = job
        .stderr
        .lines()
        .filter_map(|l| l.strip_prefix("PID "))
        .filter_map(|p| p.trim().parse().ok())
        .collect();
    Outcome {
        detect_ms: fault_at.map(|t| ended.saturating_sub(t)),
        job,
        pids,
        marker: format!("COURIER_TEST_FAULT={spec}"),
    }
}

#[test]
fn every_fault_at_every_point_ends_the_job_cleanly_and_quickly() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let seed: u64 = std::env::var("COURIER_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| now_ms() as u64);
    let rounds: usize = std::env::var("COURIER_FAULT_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    println!("fault matrix seed {seed} (COURIER_FAULT_SEED={seed} replays it)");
    let mut rng = Rng(seed | 1);
    let listening = listeners();
    let shm = dev_shm();
    let (mut runs, mut worst) = (0, 0u128);
    // Shared memory within the node (the default) at 2, 4 and 8 ranks, and
    // TCP everywhere at 2 and 4 (peers then also see the connection close).
    let shapes = [
        ("auto", 2usize),
        ("auto", 4),
        ("auto", 8),
        ("tcp", 2),
        ("tcp", 4),
    ];
    for _ in 0..rounds {
        for (transport, np) in shapes {
            for kind in KINDS {
                for point in POINTS {
                    let rank = rng.below(np as u64) as usize;
                    let at = rng.below(ITERS as u64) as u32;
                    let o = run_fault(transport, np, kind, rank, at, point);
                    let what = format!(
                        "{kind} at {point} (iteration {at}) on rank {rank} of {np} over {transport}, seed {seed}"
                    );
                    let j = &o.job;
                    assert!(
                        j.code.is_some_and(|c| c != 0),
                        "{what}: job exit {:?}\n{}",
                        j.code,
                        j.stderr
                    );
                    assert!(
                        j.stderr.contains(&format!("courier: rank {rank} ")),
                        "{what}: the launcher did not name rank {rank}\n{}",
                        j.stderr
                    );
                    let detect = o.detect_ms.unwrap_or_else(|| {
                        panic!("{what}: the fault never happened\n{}", j.stderr)
                    });
                    assert!(detect < 2000, "{what}: took {detect} ms to end the job");
                    worst = worst.max(detect);
                    let left = processes_with(&o.marker);
                    assert!(left.is_empty(), "{what}: processes left: {left:?}");
                    for pid in &o.pids {
                        assert!(
                            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
                            "{what}: rank process {pid} survived"
                        );
                    }
                    assert_eq!(dev_shm(), shm, "{what}: files left in /dev/shm");
                    assert!(
                        listeners().is_subset(&listening),
                        "{what}: listening sockets left: {:?}",
                        listeners().difference(&listening).collect::<Vec<_>>()
                    );
                    runs += 1;
                }
            }
        }
    }
    println!("{runs} faults injected; slowest end of job {worst} ms after its fault");
}

/// Performs the fault described by `kind` (this process ends).
fn fault(kind: &str) -> ! {
    use nix::sys::signal::{raise, Signal};
    eprintln!("FAULT {}", now_ms());
    match kind {
        "exit0" => std::process::exit(0),
        "exit3" => std::process::exit(3),
        "panic" => panic!("injected panic"),
        "abort" => std::process::abort(),
        "segv" => {
            let _ = raise(Signal::SIGSEGV);
        }
        _ => {
            let _ = raise(Signal::SIGKILL);
        }
    }
    unreachable!("the fault did not end the process")
}

#[test]
#[ignore = "rank body: run through courier"]
fn body_fault() {
    let Ok(spec) = std::env::var("COURIER_TEST_FAULT") else {
        return;
    };
    let f: Vec<&str> = spec.split(':').collect();
    let (kind, frank, at, point) = (
        f[0],
        f[1].parse::<usize>().unwrap(),
        f[2].parse::<u32>().unwrap(),
        f[3],
    );
    let me: usize = std::env::var("COURIER_RANK").unwrap().parse().unwrap();
    eprintln!("PID {}", std::process::id());
    let hit = |i: u32, p: &str| me == frank && i == at && p == point;
    if hit(at, "init") {
        fault(kind);
    }
    let u = courier::init().unwrap();
    let w = u.world();
    let (p, r) = (w.size(), w.rank());
    let mut big = vec![0u8; 4 << 20];
    // Survivors report the error they got and leave cleanly (finalizing), so
    // that the launcher's report names the rank that really failed.
    let outcome = (|| -> courier::Result<()> {
        for i in 0..ITERS {
            if hit(i, "p2p") {
                fault(kind);
            }
            let mut got = [0u64; 8];
            w.sendrecv(&[i as u64; 8], (r + 1) % p, 1, &mut got, (r + p - 1) % p, 1)?;
            if hit(i, "collective") {
                fault(kind);
            }
            let mut sum = [0f64; 16];
            w.all_reduce(&[1.0; 16], &mut sum, courier::Op::Sum)?;
            w.barrier()?;
            if hit(i, "large") {
                fault(kind);
            }
            let root = i as usize % p;
            if r == root {
                big.fill(i as u8);
            }
            w.broadcast(&mut big, root)?;
            assert!(big.iter().all(|&b| b == i as u8));
            // Requests in flight that nobody will ever complete: the fault
            // (a panic unwinds through the scope) must not wait for them.
            if hit(i, "scope-recv") {
                let mut never = [0u8; 16];
                courier::scope(|s| -> courier::Result<()> {
                    let _r = w.irecv(s, &mut never, (r + 1) % p, 999)?;
                    fault(kind)
                })?;
            }
            if hit(i, "scope-send") {
                courier::scope(|s| -> courier::Result<()> {
                    let _r = w.isend(s, &big, (r + 1) % p, 998)?;
                    fault(kind)
                })?;
            }
        }
        if hit(at, "end") {
            fault(kind);
        }
        w.barrier()
    })();
    if let Err(e) = outcome {
        eprintln!("rank {r}: {e}");
    }
}

/// The launcher itself SIGKILLed: every rank of its job goes within 2 s,
/// whether it is waiting in the library or computing outside it.
#[test]
fn ranks_do_not_outlive_a_killed_launcher() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    use std::io::{BufRead, BufReader};
    let marker = format!("COURIER_TEST_ORPHAN={}", now_ms());
    let (name, value) = marker.split_once('=').unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut launcher = Command::new(courier())
        .args(["run", "-n", "4", "-x", &format!("{name}={value}")])
        .arg(&exe)
        .args([
            "--exact",
            "body_until_killed",
            "--include-ignored",
            "--nocapture",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(launcher.stdout.take().unwrap()).lines();
    let mut ready = 0;
    while ready < 4 {
        let line = lines.next().expect("ranks start").unwrap();
        ready += usize::from(line.contains("READY"));
    }
    // Ranks are now looping: even ones in barriers, odd ones computing.
    // Only the ranks carry the marker in their environment (`-x`).
    assert_eq!(processes_with(&marker).len(), 4, "the ranks are found");
    let killed = std::time::Instant::now();
    launcher.kill().unwrap();
    launcher.wait().unwrap();
    loop {
        let left = processes_with(&marker);
        if left.is_empty() {
            break;
        }
        assert!(
            killed.elapsed() < std::time::Duration::from_secs(2),
            "ranks {left:?} outlived the launcher by 2 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    println!(
        "all ranks gone {} ms after the launcher",
        killed.elapsed().as_millis()
    );
}

#[test]
#[ignore = "rank body: run through courier"]
fn body_until_killed() {
    if std::env::var_os("COURIER_TEST_ORPHAN").is_none() {
        return;
    }
    let u = courier::init().unwrap();
    let w = u.world();
    println!("READY {}", w.rank());
    loop {
        if w.rank() % 2 == 0 {
            let _ = w.barrier();
        } else {
            // Busy outside the library: only the parent-death signal can stop it.
            let t = std::time::Instant::now();
            while t.elapsed() < std::time::Duration::from_millis(50) {
                std::hint::spin_loop();
            }
            let _ = w.barrier();
        }
    }
}
