//! Wire-up through a standard process manager over the descriptor in
//! `PMI_FD`: PMI-2 where the process manager announces a job id
//! (`PMI_JOBID`, as Slurm's `srun --mpi=pmi2` does), PMI-1 otherwise (MPICH's
//! `mpiexec.hydra`); `COURIER_PMI=1|2` forces one.
//!
//! PMI-1: one line per message, `key=value` fields separated by spaces.
//! Replies are parsed by key, never by position: Hydra puts `rc=` last and
//! adds `msg=`, Slurm puts `rc=` first and omits `msg=`, and a missing key
//! is `rc=-1` (Hydra) or `rc=1` (Slurm).
//!
//! ```text
//! cmd=init pmi_version=1 pmi_subversion=1   → cmd=response_to_init ... rc=0
//! cmd=get_my_kvsname                        → cmd=my_kvsname kvsname=K
//! cmd=put kvsname=K key=k value=v           → cmd=put_result rc=0
//! cmd=barrier_in                            → cmd=barrier_out
//! cmd=get kvsname=K key=k                   → cmd=get_result rc=0 value=v
//! cmd=finalize                              → cmd=finalize_ack
//! cmd=abort exitcode=N
//! ```
//!
//! PMI-2: after the PMI-1 style `cmd=init pmi_version=2 pmi_subversion=0`
//! line, every message is a 6-character space-padded decimal length followed
//! by `key=value;` pairs: `cmd=fullinit;pmijobid=J;pmirank=R;threaded=FALSE;`,
//! `cmd=kvs-put;key=K;value=V;`, `cmd=kvs-fence;`,
//! `cmd=kvs-get;jobid=;srcid=-1;key=K;` (→ `found=TRUE;value=V;`),
//! `cmd=info-getjobattr;key=PMI_process_mapping;`, `cmd=finalize;`. Slurm
//! answers `fullinit` with `rc=3` and works anyway, so only the fields that
//! carry data are trusted there.

use super::BootstrapError;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;

/// Parsed reply fields.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Fields(Vec<(String, String)>);

