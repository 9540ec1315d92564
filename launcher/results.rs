//! Benchmark results as data: what `courier bench --format json|csv`
//! writes, and what `courier report` reads back (Courier's JSON, or the
//! text tables of the OSU Micro-Benchmarks that the peers print).
//!
//! One [`Run`] is one benchmark of one library in one job: a table of rows,
//! each a message size (absent for barrier) and the figures of that size,
//! with what is needed to reproduce it (machine, version, transport, ranks,
//! threads, iterations, the `COURIER_*` settings in force). Rank 0 of a
//! benchmark job fills a [`Table`], which prints it in the chosen format.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

/// Schema tag of the JSON documents.
pub(crate) const SCHEMA: &str = "courier-bench/1";

/// Set by `courier bench` for its ranks when its stderr is a terminal:
/// rank 0 then reports the sizes of a long run there.
pub(crate) const PROGRESS: &str = "COURIER_BENCH_PROGRESS";

/// How `courier bench` prints its results.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) enum Format {
    /// OSU's text tables (what `osu_latency` and friends print).
    #[default]
    Text,
    /// One JSON document per benchmark, with the machine and settings.
    Json,
    /// Comma-separated rows, one per size, each naming its run.
    Csv,
}

/// The machine a run was measured on.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub(crate) struct Machine {
    pub(crate) host: String,
    pub(crate) kernel: String,
    pub(crate) cpu: String,
    pub(crate) cpus: usize,
}

impl Machine {
    /// This machine.
    pub(crate) fn here() -> Machine {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        Machine {
            host: read("/proc/sys/kernel/hostname").trim().to_string(),
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
            cpu: cpuinfo
                .lines()
                .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
                .unwrap_or_default(),
            // The machine's, not this process's CPU mask (a rank is bound to one).
            cpus: cpuinfo
                .lines()
                .filter(|l| l.starts_with("processor"))
                .count(),
        }
    }
}

/// One row: a message size (none for barrier) and its figures, in the
/// order of [`Run::columns`].
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(crate) struct Row {
    pub(crate) size: Option<u64>,
    pub(crate) values: Vec<f64>,
}

/// One benchmark of one library.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(crate) struct Run {
    pub(crate) schema: String,
    /// Who produced it: "Courier 0.1.0", or a label ("Open MPI").
    pub(crate) library: String,
    /// `courier bench` kind: latency, bw, bibw, mbw_mr, latency_mt,
    /// barrier, bcast, reduce, allreduce, allgather, alltoall, startup.
    pub(crate) benchmark: String,
    /// The table's title line.
    pub(crate) title: String,
    pub(crate) transport: String,
    pub(crate) ranks: usize,
    pub(crate) threads: Option<u16>,
    /// Timed iterations per size; `None`: OSU's defaults by size.
    pub(crate) iterations: Option<usize>,
    /// `COURIER_*` settings in force (forced algorithms, limits).
    pub(crate) settings: BTreeMap<String, String>,
    /// The node profile Courier's ranks ran with over shared memory
    /// (`Universe::node_profile`: close, far or remote); `None` for other
    /// libraries, for TCP runs, and in documents written before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) node_profile: Option<String>,
    pub(crate) machine: Machine,
    /// Seconds since the Unix epoch at the start of the run.
    pub(crate) unix_time: u64,
    /// Names of the figures, with their units: `latency_us`, `bandwidth_MBps`, ...
    pub(crate) columns: Vec<String>,
    pub(crate) rows: Vec<Row>,
}

impl Run {
    /// A run of `library` with no rows, nothing known of where or when it
    /// was measured.
    fn new(library: &str, benchmark: &str, title: &str, columns: Vec<String>) -> Run {
        Run {
            schema: SCHEMA.into(),
            library: library.into(),
            benchmark: benchmark.into(),
            title: title.into(),
            transport: String::new(),
            ranks: 0,
            threads: None,
            iterations: None,
            settings: BTreeMap::new(),
            node_profile: None,
            machine: Machine::default(),
            unix_time: 0,
            columns,
            rows: Vec::new(),
        }
    }

