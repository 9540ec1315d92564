//! `courier run`: start N ranks on this host, serve their wire-up, forward
//! their output and signals, and end the job as a whole.
//!
//! One mio event loop does everything: the rendezvous service, every rank's
//! stdout/stderr pipe, and signals (SIGCHLD, SIGINT, SIGTERM, SIGHUP arrive
//! through a self-pipe). No thread per rank, no shell.
//!
//! Failure policy: the first rank that exits non-zero or dies from a signal
//! is reported on stderr (rank, pid, code or signal); every other rank gets
//! SIGTERM, then SIGKILL after a grace period; the launcher exits with that
//! rank's code (128 + signal number for a signal). Each rank runs in its own
//! process group (unless stdin is a terminal, to keep rank 0 able to read it)
//! and has PR_SET_PDEATHSIG = SIGKILL, so no rank survives the launcher.

use crate::rendezvous::{Event as ServiceEvent, Service};
use crate::stdio::{LineBuffer, Stream};
use crate::sys;
use courier::bootstrap::auth::JobKey;
use courier::bootstrap::{
    ENV_BIND, ENV_JOB_KEY, ENV_LOCAL_RANK, ENV_LOCAL_SIZE, ENV_NODE_ID, ENV_RANK, ENV_SERVICE,
    ENV_SIZE,
};
use mio::unix::pipe::Receiver;
use mio::{Events, Interest, Poll, Token};
use std::io::{IsTerminal, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Exit code when `--timeout` ends a job (as GNU `timeout` does).
pub(crate) const EXIT_TIMEOUT: i32 = 124;

const SIGNAL_TOKEN: Token = Token(0);
const STDIO_BASE: usize = 2;

/// What to run.
#[derive(Debug, Clone)]
pub(crate) struct JobSpec {
    /// Number of ranks.
    pub(crate) np: usize,
    /// Program (resolved path).
    pub(crate) program: PathBuf,
    /// Its arguments.
    pub(crate) args: Vec<String>,
    /// Variables to set in every rank (`-x`).
    pub(crate) env: Vec<(String, String)>,
    /// Prefix output lines with `[rank]`.
    pub(crate) tag_output: bool,
    /// End the job after this long.
    pub(crate) timeout: Option<Duration>,
    /// Bind each rank to one core.
    pub(crate) bind: Binding,
}

/// `--transport`: which transports the ranks may use (sets `COURIER_TRANSPORT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum TransportArg {
    /// Shared memory between ranks of a host, TCP across hosts.
    Auto,
    /// Require shared memory between ranks of a host.
    Shm,
    /// TCP for every pair.
    Tcp,
}

impl TransportArg {
    /// The `COURIER_TRANSPORT` value.
    pub(crate) fn as_env(self) -> &'static str {
        match self {
            TransportArg::Auto => "auto",
            TransportArg::Shm => "shm",
            TransportArg::Tcp => "tcp",
        }
    }
}

/// Where ranks may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Binding {
    /// One core per rank when the ranks fit the cores, else no binding (as Open MPI does).
    Auto,
    /// Rank i on the i-th usable core (round robin when oversubscribed).
    Core,
    /// Let the scheduler place ranks.
    None,
}

/// Finds `program` like execvp would; an error message if it cannot be run.
pub(crate) fn resolve_program(program: &str) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if program.contains('/') {
        let p = PathBuf::from(program);
        return if executable(&p) {
            Ok(p)
        } else if p.exists() {
            Err(format!("{program}: not an executable file"))
        } else {
            Err(format!("{program}: no such file"))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| executable(p))
        .ok_or_else(|| format!("{program}: command not found in PATH"))
}

/// Parses `-x NAME` (forward from our environment) or `-x NAME=VALUE`.
pub(crate) fn parse_export(x: &str) -> Result<(String, String), String> {
    let (name, value) = match x.split_once('=') {
        Some((n, v)) => (n.to_string(), v.to_string()),
        None => {
            let v = std::env::var(x)
                .map_err(|_| format!("-x {x}: no such variable in the environment"))?;
            (x.to_string(), v)
        }
    };
    let valid = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(format!("-x {x}: {name:?} is not a valid variable name"));
    }
    Ok((name, value))
}

struct Rank {
    pid: u32,
    child: Option<Child>,
    status: Option<ExitStatus>,
    own_group: bool,
}

