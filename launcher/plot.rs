//! `courier report`: plots benchmark results against message size, one
//! line per result (Courier, Open MPI, MPICH, ...), on log–log axes, with a
//! panel of each result's ratio to the first. SVG through `plotters` (no
//! browser, no Python): the file opens in a browser and an image viewer.
//!
//! ```text
//! courier bench latency --format json > courier.json
//! courier report courier.json "Open MPI=ompi.txt" "MPICH=mpich.txt" -o latency.svg
//! ```

use crate::results::{self, Run};
use clap::Args;
use plotters::prelude::*;
use std::path::PathBuf;

/// Options of `courier report`.
#[derive(Args, Debug, Clone)]
pub(crate) struct ReportArgs {
    /// Result files: `courier bench --format json` output, or the text
    /// table an OSU benchmark printed (labelled by its file name, or
    /// `LABEL=FILE`). The first is the reference of the ratio panel.
    #[arg(required = true, value_name = "RESULTS")]
    files: Vec<String>,
    /// The SVG file to write.
    #[arg(short, long, value_name = "FILE.svg")]
    output: PathBuf,
    /// The figure to plot when a table has several (e.g. `messages_per_s`
    /// of mbw_mr); default: the first.
    #[arg(long)]
    column: Option<String>,
    /// The plot's title (default: the benchmark, transport and machine).
    #[arg(long)]
    title: Option<String>,
}

/// Runs `courier report`; returns the exit code.
pub(crate) fn main(args: ReportArgs) -> i32 {
    match load_all(&args.files).and_then(|runs| {
        plot(
            &runs,
            &args.output,
            args.column.as_deref(),
            args.title.as_deref(),
        )
    }) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("courier report: {e}");
            1
        }
    }
}

/// Reads every file (`LABEL=FILE` or `FILE`), in order.
fn load_all(files: &[String]) -> Result<Vec<Run>, String> {
    let mut runs = Vec::new();
    for f in files {
        let (label, path) = match f.split_once('=') {
            Some((l, p)) if !std::path::Path::new(f).exists() => (l.to_string(), p),
            _ => {
                let stem = std::path::Path::new(f)
                    .file_stem()
                    .map_or(f.clone(), |s| s.to_string_lossy().into_owned());
                (stem, f.as_str())
            }
        };
        let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
        let mut got = results::load(&text, &label).map_err(|e| format!("{path}: {e}"))?;
        if got.is_empty() {
            return Err(format!("{path}: no results"));
        }
        // A label given on the command line names JSON runs too.
        if f.contains('=') && !std::path::Path::new(f).exists() {
            for r in &mut got {
                r.library = label.clone();
            }
        }
        runs.extend(got);
    }
    Ok(runs)
}

/// One line to draw: its label and its (size, value) points, sorted.
struct Series {
    label: String,
    points: Vec<(f64, f64)>,
}

/// The series of `runs` for figure `column`, checked for one benchmark.
fn series(runs: &[Run], column: Option<&str>) -> Result<(Vec<Series>, String), String> {
    let first = runs.first().ok_or("nothing to plot")?;
    let name = match column {
        Some(c) => c.to_string(),
        None => first
            .columns
            .first()
            .cloned()
            .ok_or("the first result has no figures")?,
    };
    let mut out = Vec::new();
    for r in runs {
        if r.benchmark != first.benchmark {
            return Err(format!(
                "{} is {}, {} is {}: one benchmark per plot",
                first.label(),
                first.benchmark,
                r.label(),
                r.benchmark
            ));
        }
        let col = r.columns.iter().position(|c| *c == name).ok_or_else(|| {
            format!(
                "{} has no figure {name:?} (it has {})",
                r.label(),
                r.columns.join(", ")
            )
        })?;
        let mut points: Vec<(f64, f64)> = r
            .rows
            .iter()
            .filter_map(|row| Some((row.size? as f64, *row.values.get(col)?)))
            .filter(|&(s, v)| s > 0.0 && v > 0.0 && v.is_finite())
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        if points.is_empty() {
            return Err(format!(
                "{}: no sizes to plot ({} has no message size axis)",
                r.label(),
                r.benchmark
            ));
        }
        out.push(Series {
            label: r.label().to_string(),
            points,
        });
    }
    Ok((out, name))
}

/// `series[i] ÷ series[0]` at the sizes both have.
fn ratios(series: &[Series]) -> Vec<Series> {
    let Some(base) = series.first() else {
        return Vec::new();
    };
    series[1..]
        .iter()
        .map(|s| Series {
            label: s.label.clone(),
            points: s
                .points
                .iter()
                .filter_map(|&(x, y)| {
                    let b = base.points.iter().find(|p| p.0 == x)?.1;
                    Some((x, y / b))
                })
                .collect(),
        })
        .collect()
}

/// Line colours, in order of the inputs (matplotlib's "tab10", readable on
/// white and apart from each other).
const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

fn color(i: usize) -> RGBColor {
    COLORS[i % COLORS.len()]
}

/// A size as people write it: 512, 4K, 1M.
fn human_size(x: f64) -> String {
    let x = x.round() as u64;
    match x {
        _ if x >= 1 << 20 && x % (1 << 20) == 0 => format!("{}M", x >> 20),
        _ if x >= 1 << 10 && x % (1 << 10) == 0 => format!("{}K", x >> 10),
        _ => x.to_string(),
    }
}