    /// A run of Courier on this machine, now, without rows yet.
    pub(crate) fn courier(benchmark: &str, title: &str, columns: &[&str]) -> Run {
        use courier::bootstrap::{
            ENV_BIND, ENV_CARD_STORE, ENV_JOB_KEY, ENV_LOCAL_RANK, ENV_LOCAL_SIZE, ENV_NODE_ID,
            ENV_RANK, ENV_SERVICE, ENV_SIZE,
        };
        // The launcher's wire-up variables are not settings.
        const INTERNAL: &[&str] = &[
            ENV_RANK,
            ENV_SIZE,
            ENV_LOCAL_RANK,
            ENV_LOCAL_SIZE,
            ENV_NODE_ID,
            ENV_SERVICE,
            ENV_JOB_KEY,
            ENV_BIND,
            ENV_CARD_STORE,
            PROGRESS,
        ];
        let mut run = Run::new(
            &format!("Courier {}", env!("CARGO_PKG_VERSION")),
            benchmark,
            title,
            columns.iter().map(|c| c.to_string()).collect(),
        );
        run.settings = std::env::vars()
            .filter(|(k, _)| k.starts_with("COURIER_") && !INTERNAL.contains(&k.as_str()))
            .collect();
        run.machine = Machine::here();
        run.unix_time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        run
    }

    /// The label of this run in a plot's legend.
    pub(crate) fn label(&self) -> &str {
        &self.library
    }

    /// The run as CSV rows (with a header line if `header`).
    pub(crate) fn csv(&self, header: bool) -> String {
        let mut s = String::new();
        if header {
            s.push_str("library,benchmark,transport,ranks,size_bytes");
            for c in &self.columns {
                s.push(',');
                s.push_str(c);
            }
            s.push('\n');
        }
        for r in &self.rows {
            s.push_str(&self.csv_row(r));
        }
        s
    }

    fn csv_row(&self, r: &Row) -> String {
        let field = |v: &str| {
            if v.contains([',', '"', '\n']) {
                format!("\"{}\"", v.replace('"', "\"\""))
            } else {
                v.to_string()
            }
        };
        let mut s = format!(
            "{},{},{},{},{}",
            field(&self.library),
            field(&self.benchmark),
            field(&self.transport),
            self.ranks,
            r.size.map(|x| x.to_string()).unwrap_or_default()
        );
        for v in &r.values {
            s.push_str(&format!(",{v}"));
        }
        s.push('\n');
        s
    }
}

/// Where rank 0 of a benchmark job puts its figures: printed as OSU text
/// or CSV rows as they come, or as one JSON document at the end.
pub(crate) struct Table {
    format: Format,
    run: Run,
    /// Progress lines on the launcher's terminal (`COURIER_BENCH_PROGRESS`).
    progress: bool,
    started: Instant,
}

/// Decimals a text table prints for a figure: microseconds get three,
/// since shared-memory latencies are around 0.1 µs and two decimals would
/// round 0.084 and 0.076 alike (OSU prints two; every parser here reads
/// either); rates and bandwidths two.
fn decimals(column: &str) -> usize {
    if column.ends_with("_us") {
        3
    } else {
        2
    }
}

impl Table {
    /// Starts a table; `header` is its OSU text header (lines starting `#`).
    pub(crate) fn new(format: Format, run: Run, header: &[String]) -> Table {
        match format {
            Format::Text => {
                for h in header {
                    println!("{h}");
                }
            }
            Format::Csv => {
                // One header for all the tables of a process.
                static HEADER: std::sync::atomic::AtomicBool =
                    std::sync::atomic::AtomicBool::new(true);
                let first = HEADER.swap(false, std::sync::atomic::Ordering::Relaxed);
                print!("{}", run.csv(first));
            }
            Format::Json => {}
        }
        Table {
            format,
            run,
            progress: std::env::var_os(PROGRESS).is_some(),
            started: Instant::now(),
        }
    }

