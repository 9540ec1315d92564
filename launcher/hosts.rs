//! Hosts and rank placement: `--host h1:2,h2`, `--hostfile FILE` (lines
//! `h1 slots=2`, `#` comments), `--map-by slot|node`, `--ppn N`. Every
//! error is found here, before anything starts.

use std::net::ToSocketAddrs;

/// One host of the job and how many ranks it takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Host {
    pub(crate) name: String,
    pub(crate) slots: usize,
}

/// `--map-by`: how ranks are spread over hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum MapBy {
    /// Fill each host's slots before the next host (Open MPI's default).
    Slot,
    /// One rank per host in turn.
    Node,
}

/// Parses `--host` values: `name` or `name:slots`, comma separated.
pub(crate) fn parse_host_list(list: &str) -> Result<Vec<Host>, String> {
    list.split(',')
        .map(|item| {
            let item = item.trim();
            let (name, slots) = match item.rsplit_once(':') {
                Some((n, s)) => (
                    n,
                    s.parse::<usize>()
                        .ok()
                        .filter(|&s| s > 0)
                        .ok_or_else(|| format!("--host {item}: slots must be a positive number"))?,
                ),
                None => (item, 1),
            };
            check_name(name).map(|name| Host { name, slots })
        })
        .collect()
}

/// Parses a hostfile: one host per line, `name [slots=N]`, `#` comments.
pub(crate) fn parse_hostfile(text: &str, path: &str) -> Result<Vec<Host>, String> {
    let mut hosts = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let at = |why: String| format!("{path}:{}: {why}: {raw:?}", i + 1);
        let mut words = line.split_whitespace();
        let name = check_name(words.next().unwrap_or_default()).map_err(at)?;
        let mut slots = 1;
        for w in words {
            match w.split_once('=') {
                Some(("slots", v)) => {
                    slots = v
                        .parse::<usize>()
                        .ok()
                        .filter(|&s| s > 0)
                        .ok_or_else(|| at("slots must be a positive number".into()))?;
                }
                _ => return Err(at(format!("unknown field {w:?}"))),
            }
        }
        hosts.push(Host { name, slots });
    }
    if hosts.is_empty() {
        return Err(format!("{path}: no hosts"));
    }
    Ok(hosts)
}

fn check_name(name: &str) -> Result<String, String> {
    let ok = !name.is_empty()
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if ok {
        Ok(name.to_string())
    } else {
        Err(format!("{name:?} is not a host name"))
    }
}

/// Launch agent inside a Slurm allocation: one single-task step per proxy.
pub(crate) const SLURM_AGENT: &str =
    "srun --nodes=1 --ntasks=1 --overlap --mpi=none --kill-on-bad-exit=1 -w";

/// The hosts of the Slurm allocation this launcher runs in (`SLURM_JOB_ID`
/// and a node list set), with the allocation's tasks per node as slots;
/// `None` outside an allocation.
pub(crate) fn slurm_allocation() -> Option<Result<Vec<Host>, String>> {
    std::env::var_os("SLURM_JOB_ID")?;
    let list = std::env::var("SLURM_JOB_NODELIST")
        .or_else(|_| std::env::var("SLURM_NODELIST"))
        .ok()?;
    Some((|| {
        let out = std::process::Command::new("scontrol")
            .args(["show", "hostnames", &list])
            .output()
            .map_err(|e| format!("Slurm allocation {list}: cannot run scontrol: {e}"))?;
        let names: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(String::from)
            .collect();
        if names.is_empty() {
            return Err(format!("Slurm allocation {list}: no host names"));
        }
        let per_node = std::env::var("SLURM_TASKS_PER_NODE")
            .ok()
            .and_then(|t| expand_counts(&t))
            .filter(|c| c.len() == names.len())
            .unwrap_or_else(|| vec![1; names.len()]);
        names
            .into_iter()
            .zip(per_node)
            .map(|(n, slots)| check_name(&n).map(|name| Host { name, slots }))
            .collect()
    })())
}

/// Expands Slurm's compressed counts: `2(x3),1` → [2, 2, 2, 1].
pub(crate) fn expand_counts(s: &str) -> Option<Vec<usize>> {
    let mut out = Vec::new();
    for part in s.split(',') {
        let (n, times) = match part.split_once("(x") {
            Some((n, t)) => (n, t.strip_suffix(')')?.parse::<usize>().ok()?),
            None => (part, 1),
        };
        let n: usize = n.trim().parse().ok()?;
        out.extend(std::iter::repeat_n(n, times));
    }
    Some(out)
}