/// The axis title of a figure name such as `latency_us`.
fn axis_title(column: &str) -> String {
    match column {
        "latency_us" => "latency (µs)".into(),
        "avg_latency_us" => "average latency (µs)".into(),
        "bandwidth_MBps" => "bandwidth (MB/s)".into(),
        "messages_per_s" => "messages per second".into(),
        c => c.replace('_', " "),
    }
}

/// The range of `values` widened to whole decades (log axes).
fn decades(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(l, h), v| (l.min(v), h.max(v)));
    let lo = 10f64.powf(lo.log10().floor());
    let hi = 10f64.powf(hi.log10().ceil()).max(lo * 10.0);
    lo..hi
}

/// Draws `runs` into the SVG file `out`.
pub(crate) fn plot(
    runs: &[Run],
    out: &std::path::Path,
    column: Option<&str>,
    title: Option<&str>,
) -> Result<(), String> {
    let (lines, name) = series(runs, column)?;
    let first = &runs[0];
    let title = title.map_or_else(
        || {
            format!(
                "{} ({}, {} ranks{})",
                first.benchmark,
                match first.transport.split_once(':') {
                    Some((short, _)) => short,
                    None if first.transport.is_empty() => "shared memory",
                    None => &first.transport,
                },
                first.ranks.max(2),
                if first.machine.cpus > 0 {
                    format!(", {} CPUs", first.machine.cpus)
                } else {
                    String::new()
                }
            )
        },
        str::to_string,
    );
    let e = |e: DrawingAreaErrorKind<std::io::Error>| format!("{}: {e}", out.display());
    let root = SVGBackend::new(out, (900, 720)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let (upper, lower) = root.split_vertically(480);
    // Sizes are powers of two: the axis spans exactly the sizes measured.
    let (x0, x1) = lines
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .fold((f64::MAX, f64::MIN), |(l, h), x| (l.min(x), h.max(x)));
    let xs = x0..x1.max(x0 * 2.0);
    let ys = decades(lines.iter().flat_map(|s| s.points.iter().map(|p| p.1)));
    let mut chart = ChartBuilder::on(&upper)
        .caption(&title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(xs.clone().log_scale().base(2.0), ys.log_scale())
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("message size (bytes)")
        .y_desc(axis_title(&name))
        .x_label_formatter(&|x| human_size(*x))
        .y_label_formatter(&|y| match *y {
            y if y >= 10.0 => format!("{y:.0}"),
            y if y >= 1.0 => format!("{y:.1}"),
            y => format!("{y:.2}"),
        })
        .draw()
        .map_err(e)?;
    for (i, s) in lines.iter().enumerate() {
        let color = color(i);
        chart
            .draw_series(LineSeries::new(
                s.points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(e)?
            .label(s.label.as_str())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 22, y)], color.stroke_width(2)));
        chart
            .draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(e)?;
    }
    let falls = lines[0]
        .points
        .first()
        .zip(lines[0].points.last())
        .is_some_and(|(a, b)| a.1 > b.1);
    chart
        .configure_series_labels()
        // Away from the lines: they start high when the figure falls with size.
        .position(if falls {
            SeriesLabelPosition::LowerLeft
        } else {
            SeriesLabelPosition::UpperLeft
        })
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(e)?;

    let ratio = ratios(&lines);
    if !ratio.is_empty() {
        let vals: Vec<f64> = ratio
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .chain([1.0])
            .collect();
        let lo = vals.iter().copied().fold(f64::MAX, f64::min);
        let hi = vals.iter().copied().fold(f64::MIN, f64::max);
        let pad = ((hi - lo) * 0.1).max(0.05);
        let (lo, hi) = ((lo - pad).max(0.0), hi + pad);
        let mut rc = ChartBuilder::on(&lower)
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(xs.clone().log_scale().base(2.0), lo..hi)
            .map_err(e)?;
        rc.configure_mesh()
            .x_desc("message size (bytes)")
            .y_desc(format!("÷ {} (same size)", lines[0].label))
            .x_label_formatter(&|x| human_size(*x))
            .y_label_formatter(&|y| format!("{y:.2}"))
            .draw()
            .map_err(e)?;
        rc.draw_series(LineSeries::new(
            [(xs.start, 1.0), (xs.end, 1.0)],
            BLACK.mix(0.6).stroke_width(1),
        ))
        .map_err(e)?;
        for (i, s) in ratio.iter().enumerate() {
            let color = color(i + 1);
            rc.draw_series(LineSeries::new(
                s.points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(e)?;
        }
    }
    root.present().map_err(e)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_people_write_them() {
        assert_eq!(human_size(512.0), "512");
        assert_eq!(human_size(4096.0), "4K");
        assert_eq!(human_size(4194304.0), "4M");
        assert_eq!(human_size(3000.0), "3000");
    }

    #[test]
    fn ratios_pair_equal_sizes() {
        let s = |l: &str, p: &[(f64, f64)]| Series {
            label: l.into(),
            points: p.to_vec(),
        };
        let r = ratios(&[
            s("a", &[(1.0, 2.0), (2.0, 4.0)]),
            s("b", &[(1.0, 1.0), (4.0, 9.0)]),
        ]);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].points, [(1.0, 0.5)]);
        assert_eq!(decades([0.3, 42.0].into_iter()), 0.1..100.0);
    }
}
