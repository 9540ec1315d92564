//! `courier`: the job launcher and benchmark driver of the Courier runtime.
//!
//! * `courier run -n N [options] PROGRAM [ARGS...]` starts a job.
//! * `courier bench [latency|bw|bibw|startup] [-n N] ...` runs OSU-style
//!   benchmarks (launching itself as a job, or running as a rank when started
//!   inside one).

#![deny(unsafe_code)]

mod bench;
mod rendezvous;
mod run;
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
    /// Prefix every output line with "[rank] ".
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
    /// Allow more ranks than cores (always allowed on one host; accepted for mpiexec compatibility).
    #[arg(long)]
    oversubscribe: bool,
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
    let _ = a.oversubscribe;
    run::JobSpec {
        np: a.np,
        program,
        args: args.to_vec(),
        env,
        tag_output: a.tag_output,
        timeout: parse_timeout(a.timeout),
        bind: a.bind_to,
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