impl Fields {
    /// Parses one protocol line; fields without `=` are ignored.
    pub(crate) fn parse(line: &str) -> Fields {
        Fields(
            line.split_whitespace()
                .filter_map(|w| w.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    /// Parses a PMI-2 message body (`key=value;` pairs).
    pub(crate) fn parse_v2(body: &str) -> Fields {
        Fields(
            body.split(';')
                .filter_map(|w| w.split_once('='))
                .map(|(k, v)| (k.trim().to_string(), v.to_string()))
                .collect(),
        )
    }

    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `rc`, when present (absent counts as success, as servers omit it on
    /// replies that cannot fail).
    fn ok(&self) -> bool {
        self.get("rc").is_none_or(|rc| rc.trim() == "0")
    }
}

/// A connected PMI-1 client.
#[derive(Debug)]
pub(crate) struct Pmi {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    kvs: String,
    v2: bool,
    pub(crate) rank: u32,
    pub(crate) size: u32,
}

fn proto(what: String) -> BootstrapError {
    BootstrapError::Protocol(format!("process manager (PMI): {what}"))
}

impl Pmi {
    /// Connects over `PMI_FD` if the process manager set it; `Ok(None)`
    /// otherwise.
    pub(crate) fn from_env() -> Result<Option<Pmi>, BootstrapError> {
        let Some(fd) = std::env::var("PMI_FD").ok() else {
            return Ok(None);
        };
        let fd: i32 = fd.trim().parse().map_err(|_| BootstrapError::Env {
            name: "PMI_FD",
            problem: format!("{fd:?} is not a descriptor"),
        })?;
        let stream = crate::sys::adopt_unix_stream(fd).map_err(|e| BootstrapError::Env {
            name: "PMI_FD",
            problem: format!("descriptor {fd}: {e}"),
        })?;
        let num = |name: &'static str| -> Result<u32, BootstrapError> {
            std::env::var(name)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or(BootstrapError::Env {
                    name,
                    problem: "not set by the process manager".into(),
                })
        };
        let (rank, size) = (num("PMI_RANK")?, num("PMI_SIZE")?);
        if size == 0 || rank >= size {
            return Err(proto(format!("rank {rank} of size {size}")));
        }
        let writer = stream
            .try_clone()
            .map_err(|e| proto(format!("descriptor: {e}")))?;
        let v2 = match std::env::var("COURIER_PMI").as_deref() {
            Ok("1") => false,
            Ok("2") => true,
            _ => std::env::var_os("PMI_JOBID").is_some(),
        };
        let mut pmi = Pmi {
            reader: BufReader::new(stream),
            writer,
            kvs: String::new(),
            v2,
            rank,
            size,
        };
        if v2 {
            let r = pmi.call(
                "cmd=init pmi_version=2 pmi_subversion=0",
                "response_to_init",
            )?;
            if !r.ok() {
                return Err(proto(format!("PMI-2 init refused: {r:?}")));
            }
            let job = std::env::var("PMI_JOBID").unwrap_or_default();
            let r = pmi.call2(
                &format!("cmd=fullinit;pmijobid={job};pmirank={rank};threaded=FALSE;"),
                "fullinit-response",
            )?;
            // Slurm answers rc=3 and works: trust the data fields instead.
            if let Some(r2) = r.get("rank").and_then(|v| v.parse::<u32>().ok()) {
                if r2 != rank {
                    return Err(proto(format!(
                        "fullinit gave rank {r2}, PMI_RANK says {rank}"
                    )));
                }
            }
            return Ok(Some(pmi));
        }
        let r = pmi.call(
            "cmd=init pmi_version=1 pmi_subversion=1",
            "response_to_init",
        )?;
        if !r.ok() {
            return Err(proto(format!("init refused: {r:?}")));
        }
        let r = pmi.call("cmd=get_my_kvsname", "my_kvsname")?;
        pmi.kvs = r
            .get("kvsname")
            .ok_or_else(|| proto("no kvsname".into()))?
            .to_string();
        Ok(Some(pmi))
    }

    /// Sends a PMI-2 message and reads the reply whose `cmd` is `expect`.
    fn call2(&mut self, body: &str, expect: &str) -> Result<Fields, BootstrapError> {
        use std::io::Read;
        let msg = format!("{:<6}{body}", body.len());
        self.writer
            .write_all(msg.as_bytes())
            .map_err(|e| proto(format!("write: {e}")))?;
        loop {
            let mut len = [0u8; 6];
            self.reader
                .read_exact(&mut len)
                .map_err(|e| proto(format!("read: {e}")))?;
            let n: usize = std::str::from_utf8(&len)
                .ok()
                .and_then(|t| t.trim().parse().ok())
                .filter(|&n| n <= 1 << 20)
                .ok_or_else(|| proto(format!("bad length field {len:?}")))?;
            let mut body = vec![0u8; n];
            self.reader
                .read_exact(&mut body)
                .map_err(|e| proto(format!("read: {e}")))?;
            let f = Fields::parse_v2(&String::from_utf8_lossy(&body));
            if f.get("cmd") == Some(expect) {
                return Ok(f);
            }
        }
    }

    fn send(&mut self, line: &str) -> Result<(), BootstrapError> {
        self.writer
            .write_all(format!("{line}\n").as_bytes())
            .map_err(|e| proto(format!("write: {e}")))
    }

    /// Sends `line` and reads the reply whose `cmd` is `expect`.
    fn call(&mut self, line: &str, expect: &str) -> Result<Fields, BootstrapError> {
        self.send(line)?;
        let mut reply = String::new();
        loop {
            reply.clear();
            let n = self
                .reader
                .read_line(&mut reply)
                .map_err(|e| proto(format!("read: {e}")))?;
            if n == 0 {
                return Err(proto("the process manager closed the connection".into()));
            }
            let f = Fields::parse(&reply);
            match f.get("cmd") {
                Some(c) if c == expect => return Ok(f),
                // Unsolicited or unrelated lines are skipped.
                _ => continue,
            }
        }
    }

    /// Stores `key` = `value` (no spaces, `;` or `=` in either).
    pub(crate) fn put(&mut self, key: &str, value: &str) -> Result<(), BootstrapError> {
        let r = if self.v2 {
            self.call2(
                &format!("cmd=kvs-put;key={key};value={value};"),
                "kvs-put-response",
            )?
        } else {
            let line = format!("cmd=put kvsname={} key={key} value={value}", self.kvs);
            self.call(&line, "put_result")?
        };
        if r.ok() {
            Ok(())
        } else {
            Err(proto(format!("put {key} refused: {r:?}")))
        }
    }

    /// Waits for every rank (makes earlier puts visible).
    pub(crate) fn barrier(&mut self) -> Result<(), BootstrapError> {
        if self.v2 {
            let r = self.call2("cmd=kvs-fence;", "kvs-fence-response")?;
            return if r.ok() {
                Ok(())
            } else {
                Err(proto(format!("fence refused: {r:?}")))
            };
        }
        self.call("cmd=barrier_in", "barrier_out").map(|_| ())
    }

    /// Looks `key` up; `None` when it does not exist.
    pub(crate) fn get(&mut self, key: &str) -> Result<Option<String>, BootstrapError> {
        if self.v2 {
            let r = self.call2(
                &format!("cmd=kvs-get;jobid=;srcid=-1;key={key};"),
                "kvs-get-response",
            )?;
            return Ok((r.ok() && r.get("found") == Some("TRUE"))
                .then(|| r.get("value").map(str::to_string))
                .flatten());
        }
        let line = format!("cmd=get kvsname={} key={key}", self.kvs);
        let r = self.call(&line, "get_result")?;
        Ok(if r.ok() {
            r.get("value").map(str::to_string)
        } else {
            None
        })
    }

    /// The process manager's map of ranks to nodes, if it publishes one.
    pub(crate) fn process_mapping(&mut self) -> Result<Option<String>, BootstrapError> {
        if self.v2 {
            let r = self.call2(
                "cmd=info-getjobattr;key=PMI_process_mapping;",
                "info-getjobattr-response",
            )?;
            return Ok((r.get("found") == Some("TRUE"))
                .then(|| r.get("value").map(str::to_string))
                .flatten());
        }
        self.get("PMI_process_mapping")
    }

    /// Clean finish.
    pub(crate) fn finalize(&mut self) -> Result<(), BootstrapError> {
        if self.v2 {
            return self.call2("cmd=finalize;", "finalize-response").map(|_| ());
        }
        self.call("cmd=finalize", "finalize_ack").map(|_| ())
    }

    /// Asks the process manager to end the job with `code`.
    pub(crate) fn abort(&mut self, code: i32) {
        if self.v2 {
            let body = format!("cmd=abort;isworld=TRUE;msg=courier abort({code});");
            let _ = self
                .writer
                .write_all(format!("{:<6}{body}", body.len()).as_bytes());
            return;
        }
        let _ = self.send(&format!("cmd=abort exitcode={code}"));
    }
}

/// Node of every rank from a `PMI_process_mapping` value such as
/// `(vector,(0,2,2))` (blocks of (first node, node count, ranks per node)).
pub(crate) fn parse_process_mapping(value: &str, size: usize) -> Option<Vec<u32>> {
    let v = value.trim();
    let inner = v.strip_prefix("(vector,")?.strip_suffix(')')?;
    let mut nodes = Vec::with_capacity(size);
    for block in inner.split("),") {
        let b = block.trim().trim_start_matches('(').trim_end_matches(')');
        let nums: Vec<u32> = b
            .split(',')
            .map(|x| x.trim().parse().ok())
            .collect::<Option<_>>()?;
        let [first, count, per] = nums[..] else {
            return None;
        };
        for n in first..first.checked_add(count)? {
            for _ in 0..per {
                nodes.push(n);
            }
        }
    }
    if nodes.len() < size {
        return None;
    }
    nodes.truncate(size);
    Some(nodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_parsed_by_key_whatever_the_order() {
        let hydra = Fields::parse("cmd=get_result rc=0 msg=success value=bar0\n");
        let slurm = Fields::parse("cmd=get_result rc=0 value=bar0\n");
        assert_eq!(hydra.get("value"), slurm.get("value"));
        assert!(hydra.ok() && slurm.ok());
        let missing_hydra =
            Fields::parse("cmd=get_result rc=-1 msg=key_nonexistent_not_found value=unknown");
        let missing_slurm = Fields::parse("cmd=get_result rc=1");
        assert!(!missing_hydra.ok() && !missing_slurm.ok());
        let rc_first = Fields::parse("cmd=put_result rc=0");
        assert!(rc_first.ok());
    }

    #[test]
    fn pmi2_bodies_are_parsed_by_key() {
        let f =
            Fields::parse_v2("cmd=fullinit-response;rc=3;pmi-version=2;rank=1;size=4;appnum=-1;");
        assert_eq!((f.get("rank"), f.get("size")), (Some("1"), Some("4")));
        assert!(!f.ok());
        let g = Fields::parse_v2("cmd=kvs-get-response;rc=0;found=TRUE;value=v0;");
        assert_eq!(g.get("value"), Some("v0"));
        let m = Fields::parse_v2(
            "cmd=info-getjobattr-response;rc=0;found=TRUE;value=(vector,(0,2,2));",
        );
        assert_eq!(m.get("value"), Some("(vector,(0,2,2))"));
    }

    #[test]
    fn process_mappings() {
        assert_eq!(
            parse_process_mapping("(vector,(0,2,2))", 4),
            Some(vec![0, 0, 1, 1])
        );
        assert_eq!(
            parse_process_mapping("(vector,(0,1,3))", 3),
            Some(vec![0, 0, 0])
        );
        assert_eq!(
            parse_process_mapping("(vector,(0,2,1),(2,1,2))", 4),
            Some(vec![0, 1, 2, 2])
        );
        assert_eq!(parse_process_mapping("(vector,(0,2,1))", 4), None);
        assert_eq!(parse_process_mapping("garbage", 2), None);
    }
}
