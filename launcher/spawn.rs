//! Starting a job: signals into the event loop, where every rank goes, the
//! rendezvous service, the local ranks, and one proxy per remote host.

use crate::rendezvous::Service;
use crate::run::{route_to, Binding, Job, JobSpec, Proxy, Rank, Sink, SIGNAL_TOKEN, STDIO_BASE};
use crate::stdio::{LineBuffer, Stream};
use crate::sys;
use courier::bootstrap::auth::JobKey;
use courier::bootstrap::store::CardStore;
use courier::bootstrap::{
    ENV_BIND, ENV_CARD_STORE, ENV_JOB_KEY, ENV_LOCAL_RANK, ENV_LOCAL_SIZE, ENV_NODE_CORES,
    ENV_NODE_ID, ENV_RANK, ENV_SERVICE, ENV_SIZE,
};
use mio::unix::pipe::Receiver;
use mio::{Interest, Poll, Token};
use std::io::IsTerminal;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Instant;

/// Where the ranks of a job go, decided before anything starts.
struct Layout {
    /// Whether each host is this machine.
    local_host: Vec<bool>,
    /// Remote hosts with ranks, in proxy order.
    proxy_hosts: Vec<usize>,
    /// Address the service and the ranks listen on (reachable from the other hosts).
    bind_ip: IpAddr,
    /// Position of each rank among the ranks of its host, and ranks per host.
    local_rank: Vec<usize>,
    local_size: Vec<usize>,
    /// Cores to bind local ranks to (empty: no binding).
    cores: Vec<usize>,
    /// CPUs the launcher may use here (its mask), told to the local ranks.
    usable_cores: usize,
    key: JobKey,
    service_addr: SocketAddr,
}

impl Layout {
    fn new(spec: &JobSpec) -> Result<Self, String> {
        let local_host: Vec<bool> = spec
            .hosts
            .iter()
            .map(|h| crate::hosts::is_local(&h.name))
            .collect();
        let proxy_hosts: Vec<usize> = (0..spec.hosts.len())
            .filter(|&h| !local_host[h] && spec.placement.contains(&h))
            .collect();
        // With remote hosts, everything listens on the address that reaches them.
        let bind_ip: IpAddr = match proxy_hosts.first() {
            Some(&h) => route_to(&spec.hosts[h].name)?,
            None => std::net::Ipv4Addr::LOCALHOST.into(),
        };
        let mut local_rank = vec![0usize; spec.np];
        let mut local_size = vec![0usize; spec.hosts.len()];
        for (r, &h) in spec.placement.iter().enumerate() {
            local_rank[r] = local_size[h];
            local_size[h] += 1;
        }
        let usable = sys::usable_cores();
        let on_this_machine = spec.placement.iter().filter(|&&h| local_host[h]).count();
        let bind = match spec.bind {
            Binding::Core => !usable.is_empty(),
            Binding::Auto => on_this_machine <= usable.len(),
            Binding::None => false,
        };
        let key = JobKey::generate().map_err(|e| format!("cannot create a job key: {e}"))?;
        Ok(Layout {
            local_host,
            proxy_hosts,
            bind_ip,
            local_rank,
            local_size,
            usable_cores: usable.len(),
            cores: if bind { usable } else { Vec::new() },
            key,
            service_addr: SocketAddr::new(bind_ip, 0),
        })
    }
}

/// Signals (SIGCHLD, SIGINT, SIGTERM, SIGHUP) into the event loop through a
/// self-pipe; the last terminating signal is also kept in a flag.
fn install_signals(poll: &Poll) -> Result<(mio::net::UnixStream, Arc<AtomicUsize>), String> {
    let (mut signal_rx, signal_tx) =
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
    poll.registry()
        .register(&mut signal_rx, SIGNAL_TOKEN, Interest::READABLE)
        .map_err(|e| format!("event loop: {e}"))?;
    Ok((signal_rx, last_signal))
}