fn describe(status: ExitStatus) -> (i32, String) {
    if let Some(sig) = status.signal() {
        (
            128 + sig,
            format!("was killed by signal {sig} ({})", sys::signal_name(sig)),
        )
    } else {
        let code = status.code().unwrap_or(1);
        (code, format!("exited with code {code}"))
    }
}

/// Runs the job to completion and returns the launcher's exit code.
pub(crate) fn run(spec: &JobSpec) -> i32 {
    match Job::start(spec) {
        Ok(mut job) => job.supervise(),
        Err(e) => {
            eprintln!("courier: {e}");
            1
        }
    }
}

struct Job {
    poll: Poll,
    ranks: Vec<Rank>,
    pipes: Vec<Option<(Receiver, LineBuffer)>>,
    service: Service,
    signal_rx: mio::net::UnixStream,
    last_signal: Arc<AtomicUsize>,
    deadline: Option<Instant>,
    exit: Option<i32>,
    kill_at: Option<Instant>,
    all_exited_at: Option<Instant>,
    /// Service events read while reaping, handled with the next batch.
    late_events: Vec<ServiceEvent>,
}

impl Job {
    fn start(spec: &JobSpec) -> Result<Job, String> {
        let poll = Poll::new().map_err(|e| format!("cannot create the event loop: {e}"))?;
        let (signal_rx, signal_tx) =
            mio::net::UnixStream::pair().map_err(|e| format!("signal pipe: {e}"))?;
        let last_signal = Arc::new(AtomicUsize::new(0));
        let signal_tx = std::os::unix::net::UnixStream::from(std::os::fd::OwnedFd::from(signal_tx));
        for sig in [libc::SIGCHLD, libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            let tx = signal_tx
                .try_clone()
                .map_err(|e| format!("signal pipe: {e}"))?;
            signal_hook::low_level::pipe::register(sig, tx)
                .map_err(|e| format!("signal handler: {e}"))?;
            if sig != libc::SIGCHLD {
                signal_hook::flag::register_usize(sig, last_signal.clone(), sig as usize)
                    .map_err(|e| format!("signal handler: {e}"))?;
            }
        }
        let mut signal_rx = signal_rx;
        poll.registry()
            .register(&mut signal_rx, SIGNAL_TOKEN, Interest::READABLE)
            .map_err(|e| format!("event loop: {e}"))?;

        let key = JobKey::generate().map_err(|e| format!("cannot create a job key: {e}"))?;
        let service_base = STDIO_BASE + 2 * spec.np;
        let service = Service::new(
            poll.registry(),
            "127.0.0.1:0".parse().map_err(|_| "bad bind address")?,
            service_base,
            key.clone(),
            spec.np as u32,
        )
        .map_err(|e| format!("cannot start the rendezvous service: {e}"))?;
        let service_addr = service
            .addr()
            .map_err(|e| format!("rendezvous service: {e}"))?;

        let stdin_tty = std::io::stdin().is_terminal();
        let cores = sys::usable_cores();
        let bind = match spec.bind {
            Binding::Core => !cores.is_empty(),
            Binding::Auto => spec.np <= cores.len(),
            Binding::None => false,
        };
        let mut job = Job {
            poll,
            ranks: Vec::with_capacity(spec.np),
            pipes: Vec::with_capacity(2 * spec.np),
            service,
            signal_rx,
            last_signal,
            deadline: spec.timeout.map(|t| Instant::now() + t),
            exit: None,
            kill_at: None,
            all_exited_at: None,
            late_events: Vec::new(),
        };
        for rank in 0..spec.np {
            let mut cmd = Command::new(&spec.program);
            cmd.args(&spec.args)
                .env_remove(ENV_BIND)
                .env(ENV_RANK, rank.to_string())
                .env(ENV_SIZE, spec.np.to_string())
                .env(ENV_LOCAL_RANK, rank.to_string())
                .env(ENV_LOCAL_SIZE, spec.np.to_string())
                .env(ENV_NODE_ID, "0")
                .env(ENV_SERVICE, service_addr.to_string())
                .env(ENV_JOB_KEY, key.to_hex())
                .envs(spec.env.iter().map(|(k, v)| (k, v)))
                .stdin(if rank == 0 {
                    Stdio::inherit()
                } else {
                    Stdio::null()
                })
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let own_group = !(rank == 0 && stdin_tty);
            if own_group {
                cmd.process_group(0);
            }
            sys::prepare_child(&mut cmd, bind.then(|| cores[rank % cores.len()]));
            let mut child = match cmd.spawn() {
                Ok(c) => c,
                Err(e) => {
                    let msg = format!("cannot start rank {rank} ({}): {e}", spec.program.display());
                    job.exit = Some(127);
                    job.terminate(libc::SIGKILL);
                    job.supervise();
                    return Err(msg);
                }
            };
            let pid = child.id();
            for (i, stream) in [Stream::Out, Stream::Err].into_iter().enumerate() {
                let rx = match stream {
                    Stream::Out => child.stdout.take().map(Receiver::from),
                    Stream::Err => child.stderr.take().map(Receiver::from),
                };
                let token = Token(STDIO_BASE + 2 * rank + i);
                let entry = rx.and_then(|mut rx| {
                    rx.set_nonblocking(true).ok()?;
                    job.poll
                        .registry()
                        .register(&mut rx, token, Interest::READABLE)
                        .ok()?;
                    Some((rx, LineBuffer::new(rank, stream, spec.tag_output)))
                });
                job.pipes.push(entry);
            }
            job.ranks.push(Rank {
                pid,
                child: Some(child),
                status: None,
                own_group,
            });
        }
        Ok(job)
    }

