//! Load generator: one workload, several contenders, one private Redis.
//!
//! Runs kvtower stacks and the crates a user would pick instead (a hand-written
//! moka + redis floor, `cached`, Apache OpenDAL) on the same workload cells
//! against the same private `redis-server`, and writes CSV, markdown tables and
//! SVG plots. See BENCHMARKS.md, "Workloads against peer crates".
//!
//! ```sh
//! cargo run --release -p kvtower-loadgen -- --quick   # ~2 minutes
//! cargo run --release -p kvtower-loadgen -- --goals   # the cells the goals name
//! cargo run --release -p kvtower-loadgen -- --full    # the whole matrix
//! ```
//!
//! Each contender runs each cell in its own child process (this binary with
//! `--child`), so that its peak RSS (`VmHWM`) is its own, and Redis is flushed
//! before every run, so each starts on an empty shared tier.
//!
//! Options: `--warmup-ms N`, `--measure-ms N`, `--contenders a,b,...`,
//! `--experiments matrix,capacity,budget` (which parts to run),
//! `--sweep-read-pct N` (read share of the capacity sweep, default 90),
//! `--out DIR` (CSV and tables; default `bench/loadgen/bench-results/MODE`), `--plots DIR`
//! (SVGs; default `docs/bench/MODE`), `--report-only` (re-render the tables and
//! plots from the CSV in `--out`).

mod contenders;
mod report;
mod server;
mod workload;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use contenders::{BoxError, Front, Setup, CONTENDERS};
use report::Row;
use workload::{Cell, Dist};

/// What a child process runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ChildSpec {
    experiment: String,
    contender: String,
    cell: Cell,
    front: Front,
    front_pct: f64,
    redis_url: String,
    warmup_ms: u64,
    measure_ms: u64,
    seed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Quick,
    Goals,
    Full,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Quick => "quick",
            Mode::Goals => "goals",
            Mode::Full => "full",
        }
    }
}

#[derive(Debug)]
struct Options {
    mode: Mode,
    warmup_ms: u64,
    measure_ms: u64,
    contenders: Vec<String>,
    out: Option<PathBuf>,
    plots: Option<PathBuf>,
    report_only: bool,
    experiments: Vec<String>,
    sweep_read_pct: u32,
}

fn parse_args(args: &[String]) -> Result<Options, BoxError> {
    let mut o = Options {
        mode: Mode::Full,
        warmup_ms: 500,
        measure_ms: 1500,
        contenders: CONTENDERS.iter().map(|e| e.name.to_string()).collect(),
        out: None,
        plots: None,
        report_only: false,
        experiments: vec!["matrix".into(), "capacity".into(), "budget".into()],
        sweep_read_pct: 90,
    };
    let mut it = args.iter();
    let mut timing_set = false;
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match arg.as_str() {
            "--quick" => o.mode = Mode::Quick,
            "--goals" => o.mode = Mode::Goals,
            "--full" => o.mode = Mode::Full,
            "--report-only" => o.report_only = true,
            "--warmup-ms" => {
                o.warmup_ms = value("--warmup-ms")?.parse()?;
                timing_set = true;
            }
            "--measure-ms" => {
                o.measure_ms = value("--measure-ms")?.parse()?;
                timing_set = true;
            }
            "--contenders" => {
                o.contenders = value("--contenders")?
                    .split(',')
                    .map(str::to_string)
                    .collect();
                for name in &o.contenders {
                    if contenders::entry(name).is_none() {
                        let known: Vec<&str> = CONTENDERS.iter().map(|e| e.name).collect();
                        return Err(format!("unknown contender {name:?}; known: {known:?}").into());
                    }
                }
            }
            "--experiments" => {
                o.experiments = value("--experiments")?
                    .split(',')
                    .map(str::to_string)
                    .collect();
            }
            "--sweep-read-pct" => {
                o.sweep_read_pct = value("--sweep-read-pct")?.parse()?;
                if o.sweep_read_pct > 100 {
                    return Err("--sweep-read-pct takes 0..=100".into());
                }
            }
            "--out" => o.out = Some(value("--out")?.into()),
            "--plots" => o.plots = Some(value("--plots")?.into()),
            "-h" | "--help" => {
                println!("{}", HELP);
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}\n{HELP}").into()),
        }
    }
    if o.mode == Mode::Quick && !timing_set {
        o.warmup_ms = 300;
        o.measure_ms = 700;
    }
    Ok(o)
}

