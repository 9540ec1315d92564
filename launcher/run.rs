//! `courier run`: start N ranks on this host and, through one `courier
//! proxy` per remote host (see `proxy.rs`), on other hosts; serve their
//! wire-up, forward their output and signals, and end the job as a whole.
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
use mio::unix::pipe::Receiver;
use mio::{Events, Interest, Poll, Token};
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Exit code when `--timeout` ends a job (as GNU `timeout` does).
pub(crate) const EXIT_TIMEOUT: i32 = 124;

pub(crate) const SIGNAL_TOKEN: Token = Token(0);
pub(crate) const STDIO_BASE: usize = 2;

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
    /// Hosts of the job (one entry, this machine, without `--host`).
    pub(crate) hosts: Vec<crate::hosts::Host>,
    /// Host index of every rank.
    pub(crate) placement: Vec<usize>,
    /// Command that runs a command on a host: `AGENT... HOST COMMAND...`.
    pub(crate) agent: Vec<String>,
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

/// The address of this machine on the route to `host` (where the service
/// and the local ranks listen when other hosts take part).
pub(crate) fn route_to(host: &str) -> Result<std::net::IpAddr, String> {
    use std::net::ToSocketAddrs;
    if let Ok(iface) = std::env::var("COURIER_IFACE") {
        return courier::bootstrap::iface_address(&iface);
    }
    let target = (host, 9)
        .to_socket_addrs()
        .map_err(|e| format!("unknown host {host:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("unknown host {host:?}"))?;
    courier::bootstrap::route_address(target)
        .map_err(|e| format!("no route to {host} ({target}): {e}"))
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

pub(crate) struct Rank {
    pub(crate) pid: u32,
    pub(crate) child: Option<Child>,
    pub(crate) status: Option<ExitStatus>,
    pub(crate) own_group: bool,
    /// Index in `Job::proxies` for a rank on a remote host.
    pub(crate) proxy: Option<usize>,
}

/// The proxy that runs the ranks of one remote host (through the agent).
pub(crate) struct Proxy {
    pub(crate) host: String,
    pub(crate) child: Option<Child>,
    pub(crate) stdin: Option<std::process::ChildStdin>,
    pub(crate) ranks: Vec<usize>,
}

/// Where the bytes of a watched pipe go.
pub(crate) enum Sink {
    /// A local rank's stdout or stderr.
    Rank(LineBuffer),
    /// A proxy's protocol stream (stdout) or its own diagnostics (stderr).
    Proxy {
        proxy: usize,
        stream: Stream,
        pending: Vec<u8>,
    },
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

pub(crate) struct Job {
    pub(crate) poll: Poll,
    pub(crate) ranks: Vec<Rank>,
    pub(crate) proxies: Vec<Proxy>,
    pub(crate) pipes: Vec<Option<(Receiver, Sink)>>,
    pub(crate) tag_output: bool,
    pub(crate) service: Service,
    pub(crate) signal_rx: mio::net::UnixStream,
    pub(crate) last_signal: Arc<AtomicUsize>,
    pub(crate) deadline: Option<Instant>,
    pub(crate) exit: Option<i32>,
    pub(crate) kill_at: Option<Instant>,
    pub(crate) all_exited_at: Option<Instant>,
    /// Service events read while reaping, handled with the next batch.
    pub(crate) late_events: Vec<ServiceEvent>,
}

impl Job {
    /// Registers a pipe with the event loop.
    pub(crate) fn watch(
        &self,
        rx: Option<Receiver>,
        token: Token,
        sink: Sink,
    ) -> Option<(Receiver, Sink)> {
        let mut rx = rx?;
        rx.set_nonblocking(true).ok()?;
        self.poll
            .registry()
            .register(&mut rx, token, Interest::READABLE)
            .ok()?;
        Some((rx, sink))
    }

    fn live(&self) -> usize {
        self.ranks
            .iter()
            .filter(|r| r.child.is_some() || (r.proxy.is_some() && r.status.is_none()))
            .count()
    }

    /// Sends `sig` to every rank still running.
    pub(crate) fn terminate(&mut self, sig: i32) {
        for r in &self.ranks {
            if r.child.is_some() {
                sys::kill(r.pid, r.own_group, sig);
            }
        }
        for p in &mut self.proxies {
            let Some(child) = p.child.as_ref() else {
                continue;
            };
            if let Some(w) = p.stdin.as_mut() {
                use std::io::Write;
                let _ = w.write_all(format!("signal {sig}\n").as_bytes());
                let _ = w.flush();
            }
            if sig == libc::SIGKILL {
                // The proxy kills its ranks when its link closes.
                p.stdin = None;
                sys::kill(child.id(), true, libc::SIGKILL);
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
                    self.rank_exited(rank, status);
                }
                Ok(None) => {}
                Err(e) => {
                    eprintln!("courier: cannot wait for rank {rank}: {e}");
                    r.child = None;
                }
            }
        }
        for p in 0..self.proxies.len() {
            let Some(child) = self.proxies[p].child.as_mut() else {
                continue;
            };
            let Ok(Some(status)) = child.try_wait() else {
                continue;
            };
            self.proxies[p].child = None;
            // Read what it said last (exit reports) before judging.
            for i in 0..2 {
                self.read_pipe(2 * self.ranks.len() + 2 * p + i);
            }
            let orphans: Vec<usize> = self.proxies[p]
                .ranks
                .iter()
                .copied()
                .filter(|&r| self.ranks[r].status.is_none())
                .collect();
            if orphans.is_empty() {
                continue;
            }
            for &r in &orphans {
                self.ranks[r].status = Some(ExitStatus::from_raw(libc::SIGKILL));
            }
            if self.exit.is_none() {
                let (_, what) = describe(status);
                let others = self.live();
                eprintln!(
                    "courier: lost the proxy on host {} (its agent {what}) while rank{} {} ran there; \
                     terminating the {others} other rank{}",
                    self.proxies[p].host,
                    if orphans.len() == 1 { "" } else { "s" },
                    orphans.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(", "),
                    if others == 1 { "" } else { "s" }
                );
                self.fail(1);
            }
        }
        if self.live() == 0 && self.all_exited_at.is_none() {
            self.all_exited_at = Some(Instant::now());
        }
    }

    /// Judges the end of `rank` (local, or reported by its proxy).
    fn rank_exited(&mut self, rank: usize, status: ExitStatus) {
        self.ranks[rank].status = Some(status);
        let pid = self.ranks[rank].pid;
        let whose = match self.ranks[rank].proxy {
            Some(p) => format!("on {}", self.proxies[p].host),
            None => format!("(pid {pid})"),
        };
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
                    "courier: rank {rank} {whose} exited with code 0 without finalizing \
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
                "courier: rank {rank} {whose} {what}; terminating the {others} other rank{}",
                if others == 1 { "" } else { "s" }
            );
            self.fail(code);
        }
    }

    /// Handles one complete line from proxy `p`'s stdout.
    fn proxy_line(&mut self, p: usize, line: &[u8]) {
        let mut parts = line.splitn(3, |&b| b == b' ');
        let (kind, rank, rest) = (parts.next(), parts.next(), parts.next());
        let rank: Option<usize> = rank
            .and_then(|r| std::str::from_utf8(r).ok())
            .and_then(|r| r.trim().parse().ok())
            .filter(|&r| self.proxies[p].ranks.contains(&r));
        let num = |b: Option<&[u8]>| {
            b.and_then(|b| std::str::from_utf8(b).ok())
                .and_then(|t| t.trim().parse::<i32>().ok())
        };
        if kind == Some(b"s") {
            // `s ok`: the proxy filled its host's card store.
            let ok = line.trim_ascii_end() == b"s ok";
            if !ok {
                eprintln!(
                    "courier: proxy on {}: card store: {}; the fence reply carries the cards",
                    self.proxies[p].host,
                    String::from_utf8_lossy(line.get(2..).unwrap_or_default()).trim_end()
                );
            }
            self.service.proxy_stored(p, ok);
            return;
        }
        match (kind, rank) {
            (Some(b"o"), Some(r)) => {
                crate::stdio::emit(r, Stream::Out, self.tag_output, rest.unwrap_or(b"\n"))
            }
            (Some(b"e"), Some(r)) => {
                crate::stdio::emit(r, Stream::Err, self.tag_output, rest.unwrap_or(b"\n"))
            }
            (Some(b"x"), Some(r)) if self.ranks[r].status.is_none() => {
                let code = num(rest).unwrap_or(1);
                self.rank_exited(r, ExitStatus::from_raw((code & 0xff) << 8));
            }
            (Some(b"k"), Some(r)) if self.ranks[r].status.is_none() => {
                let sig = num(rest).unwrap_or(libc::SIGKILL);
                self.rank_exited(r, ExitStatus::from_raw(sig & 0x7f));
            }
            _ => eprintln!(
                "courier: proxy on {}: {}",
                self.proxies[p].host,
                String::from_utf8_lossy(line).trim_end()
            ),
        }
    }

    fn read_pipe(&mut self, i: usize) {
        let mut proxy_lines: Vec<(usize, Stream, Vec<u8>)> = Vec::new();
        {
            let Some(Some((rx, sink))) = self.pipes.get_mut(i) else {
                return;
            };
            let mut buf = [0u8; 64 * 1024];
            let mut closed = false;
            loop {
                match rx.read(&mut buf) {
                    Ok(0) => {
                        closed = true;
                        break;
                    }
                    Ok(n) => match sink {
                        Sink::Rank(lines) => lines.push(&buf[..n]),
                        Sink::Proxy {
                            proxy,
                            stream,
                            pending,
                        } => {
                            pending.extend_from_slice(&buf[..n]);
                            while let Some(nl) = pending.iter().position(|&b| b == b'\n') {
                                let line: Vec<u8> = pending.drain(..=nl).collect();
                                proxy_lines.push((*proxy, *stream, line));
                            }
                        }
                    },
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        closed = true;
                        break;
                    }
                }
            }
            if closed {
                if let Sink::Rank(lines) = sink {
                    lines.finish();
                }
                let _ = self.poll.registry().deregister(rx);
                self.pipes[i] = None;
            }
        }
        for (p, stream, line) in proxy_lines {
            match stream {
                Stream::Out => self.proxy_line(p, &line),
                Stream::Err => eprint!(
                    "courier: proxy on {}: {}",
                    self.proxies[p].host,
                    String::from_utf8_lossy(&line)
                ),
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

    pub(crate) fn supervise(&mut self) -> i32 {
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
            let timeout = self.check_deadlines();
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
                self.handle_service_event(ev);
            }
        }
        self.exit.unwrap_or(0)
    }

    /// Ends the job at its `--timeout`, and SIGKILLs what SIGTERM left
    /// after the grace period. Returns how long the loop may sleep.
    fn check_deadlines(&mut self) -> Duration {
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
        timeout
    }

    fn handle_service_event(&mut self, ev: ServiceEvent) {
        match ev {
            ServiceEvent::Joined { .. } => {
                // Ranks that already exited cleanly without initializing
                // will never join: the job cannot work.
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
            ServiceEvent::StoreCards { proxy, table } => {
                let Some(w) = self.proxies.get_mut(proxy).and_then(|p| p.stdin.as_mut()) else {
                    return;
                };
                use std::io::Write;
                let line = format!("cards {}\n", courier::bootstrap::hex(&table));
                if w.write_all(line.as_bytes())
                    .and_then(|()| w.flush())
                    .is_err()
                {
                    // The proxy is gone; its ranks' end is reported as theirs.
                    self.service.proxy_stored(proxy, false);
                }
            }
            ServiceEvent::Abort { rank, code } => {
                if self.exit.is_none() {
                    eprintln!("courier: rank {rank} called abort({code}); terminating the job");
                    self.service.broadcast_abort(code);
                    self.fail(code);
                }
            }
        }
    }
}
