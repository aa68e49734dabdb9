//! Results: the row each child reports, CSV in and out, markdown tables and
//! SVG plots.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use super::contenders::{BoxError, CONTENDERS};

/// One contender on one cell: what a child process measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// `matrix`, `capacity` or `budget`.
    pub experiment: String,
    pub contender: String,
    pub dist: String,
    pub keys: u64,
    pub read_pct: u32,
    pub value_bytes: usize,
    pub concurrency: usize,
    /// The front bound: `entries:N`, `bytes:N`, or `-` without a front tier.
    pub front: String,
    /// The front bound as a percentage of the key space (entries bounds).
    pub front_pct: f64,
    /// Measured operations.
    pub ops: u64,
    pub errors: u64,
    pub ops_per_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    /// Front-tier hit ratio in the measured window (empty: no front tier, or
    /// one that cannot be counted from outside).
    pub hit_ratio: Option<f64>,
    /// `VmHWM` of the child at the end: its peak resident set.
    pub peak_rss_mib: f64,
    /// `VmRSS` of the child once the contender was built, before the run.
    pub base_rss_mib: f64,
    /// The front tier's weighted size at the end (byte-bounded fronts).
    pub front_weighted_bytes: Option<u64>,
}

const HEADER: &str = "experiment,contender,dist,keys,read_pct,value_bytes,concurrency,front,front_pct,\
ops,errors,ops_per_s,p50_us,p99_us,p999_us,hit_ratio,peak_rss_mib,base_rss_mib,front_weighted_bytes";

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

/// Writes `rows` as CSV (no field contains a comma or a quote).
pub fn write_csv(path: &Path, rows: &[Row]) -> Result<(), BoxError> {
    let mut out = String::from(HEADER);
    out.push('\n');
    for r in rows {
        writeln!(
            out,
            "{},{},{},{},{},{},{},{},{:.2},{},{},{:.1},{:.1},{:.1},{:.1},{},{:.1},{:.1},{}",
            r.experiment,
            r.contender,
            r.dist,
            r.keys,
            r.read_pct,
            r.value_bytes,
            r.concurrency,
            r.front,
            r.front_pct,
            r.ops,
            r.errors,
            r.ops_per_s,
            r.p50_us,
            r.p99_us,
            r.p999_us,
            opt(r.hit_ratio.map(|h| format!("{h:.4}"))),
            r.peak_rss_mib,
            r.base_rss_mib,
            opt(r.front_weighted_bytes),
        )?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, out)?;
    Ok(())
}

/// Reads a CSV written by [`write_csv`].
pub fn read_csv(path: &Path) -> Result<Vec<Row>, BoxError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut rows = Vec::new();
    for (n, line) in text.lines().enumerate().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        if f.len() != 19 {
            return Err(format!("{}:{}: expected 19 fields", path.display(), n + 1).into());
        }
        let none_if_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
        rows.push(Row {
            experiment: f[0].into(),
            contender: f[1].into(),
            dist: f[2].into(),
            keys: f[3].parse()?,
            read_pct: f[4].parse()?,
            value_bytes: f[5].parse()?,
            concurrency: f[6].parse()?,
            front: f[7].into(),
            front_pct: f[8].parse()?,
            ops: f[9].parse()?,
            errors: f[10].parse()?,
            ops_per_s: f[11].parse()?,
            p50_us: f[12].parse()?,
            p99_us: f[13].parse()?,
            p999_us: f[14].parse()?,
            hit_ratio: none_if_empty(f[15]).map(|s| s.parse()).transpose()?,
            peak_rss_mib: f[16].parse()?,
            base_rss_mib: f[17].parse()?,
            front_weighted_bytes: none_if_empty(f[18]).map(|s| s.parse()).transpose()?,
        });
    }
    Ok(rows)
}

/// The contenders present in `rows`, in registry order.
fn contenders_in(rows: &[Row]) -> Vec<String> {
    CONTENDERS
        .iter()
        .map(|e| e.name.to_string())
        .filter(|name| rows.iter().any(|r| &r.contender == name))
        .collect()
}