    fn live(&self) -> usize {
        self.ranks.iter().filter(|r| r.child.is_some()).count()
    }

    /// Sends `sig` to every rank still running.
    fn terminate(&mut self, sig: i32) {
        for r in &self.ranks {
            if r.child.is_some() {
                sys::kill(r.pid, r.own_group, sig);
            }
        }
        if sig != libc::SIGKILL && self.kill_at.is_none() {
            self.kill_at = Some(Instant::now() + sys::kill_grace());
        }
    }

    /// Ends the job with `code` (first cause wins) and stops the other ranks.
    fn fail(&mut self, code: i32) {
        if self.exit.is_none() {
            self.exit = Some(code);
            if self.live() > 0 {
                self.terminate(libc::SIGTERM);
            }
        }
    }

    /// Rank `rank` exited with code 0 without ever initializing while other
    /// ranks did: they would wait for it forever (Open MPI reports the same).
    fn clean_exit_without_init(&mut self, rank: usize) {
        let pid = self.ranks[rank].pid;
        let others = self.live();
        eprintln!(
            "courier: rank {rank} (pid {pid}) exited with code 0 without initializing while \
             other ranks did; terminating the {others} other rank{}",
            if others == 1 { "" } else { "s" }
        );
        self.fail(1);
    }

    fn reap(&mut self) {
        for rank in 0..self.ranks.len() {
            let r = &mut self.ranks[rank];
            let Some(child) = r.child.as_mut() else {
                continue;
            };
            match child.try_wait() {
                Ok(Some(status)) => {
                    r.child = None;
                    r.status = Some(status);
                    let pid = r.pid;
                    if status.success() && self.exit.is_none() {
                        // A rank that wrote FINALIZE and exited: read it first.
                        let mut events = Vec::new();
                        self.service.drain(self.poll.registry(), &mut events);
                        self.late_events.extend(events);
                        let r32 = rank as u32;
                        if !self.service.joined(r32) && self.service.anyone_joined() {
                            self.clean_exit_without_init(rank);
                        } else if self.service.unfinalized(r32) {
                            let others = self.live();
                            eprintln!(
                                "courier: rank {rank} (pid {pid}) exited with code 0 without finalizing \
                                 (it returned or called exit() while its Universe was alive); \
                                 terminating the {others} other rank{}",
                                if others == 1 { "" } else { "s" }
                            );
                            self.fail(1);
                        }
                    }
                    if !status.success() && self.exit.is_none() {
                        let (code, what) = describe(status);
                        let others = self.live();
                        eprintln!(
                            "courier: rank {rank} (pid {pid}) {what}; terminating the {others} other rank{}",
                            if others == 1 { "" } else { "s" }
                        );
                        self.fail(code);
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    eprintln!("courier: cannot wait for rank {rank}: {e}");
                    r.child = None;
                }
            }
        }
        if self.live() == 0 && self.all_exited_at.is_none() {
            self.all_exited_at = Some(Instant::now());
        }
    }

    fn read_pipe(&mut self, i: usize) {
        let Some(Some((rx, lines))) = self.pipes.get_mut(i) else {
            return;
        };
        let mut buf = [0u8; 64 * 1024];
        loop {
            match rx.read(&mut buf) {
                Ok(0) => {
                    lines.finish();
                    let _ = self.poll.registry().deregister(rx);
                    self.pipes[i] = None;
                    return;
                }
                Ok(n) => lines.push(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => {
                    lines.finish();
                    self.pipes[i] = None;
                    return;
                }
            }
        }
    }

    fn handle_signals(&mut self) {
        let mut buf = [0u8; 64];
        while matches!(self.signal_rx.read(&mut buf), Ok(n) if n > 0) {}
        let sig = self.last_signal.swap(0, Ordering::SeqCst) as i32;
        if sig != 0 {
            if self.exit.is_some() {
                // A second interrupt: stop waiting for the grace period.
                self.terminate(libc::SIGKILL);
            } else {
                eprintln!(
                    "courier: received {}; forwarding it to {} rank{}",
                    sys::signal_name(sig),
                    self.live(),
                    if self.live() == 1 { "" } else { "s" }
                );
                self.exit = Some(128 + sig);
                self.terminate(sig);
            }
        }
        self.reap();
    }

    fn supervise(&mut self) -> i32 {
        let mut events = Events::with_capacity(256);
        let mut service_events = Vec::new();
        let handshake_limit = Duration::from_millis(
            std::env::var("COURIER_HANDSHAKE_TIMEOUT_MS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(10_000),
        );
        loop {
            self.reap();
            self.service.sweep(self.poll.registry(), handshake_limit);
            let pipes_open = self.pipes.iter().any(Option::is_some);
            if self.live() == 0 {
                let drained_long_enough = self
                    .all_exited_at
                    .is_some_and(|t| t.elapsed() > Duration::from_millis(500));
                if !pipes_open || drained_long_enough {
                    break;
                }
            }
            let now = Instant::now();
            if let Some(d) = self.deadline {
                if now >= d && self.exit.is_none() {
                    eprintln!(
                        "courier: the job exceeded its --timeout; terminating {} rank{}",
                        self.live(),
                        if self.live() == 1 { "" } else { "s" }
                    );
                    self.fail(EXIT_TIMEOUT);
                    self.deadline = None;
                }
            }
            if let Some(k) = self.kill_at {
                if now >= k {
                    self.kill_at = None;
                    self.terminate(libc::SIGKILL);
                }
            }
            let mut timeout = Duration::from_millis(200);
            for t in [self.deadline, self.kill_at].into_iter().flatten() {
                timeout = timeout.min(t.saturating_duration_since(now));
            }
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    eprintln!("courier: event loop failed: {e}");
                    self.fail(1);
                    self.terminate(libc::SIGKILL);
                }
                continue;
            }
            for ev in events.iter() {
                let t = ev.token();
                if t == SIGNAL_TOKEN {
                    self.handle_signals();
                } else if self.service.owns(t) {
                    self.service
                        .handle(self.poll.registry(), t, &mut service_events);
                } else if t.0 >= STDIO_BASE && t.0 < STDIO_BASE + self.pipes.len() {
                    self.read_pipe(t.0 - STDIO_BASE);
                }
            }
            service_events.append(&mut self.late_events);
            for ev in service_events.drain(..) {
                match ev {
                    ServiceEvent::Joined { .. } => {
                        // Ranks that already exited cleanly without
                        // initializing will never join: the job cannot work.
                        let quitters: Vec<usize> = (0..self.ranks.len())
                            .filter(|&r| {
                                self.ranks[r].status.is_some_and(|s| s.success())
                                    && !self.service.joined(r as u32)
                            })
                            .collect();
                        if let (Some(&r), None) = (quitters.first(), self.exit) {
                            self.clean_exit_without_init(r);
                        }
                    }
                    ServiceEvent::Abort { rank, code } => {
                        if self.exit.is_none() {
                            eprintln!(
                                "courier: rank {rank} called abort({code}); terminating the job"
                            );
                            self.service.broadcast_abort(code);
                            self.fail(code);
                        }
                    }
                }
            }
        }
        self.exit.unwrap_or(0)
    }
}