    /// Adds one row: `size` (none for barrier) and its figures.
    pub(crate) fn row(&mut self, size: Option<usize>, values: &[f64]) {
        let row = Row {
            size: size.map(|s| s as u64),
            values: values.to_vec(),
        };
        match self.format {
            Format::Text => {
                let mut line = size.map(|s| format!("{s:<10}")).unwrap_or_default();
                for (v, column) in values.iter().zip(&self.run.columns) {
                    line.push_str(&format!("{v:>18.*}", decimals(column)));
                }
                println!("{line}");
            }
            Format::Csv => print!("{}", self.run.csv_row(&row)),
            Format::Json => {}
        }
        let _ = std::io::stdout().flush();
        // Runs that take more than a couple of seconds say where they are.
        if self.progress && worth_a_total(self.started.elapsed()) {
            let at = size.map_or(String::new(), |s| format!(" {s} B"));
            eprintln!(
                "courier bench: {}{at} done, {:.1} s",
                self.run.benchmark,
                self.started.elapsed().as_secs_f64()
            );
        }
        self.run.rows.push(row);
    }

    /// Ends the table: the JSON document is printed now.
    pub(crate) fn finish(self) {
        if self.format == Format::Json {
            match serde_json::to_string_pretty(&self.run) {
                Ok(j) => println!("{j}"),
                Err(e) => eprintln!("courier bench: cannot write JSON: {e}"),
            }
        }
    }
}

/// Whether a job that ran `elapsed` deserves a closing line on the
/// terminal (`courier bench`, when stderr is a terminal).
pub(crate) fn worth_a_total(elapsed: Duration) -> bool {
    elapsed > Duration::from_secs(2)
}

/// Reads a results file: Courier's JSON (one document, or several one
/// after another), else an OSU text table labelled `label`.
pub(crate) fn load(text: &str, label: &str) -> Result<Vec<Run>, String> {
    if text.trim_start().starts_with('{') {
        let runs: Result<Vec<Run>, _> = serde_json::Deserializer::from_str(text)
            .into_iter::<Run>()
            .collect();
        return runs.map_err(|e| format!("not a courier-bench JSON document: {e}"));
    }
    parse_osu(text, label).map(|r| vec![r])
}

/// Parses the text table of an OSU Micro-Benchmark (or `courier bench`'s
/// text): the title (`# OSU MPI Latency Test v7.4`), a column line
/// (`# Size  Latency (us)`), then rows of numbers.
pub(crate) fn parse_osu(text: &str, label: &str) -> Result<Run, String> {
    let mut title = None;
    let mut header = None;
    let mut rows = Vec::new();
    for line in text.lines() {
        let t = line.trim();
        if let Some(c) = t.strip_prefix('#') {
            let c = c.trim();
            if title.is_none() {
                title = Some(c.to_string());
            } else if c.contains("Size") || c.contains("Latency") || c.contains("MB/s") {
                header = Some(c.to_string());
            }
            continue;
        }
        let nums: Vec<f64> = t
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        if nums.is_empty() || nums.len() != t.split_whitespace().count() {
            continue; // a note, "validation: passed", a blank line
        }
        let has_size = header.as_deref().is_some_and(|h| h.contains("Size"));
        rows.push(if has_size && nums.len() >= 2 {
            Row {
                size: Some(nums[0] as u64),
                values: nums[1..].to_vec(),
            }
        } else {
            Row {
                size: None,
                values: nums,
            }
        });
    }
    let title = title.ok_or("no title line (`# ...`): not an OSU table")?;
    let header = header.unwrap_or_default();
    if rows.is_empty() {
        return Err(format!("{title}: no rows"));
    }
    let benchmark = benchmark_of(&title).ok_or_else(|| format!("unknown benchmark {title:?}"))?;
    // The table says nothing of the machine or the settings it came from.
    let mut run = Run::new(label, benchmark, &title, columns_of(benchmark, &header));
    run.rows = rows;
    Ok(run)
}

/// The benchmark a table's title names.
fn benchmark_of(title: &str) -> Option<&'static str> {
    let t = title.to_ascii_lowercase();
    // Most specific first: "Allreduce Latency Test" is not "Latency Test".
    let table: &[(&str, &str)] = &[
        ("allreduce", "allreduce"),
        ("all-reduce", "allreduce"),
        ("allgather", "allgather"),
        ("all-gather", "allgather"),
        ("all-to-all", "alltoall"),
        ("alltoall", "alltoall"),
        ("barrier", "barrier"),
        ("broadcast", "bcast"),
        ("bcast", "bcast"),
        ("reduce", "reduce"),
        ("start-up", "startup"),
        ("multi-threaded latency", "latency_mt"),
        ("multiple bandwidth", "mbw_mr"),
        ("bi-directional bandwidth", "bibw"),
        ("bidirectional bandwidth", "bibw"),
        ("bandwidth", "bw"),
        ("latency", "latency"),
    ];
    table.iter().find(|(k, _)| t.contains(k)).map(|&(_, b)| b)
}