/// Whether `name` is this machine (no launch agent needed).
pub(crate) fn is_local(name: &str) -> bool {
    if matches!(name, "localhost" | "127.0.0.1" | "::1") {
        return true;
    }
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .is_some_and(|h| h == name || h.split('.').next() == Some(name))
}

/// Checks that every remote host name resolves (before anything starts).
pub(crate) fn check_resolvable(hosts: &[Host]) -> Result<(), String> {
    for h in hosts.iter().filter(|h| !is_local(&h.name)) {
        if (h.name.as_str(), 22).to_socket_addrs().is_err() {
            return Err(format!("unknown host {:?} (it does not resolve)", h.name));
        }
    }
    Ok(())
}

/// Host index of every rank. `ppn` replaces every host's slot count.
pub(crate) fn place(
    np: usize,
    hosts: &[Host],
    map_by: MapBy,
    ppn: Option<usize>,
    oversubscribe: bool,
) -> Result<Vec<usize>, String> {
    let slots: Vec<usize> = hosts.iter().map(|h| ppn.unwrap_or(h.slots)).collect();
    let total: usize = slots.iter().sum();
    if np > total && !oversubscribe {
        return Err(format!(
            "{np} ranks requested but the hosts offer {total} slots \
             (add --oversubscribe to place more ranks than slots)"
        ));
    }
    let mut used = vec![0usize; hosts.len()];
    let mut out = Vec::with_capacity(np);
    // Within the slots, then (oversubscribed) round robin over the hosts.
    let mut h = 0;
    for _ in 0..np.min(total) {
        match map_by {
            MapBy::Slot => {
                while used[h] == slots[h] {
                    h += 1;
                }
            }
            MapBy::Node => {
                while used[h] == slots[h] {
                    h = (h + 1) % hosts.len();
                }
            }
        }
        used[h] += 1;
        out.push(h);
        if map_by == MapBy::Node {
            h = (h + 1) % hosts.len();
        }
    }
    for i in 0..np.saturating_sub(total) {
        out.push(i % hosts.len());
    }
    // Ranks of a host are numbered in rank order; keep ranks grouped by the
    // order they were assigned.
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(s: &str) -> Vec<Host> {
        parse_host_list(s).unwrap()
    }

    #[test]
    fn host_lists_and_files() {
        assert_eq!(
            hosts("h1:2,h2"),
            vec![
                Host {
                    name: "h1".into(),
                    slots: 2
                },
                Host {
                    name: "h2".into(),
                    slots: 1
                }
            ]
        );
        assert!(parse_host_list("h1:0").is_err());
        assert!(parse_host_list("h1:x").is_err());
        assert!(parse_host_list("h1,,h2").is_err());
        let f = "# cluster\nh1 slots=2\n\n  h2   slots=3 # big\nh3\n";
        let hs = parse_hostfile(f, "f").unwrap();
        assert_eq!(
            hs.iter().map(|h| h.slots).collect::<Vec<_>>(),
            vec![2, 3, 1]
        );
        let e = parse_hostfile("h1 slot=2\n", "f").unwrap_err();
        assert!(e.contains("f:1") && e.contains("unknown field"), "{e}");
        assert!(parse_hostfile("h1 slots=-1\n", "f").is_err());
        assert!(parse_hostfile("# nothing\n", "f").is_err());
    }

    #[test]
    fn slurm_task_counts() {
        assert_eq!(expand_counts("2(x3),1"), Some(vec![2, 2, 2, 1]));
        assert_eq!(expand_counts("4"), Some(vec![4]));
        assert_eq!(expand_counts("2(x"), None);
    }

    #[test]
    fn placement_by_slot_by_node_and_ppn() {
        let hs = hosts("a:2,b:2");
        assert_eq!(
            place(4, &hs, MapBy::Slot, None, false).unwrap(),
            vec![0, 0, 1, 1]
        );
        assert_eq!(
            place(4, &hs, MapBy::Node, None, false).unwrap(),
            vec![0, 1, 0, 1]
        );
        assert_eq!(
            place(3, &hs, MapBy::Slot, None, false).unwrap(),
            vec![0, 0, 1]
        );
        assert!(place(5, &hs, MapBy::Slot, None, false).is_err());
        assert_eq!(
            place(6, &hs, MapBy::Slot, None, true).unwrap(),
            vec![0, 0, 1, 1, 0, 1]
        );
        assert_eq!(
            place(6, &hs, MapBy::Slot, Some(3), false).unwrap(),
            vec![0, 0, 0, 1, 1, 1]
        );
        let uneven = hosts("a:1,b:3");
        assert_eq!(
            place(4, &uneven, MapBy::Node, None, false).unwrap(),
            vec![0, 1, 1, 1]
        );
    }
}
