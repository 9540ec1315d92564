//! The `courier run` launcher: exit codes, failures, output, signals, flags.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{alive, assert_killed, courier, launch, rank_init, run_body_env};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn tmpdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("courier-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Pids written by ranks as `pid.<rank>` files.
fn pids(dir: &std::path::Path) -> Vec<i32> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            std::fs::read_to_string(e.ok()?.path())
                .ok()?
                .trim()
                .parse()
                .ok()
        })
        .collect()
}

fn assert_all_gone(dir: &std::path::Path, expect: usize) {
    let p = pids(dir);
    assert_eq!(p.len(), expect, "every rank should have written its pid");
    let deadline = Instant::now() + Duration::from_secs(2);
    while p.iter().any(|&pid| alive(pid)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let survivors: Vec<_> = p.iter().filter(|&&pid| alive(pid)).collect();
    assert!(
        survivors.is_empty(),
        "processes survived the job: {survivors:?}"
    );
}

#[test]
fn all_ranks_get_their_environment() {
    let j = launch(
        &["-n", "3", "--tag-output"],
        &[
            "sh",
            "-c",
            "echo r=$COURIER_RANK s=$COURIER_SIZE lr=$COURIER_LOCAL_RANK ls=$COURIER_LOCAL_SIZE",
        ],
    );
    assert_eq!(j.code, Some(0), "{}", j.stderr);
    for r in 0..3 {
        assert!(
            j.stdout.contains(&format!("[{r}] r={r} s=3 lr={r} ls=3")),
            "{}",
            j.stdout
        );
    }
}

#[test]
fn exit_code_of_the_failing_rank_and_no_survivors() {
    let d = tmpdir("exit");
    let script = format!(
        "echo $$ > {}/pid.$COURIER_RANK; if [ $COURIER_RANK = 1 ]; then sleep 0.3; exit 7; fi; exec sleep 30",
        d.display()
    );
    let t0 = Instant::now();
    let j = launch(&["-n", "4"], &["sh", "-c", &script]);
    assert_eq!(j.code, Some(7), "{}", j.stderr);
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert!(
        j.stderr.contains("rank 1 (pid") && j.stderr.contains("exited with code 7"),
        "{}",
        j.stderr
    );
    assert_all_gone(&d, 4);
}

#[test]
fn sigkilled_rank_aborts_the_job() {
    let d = tmpdir("kill");
    let script = format!(
        "echo $$ > {}/pid.$COURIER_RANK; if [ $COURIER_RANK = 2 ]; then sleep 0.3; kill -9 $$; fi; exec sleep 30",
        d.display()
    );
    let j = launch(&["-n", "3"], &["sh", "-c", &script]);
    assert_eq!(j.code, Some(128 + 9), "{}", j.stderr);
    assert!(
        j.stderr.contains("rank 2") && j.stderr.contains("SIGKILL"),
        "{}",
        j.stderr
    );
    assert_all_gone(&d, 3);
}

#[test]
fn a_courier_job_aborts_when_a_rank_is_killed_mid_exchange() {
    let j = run_body_env("body_killed_mid_exchange", 4, &[], 60);
    assert_killed(&j, 3);
}

#[test]
#[ignore = "rank body: run through courier"]
fn body_killed_mid_exchange() {
    let Some(u) = rank_init() else { return };
    let w = u.world();
    let big = vec![7u8; 8 << 20];
    let mut buf = vec![0u8; 8 << 20];
    if w.rank() == 3 {
        // Receive part of a large message, then die without a trace.
        std::thread::sleep(Duration::from_millis(200));
        let _ = Command::new("kill")
            .args(["-9", &std::process::id().to_string()])
            .status();
        std::thread::sleep(Duration::from_secs(30));
    }
    // Everyone else keeps sending to rank 3 and waiting for it.
    let _ = w.send(&big, 3, 0);
    let _ = w.recv(&mut buf, 3, 0);
    std::thread::sleep(Duration::from_secs(30));
}

#[test]
fn abort_ends_the_job_with_its_code() {
    let j = run_body_env("body_abort", 3, &[], 60);
    assert_eq!(
        j.code,
        Some(42),
        "stdout:\n{}\nstderr:\n{}",
        j.stdout,
        j.stderr
    );
    assert!(j.stderr.contains("rank 1 called abort(42)"), "{}", j.stderr);
}

#[test]
#[ignore = "rank body: run through courier"]
fn body_abort() {
    let Some(u) = rank_init() else { return };
    let w = u.world();
    if w.rank() == 1 {
        u.abort(42);
    }
    // The others block forever on a message that never comes.
    let _ = w.recv(&mut [0u8], 1, 0);
    std::thread::sleep(Duration::from_secs(30));
}

#[test]
fn output_lines_are_never_mixed() {
    // Four ranks write 2000 long lines each as fast as they can.
    let script = "i=0; line=$(printf '%0500d' 0 | tr 0 $COURIER_RANK); \
                  while [ $i -lt 2000 ]; do echo \"<$line>\"; i=$((i+1)); done";
    let j = launch(&["-n", "4", "--tag-output"], &["sh", "-c", script]);
    assert_eq!(j.code, Some(0), "{}", j.stderr);
    let mut per_rank = [0usize; 4];
    for line in j.stdout.lines() {
        let (tag, body) = line.split_once(' ').expect("tagged line");
        let r: usize = tag
            .trim_matches(|c| c == '[' || c == ']')
            .parse()
            .expect("rank tag");
        let digit = char::from(b'0' + r as u8);
        assert!(
            body.len() == 502
                && body.starts_with('<')
                && body.ends_with('>')
                && body[1..501].chars().all(|c| c == digit),
            "mixed or torn line: {line:.80}"
        );
        per_rank[r] += 1;
    }
    assert_eq!(per_rank, [2000; 4]);
}

#[test]
fn stdin_goes_to_rank_0_only() {
    let mut child = Command::new(courier())
        .args(["run", "-n", "3", "--tag-output", "sh", "-c", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"hello\nworld\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        vec!["[0] hello", "[0] world"]
    );
}

#[test]
fn export_flags_set_and_forward_variables() {
    let out = Command::new(courier())
        .args([
            "run",
            "-n",
            "2",
            "-x",
            "FOO=bar baz",
            "-x",
            "FORWARDED",
            "sh",
            "-c",
            "echo \"$FOO|$FORWARDED\"",
        ])
        .env("FORWARDED", "yes")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert_eq!(stdout.matches("bar baz|yes").count(), 2, "{stdout}");
}

#[test]
fn timeout_ends_a_job() {
    let t0 = Instant::now();
    let j = launch(&["-n", "2", "--timeout", "0.5"], &["sleep", "30"]);
    assert_eq!(j.code, Some(124));
    assert!(j.stderr.contains("--timeout"), "{}", j.stderr);
    assert!(t0.elapsed() < Duration::from_secs(10));
}

#[test]
fn sigterm_to_the_launcher_is_forwarded() {
    let d = tmpdir("sigterm");
    let script = format!("echo $$ > {}/pid.$COURIER_RANK; exec sleep 30", d.display());
    let mut child = Command::new(courier())
        .args(["run", "-n", "3", "sh", "-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids(&d).len() < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(128 + 15));
    assert_all_gone(&d, 3);
}

#[test]
fn bad_command_lines_fail_before_anything_starts() {
    for (args, needle) in [
        (vec!["run", "-n", "0", "true"], "-n must be at least 1"),
        (vec!["run", "-n", "2", "/no/such/program"], "no such file"),
        (vec!["run", "-n", "2", "no-such-program-xyz"], "not found"),
        (
            vec!["run", "-n", "2", "-x", "1BAD=2", "true"],
            "not a valid variable name",
        ),
        (
            vec!["run", "-n", "2", "-x", "COURIER_TEST_UNSET_VAR", "true"],
            "no such variable",
        ),
        (
            vec!["run", "-n", "2", "--timeout", "0", "true"],
            "must be a positive number",
        ),
        (vec!["run", "-n", "two", "true"], "invalid value"),
        (
            vec!["run", "--bogus", "-n", "2", "true"],
            "unexpected argument",
        ),
        (vec!["run", "-n", "2"], "required"),
    ] {
        let out = Command::new(courier()).args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn np_spelling_and_help() {
    let j = launch(&["-np", "2"], &["true"]);
    assert_eq!(j.code, Some(0), "{}", j.stderr);
    let help = Command::new(courier())
        .args(["run", "--help"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in ["--np", "-x", "--tag-output", "--timeout", "--oversubscribe"] {
        assert!(text.contains(flag), "run --help lacks {flag}");
    }
    let top = Command::new(courier()).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&top.stdout);
    assert!(text.contains("run") && text.contains("bench"));
}

#[test]
fn strangers_are_rejected_while_a_job_runs() {
    let j = run_body_env(
        "body_strangers",
        3,
        &[("COURIER_HANDSHAKE_TIMEOUT_MS", "500")],
        60,
    );
    j.assert_ranks_passed(3);
    // The launcher's service was attacked by ranks 0 and 1: 4 attempts each.
    let service_rejections = j
        .stderr
        .matches("courier: rendezvous service: rejected connection")
        .count();
    assert!(service_rejections >= 8, "{}", j.stderr);
    assert!(
        j.stderr.contains("no handshake within 500 ms"),
        "{}",
        j.stderr
    );
}

/// Attacks the listener at `target` (acceptor rank `to`, or the service),
/// claiming to be rank `from`, in four ways; each must end with the connection closed by the job.
fn attack(target: &str, from: u32, to: u32) {
    use courier::bootstrap::auth::{self, Connector, JobKey};
    use std::io::Read;
    use std::net::TcpStream;
    let closed = |s: &mut TcpStream, what: &str| {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut b = [0u8; 256];
        loop {
            match s.read(&mut b) {
                Ok(0) | Err(_) => return,
                // A challenge may come first; anything after it must be a close.
                Ok(_) => {}
            }
            assert!(
                !matches!(s.read(&mut b), Ok(n) if n > 0),
                "{what} to {target}: still open"
            );
        }
    };
    // 1. Random bytes.
    let mut s = TcpStream::connect(target).unwrap();
    let _ = s.write_all(&[0x5a; 100]);
    closed(&mut s, "garbage");
    // 2. A well-formed handshake with the wrong key.
    let c = Connector::new(JobKey::generate().unwrap(), from, to).unwrap();
    let mut s = TcpStream::connect(target).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(c.hello()).unwrap();
    let mut ch = [0u8; auth::CHALLENGE_LEN];
    s.read_exact(&mut ch).unwrap();
    assert!(
        c.handle_challenge(&ch).is_err(),
        "a stranger cannot prove the key"
    );
    let _ = s.write_all(&[0u8; auth::AUTH_LEN]);
    closed(&mut s, "wrong key");
    // 3. A replayed answer: with the right key, the answer to one challenge
    // is recorded and replayed on a new connection (fresh challenge).
    let key = JobKey::from_hex(&std::env::var("COURIER_JOB_KEY").unwrap()).unwrap();
    let c = Connector::new(key, from, to).unwrap();
    let mut first = TcpStream::connect(target).unwrap();
    first.write_all(c.hello()).unwrap();
    first.read_exact(&mut ch).unwrap();
    let recorded = c.handle_challenge(&ch).unwrap();
    drop(first);
    let mut s = TcpStream::connect(target).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(c.hello()).unwrap();
    s.read_exact(&mut ch).unwrap();
    s.write_all(&recorded).unwrap();
    closed(&mut s, "replayed handshake");
    // 4. A half-open connection that never speaks: closed after the
    // handshake timeout (500 ms in this job).
    let mut s = TcpStream::connect(target).unwrap();
    closed(&mut s, "silent connection");
}

#[test]
#[ignore = "rank body: run through courier"]
fn body_strangers() {
    let Some(u) = rank_init() else { return };
    let w = u.world();
    let (p, me) = (w.size(), w.rank());
    // Listeners of a single-host job are on loopback only.
    let mine = u.local_endpoint().unwrap();
    assert!(mine.ip().is_loopback(), "data listener on {mine}");
    let service = std::env::var("COURIER_SERVICE").unwrap();
    let service_addr: std::net::SocketAddr = service.parse().unwrap();
    assert!(service_addr.ip().is_loopback(), "service on {service}");
    // Everyone learns every data endpoint.
    let text = format!("{mine:<64}");
    let mut all = vec![0u8; 64 * p];
    w.all_gather(text.as_bytes(), &mut all).unwrap();
    let endpoint = |r: usize| {
        String::from_utf8_lossy(&all[64 * r..64 * (r + 1)])
            .trim()
            .to_string()
    };
    // Rank 0 attacks every other rank and the service while they wait in a
    // receive (making progress); then rank 1 attacks rank 0 and the service.
    for attacker in [0usize, 1] {
        if me == attacker {
            for r in (0..p).filter(|&r| r != me) {
                attack(&endpoint(r), me as u32, r as u32);
            }
            attack(&service, me as u32, courier::bootstrap::auth::SERVICE);
            for r in (0..p).filter(|&r| r != me) {
                w.send(&[1u8], r, 2).unwrap();
            }
        } else {
            let mut go = [0u8];
            w.recv(&mut go, attacker, 2).unwrap();
        }
    }
    // Each rank was attacked 4 ways (rank 0 by rank 1, the others by rank 0).
    assert!(u.rejected_connections() >= 4, "{}", u.debug_report());
    // The job still works.
    let mut sum = [0u64];
    w.all_reduce(&[me as u64], &mut sum, courier::Op::Sum)
        .unwrap();
    assert_eq!(sum[0] as usize, p * (p - 1) / 2);
}

/// Every `courier bench` kind runs end to end with its data checked
/// (`--validate`) and prints one row per size; odd `-n` for the paired
/// message-rate test is refused before anything starts.
#[test]
fn every_benchmark_runs_validated() {
    let kinds: &[(&str, &str)] = &[
        ("latency", "2"),
        ("bw", "2"),
        ("bibw", "2"),
        ("mbw_mr", "4"),
        ("latency_mt", "2"),
        ("barrier", "3"),
        ("bcast", "3"),
        ("reduce", "3"),
        ("allreduce", "3"),
        ("allgather", "3"),
        ("alltoall", "3"),
    ];
    for &(kind, np) in kinds {
        let out = Command::new(courier())
            .args(["bench", kind, "-n", np, "--validate", "--iterations", "3"])
            .args(["--min-size", "4", "--max-size", "65536"])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{kind}: {stdout}\n{stderr}");
        let rows = stdout
            .lines()
            .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
            .count();
        let expect = if kind == "barrier" { 1 } else { 15 };
        assert_eq!(rows, expect, "{kind}: {stdout}");
        assert!(stdout.contains("validation: passed"), "{kind}: {stdout}");
    }
    // Message rate with two streaming threads per rank (every byte checked).
    let out = Command::new(courier())
        .args(["bench", "mbw_mr", "-n", "2", "--threads", "2", "--validate"])
        .args([
            "--iterations",
            "3",
            "--min-size",
            "4",
            "--max-size",
            "65536",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "mbw_mr --threads 2: {stdout}");
    assert!(stdout.contains("threads per rank: 2") && stdout.contains("validation: passed"));
    let odd = Command::new(courier())
        .args(["bench", "mbw_mr", "-n", "3"])
        .output()
        .unwrap();
    assert_eq!(odd.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&odd.stderr).contains("-n must be even"));
}