/// A cell's key in tables and plots: `(dist, read, keys, value, concurrency)`.
type CellKey = (String, u32, u64, usize, usize);

fn cell_key(r: &Row) -> CellKey {
    (
        r.dist.clone(),
        r.read_pct,
        r.keys,
        r.value_bytes,
        r.concurrency,
    )
}

fn cell_name(k: &CellKey) -> String {
    format!(
        "{} r{} {} {} c{}",
        k.0,
        k.1,
        super::workload::keys_label(k.2),
        super::workload::bytes_label(k.3),
        k.4
    )
}

/// The matrix rows grouped by cell (in a stable order), then by contender.
fn by_cell(rows: &[Row]) -> BTreeMap<CellKey, BTreeMap<String, &Row>> {
    let mut cells: BTreeMap<CellKey, BTreeMap<String, &Row>> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.experiment == "matrix") {
        cells
            .entry(cell_key(r))
            .or_default()
            .insert(r.contender.clone(), r);
    }
    cells
}

/// Markdown tables of every experiment in `rows`.
pub fn tables(rows: &[Row]) -> String {
    let names = contenders_in(rows);
    let cells = by_cell(rows);
    let mut md = String::new();
    md.push_str("| contender | what |\n|---|---|\n");
    for e in CONTENDERS
        .iter()
        .filter(|e| names.iter().any(|n| n == e.name))
    {
        let _ = writeln!(md, "| {} | {} |", e.name, e.what);
    }
    md.push('\n');
    let header = |md: &mut String, first: &str| {
        let _ = write!(md, "| {first} |");
        for n in &names {
            let _ = write!(md, " {n} |");
        }
        md.push('\n');
        md.push_str("|---|");
        for _ in &names {
            md.push_str("---:|");
        }
        md.push('\n');
    };
    let table = |md: &mut String, title: &str, cell: &dyn Fn(&Row) -> String| {
        let _ = writeln!(md, "### {title}\n");
        header(md, "cell");
        for (key, by) in &cells {
            let _ = write!(md, "| {} |", cell_name(key));
            for n in &names {
                let v = by.get(n).map(|r| cell(r)).unwrap_or_else(|| "–".into());
                let _ = write!(md, " {v} |");
            }
            md.push('\n');
        }
        md.push('\n');
    };
    if !cells.is_empty() {
        table(&mut md, "Throughput (operations/s)", &|r| {
            if r.errors > 0 {
                format!("{:.0} ({} errors)", r.ops_per_s, r.errors)
            } else {
                format!("{:.0}", r.ops_per_s)
            }
        });
        table(&mut md, "Latency p50 / p99 / p999 (µs)", &|r| {
            format!("{:.0} / {:.0} / {:.0}", r.p50_us, r.p99_us, r.p999_us)
        });
        table(
            &mut md,
            "Front-tier hit ratio (front = 10% of the key space, in entries)",
            &|r| {
                r.hit_ratio
                    .map_or("–".into(), |h| format!("{:.1}%", h * 100.0))
            },
        );
        table(&mut md, "Peak RSS of the contender's process (MiB)", &|r| {
            format!("{:.0}", r.peak_rss_mib)
        });
    }

    goal_table(&mut md, &cells);

    let capacity: Vec<&Row> = rows.iter().filter(|r| r.experiment == "capacity").collect();
    if let Some(first) = capacity.first() {
        let _ = writeln!(
            md,
            "### Front-tier hit ratio against front capacity ({} {} keys, r{}, {}, c{})\n",
            first.dist,
            super::workload::keys_label(first.keys),
            first.read_pct,
            super::workload::bytes_label(first.value_bytes),
            first.concurrency
        );
        let tiered: Vec<&String> = names
            .iter()
            .filter(|n| capacity.iter().any(|r| &r.contender == *n))
            .collect();
        let _ = write!(md, "| front capacity |");
        for n in &tiered {
            let _ = write!(md, " {n} |");
        }
        md.push_str("\n|---:|");
        for _ in &tiered {
            md.push_str("---:|");
        }
        md.push('\n');
        let mut pcts: Vec<f64> = capacity.iter().map(|r| r.front_pct).collect();
        pcts.sort_by(f64::total_cmp);
        pcts.dedup();
        for pct in pcts {
            let _ = write!(md, "| {pct}% |");
            for n in &tiered {
                let v = capacity
                    .iter()
                    .find(|r| &r.contender == *n && r.front_pct == pct)
                    .and_then(|r| r.hit_ratio)
                    .map_or("–".into(), |h| format!("{:.1}%", h * 100.0));
                let _ = write!(md, " {v} |");
            }
            md.push('\n');
        }
        md.push('\n');
    }

    let budget: Vec<&Row> = rows.iter().filter(|r| r.experiment == "budget").collect();
    if !budget.is_empty() {
        md.push_str("### Front-tier byte budget\n\n");
        md.push_str(
            "| contender | cell | budget (MiB) | weighted size (MiB) | weighted / budget | \
             RSS growth (MiB) | RSS growth / budget |\n|---|---|---:|---:|---:|---:|---:|\n",
        );
        for r in budget {
            let budget = r
                .front
                .strip_prefix("bytes:")
                .and_then(|b| b.parse::<f64>().ok())
                .unwrap_or(0.0);
            let weighted = r.front_weighted_bytes.unwrap_or(0) as f64;
            let growth = (r.peak_rss_mib - r.base_rss_mib) * 1024.0 * 1024.0;
            let mib = 1024.0 * 1024.0;
            let _ = writeln!(
                md,
                "| {} | {} | {:.0} | {:.1} | {:.1}% | {:.1} | {:.1}% |",
                r.contender,
                cell_name(&cell_key(r)),
                budget / mib,
                weighted / mib,
                100.0 * weighted / budget.max(1.0),
                growth / mib,
                100.0 * growth / budget.max(1.0),
            );
        }
        md.push('\n');
    }
    md
}

