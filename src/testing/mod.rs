//! The conformance suite: the whole [`KvStore`] contract as reusable tests
//! (feature `testing`).
//!
//! Every store and every layer stack in this crate runs it against its real
//! backend, and so can yours. Give it a *factory*: an async closure that
//! returns a fresh, empty store each time it is called (a new instance, or a
//! new namespace, table or prefix on a shared server).
//!
//! [`conformance_suite!`](crate::conformance_suite) expands to one `#[test]`
//! per case, including a property test that runs random operation sequences
//! against a reference model ([`model`]):
//!
//! ```
//! // tests/my_store.rs
//! kvtower::conformance_suite!(|| async { kvtower::MemoryKvStore::new() });
//! ```
//!
//! Or run everything from one test of your own with [`run_all`]:
//!
//! ```
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() {
//! kvtower::testing::run_all(|| async { kvtower::MemoryKvStore::new() }).await;
//! # }
//! ```
//!
//! A store declares what it cannot do through
//! [`KvStore::capabilities`] and the cases check
//! that weaker promise instead (for example, `cas` must then fail with
//! [`Unsupported`](crate::ErrorKind::Unsupported)).

use std::future::Future;
use std::sync::Arc;

use proptest::test_runner::{Config, TestCaseError, TestRunner};

use crate::store::KvStore;

pub mod cases;
pub mod model;

/// Runs one case on a fresh store from `factory`, in a new multi-threaded
/// Tokio runtime. Used by [`conformance_suite!`](crate::conformance_suite).
///
/// ```
/// kvtower::testing::run_case(
///     || async { kvtower::MemoryKvStore::new() },
///     kvtower::testing::cases::set_overwrites,
/// );
/// ```
pub fn run_case<F, Fut, S, C, CFut>(factory: F, case: C)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = S>,
    S: KvStore + 'static,
    C: FnOnce(Arc<S>) -> CFut,
    CFut: Future<Output = ()>,
{
    runtime().block_on(async move {
        let store = Arc::new(factory().await);
        case(store).await;
    });
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a Tokio runtime for the conformance suite")
}

/// Every case, one after another, each on a fresh store from `factory`.
pub async fn run_all<F, Fut, S>(factory: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
    S: KvStore + 'static,
{
    macro_rules! each {
        ($($case:ident),+ $(,)?) => {$(
            cases::$case(Arc::new(factory().await)).await;
        )+};
    }
    crate::__with_conformance_cases!(each {});
    check_model(&factory, 16).await;
}

/// The number of random sequences [`model_test`] runs: `KVTOWER_PROPTEST_CASES`
/// if set, else `default`.
fn proptest_cases(default: u32) -> u32 {
    std::env::var("KVTOWER_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The property test: `cases` random operation sequences (overridable with the
/// `KVTOWER_PROPTEST_CASES` environment variable), each on a fresh store from
/// `factory`, must give the same answers as the reference model. Shrinks and
/// panics with the minimal failing sequence.
///
/// ```
/// kvtower::testing::model_test(|| async { kvtower::MemoryKvStore::new() }, 8);
/// ```
pub fn model_test<F, Fut, S>(factory: F, cases: u32)
where
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
    S: KvStore + 'static,
{
    let rt = runtime();
    let mut runner = TestRunner::new(Config {
        cases: proptest_cases(cases),
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&model::ops(40), |ops| {
        rt.block_on(async {
            let store = factory().await;
            model::check_against_model(&store, &ops).await
        })
        .map_err(TestCaseError::fail)
    });
    if let Err(err) = result {
        panic!("store differs from the reference model: {err}");
    }
}

async fn check_model<F, Fut, S>(factory: &F, cases: u32)
where
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
    S: KvStore + 'static,
{
    use proptest::strategy::{Strategy, ValueTree};
    let mut runner = TestRunner::deterministic();
    for _ in 0..proptest_cases(cases) {
        let ops = model::ops(40)
            .new_tree(&mut runner)
            .expect("a generated sequence")
            .current();
        let store = factory().await;
        if let Err(err) = model::check_against_model(&store, &ops).await {
            panic!("store differs from the reference model: {err}");
        }
    }
}

/// Expands to one `#[test]` per conformance case (and the model property
/// test), each running on a fresh store from the factory expression.
///
/// The factory is evaluated once per test: an expression of a closure
/// returning a future of a store, `|| async { ... }`.
///
/// ```
/// mod memory_conformance {
///     kvtower::conformance_suite!(|| async { kvtower::MemoryKvStore::new() });
/// }
/// ```
///
/// An optional second argument sets the number of property-test sequences
/// (default 64).
///
/// For a store whose server may be missing, a third argument `requires = f`
/// names a `fn() -> bool` that every test calls first: when it returns
/// `false` the test returns at once (passing), so `f` should say why, e.g.
/// print `SKIPPED <test>: no server`, or panic where servers are mandatory.
///
/// ```
/// mod conformance_when_possible {
///     fn server_is_up() -> bool {
///         // A real check would connect to the server, and say why not.
///         true
///     }
///     kvtower::conformance_suite!(
///         || async { kvtower::MemoryKvStore::new() },
///         16,
///         requires = server_is_up
///     );
/// }
/// ```
#[macro_export]
macro_rules! conformance_suite {
    ($factory:expr) => {
        $crate::conformance_suite!($factory, 64);
    };
    ($factory:expr, $model_cases:expr) => {
        $crate::conformance_suite!($factory, $model_cases, requires = || true);
    };
    ($factory:expr, $model_cases:expr, requires = $requires:expr) => {
        $crate::__with_conformance_cases!($crate::__conformance_cases { $factory; $requires; });
        #[test]
        fn matches_reference_model() {
            if !($requires)() {
                return;
            }
            $crate::testing::model_test($factory, $model_cases);
        }
    };
}

/// Calls `$callback! { <tokens> case, case, ... }` with every conformance
/// case: the one list that both [`conformance_suite!`] and [`run_all`] use.
#[doc(hidden)]
#[macro_export]
macro_rules! __with_conformance_cases {
    ($callback:path { $($tokens:tt)* }) => {
        $callback! {
            $($tokens)*
            round_trips_every_json_type,
            absent_keys_and_delete,
            set_overwrites,
            ttl_expiry,
            ttl_zero_means_expired,
            ttl_is_replaced_by_later_writes,
            cas_semantics,
            list_by_prefix,
            tricky_keys_never_collide,
            batch_operations,
            large_listing,
            concurrent_cas_increments,
            floats_round_trip_exactly,
            nesting_depth_limit,
            get_with_ttl_reports_the_remaining_lifetime,
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_cases {
    ($factory:expr; $requires:expr; $($case:ident),+ $(,)?) => {$(
        #[test]
        fn $case() {
            if !($requires)() {
                return;
            }
            $crate::testing::run_case($factory, $crate::testing::cases::$case);
        }
    )+};
}