impl Job {
    /// Starts the job: signals, the rendezvous service, the local ranks,
    /// then one proxy per remote host. If a process cannot be started, the
    /// ones already running are killed and reaped before the error returns.
    pub(crate) fn start(spec: &JobSpec) -> Result<Job, String> {
        let poll = Poll::new().map_err(|e| format!("cannot create the event loop: {e}"))?;
        let (signal_rx, last_signal) = install_signals(&poll)?;
        let mut layout = Layout::new(spec)?;
        let service_base = STDIO_BASE + 2 * spec.np + 2 * layout.proxy_hosts.len();
        // The ranks of this host read every card from one store (none when
        // all ranks run elsewhere, or if memfd is unavailable: then the
        // fence reply carries the cards).
        let store = layout
            .local_host
            .iter()
            .any(|&l| l)
            .then(|| CardStore::create().ok())
            .flatten();
        let service = Service::new(
            poll.registry(),
            layout.service_addr,
            service_base,
            layout.key.clone(),
            spec.np as u32,
            store,
        )
        .map_err(|e| format!("cannot start the rendezvous service: {e}"))?;
        layout.service_addr = service
            .addr()
            .map_err(|e| format!("rendezvous service: {e}"))?;
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
        let started = job.spawn_ranks(spec, &layout).and_then(|()| {
            let proxy_of = job.ranks.iter().map(|r| r.proxy).collect();
            job.service.set_proxies(proxy_of);
            job.spawn_proxies(spec, &layout)
        });
        if let Err(e) = started {
            job.exit = Some(127);
            job.terminate(libc::SIGKILL);
            job.supervise();
            return Err(e);
        }
        Ok(job)
    }

    /// Starts the ranks of this machine; ranks of other hosts get a place
    /// (their proxy reports on them).
    fn spawn_ranks(&mut self, spec: &JobSpec, l: &Layout) -> Result<(), String> {
        let stdin_tty = std::io::stdin().is_terminal();
        let mut machine_slot = 0;
        for (rank, &host) in spec.placement.iter().enumerate() {
            if !l.local_host[host] {
                let proxy = l.proxy_hosts.iter().position(|&h| h == host);
                self.ranks.push(Rank {
                    pid: 0,
                    child: None,
                    status: None,
                    own_group: false,
                    proxy,
                });
                self.pipes.push(None);
                self.pipes.push(None);
                continue;
            }
            let mut cmd = Command::new(&spec.program);
            cmd.args(&spec.args)
                .env_remove(ENV_BIND)
                .env_remove(ENV_CARD_STORE)
                .env(ENV_RANK, rank.to_string())
                .env(ENV_SIZE, spec.np.to_string())
                .env(ENV_LOCAL_RANK, l.local_rank[rank].to_string())
                .env(ENV_LOCAL_SIZE, l.local_size[host].to_string())
                .env(ENV_NODE_ID, host.to_string())
                .env(ENV_NODE_CORES, l.usable_cores.to_string())
                .env(ENV_SERVICE, l.service_addr.to_string())
                .env(ENV_JOB_KEY, l.key.to_hex())
                .envs(spec.env.iter().map(|(k, v)| (k, v)))
                .stdin(if rank == 0 {
                    Stdio::inherit()
                } else {
                    Stdio::null()
                })
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            if !l.proxy_hosts.is_empty() {
                cmd.env(ENV_BIND, l.bind_ip.to_string());
            }
            let own_group = !(rank == 0 && stdin_tty);
            if own_group {
                cmd.process_group(0);
            }
            let store = self.service.store_fd();
            if let Some(fd) = store {
                cmd.env(ENV_CARD_STORE, fd.to_string());
            }
            let core = (!l.cores.is_empty()).then(|| l.cores[machine_slot % l.cores.len()]);
            sys::prepare_child(&mut cmd, core, store);
            machine_slot += 1;
            let mut child = cmd.spawn().map_err(|e| {
                format!("cannot start rank {rank} ({}): {e}", spec.program.display())
            })?;
            let pid = child.id();
            let sink = |stream| Sink::Rank(LineBuffer::new(rank, stream, spec.tag_output));
            self.watch_child(&mut child, STDIO_BASE + 2 * rank, sink);
            self.ranks.push(Rank {
                pid,
                child: Some(child),
                status: None,
                own_group,
                proxy: None,
            });
        }
        Ok(())
    }