/// Column names (with units) of a benchmark's figures.
pub(crate) fn columns_of(benchmark: &str, header: &str) -> Vec<String> {
    let c: &[&str] = match benchmark {
        "latency" | "latency_mt" => &["latency_us"],
        "bw" | "bibw" => &["bandwidth_MBps"],
        "mbw_mr" => &["bandwidth_MBps", "messages_per_s"],
        "startup" => &["wall_ms"],
        _ if header.contains("Min") => &["avg_latency_us", "min_latency_us", "max_latency_us"],
        _ => &["avg_latency_us"],
    };
    c.iter().map(|s| s.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_tables_print_microseconds_to_the_nanosecond() {
        for c in ["latency_us", "avg_latency_us", "min_latency_us"] {
            assert_eq!(decimals(c), 3, "{c}");
        }
        for c in ["bandwidth_MBps", "messages_per_s"] {
            assert_eq!(decimals(c), 2, "{c}");
        }
    }

    const OSU_LATENCY: &str = "\
# OSU MPI Latency Test v7.4
# Size          Latency (us)
# Datatype: MPI_CHAR.
1                       0.16
2                       0.17
1024                    0.30
";

    #[test]
    fn osu_text_tables_parse() {
        let r = parse_osu(OSU_LATENCY, "Open MPI").unwrap();
        assert_eq!(r.benchmark, "latency");
        assert_eq!(r.library, "Open MPI");
        assert_eq!(r.columns, ["latency_us"]);
        assert_eq!(r.rows.len(), 3);
        assert_eq!(r.rows[2].size, Some(1024));
        assert_eq!(r.rows[2].values, [0.30]);
        let mr = "# OSU MPI Multiple Bandwidth / Message Rate Test v7.4\n\
                  # [ pairs: 1 ] [ window size: 64 ]\n\
                  # Size                  MB/s        Messages/s\n\
                  1                       3.95        3950000.00\n";
        let r = parse_osu(mr, "MPICH").unwrap();
        assert_eq!(r.benchmark, "mbw_mr");
        assert_eq!(r.rows[0].values, [3.95, 3_950_000.0]);
        let barrier = "# OSU MPI Barrier Latency Test v7.4\n# Avg Latency(us)\n         1.23\n";
        let r = parse_osu(barrier, "x").unwrap();
        assert_eq!((r.benchmark.as_str(), r.rows[0].size), ("barrier", None));
        let ar = "# OSU MPI Allreduce Latency Test v7.4\n# Size       Avg Latency(us)\n4  1.50\n";
        let r = parse_osu(ar, "x").unwrap();
        assert_eq!(r.benchmark, "allreduce");
        assert_eq!(r.columns, ["avg_latency_us"]);
        assert!(parse_osu("hello\n", "x").is_err());
        assert!(parse_osu("# OSU MPI Latency Test\n# Size Latency (us)\n", "x").is_err());
    }

    #[test]
    fn json_and_csv_round_trip() {
        let mut r = parse_osu(OSU_LATENCY, "Courier").unwrap();
        r.transport = "shared memory".into();
        r.ranks = 2;
        let two = format!(
            "{}\n{}",
            serde_json::to_string_pretty(&r).unwrap(),
            serde_json::to_string(&r).unwrap()
        );
        assert_eq!(load(&two, "ignored").unwrap(), vec![r.clone(), r.clone()]);
        let csv = r.csv(true);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(
            lines[0],
            "library,benchmark,transport,ranks,size_bytes,latency_us"
        );
        assert_eq!(lines[3], "Courier,latency,shared memory,2,1024,0.3");
        assert_eq!(lines.len(), 4);
        assert!(load("{ not json", "x").is_err());
    }
}