const HELP: &str = "usage: loadgen [--quick | --goals | --full] [--warmup-ms N] [--measure-ms N] \
[--contenders a,b] [--experiments matrix,capacity,budget] [--sweep-read-pct N] [--out DIR] \
[--plots DIR] [--report-only]";

/// The matrix cells of a mode.
fn matrix(mode: Mode) -> Vec<Cell> {
    type Axes = (Vec<Dist>, Vec<u64>, Vec<u32>, Vec<usize>, Vec<usize>);
    let (dists, keys, reads, values, concs): Axes = match mode {
        Mode::Quick => (
            vec![Dist::Uniform, Dist::Zipf(1.1)],
            vec![100_000],
            vec![90],
            vec![100],
            vec![1, 64],
        ),
        Mode::Goals => (
            vec![Dist::Zipf(0.9), Dist::Zipf(1.1)],
            vec![100_000, 1_000_000],
            vec![90],
            vec![100, 4096],
            vec![1, 64],
        ),
        Mode::Full => (
            vec![Dist::Uniform, Dist::Zipf(0.9), Dist::Zipf(1.1)],
            vec![100_000, 1_000_000],
            vec![90, 50],
            vec![100, 4096],
            vec![1, 64],
        ),
    };
    let mut cells = Vec::new();
    for &dist in &dists {
        for &read_pct in &reads {
            for &keys in &keys {
                for &value_bytes in &values {
                    for &concurrency in &concs {
                        cells.push(Cell {
                            dist,
                            keys,
                            read_pct,
                            value_bytes,
                            concurrency,
                        });
                    }
                }
            }
        }
    }
    cells
}

/// Front capacity of the matrix cells, as a share of the key space.
const MATRIX_FRONT_PCT: f64 = 10.0;

fn plan(o: &Options, redis_url: &str) -> Vec<ChildSpec> {
    let mut specs = Vec::new();
    let mut seed = 1;
    let mut push = |experiment: &str, contender: &str, cell: Cell, front: Front, front_pct: f64| {
        specs.push(ChildSpec {
            experiment: experiment.into(),
            contender: contender.into(),
            cell,
            front,
            front_pct,
            redis_url: redis_url.into(),
            warmup_ms: o.warmup_ms,
            measure_ms: o.measure_ms,
            seed,
        });
        seed += 1;
    };
    let wants = |e: &str| o.experiments.iter().any(|x| x == e);
    let matrix_cells = if wants("matrix") {
        matrix(o.mode)
    } else {
        Vec::new()
    };
    for cell in matrix_cells {
        let front = Front::Entries((cell.keys as f64 * MATRIX_FRONT_PCT / 100.0) as u64);
        for name in &o.contenders {
            push("matrix", name, cell, front, MATRIX_FRONT_PCT);
        }
    }
    // Hit ratio against front capacity: Zipf 1.1, read-heavy.
    let cell = Cell {
        dist: Dist::Zipf(1.1),
        keys: 100_000,
        read_pct: o.sweep_read_pct,
        value_bytes: 100,
        concurrency: 64,
    };
    let pcts: &[f64] = match (wants("capacity"), o.mode) {
        (false, _) => &[],
        (true, Mode::Quick) => &[1.0, 10.0],
        (true, _) => &[1.0, 5.0, 10.0, 25.0],
    };
    for &pct in pcts {
        let front = Front::Entries((cell.keys as f64 * pct / 100.0) as u64);
        for name in &o.contenders {
            if contenders::entry(name).is_some_and(|e| e.tiered) {
                push("capacity", name, cell, front, pct);
            }
        }
    }
    // Byte budget of kvtower's byte-bounded front with large values.
    let cell = Cell {
        dist: Dist::Zipf(0.9),
        keys: 100_000,
        read_pct: 90,
        value_bytes: 4096,
        concurrency: 64,
    };
    for name in o.contenders.iter().filter(|_| wants("budget")) {
        if contenders::BYTE_FRONTS.contains(&name.as_str()) {
            for mib in [16u64, 64] {
                push("budget", name, cell, Front::Bytes(mib << 20), 0.0);
            }
        }
    }
    specs
}

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        let spec: ChildSpec = serde_json::from_str(args.get(1).ok_or("--child needs a spec")?)?;
        let row = child(spec)?;
        println!("{}", serde_json::to_string(&row)?);
        return Ok(());
    }
    let o = parse_args(&args)?;
    let out = o.out.clone().unwrap_or_else(|| {
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/bench-results")).join(o.mode.name())
    });
    let plots_dir = o
        .plots
        .clone()
        .unwrap_or_else(|| PathBuf::from("docs/bench").join(o.mode.name()));
    let csv = out.join("results.csv");
    let rows = if o.report_only {
        report::read_csv(&csv)?
    } else {
        let rows = run_all(&o, &csv)?;
        report::write_csv(&csv, &rows)?;
        rows
    };
    let tables = report::tables(&rows);
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("tables.md"), &tables)?;
    let files = report::plots(&rows, &plots_dir)?;
    println!("{tables}");
    println!("CSV: {}", csv.display());
    println!("tables: {}", out.join("tables.md").display());
    for f in files {
        println!("plot: {}", plots_dir.join(f).display());
    }
    Ok(())
}