    /// Watches a child's stdout and stderr (tokens `base` and `base + 1`).
    fn watch_child(&mut self, child: &mut Child, base: usize, sink: impl Fn(Stream) -> Sink) {
        for (i, stream) in [Stream::Out, Stream::Err].into_iter().enumerate() {
            let rx = match stream {
                Stream::Out => child.stdout.take().map(Receiver::from),
                Stream::Err => child.stderr.take().map(Receiver::from),
            };
            let entry = self.watch(rx, Token(base + i), sink(stream));
            self.pipes.push(entry);
        }
    }

    /// Starts one `courier proxy` per remote host through the launch agent
    /// and sends it its plan.
    fn spawn_proxies(&mut self, spec: &JobSpec, l: &Layout) -> Result<(), String> {
        if l.proxy_hosts.is_empty() {
            return Ok(());
        }
        let courier_exe = std::env::current_exe()
            .map_err(|e| format!("cannot find the courier executable: {e}"))?;
        let Some((agent, agent_args)) = spec.agent.split_first() else {
            return Err("empty launch agent".into());
        };
        for (p, &h) in l.proxy_hosts.iter().enumerate() {
            let host = &spec.hosts[h].name;
            let mut cmd = Command::new(agent);
            cmd.args(agent_args)
                .arg(host)
                .arg(&courier_exe)
                .arg("proxy")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .process_group(0);
            sys::prepare_child(&mut cmd, None, None);
            let mut child = cmd
                .spawn()
                .map_err(|e| format!("cannot run the launch agent {agent:?} for {host}: {e}"))?;
            let ranks: Vec<usize> = (0..spec.np).filter(|&r| spec.placement[r] == h).collect();
            let mut stdin = child.stdin.take();
            if let Some(w) = stdin.as_mut() {
                use std::io::Write;
                let _ = w.write_all(proxy_plan(spec, l, h, &ranks).as_bytes());
                let _ = w.flush();
            }
            let sink = |stream| Sink::Proxy {
                proxy: p,
                stream,
                pending: Vec::new(),
            };
            self.watch_child(&mut child, STDIO_BASE + 2 * spec.np + 2 * p, sink);
            self.proxies.push(Proxy {
                host: host.clone(),
                child: Some(child),
                stdin,
                ranks,
            });
        }
        Ok(())
    }
}

/// What the proxy of host `h` must start (see `proxy.rs` for the format).
fn proxy_plan(spec: &JobSpec, l: &Layout, h: usize, ranks: &[usize]) -> String {
    let program = std::fs::canonicalize(&spec.program).unwrap_or_else(|_| spec.program.clone());
    let mut plan = format!("{}\n", crate::proxy::HELLO);
    let mut env: Vec<(String, String)> = vec![
        (ENV_SIZE.into(), spec.np.to_string()),
        (ENV_NODE_ID.into(), h.to_string()),
        (ENV_SERVICE.into(), l.service_addr.to_string()),
        (ENV_JOB_KEY.into(), l.key.to_hex()),
    ];
    env.extend(spec.env.iter().cloned());
    for (k, v) in &env {
        plan.push_str(&format!("env {k} {}\n", crate::proxy::hex(v.as_bytes())));
    }
    for &r in ranks {
        plan.push_str(&format!("rank {r} {}\n", l.local_rank[r]));
    }
    plan.push_str(&format!(
        "program {}\n",
        crate::proxy::hex(program.to_string_lossy().as_bytes())
    ));
    for a in &spec.args {
        plan.push_str(&format!("arg {}\n", crate::proxy::hex(a.as_bytes())));
    }
    plan.push_str("start\n");
    plan
}
