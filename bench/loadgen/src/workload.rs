//! The workload: key distributions, values, and the timed run of one
//! contender on one cell.
//!
//! Semantics are cache-aside: a read that finds nothing writes the value (as
//! an application would after loading it from its source of truth), so the
//! shared tier fills as the run goes and no preload of up to 1M x 4 KiB is
//! needed. A write overwrites the value. Each measured operation's latency
//! covers everything it did (a read miss includes its fill).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rand09::rngs::SmallRng;
use rand09::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::contenders::{BoxError, Contender, Counts};

/// How keys are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Dist {
    /// Every key equally likely.
    Uniform,
    /// Zipf with this exponent: key of rank k drawn with weight 1/k^s.
    Zipf(f64),
}

impl fmt::Display for Dist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dist::Uniform => f.write_str("uniform"),
            Dist::Zipf(s) => write!(f, "zipf{s}"),
        }
    }
}

impl FromStr for Dist {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "uniform" {
            return Ok(Dist::Uniform);
        }
        s.strip_prefix("zipf")
            .and_then(|e| e.parse::<f64>().ok())
            .filter(|e| *e > 0.0)
            .map(Dist::Zipf)
            .ok_or_else(|| format!("unknown distribution {s:?} (uniform, zipf0.9, zipf1.1, ...)"))
    }
}

/// One workload cell.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    pub dist: Dist,
    /// Size of the key space.
    pub keys: u64,
    /// Share of reads, in percent (the rest are writes).
    pub read_pct: u32,
    /// Length of a value's JSON text, in bytes.
    pub value_bytes: usize,
    /// Concurrent tasks issuing operations.
    pub concurrency: usize,
}

impl Cell {
    /// A short label: `zipf1.1 100k r90 100B c64`.
    pub fn label(&self) -> String {
        format!(
            "{} {} r{} {} c{}",
            self.dist,
            keys_label(self.keys),
            self.read_pct,
            bytes_label(self.value_bytes),
            self.concurrency
        )
    }
}

pub fn keys_label(keys: u64) -> String {
    match keys {
        k if k >= 1_000_000 && k.is_multiple_of(1_000_000) => format!("{}M", k / 1_000_000),
        k if k >= 1_000 && k.is_multiple_of(1_000) => format!("{}k", k / 1_000),
        k => k.to_string(),
    }
}

pub fn bytes_label(bytes: usize) -> String {
    if bytes >= 1024 && bytes.is_multiple_of(1024) {
        format!("{}KiB", bytes / 1024)
    } else {
        format!("{bytes}B")
    }
}

/// A JSON object whose text is `bytes` long (for `bytes` >= 64), shaped like
/// a typical cached record: a few small fields and one larger payload.
pub fn template(bytes: usize) -> Value {
    let base = json!({"id": 0u64, "kind": "bench", "version": 1, "payload": ""});
    let fixed = serde_json::to_vec(&base).map(|v| v.len()).unwrap_or(0);
    let payload = "x".repeat(bytes.saturating_sub(fixed));
    json!({"id": 0u64, "kind": "bench", "version": 1, "payload": payload})
}

/// The value written for `id`: the template with its id set.
pub fn value_for(template: &Value, id: u64) -> Value {
    let mut value = template.clone();
    value["id"] = json!(id);
    value
}

/// Draws key ids in `0..keys`.
#[derive(Debug, Clone)]
pub enum Keys {
    Uniform(u64),
    Zipf(Zipf<f64>),
}

impl Keys {
    pub fn new(dist: Dist, keys: u64) -> Result<Self, BoxError> {
        Ok(match dist {
            Dist::Uniform => Keys::Uniform(keys),
            Dist::Zipf(s) => Keys::Zipf(Zipf::new(keys as f64, s)?),
        })
    }

    /// The next id. Zipf rank 1 (the most popular key) is id 0.
    pub fn sample(&self, rng: &mut SmallRng) -> u64 {
        match self {
            Keys::Uniform(n) => rng.random_range(0..*n),
            Keys::Zipf(z) => (z.sample(rng) as u64).saturating_sub(1),
        }
    }
}

/// One operation of the mix: a cache-aside read or a write.
pub async fn one_op(
    contender: &dyn Contender,
    keys: &Keys,
    read_pct: u32,
    template: &Value,
    rng: &mut SmallRng,
) -> Result<(), BoxError> {
    let id = keys.sample(rng);
    if rng.random_range(0..100) < read_pct {
        if contender.get(id).await?.is_none() {
            contender.set(id, value_for(template, id)).await?;
        }
        Ok(())
    } else {
        contender.set(id, value_for(template, id)).await
    }
}

/// What one timed run measured.
#[derive(Debug)]
pub struct Measured {
    pub ops: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub latency_ns: Histogram<u64>,
    pub elapsed: Duration,
    pub front: Option<Counts>,
}

/// Runs `cell` on `contender`: `warmup` unmeasured, then `measure` measured.
/// Operations that start inside the measured window are counted; front-tier
/// counts are the difference between the window's two ends.
pub async fn run(
    contender: Arc<dyn Contender>,
    cell: Cell,
    warmup: Duration,
    measure: Duration,
    seed: u64,
) -> Result<Measured, BoxError> {
    let keys = Arc::new(Keys::new(cell.dist, cell.keys)?);
    let template = Arc::new(template(cell.value_bytes));
    let start = Instant::now();
    let measure_from = start + warmup;
    let measure_until = measure_from + measure;
    let mut tasks = Vec::with_capacity(cell.concurrency);
    for task in 0..cell.concurrency {
        let contender = contender.clone();
        let keys = keys.clone();
        let template = template.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = SmallRng::seed_from_u64(seed.wrapping_mul(1_000_003) + task as u64);
            let mut hist = Histogram::<u64>::new_with_bounds(1, 120_000_000_000, 3)
                .map_err(|e| e.to_string())?;
            let (mut ops, mut errors, mut first_error) = (0u64, 0u64, None);
            loop {
                let begin = Instant::now();
                if begin >= measure_until {
                    break;
                }
                let result = one_op(&*contender, &keys, cell.read_pct, &template, &mut rng).await;
                if begin >= measure_from {
                    let ns = u64::try_from(begin.elapsed().as_nanos()).unwrap_or(u64::MAX);
                    hist.saturating_record(ns.max(1));
                    ops += 1;
                    if let Err(e) = result {
                        errors += 1;
                        first_error.get_or_insert_with(|| e.to_string());
                    }
                } else if let Err(e) = result {
                    errors += 1;
                    first_error.get_or_insert_with(|| e.to_string());
                }
            }
            Ok::<_, String>((hist, ops, errors, first_error))
        }));
    }
    tokio::time::sleep_until(measure_from.into()).await;
    let front_before = contender.front_counts();
    tokio::time::sleep_until(measure_until.into()).await;
    let front_after = contender.front_counts();
    let elapsed = measure_from.elapsed().max(measure);
    let mut latency_ns = Histogram::<u64>::new_with_bounds(1, 120_000_000_000, 3)?;
    let (mut ops, mut errors, mut first_error) = (0, 0, None);
    for task in tasks {
        let (hist, o, e, fe) = task.await??;
        latency_ns.add(&hist)?;
        ops += o;
        errors += e;
        if first_error.is_none() {
            first_error = fe;
        }
    }
    Ok(Measured {
        ops,
        errors,
        first_error,
        latency_ns,
        elapsed,
        front: front_after.zip(front_before).map(|(a, b)| a.since(b)),
    })
}

/// `VmHWM` (peak resident set) and `VmRSS` (current) of this process, in bytes.
pub fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmHWM:"), field("VmRSS:"))
}