fn run_all(o: &Options, csv: &std::path::Path) -> Result<Vec<Row>, BoxError> {
    let server = server::RedisServer::start()?;
    let specs = plan(o, &server.url());
    let exe = std::env::current_exe()?;
    let bar = ProgressBar::new(specs.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("[{elapsed_precise}] {bar:40} {pos}/{len} (eta {eta}) {msg}")?
            .progress_chars("=> "),
    );
    let mut rows = Vec::new();
    let mut failures = 0;
    for spec in &specs {
        bar.set_message(format!(
            "{} {} {}",
            spec.experiment,
            spec.contender,
            spec.cell.label()
        ));
        server.flush()?;
        let output = Command::new(&exe)
            .arg("--child")
            .arg(serde_json::to_string(spec)?)
            .output()?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        match stdout.lines().last().map(serde_json::from_str::<Row>) {
            Some(Ok(row)) if output.status.success() => {
                if row.errors > 0 {
                    bar.println(format!(
                        "warning: {} on {}: {} errors: {}",
                        spec.contender,
                        spec.cell.label(),
                        row.errors,
                        String::from_utf8_lossy(&output.stderr).trim()
                    ));
                }
                rows.push(row);
                // Keep what is measured so far on disk: a long run that is
                // interrupted still leaves its rows.
                report::write_csv(csv, &rows)?;
            }
            _ => {
                failures += 1;
                bar.println(format!(
                    "error: {} on {} failed ({}): {}",
                    spec.contender,
                    spec.cell.label(),
                    output.status,
                    String::from_utf8_lossy(&output.stderr).trim()
                ));
            }
        }
        bar.inc(1);
    }
    bar.finish_with_message(format!("done, {failures} failed runs"));
    Ok(rows)
}

/// Runs one spec in this (child) process and reports its row.
fn child(spec: ChildSpec) -> Result<Row, BoxError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let setup = Setup {
            redis_url: spec.redis_url.clone(),
            front: spec.front,
        };
        let contender = contenders::build(&spec.contender, &setup).await?;
        let (_, base_rss) = workload::rss();
        let measured = workload::run(
            contender.clone(),
            spec.cell,
            Duration::from_millis(spec.warmup_ms),
            Duration::from_millis(spec.measure_ms),
            spec.seed,
        )
        .await?;
        if let Some(e) = &measured.first_error {
            eprintln!("first error: {e}");
        }
        let front_weighted_bytes = contender.front_weighted_bytes().await;
        let (peak_rss, _) = workload::rss();
        let us = |q: f64| measured.latency_ns.value_at_quantile(q) as f64 / 1000.0;
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        let tiered = contenders::entry(&spec.contender).is_some_and(|e| e.tiered);
        Ok(Row {
            experiment: spec.experiment,
            contender: spec.contender,
            dist: spec.cell.dist.to_string(),
            keys: spec.cell.keys,
            read_pct: spec.cell.read_pct,
            value_bytes: spec.cell.value_bytes,
            concurrency: spec.cell.concurrency,
            front: match (tiered, spec.front) {
                (false, _) => "-".into(),
                (true, Front::Entries(n)) => format!("entries:{n}"),
                (true, Front::Bytes(n)) => format!("bytes:{n}"),
            },
            front_pct: if tiered { spec.front_pct } else { 0.0 },
            ops: measured.ops,
            errors: measured.errors,
            ops_per_s: measured.ops as f64 / measured.elapsed.as_secs_f64(),
            p50_us: us(0.5),
            p99_us: us(0.99),
            p999_us: us(0.999),
            hit_ratio: measured.front.and_then(|c| c.ratio()),
            peak_rss_mib: mib(peak_rss),
            base_rss_mib: mib(base_rss),
            front_weighted_bytes,
        })
    })
}
