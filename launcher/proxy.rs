//! `courier proxy`: one per remote host, started by the launcher through the
//! launch agent (`ssh HOST /path/to/courier proxy`), like Hydra's
//! `hydra_pmi_proxy` or Open MPI's `orted`. It starts that host's ranks,
//! forwards their output line by line and their exit status, forwards
//! signals, and kills its ranks when its link to the launcher breaks.
//!
//! The link is the agent's stdin/stdout. Launcher → proxy, one per line
//! (values hex-encoded, so any bytes pass): `courier-proxy 1`, then
//! `env NAME HEX`, `rank GLOBAL LOCAL`, `program HEX`, `arg HEX`, `start`;
//! later `signal N`, and `cards HEX` (the job's card table, once, when the
//! fence completes). End of input means the launcher is gone. Proxy →
//! launcher: `o RANK LINE` and `e RANK LINE` (a rank's stdout/stderr line),
//! `x RANK CODE` (exited), `k RANK SIGNAL` (killed), `s ok` or
//! `s MESSAGE` (the host's card store is filled, or why not), `! MESSAGE`
//! (proxy error).
//!
//! The proxy holds its host's card store (`courier::bootstrap::store`),
//! which its ranks inherit: the host receives the card table once, on the
//! launcher's link, instead of once per rank.
//!
//! Why threads here, when `courier run` uses one mio loop: the proxy is a
//! relay with nothing else to do, for the ranks of one host. A blocking
//! reader thread per pipe (and one for the launcher's link) keeps each
//! stream's lines in order for free, needs no self-pipe for signals (they
//! come as `signal N` lines), and costs two threads per local rank, which
//! are asleep in `read` almost all the time. The launcher, in contrast,
//! serves the rendezvous service and every local rank's pipes of the job at
//! once and must stay responsive with thousands of them: an event loop.

use crate::sys;
use courier::bootstrap::store::CardStore;
use courier::bootstrap::{
    ENV_BIND, ENV_CARD_STORE, ENV_LOCAL_RANK, ENV_LOCAL_SIZE, ENV_NODE_CORES, ENV_RANK, ENV_SERVICE,
};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Protocol header line.
pub(crate) const HELLO: &str = "courier-proxy 1";

pub(crate) use courier::bootstrap::{hex, unhex};

#[derive(Default)]
struct Plan {
    env: Vec<(String, String)>,
    ranks: Vec<(usize, usize)>,
    program: Option<String>,
    args: Vec<String>,
}

enum Msg {
    Line(usize, u8, Vec<u8>),
    Signal(i32),
    Cards(Option<Vec<u8>>),
    LauncherGone,
}

fn text(h: &str) -> Result<String, String> {
    unhex(h)
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| format!("bad value {h:?}"))
}

fn read_plan(input: &mut impl BufRead) -> Result<Plan, String> {
    let mut line = String::new();
    input.read_line(&mut line).map_err(|e| e.to_string())?;
    if line.trim_end() != HELLO {
        return Err(format!("not a courier launcher: {:?}", line.trim_end()));
    }
    let mut plan = Plan::default();
    loop {
        line.clear();
        if input.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
            return Err("the launcher went away before `start`".into());
        }
        let mut w = line.split_whitespace();
        match (w.next(), w.next(), w.next()) {
            (Some("env"), Some(name), Some(v)) => plan.env.push((name.to_string(), text(v)?)),
            (Some("env"), Some(name), None) => plan.env.push((name.to_string(), String::new())),
            (Some("rank"), Some(g), Some(l)) => plan.ranks.push((
                g.parse().map_err(|_| "bad rank")?,
                l.parse().map_err(|_| "bad local rank")?,
            )),
            (Some("program"), Some(p), None) => plan.program = Some(text(p)?),
            (Some("arg"), Some(a), None) => plan.args.push(text(a)?),
            (Some("arg"), None, None) => plan.args.push(String::new()),
            (Some("start"), None, None) => return Ok(plan),
            _ => return Err(format!("unexpected line {:?}", line.trim_end())),
        }
    }
}

/// Relays one line of a rank's output: `o RANK LINE` or `e RANK LINE`.
fn relay_line(out: &mut impl Write, kind: u8, rank: usize, line: &[u8]) {
    let mut msg = vec![kind, b' '];
    msg.extend_from_slice(rank.to_string().as_bytes());
    msg.push(b' ');
    msg.extend_from_slice(line);
    say(out, &msg);
}