/// The peer crates (what the full stack must beat on Zipf read-heavy cells).
const PEERS: &[&str] = &[
    "cached_redis",
    "cached_two_tier",
    "opendal_redis",
    "opendal_foyer",
];

/// The full stack against the floor and against the best peer, per cell.
fn goal_table(md: &mut String, cells: &BTreeMap<CellKey, BTreeMap<String, &Row>>) {
    let complete = cells
        .values()
        .any(|by| by.contains_key("kvtower_stack") && by.contains_key("raw_floor"));
    if !complete {
        return;
    }
    md.push_str(
        "### The full stack against the floor and the best peer (throughput)\n\n\
         | cell | kvtower_stack | raw_floor | stack / floor | best peer | stack / best peer |\n\
         |---|---:|---:|---:|---|---:|\n",
    );
    for (key, by) in cells {
        let (Some(stack), Some(floor)) = (by.get("kvtower_stack"), by.get("raw_floor")) else {
            continue;
        };
        let best = by
            .iter()
            .filter(|(n, _)| PEERS.contains(&n.as_str()))
            .max_by(|a, b| a.1.ops_per_s.total_cmp(&b.1.ops_per_s));
        let (best_name, best_ops) = best.map_or(("–".to_string(), f64::NAN), |(n, r)| {
            (n.clone(), r.ops_per_s)
        });
        let _ = writeln!(
            md,
            "| {} | {:.0} | {:.0} | {:.2} | {} ({:.0}) | {:.2} |",
            cell_name(key),
            stack.ops_per_s,
            floor.ops_per_s,
            stack.ops_per_s / floor.ops_per_s,
            best_name,
            best_ops,
            stack.ops_per_s / best_ops,
        );
    }
    md.push('\n');
}

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// Writes the SVG plots into `dir` and returns their file names.
pub fn plots(rows: &[Row], dir: &Path) -> Result<Vec<String>, BoxError> {
    std::fs::create_dir_all(dir)?;
    let names = contenders_in(rows);
    let cells = by_cell(rows);
    let mut files = Vec::new();

    // One grouped bar chart of throughput per (distribution, read share).
    type Group<'a> = Vec<(&'a CellKey, &'a BTreeMap<String, &'a Row>)>;
    let mut groups: BTreeMap<(String, u32), Group<'_>> = BTreeMap::new();
    for (key, by) in &cells {
        groups
            .entry((key.0.clone(), key.1))
            .or_default()
            .push((key, by));
    }
    for ((dist, read), group) in &groups {
        let file = format!("throughput-{dist}-r{read}.svg");
        let slots_per_cell = names.len() as u32 + 1;
        let slots = slots_per_cell * group.len() as u32;
        let max = group
            .iter()
            .flat_map(|(_, by)| by.values().map(|r| r.ops_per_s))
            .fold(1.0f64, f64::max);
        let min = group
            .iter()
            .flat_map(|(_, by)| by.values().map(|r| r.ops_per_s))
            .filter(|v| *v > 0.0)
            .fold(max, f64::min);
        let floor = (min / 2.0).max(1.0);
        let labels: Vec<String> = group
            .iter()
            .map(|(k, _)| {
                format!(
                    "{} {} c{}",
                    super::workload::keys_label(k.2),
                    super::workload::bytes_label(k.3),
                    k.4
                )
            })
            .collect();
        let path = dir.join(&file);
        let root = SVGBackend::new(&path, (1200, 520)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("Throughput by contender: {dist}, {read}% reads (ops/s, log scale)"),
                ("sans-serif", 20),
            )
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(
                (0u32..slots).into_segmented(),
                (floor..max * 1.5).log_scale(),
            )?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(slots as usize)
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(s) if s % slots_per_cell == slots_per_cell / 2 => labels
                    .get((s / slots_per_cell) as usize)
                    .cloned()
                    .unwrap_or_default(),
                _ => String::new(),
            })
            .light_line_style(WHITE)
            .y_label_formatter(&|v| {
                if *v >= 1000.0 {
                    format!("{:.0}k", v / 1000.0)
                } else {
                    format!("{v:.0}")
                }
            })
            .y_desc("operations/s")
            .draw()?;
        for (i, name) in names.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            let bars = group.iter().enumerate().filter_map(|(g, (_, by))| {
                by.get(name).map(|r| {
                    let slot = g as u32 * slots_per_cell + i as u32;
                    Rectangle::new(
                        [
                            (SegmentValue::Exact(slot), floor),
                            (SegmentValue::Exact(slot + 1), r.ops_per_s.max(floor)),
                        ],
                        color.filled(),
                    )
                })
            });
            chart
                .draw_series(bars)?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled())
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
        files.push(file);
    }

    // Hit ratio against front capacity.
    let capacity: Vec<&Row> = rows.iter().filter(|r| r.experiment == "capacity").collect();
    if !capacity.is_empty() {
        let file = "hit-ratio-vs-capacity.svg".to_string();
        let path = dir.join(&file);
        let max_pct = capacity.iter().map(|r| r.front_pct).fold(1.0, f64::max);
        let root = SVGBackend::new(&path, (800, 500)).into_drawing_area();
        root.fill(&WHITE)?;
        let first = capacity[0];
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!(
                    "Front-tier hit ratio vs capacity ({}, {} keys, {}% reads)",
                    first.dist,
                    super::workload::keys_label(first.keys),
                    first.read_pct
                ),
                ("sans-serif", 20),
            )
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..max_pct * 1.05, 0.0..1.0)?;
        chart
            .configure_mesh()
            .light_line_style(WHITE)
            .x_desc("front capacity, % of the key space (entries)")
            .y_desc("front-tier hit ratio")
            .draw()?;
        for (i, name) in names.iter().enumerate() {
            let mut points: Vec<(f64, f64)> = capacity
                .iter()
                .filter(|r| &r.contender == name)
                .filter_map(|r| r.hit_ratio.map(|h| (r.front_pct, h)))
                .collect();
            if points.is_empty() {
                continue;
            }
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            let color = PALETTE[i % PALETTE.len()];
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 15, y)], color.stroke_width(2))
                });
            chart.draw_series(
                points
                    .into_iter()
                    .map(move |p| Circle::new(p, 4, color.filled())),
            )?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
        files.push(file);
    }
    Ok(files)
}
