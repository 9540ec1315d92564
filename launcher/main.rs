//! `courier`: the job launcher and benchmark driver of the Courier runtime.
//!
//! * `courier run -n N [options] PROGRAM [ARGS...]` starts a job.
//! * `courier bench [latency|bw|bibw|startup] [-n N] ...` runs OSU-style
//!   benchmarks (launching itself as a job, or running as a rank when started
//!   inside one).

#![deny(unsafe_code)]

mod bench;
mod hosts;
mod plot;
mod proxy;
mod rendezvous;
mod results;
mod run;
mod spawn;
mod stdio;
#[allow(unsafe_code)]
mod sys;

use clap::{Args, Parser, Subcommand};
use std::time::Duration;

/// Exit code for command-line errors (as clap uses).
const EXIT_USAGE: i32 = 2;

#[derive(Parser, Debug)]
#[command(name = "courier", version, about = "Courier: MPI-style jobs in pure Rust", long_about = None)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Start N ranks of a program as one job.
    Run(RunArgs),
    /// Run OSU-style benchmarks (latency, bandwidth, bi-bandwidth, start-up).
    Bench(bench::BenchArgs),
    /// Plot benchmark results (`courier bench --format json`, or OSU text
    /// tables of other libraries) against message size, as SVG.
    Report(plot::ReportArgs),
    /// Internal: the per-host helper the launcher starts on remote hosts
    /// (reads its instructions on stdin).
    #[command(hide = true)]
    Proxy,
}

/// Options of `courier run`.
#[derive(Args, Debug)]
#[command(
    after_help = "Each rank gets COURIER_RANK, COURIER_SIZE, COURIER_LOCAL_RANK, COURIER_LOCAL_SIZE.\n\
    Exit status: 0 when every rank exits 0; otherwise the first failing rank's code\n\
    (128+N for signal N), 124 after --timeout, 130/143 when interrupted."
)]
struct RunArgs {
    /// Number of ranks to start (also -np).
    #[arg(short = 'n', long = "np", value_name = "N")]
    np: usize,
    /// Set VAR=VALUE in every rank, or forward VAR from this environment (repeatable).
    #[arg(short = 'x', value_name = "VAR[=VALUE]")]
    export: Vec<String>,
    /// Prefix every output line with its rank in brackets, then a space.
    #[arg(long)]
    tag_output: bool,
    /// End the job (non-zero exit) if it runs longer than SECS seconds.
    #[arg(long, value_name = "SECS")]
    timeout: Option<f64>,
    /// Transport between ranks: auto (shared memory within a host, TCP across), shm, or tcp.
    #[arg(long, value_enum, value_name = "KIND")]
    transport: Option<run::TransportArg>,
    /// Bind ranks to cores: auto (when they fit), core, or none.
    #[arg(long, value_enum, default_value_t = run::Binding::Auto, value_name = "POLICY")]
    bind_to: run::Binding,
    /// Allow more ranks than host slots (and than cores).
    #[arg(long)]
    oversubscribe: bool,
    /// Hosts to run on: h1,h2 or h1:SLOTS,h2:SLOTS (default: this machine only).
    #[arg(long = "host", value_name = "HOSTS", conflicts_with = "hostfile")]
    host: Option<String>,
    /// File listing hosts, one per line: "NAME [slots=N]", # comments.
    #[arg(long, value_name = "FILE")]
    hostfile: Option<String>,
    /// Spread ranks by filling each host's slots (slot) or round robin over hosts (node).
    #[arg(long, value_enum, default_value_t = hosts::MapBy::Slot, value_name = "POLICY")]
    map_by: hosts::MapBy,
    /// Ranks per host (replaces the hosts' slot counts).
    #[arg(long, value_name = "N")]
    ppn: Option<usize>,
    /// Command that runs a command on another host, given the host name
    /// first (default: $COURIER_LAUNCH_AGENT, else "ssh").
    #[arg(long, value_name = "COMMAND")]
    launch_agent: Option<String>,
    /// Network interface whose address the job listens on across hosts
    /// (default: the one on the route to the other hosts; also $COURIER_IFACE).
    #[arg(long, value_name = "NAME")]
    iface: Option<String>,
    /// The program and its arguments.
    #[arg(
        required = true,
        trailing_var_arg = true,
        value_name = "PROGRAM [ARGS]..."
    )]
    command: Vec<String>,
}

fn usage_error(msg: &str) -> ! {
    eprintln!("courier: error: {msg}");
    std::process::exit(EXIT_USAGE)
}

fn parse_timeout(t: Option<f64>) -> Option<Duration> {
    t.map(|secs| {
        if !(secs.is_finite() && secs > 0.0) {
            usage_error(&format!(
                "--timeout {secs}: must be a positive number of seconds"
            ));
        }
        Duration::from_secs_f64(secs)
    })
}