fn say(out: &mut impl Write, line: &[u8]) {
    // The launcher reads whole lines; a broken link is noticed on stdin.
    let _ = out.write_all(line);
    let _ = out.flush();
}

/// Runs the proxy; returns its exit code: read the plan, start the ranks,
/// then forward until they have all exited (or the launcher is gone).
pub(crate) fn main() -> i32 {
    let mut input = BufReader::new(std::io::stdin());
    let mut out = std::io::stdout().lock();
    let plan = match read_plan(&mut input) {
        Ok(p) => p,
        Err(e) => {
            say(&mut out, format!("! {e}\n").as_bytes());
            return 2;
        }
    };
    let (tx, rx) = mpsc::channel::<Msg>();
    // Without a store (memfd unavailable) the ranks get every card in the
    // fence reply.
    let store = CardStore::create().ok();
    let Some(children) = spawn_ranks(&plan, store.as_ref(), &tx, &mut out) else {
        return 2;
    };
    watch_launcher(input, tx.clone());
    drop(tx);
    forward(children, store, &rx, &mut out)
}

/// A rank started by the proxy (`None` once it has exited, or if it could
/// not be started).
type Children = Vec<(usize, Option<Child>)>;

/// Starts the plan's ranks, each with a reader thread per output pipe.
/// `None` (after telling the launcher) when the plan has no program.
fn spawn_ranks(
    plan: &Plan,
    store: Option<&CardStore>,
    tx: &mpsc::Sender<Msg>,
    out: &mut impl Write,
) -> Option<Children> {
    let service = plan
        .env
        .iter()
        .find(|(k, _)| k == ENV_SERVICE)
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    // Ranks listen on this host's address on the route to the launcher.
    let bind = service
        .parse()
        .ok()
        .and_then(|t| courier::bootstrap::route_address(t).ok());
    let Some(program) = plan.program.clone() else {
        say(out, b"! no program\n");
        return None;
    };
    let mut children = Vec::new();
    let mut pipes = Vec::new();
    let local_size = plan.ranks.len();
    // The CPUs this host lets the proxy use, as the launcher tells its own.
    let usable_cores = sys::usable_cores().len();
    for &(rank, local) in &plan.ranks {
        let mut cmd = Command::new(&program);
        cmd.args(&plan.args)
            .envs(plan.env.iter().map(|(k, v)| (k, v)))
            .env(ENV_RANK, rank.to_string())
            .env(ENV_LOCAL_RANK, local.to_string())
            .env(ENV_LOCAL_SIZE, local_size.to_string())
            .env(ENV_NODE_CORES, usable_cores.to_string())
            .env_remove(ENV_CARD_STORE)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        if let Some(ip) = bind {
            cmd.env(ENV_BIND, ip.to_string());
        }
        let store = store.map(CardStore::fd);
        if let Some(fd) = store {
            cmd.env(ENV_CARD_STORE, fd.to_string());
        }
        sys::prepare_child(&mut cmd, None, store);
        match cmd.spawn() {
            Ok(mut child) => {
                pipes.push((rank, child.stdout.take(), child.stderr.take()));
                children.push((rank, Some(child)));
            }
            Err(e) => {
                say(
                    out,
                    format!("! cannot start rank {rank} ({program}): {e}\n").as_bytes(),
                );
                say(out, format!("x {rank} 127\n").as_bytes());
                children.push((rank, None));
            }
        }
    }
    // Relay threads start once every rank has started: a fork copies the
    // parent's memory map, which each thread's stack adds to. With them
    // started along the way, the proxy's forks grew with the rank count
    // (1,024 ranks on 8 simulated hosts: fork 12.6% of a `perf -a`
    // profile of the launch, 3.4% now).
    for (rank, stdout, stderr) in pipes {
        if let Some(p) = stdout {
            relay_pipe(rank, b'o', p, tx.clone(), out);
        }
        if let Some(p) = stderr {
            relay_pipe(rank, b'e', p, tx.clone(), out);
        }
    }
    Some(children)
}

