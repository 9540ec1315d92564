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
fn route_to(host: &str) -> Result<std::net::IpAddr, String> {
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

struct Rank {
    pid: u32,
    child: Option<Child>,
    status: Option<ExitStatus>,
    own_group: bool,
    /// Index in `Job::proxies` for a rank on a remote host.
    proxy: Option<usize>,
}

/// The proxy that runs the ranks of one remote host (through the agent).
struct Proxy {
    host: String,
    child: Option<Child>,
    stdin: Option<std::process::ChildStdin>,
    ranks: Vec<usize>,
}

/// Where the bytes of a watched pipe go.
enum Sink {
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

struct Job {
    poll: Poll,
    ranks: Vec<Rank>,
    proxies: Vec<Proxy>,
    pipes: Vec<Option<(Receiver, Sink)>>,
    tag_output: bool,
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
        let local_host: Vec<bool> = spec
            .hosts
            .iter()
            .map(|h| crate::hosts::is_local(&h.name))
            .collect();
        let proxy_hosts: Vec<usize> = (0..spec.hosts.len())
            .filter(|&h| !local_host[h] && spec.placement.contains(&h))
            .collect();
        // With remote hosts, everything listens on the address that reaches them.
        let bind_ip: std::net::IpAddr = match proxy_hosts.first() {
            Some(&h) => route_to(&spec.hosts[h].name)?,
            None => std::net::Ipv4Addr::LOCALHOST.into(),
        };
        let service_base = STDIO_BASE + 2 * spec.np + 2 * proxy_hosts.len();
        let service = Service::new(
            poll.registry(),
            std::net::SocketAddr::new(bind_ip, 0),
            service_base,
            key.clone(),
            spec.np as u32,
        )
        .map_err(|e| format!("cannot start the rendezvous service: {e}"))?;
        let service_addr = service
            .addr()
            .map_err(|e| format!("rendezvous service: {e}"))?;

        // Position of each rank among the ranks of its host.
        let mut local_rank = vec![0usize; spec.np];
        let mut local_size = vec![0usize; spec.hosts.len()];
        for (r, &h) in spec.placement.iter().enumerate() {
            local_rank[r] = local_size[h];
            local_size[h] += 1;
        }
        let stdin_tty = std::io::stdin().is_terminal();
        let cores = sys::usable_cores();
        let on_this_machine = spec.placement.iter().filter(|&&h| local_host[h]).count();
        let bind = match spec.bind {
            Binding::Core => !cores.is_empty(),
            Binding::Auto => on_this_machine <= cores.len(),
            Binding::None => false,
        };
        let mut job = Job {
            poll,
            ranks: Vec::with_capacity(spec.np),
            proxies: Vec::new(),
            pipes: Vec::with_capacity(2 * spec.np),
            tag_output: spec.tag_output,
            service,
            signal_rx,
            last_signal,
            deadline: spec.timeout.map(|t| Instant::now() + t),
            exit: None,
            kill_at: None,
            all_exited_at: None,
            late_events: Vec::new(),
        };
        let mut machine_slot = 0;
        for (rank, &host) in spec.placement.iter().enumerate() {
            if !local_host[host] {
                let proxy = proxy_hosts.iter().position(|&h| h == host);
                job.ranks.push(Rank {
                    pid: 0,
                    child: None,
                    status: None,
                    own_group: false,
                    proxy,
                });
                job.pipes.push(None);
                job.pipes.push(None);
                continue;
            }
            let mut cmd = Command::new(&spec.program);
            cmd.args(&spec.args)
                .env_remove(ENV_BIND)
                .env(ENV_RANK, rank.to_string())
                .env(ENV_SIZE, spec.np.to_string())
                .env(ENV_LOCAL_RANK, local_rank[rank].to_string())
                .env(ENV_LOCAL_SIZE, local_size[host].to_string())
                .env(ENV_NODE_ID, host.to_string())
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
            if !proxy_hosts.is_empty() {
                cmd.env(ENV_BIND, bind_ip.to_string());
            }
            let own_group = !(rank == 0 && stdin_tty);
            if own_group {
                cmd.process_group(0);
            }
            sys::prepare_child(&mut cmd, bind.then(|| cores[machine_slot % cores.len()]));
            machine_slot += 1;
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
                let entry = job.watch(
                    rx,
                    token,
                    Sink::Rank(LineBuffer::new(rank, stream, spec.tag_output)),
                );
                job.pipes.push(entry);
            }
            job.ranks.push(Rank {
                pid,
                child: Some(child),
                status: None,
                own_group,
                proxy: None,
            });
        }
        // One proxy per remote host, started through the launch agent.
        let courier_exe = std::env::current_exe()
            .map_err(|e| format!("cannot find the courier executable: {e}"))?;
        let program = std::fs::canonicalize(&spec.program).unwrap_or_else(|_| spec.program.clone());
        for (p, &h) in proxy_hosts.iter().enumerate() {
            let host = &spec.hosts[h].name;
            let Some((agent, agent_args)) = spec.agent.split_first() else {
                return Err("empty launch agent".into());
            };
            let mut cmd = Command::new(agent);
            cmd.args(agent_args)
                .arg(host)
                .arg(&courier_exe)
                .arg("proxy")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .process_group(0);
            sys::prepare_child(&mut cmd, None);
            let mut child = match cmd.spawn() {
                Ok(c) => c,
                Err(e) => {
                    job.exit = Some(127);
                    job.terminate(libc::SIGKILL);
                    job.supervise();
                    return Err(format!(
                        "cannot run the launch agent {agent:?} for {host}: {e}"
                    ));
                }
            };
            let ranks: Vec<usize> = (0..spec.np).filter(|&r| spec.placement[r] == h).collect();
            let mut plan = format!("{}\n", crate::proxy::HELLO);
            let mut env: Vec<(String, String)> = vec![
                (ENV_SIZE.into(), spec.np.to_string()),
                (ENV_NODE_ID.into(), h.to_string()),
                (ENV_SERVICE.into(), service_addr.to_string()),
                (ENV_JOB_KEY.into(), key.to_hex()),
            ];
            env.extend(spec.env.iter().cloned());
            for (k, v) in &env {
                plan.push_str(&format!("env {k} {}\n", crate::proxy::hex(v.as_bytes())));
            }
            for &r in &ranks {
                plan.push_str(&format!("rank {r} {}\n", local_rank[r]));
            }
            plan.push_str(&format!(
                "program {}\n",
                crate::proxy::hex(program.to_string_lossy().as_bytes())
            ));
            for a in &spec.args {
                plan.push_str(&format!("arg {}\n", crate::proxy::hex(a.as_bytes())));
            }
            plan.push_str("start\n");
            let mut stdin = child.stdin.take();
            if let Some(w) = stdin.as_mut() {
                use std::io::Write;
                let _ = w.write_all(plan.as_bytes());
                let _ = w.flush();
            }
            for (i, stream) in [Stream::Out, Stream::Err].into_iter().enumerate() {
                let rx = match stream {
                    Stream::Out => child.stdout.take().map(Receiver::from),
                    Stream::Err => child.stderr.take().map(Receiver::from),
                };
                let token = Token(STDIO_BASE + 2 * spec.np + 2 * p + i);
                let entry = job.watch(
                    rx,
                    token,
                    Sink::Proxy {
                        proxy: p,
                        stream,
                        pending: Vec::new(),
                    },
                );
                job.pipes.push(entry);
            }
            job.proxies.push(Proxy {
                host: host.clone(),
                child: Some(child),
                stdin,
                ranks,
            });
        }
        Ok(job)
    }

    /// Registers a pipe with the event loop.
    fn watch(&self, rx: Option<Receiver>, token: Token, sink: Sink) -> Option<(Receiver, Sink)> {
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
    fn terminate(&mut self, sig: i32) {
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
