//! Shared glue for integration tests that run real jobs through `courier run`.
//!
//! A test file holds rank bodies as `#[ignore]`d tests and drivers that launch
//! `courier run -n P --timeout T <this test binary> --exact <body>
//! --include-ignored`. Each body returns early when it is not a rank (plain
//! `cargo test -- --include-ignored`), and the driver checks that every rank
//! really ran its body, so a body can never pass by not running.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output, Stdio};

/// Path of the launcher built by cargo for these tests.
pub fn courier() -> &'static str {
    env!("CARGO_BIN_EXE_courier")
}

/// `Some(universe)` when this process is a rank of a job (`courier run`,
/// `mpiexec.hydra` or `srun --mpi=pmi2`).
pub fn rank_init() -> Option<courier::Universe> {
    // Started by `courier run`, or by a process manager speaking PMI.
    if std::env::var_os("COURIER_RANK").is_none() && std::env::var_os("PMI_FD").is_none() {
        return None;
    }
    Some(courier::init().expect("courier::init"))
}

/// Whether this process holds a descriptor of a card store (the launcher's
/// `memfd:courier-cards`), which `init` reads and closes.
pub fn holds_card_store() -> bool {
    std::fs::read_dir("/proc/self/fd").unwrap().any(|e| {
        std::fs::read_link(e.unwrap().path())
            .is_ok_and(|t| t.to_string_lossy().starts_with("/memfd:courier-cards"))
    })
}

/// Output of a finished job.
#[derive(Debug)]
pub struct Job {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Job {
    pub fn from_output(o: Output) -> Job {
        Job {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// Asserts success and that `np` ranks each ran one passing body.
    /// Counts libtest's ". 1 passed; 0 failed", which it writes in one
    /// piece: "test result: " and "ok" are separate writes, and a process
    /// manager that forwards raw chunks (Hydra) can interleave them
    /// between ranks ("test result: test result: ok").
    pub fn assert_ranks_passed(&self, np: usize) {
        let passed = self.stdout.matches(". 1 passed; 0 failed").count();
        assert!(
            self.code == Some(0) && passed == np,
            "job failed (exit {:?}, {passed}/{np} ranks passed)\n--- stdout\n{}\n--- stderr\n{}",
            self.code,
            self.stdout,
            self.stderr
        );
    }
}

/// Asserts the job ended because rank `rank` was SIGKILLed, and said so.
pub fn assert_killed(j: &Job, rank: usize) {
    assert_eq!(
        j.code,
        Some(128 + 9),
        "stdout:\n{}\nstderr:\n{}",
        j.stdout,
        j.stderr
    );
    assert!(
        j.stderr.contains(&format!("rank {rank}")) && j.stderr.contains("SIGKILL"),
        "{}",
        j.stderr
    );
}

/// Runs `courier run` with extra launcher flags and a command line.
pub fn launch(flags: &[&str], cmd: &[&str]) -> Job {
    let out = Command::new(courier())
        .arg("run")
        .args(flags)
        .args(cmd)
        .stdin(Stdio::null())
        .output()
        .expect("spawn courier");
    Job::from_output(out)
}

/// Runs rank body `body` of the current test binary on `np` ranks.
pub fn run_body_env(body: &str, np: usize, env: &[(&str, &str)], timeout_secs: u32) -> Job {
    let exe = std::env::current_exe().expect("current_exe");
    let np_s = np.to_string();
    let timeout = timeout_secs.to_string();
    let mut flags = vec!["-n", &np_s, "--timeout", &timeout];
    let xs: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    for x in &xs {
        flags.push("-x");
        flags.push(x);
    }
    let exe_s = exe.to_string_lossy().into_owned();
    launch(
        &flags,
        &[
            &exe_s,
            "--exact",
            body,
            "--include-ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ],
    )
}

/// Runs a body and asserts that every rank passed it.
pub fn run_body(body: &str, np: usize) {
    run_body_env(body, np, &[], 120).assert_ranks_passed(np);
}

/// Deterministic test data: element `i` of message `seq` from `src`.
pub fn datum(src: usize, seq: usize, i: usize) -> u32 {
    (src as u32).wrapping_mul(0x9E37_79B9)
        ^ (seq as u32).wrapping_mul(0x85EB_CA6B)
        ^ (i as u32).wrapping_mul(0xC2B2_AE35)
}

pub fn message(src: usize, seq: usize, len: usize) -> Vec<u32> {
    (0..len).map(|i| datum(src, seq, i)).collect()
}

/// Whether a process id is still alive.
pub fn alive(pid: i32) -> bool {
    // kill -0: signal nothing, only check existence; zombies count as dead here.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !stat.is_empty() && !stat.contains(") Z ")
}

/// Processes whose initial environment holds `marker` (`NAME=value`): every
/// process of a job launched with `-x NAME=value`, even one that never
/// printed its pid.
pub fn processes_with(marker: &str) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .chars()
                .all(|c| c.is_ascii_digit())
        })
        .filter(|e| {
            std::fs::read(e.path().join("environ"))
                .is_ok_and(|env| env.split(|&b| b == 0).any(|v| v == marker.as_bytes()))
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}
