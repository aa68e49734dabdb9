//! Wall-clock throughput of the hit-path contenders, interleaved: each round
//! runs one batch of every contender in turn (starting one further along the
//! list each round), so whatever the machine does meanwhile (a 2-core VM whose
//! idle cores sleep, other processes) falls on all of them alike; criterion's
//! groups run each contender for seconds at a stretch instead, and on this
//! machine the same code measured up to 2x apart between two such stretches.
//! Prints each contender's median time per operation over the rounds and its
//! throughput ratio to the floor's.
//!
//! ```text
//! cargo run --profile bench -p kvtower-hitpath --example interleaved [ROUNDS]
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use kvtower_hitpath::{
    preload, redis_store, run, stack, stack_plain_fills, Contender, Floor, Kv, RedisServer,
    Workload, FRONT_CAPACITY, REDIS_TTL,
};
use rand_distr::Distribution;

#[path = "../peers/mod.rs"]
mod peers;

/// Keys in Redis (ten times the front), as in the criterion bench.
const KEYS: usize = 100_000;
/// Keys the hit workload cycles over.
const HOT: usize = 1_000;

/// One contender, type-erased: runs `ops` operations of a workload from
/// `tasks` tasks and answers the time taken.
type Runner = Box<dyn Fn(usize, u64, Workload) -> Pin<Box<dyn Future<Output = Duration>>>>;

fn runner<C: Contender>(contender: Arc<C>) -> Runner {
    Box::new(move |tasks, ops, workload| {
        let contender = contender.clone();
        Box::pin(async move { run(&contender, tasks, ops, &workload).await })
    })
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .map_or(11, |r| r.parse().expect("ROUNDS"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let server = RedisServer::start().expect("redis-server");
    let url = server.url();
    // amalgam-cache's writes slow to milliseconds once its front is full (see
    // the criterion bench), so by default it holds the hot keys only and runs
    // in the hit groups; HITPATH_AMALGAM_ALL=1 preloads every key (about 5
    // minutes) and runs it in every group.
    let amalgam_all = std::env::var_os("HITPATH_AMALGAM_ALL").is_some();
    let (floor, kv_stack, plain, memory, multitier, amalgam) = rt.block_on(async {
        let floor = Arc::new(Floor::connect(&url, KEYS).await);
        let kv_stack = Arc::new(Kv::new(stack(redis_store(&url, "kv").await), KEYS));
        let plain = Arc::new(Kv::new(
            stack_plain_fills(redis_store(&url, "kv").await),
            KEYS,
        ));
        let memory = Arc::new(Kv::new(
            kvtower::MemoryKvStore::builder()
                .max_entries(FRONT_CAPACITY)
                .max_ttl(REDIS_TTL)
                .build(),
            KEYS,
        ));
        let multitier = Arc::new(peers::MultiTier::connect(&url, KEYS).await);
        preload(&floor, KEYS).await;
        preload(&kv_stack, KEYS).await;
        preload(&plain, KEYS).await;
        preload(&memory, HOT).await;
        preload(&multitier, KEYS).await;
        let amalgam = Arc::new(peers::Amalgam::connect(&url, KEYS).await);
        preload(&amalgam, if amalgam_all { KEYS } else { HOT }).await;
        (floor, kv_stack, plain, memory, multitier, amalgam)
    });
    let zipf = rand_distr::Zipf::new(KEYS as f64, 1.0).expect("zipf");
    let mut rng = rand09::rng();
    let ranks: Arc<[u32]> = (0..1 << 20)
        .map(|_| zipf.sample(&mut rng) as u32 - 1)
        .collect();
    let mix = Workload::Mix {
        ranks,
        value: Arc::new(kvtower_hitpath::value(0)),
    };
    let hits = Workload::Hits { keys: HOT };

    // (group, tasks, operations per batch, with the memory store: the hit groups)
    let groups: Vec<(&str, usize, u64, bool)> = vec![
        ("hit/1_tasks", 1, 200_000, true),
        ("hit/64_tasks", 64, 200_000, true),
        ("zipf1.0_r95/64_tasks", 64, 100_000, false),
        ("miss/1_tasks", 1, 3_000, false),
        ("miss/64_tasks", 64, 20_000, false),
    ];
    println!(
        "rounds: {rounds}; median ns per operation (min-max over rounds); throughput vs floor"
    );
    for (group, tasks, ops, with_memory) in groups {
        let mut contenders: Vec<(&str, Runner)> = vec![
            ("floor", runner(floor.clone())),
            ("kvtower_stack", runner(kv_stack.clone())),
            ("kvtower_stack_plain_fills", runner(plain.clone())),
            ("multi_tier_cache", runner(multitier.clone())),
        ];
        if with_memory {
            contenders.push(("memory_get_shared", runner(memory.clone())));
        }
        if with_memory || amalgam_all {
            contenders.push(("amalgam", runner(amalgam.clone())));
        }
        // Each contender walks its own cold keys.
        let workloads: Vec<Workload> = contenders
            .iter()
            .map(|_| match group {
                g if g.starts_with("miss") => Workload::misses(KEYS),
                g if g.starts_with("zipf") => mix.clone(),
                _ => hits.clone(),
            })
            .collect();
        // Warm-up: one batch each (fronts filled with the hot keys).
        for (i, (_, run)) in contenders.iter().enumerate() {
            rt.block_on(run(tasks, ops, workloads[i].clone()));
        }
        let mut times: Vec<Vec<f64>> = vec![Vec::new(); contenders.len()];
        for round in 0..rounds {
            for k in 0..contenders.len() {
                let i = (round + k) % contenders.len();
                let elapsed = rt.block_on((contenders[i].1)(tasks, ops, workloads[i].clone()));
                times[i].push(elapsed.as_nanos() as f64 / ops as f64);
            }
        }
        let medians: Vec<f64> = times
            .iter_mut()
            .map(|t| {
                t.sort_by(f64::total_cmp);
                t[t.len() / 2]
            })
            .collect();
        for (i, (name, _)) in contenders.iter().enumerate() {
            let t = &times[i];
            println!(
                "{group:<22} {name:<26} {:>10.1} ns ({:.1}-{:.1})  {:>10.0} ops/s  {:.2}x",
                medians[i],
                t[0],
                t[t.len() - 1],
                1e9 / medians[i],
                medians[0] / medians[i]
            );
        }
    }
    drop(server);
}