/// A thread that sends each line of a rank's pipe (`kind` `o` or `e`) to
/// the forwarding loop. Its stack is small: it holds one line buffer (on
/// the heap) and blocks in `read`.
fn relay_pipe(
    rank: usize,
    kind: u8,
    pipe: impl Read + Send + 'static,
    tx: mpsc::Sender<Msg>,
    out: &mut impl Write,
) {
    let started = std::thread::Builder::new()
        .stack_size(64 * 1024)
        .spawn(move || {
            let mut r = BufReader::new(pipe);
            let mut line = Vec::new();
            while matches!(r.read_until(b'\n', &mut line), Ok(n) if n > 0) {
                if line.last() != Some(&b'\n') {
                    line.push(b'\n');
                }
                if tx
                    .send(Msg::Line(rank, kind, std::mem::take(&mut line)))
                    .is_err()
                {
                    return;
                }
            }
        });
    if let Err(e) = started {
        say(
            out,
            format!("! cannot relay the output of rank {rank}: {e}\n").as_bytes(),
        );
    }
}

/// A thread that reads the launcher's link: signals to forward, the card
/// table, and its end.
fn watch_launcher(mut input: impl BufRead + Send + 'static, tx: mpsc::Sender<Msg>) {
    std::thread::spawn(move || {
        let mut line = String::new();
        loop {
            line.clear();
            match input.read_line(&mut line) {
                Ok(0) | Err(_) => {
                    let _ = tx.send(Msg::LauncherGone);
                    return;
                }
                Ok(_) => {
                    if let Some(n) = line.trim().strip_prefix("signal ") {
                        if let Ok(sig) = n.parse() {
                            let _ = tx.send(Msg::Signal(sig));
                        }
                    } else if let Some(h) = line.trim().strip_prefix("cards ") {
                        let _ = tx.send(Msg::Cards(unhex(h)));
                    }
                }
            }
        }
    });
}

/// Fills this host's card store with the launcher's `table` and says
/// whether it could (`s ok`, else `s` and why).
fn store_cards(store: Option<&mut CardStore>, table: Option<Vec<u8>>, out: &mut impl Write) {
    let r = match (store, table) {
        (Some(s), Some(t)) => s.fill(&t).map(drop).map_err(|e| e.to_string()),
        (None, _) => Err("this host has no card store".to_string()),
        (_, None) => Err("the card table is not hex".to_string()),
    };
    let reply = match r {
        Ok(()) => "s ok\n".to_string(),
        Err(e) => format!("s {e}\n"),
    };
    say(out, reply.as_bytes());
}

fn signal_all(children: &Children, sig: i32) {
    for c in children.iter().filter_map(|(_, c)| c.as_ref()) {
        sys::kill(c.id(), true, sig);
    }
}

/// Forwards output, signals and exits until every rank has exited (0), or
/// kills them all when the launcher is gone (1).
fn forward(
    mut children: Children,
    mut store: Option<CardStore>,
    rx: &mpsc::Receiver<Msg>,
    out: &mut impl Write,
) -> i32 {
    let mut pending_signals: Vec<i32> = Vec::new();
    let mut gone = false;
    loop {
        for sig in pending_signals.drain(..) {
            signal_all(&children, sig);
        }
        if gone {
            signal_all(&children, libc::SIGKILL);
            for c in children.iter_mut().filter_map(|(_, c)| c.as_mut()) {
                let _ = c.wait();
            }
            return 1;
        }
        match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(Msg::Line(rank, kind, line)) => relay_line(out, kind, rank, &line),
            Ok(Msg::Signal(sig)) => signal_all(&children, sig),
            Ok(Msg::Cards(table)) => store_cards(store.as_mut(), table, out),
            Ok(Msg::LauncherGone) => gone = true,
            Err(_) => {}
        }
        let mut running = 0;
        for (rank, slot) in children.iter_mut() {
            let Some(c) = slot else { continue };
            match c.try_wait() {
                Ok(Some(status)) => {
                    // Output still in the pipes goes first.
                    while let Ok(m) = rx.recv_timeout(Duration::from_millis(5)) {
                        match m {
                            Msg::Line(r, kind, line) => relay_line(out, kind, r, &line),
                            Msg::Signal(sig) => pending_signals.push(sig),
                            Msg::Cards(t) => store_cards(store.as_mut(), t, out),
                            Msg::LauncherGone => gone = true,
                        }
                    }
                    let report = match status.signal() {
                        Some(sig) => format!("k {rank} {sig}\n"),
                        None => format!("x {rank} {}\n", status.code().unwrap_or(1)),
                    };
                    say(out, report.as_bytes());
                    *slot = None;
                }
                Ok(None) => running += 1,
                Err(_) => *slot = None,
            }
        }
        if running == 0 {
            return 0;
        }
    }
}