/// Builds the job described by `courier run` arguments, or exits with a usage error.
fn job_spec(a: &RunArgs) -> run::JobSpec {
    if a.np == 0 {
        usage_error("-n must be at least 1");
    }
    let Some((program, args)) = a.command.split_first() else {
        usage_error("no program given");
    };
    let program = run::resolve_program(program).unwrap_or_else(|e| usage_error(&e));
    let mut env: Vec<(String, String)> = a
        .export
        .iter()
        .map(|x| run::parse_export(x).unwrap_or_else(|e| usage_error(&e)))
        .collect();
    if let Some(t) = a.transport {
        env.push(("COURIER_TRANSPORT".into(), t.as_env().into()));
    }
    // Without --host/--hostfile, a Slurm allocation provides the hosts.
    let slurm = match (&a.host, &a.hostfile) {
        (None, None) => hosts::slurm_allocation(),
        _ => None,
    };
    let hosts = match (&a.host, &a.hostfile) {
        (Some(list), _) => hosts::parse_host_list(list).unwrap_or_else(|e| usage_error(&e)),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .unwrap_or_else(|e| usage_error(&format!("--hostfile {path}: {e}")));
            hosts::parse_hostfile(&text, path).unwrap_or_else(|e| usage_error(&e))
        }
        (None, None) => match &slurm {
            Some(Ok(hs)) => hs.clone(),
            Some(Err(e)) => usage_error(e),
            None => vec![hosts::Host {
                name: "localhost".into(),
                slots: a.np,
            }],
        },
    };
    let in_slurm = slurm.is_some();
    if a.ppn == Some(0) {
        usage_error("--ppn must be at least 1");
    }
    let placement = hosts::place(a.np, &hosts, a.map_by, a.ppn, a.oversubscribe)
        .unwrap_or_else(|e| usage_error(&e));
    hosts::check_resolvable(&hosts).unwrap_or_else(|e| usage_error(&e));
    if let Some(iface) = &a.iface {
        if let Err(e) = courier::bootstrap::iface_address(iface) {
            usage_error(&format!("--iface: {e}"));
        }
        std::env::set_var("COURIER_IFACE", iface);
    }
    // Inside a Slurm allocation the proxies start as job steps, as Hydra
    // and Open MPI do; elsewhere through ssh (or the given agent).
    let agent_text = a
        .launch_agent
        .clone()
        .or_else(|| in_slurm.then(|| hosts::SLURM_AGENT.to_string()))
        .or_else(|| std::env::var("COURIER_LAUNCH_AGENT").ok())
        .unwrap_or_else(|| "ssh".into());
    let agent: Vec<String> = agent_text.split_whitespace().map(String::from).collect();
    if agent.is_empty() {
        usage_error("--launch-agent is empty");
    }
    run::JobSpec {
        np: a.np,
        program,
        args: args.to_vec(),
        env,
        tag_output: a.tag_output,
        timeout: parse_timeout(a.timeout),
        bind: a.bind_to,
        hosts,
        placement,
        agent,
    }
}

/// mpiexec habits clap cannot express: `-np N` (one dash, two letters).
/// Rewriting stops at the program name, so the program's own `-np` is untouched.
fn normalize_args(args: impl Iterator<Item = String>) -> Vec<String> {
    const TAKES_VALUE: [&str; 7] = [
        "-n",
        "--np",
        "-np",
        "-x",
        "--timeout",
        "--iterations",
        "--transport",
    ];
    let mut out = Vec::new();
    let mut expect_value = false;
    let mut in_program = false;
    let mut seen_subcommand = false;
    for a in args.into_iter() {
        if out.is_empty() || in_program {
            out.push(a);
            continue;
        }
        if expect_value {
            expect_value = false;
            out.push(a);
            continue;
        }
        if !seen_subcommand {
            seen_subcommand = !a.starts_with('-');
            out.push(a);
            continue;
        }
        if a == "-np" {
            out.push("--np".into());
            expect_value = true;
        } else if let Some(v) = a.strip_prefix("-np=") {
            out.push(format!("--np={v}"));
        } else {
            if TAKES_VALUE.contains(&a.as_str()) {
                expect_value = true;
            } else if a == "--" || !a.starts_with('-') {
                in_program = true;
            }
            out.push(a);
        }
    }
    out
}

fn main() {
    let cli = Cli::parse_from(normalize_args(std::env::args()));
    let code = match cli.cmd {
        Cmd::Run(a) => run::run(&job_spec(&a)),
        Cmd::Bench(b) => bench::main(b),
        Cmd::Report(r) => plot::main(r),
        Cmd::Proxy => proxy::main(),
    };
    std::process::exit(code)
}

#[cfg(test)]
mod tests {
    use super::normalize_args;

    fn norm(s: &str) -> String {
        normalize_args(s.split(' ').map(String::from)).join(" ")
    }

    #[test]
    fn np_is_rewritten_only_before_the_program() {
        assert_eq!(
            norm("courier run -np 4 ./a -np 3"),
            "courier run --np 4 ./a -np 3"
        );
        assert_eq!(
            norm("courier run -x A=1 -np=2 ./a"),
            "courier run -x A=1 --np=2 ./a"
        );
        assert_eq!(
            norm("courier run -n 2 -- ./a -np"),
            "courier run -n 2 -- ./a -np"
        );
    }
}
