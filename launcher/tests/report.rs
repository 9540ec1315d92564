//! Results as data: `courier bench --format json|csv`, and `courier report`
//! drawing plots from fixed result files.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::courier;
use std::process::Command;

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("courier-report-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn a_plot_is_well_formed_svg_with_one_series_per_input() {
    let out = scratch("latency.svg");
    let o = Command::new(courier())
        .arg("report")
        .arg(fixture("latency-courier.json"))
        .arg(format!("Open MPI={}", fixture("latency-openmpi.txt")))
        .arg(format!("MPICH={}", fixture("latency-mpich.txt")))
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let svg = std::fs::read_to_string(&out).unwrap();
    let doc = roxmltree::Document::parse(&svg).expect("well-formed XML");
    assert!(doc.root_element().has_tag_name("svg"));
    // The series are the wide polylines of more than two points: one per
    // input in the plot, one per peer in the ratio panel.
    let series: Vec<_> = doc
        .descendants()
        .filter(|n| {
            n.has_tag_name("polyline")
                && n.attribute("stroke-width") == Some("2")
                && n.attribute("points")
                    .is_some_and(|p| p.split_whitespace().count() > 2)
        })
        .collect();
    assert_eq!(series.len(), 3 + 2, "3 inputs, 2 ratios");
    let colours: std::collections::HashSet<_> = series
        .iter()
        .filter_map(|n| n.attribute("stroke"))
        .collect();
    assert_eq!(colours.len(), 3, "one colour per input");
    // Every point of every input: 11 sizes each.
    assert!(series[..3]
        .iter()
        .all(|n| n.attribute("points").unwrap().split_whitespace().count() == 11));
    // Each input is named once in the legend.
    for label in ["Courier 0.1.0", "Open MPI", "MPICH"] {
        let n = doc
            .descendants()
            .filter(|n| n.has_tag_name("text") && n.text().is_some_and(|t| t.trim() == label))
            .count();
        assert_eq!(n, 1, "legend entry {label}");
    }
}

#[test]
fn report_refuses_what_it_cannot_plot() {
    let out = scratch("bad.svg");
    let run = |args: &[&str]| {
        Command::new(courier())
            .arg("report")
            .args(args)
            .arg("-o")
            .arg(&out)
            .output()
            .unwrap()
    };
    let o = run(&[&fixture("latency-mpich.txt"), &fixture("bw-mpich.txt")]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("one benchmark per plot"));
    let o = run(&["/nonexistent/results.json"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/results.json"));
    let o = run(&[
        &fixture("latency-courier.json"),
        "--column",
        "messages_per_s",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("has no figure"));
}

#[test]
fn bench_writes_json_and_csv() {
    let bench = |fmt: &str| {
        let o = Command::new(courier())
            .args(["bench", "latency", "--max-size", "8", "--iterations", "20"])
            .args(["--validate", "--format", fmt])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        // The verdict goes to stderr, so stdout stays parseable.
        assert!(String::from_utf8_lossy(&o.stderr).contains("validation: passed"));
        String::from_utf8(o.stdout).unwrap()
    };
    let json: serde_json::Value = serde_json::from_str(&bench("json")).expect("one JSON document");
    assert_eq!(json["schema"], "courier-bench/1");
    assert_eq!(json["benchmark"], "latency");
    assert_eq!(json["ranks"], 2);
    assert_eq!(json["iterations"], 20);
    assert_eq!(json["columns"], serde_json::json!(["latency_us"]));
    let rows = json["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 4, "sizes 1, 2, 4, 8");
    assert!(rows
        .iter()
        .all(|r| r["values"][0].as_f64().is_some_and(|v| v > 0.0)));
    assert!(json["machine"]["cpus"].as_u64().is_some_and(|c| c >= 1));
    // The node profile the ranks ran with (it changes their tuning).
    let profile = json["node_profile"].as_str().expect("the node profile");
    assert!(["close", "far", "remote"].contains(&profile), "{profile}");
    let o = Command::new(courier())
        .args(["bench", "latency", "--max-size", "8", "--iterations", "20"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout).unwrap();
    let mut lines = text.lines();
    assert!(lines.next().unwrap().starts_with("# Courier Latency Test"));
    assert!(
        lines.next().unwrap().starts_with("# Node profile: "),
        "{text}"
    );
    let csv = bench("csv");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "library,benchmark,transport,ranks,size_bytes,latency_us"
    );
    assert_eq!(lines.len(), 5);
    assert!(lines[4].contains(",latency,") && lines[4].contains(",2,8,"));
}
