//! `MemoryKvStore`'s memory bounds, measured with a counting global
//! allocator: a listing streams (its first entry costs a chunk, not a copy of
//! the store), and `max_bytes` bounds the heap the entries really take.
//!
//! One test per binary would be cleaner for an allocator count; the two tests
//! here take one lock so that neither counts the other's allocations.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};
use std::sync::Mutex;

use futures::StreamExt;
use kvtower::{kvkey, KvStore, MemoryKvStore, SetOptions};
use serde_json::{json, Value};

/// Counts the bytes currently allocated and the peak since the last reset.
struct Counting;

static CURRENT: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to `System` unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            let now = CURRENT.fetch_add(layout.size() as isize, Ordering::Relaxed)
                + layout.size() as isize;
            PEAK.fetch_max(now.max(0) as usize, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

fn current() -> usize {
    CURRENT.load(Ordering::Relaxed).max(0) as usize
}

fn reset_peak() -> usize {
    let now = current();
    PEAK.store(now, Ordering::Relaxed);
    now
}

#[test]
fn a_listing_yields_its_first_entry_without_copying_the_store() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    runtime().block_on(listing_streams());
}

async fn listing_streams() {
    const ENTRIES: usize = 100_000;
    let store = MemoryKvStore::builder()
        .max_entries(ENTRIES as u64 * 2)
        .build();
    let value = json!({"payload": "x".repeat(200)});
    for i in 0..ENTRIES {
        store
            .set(
                &kvkey!["k", i.to_string()],
                value.clone(),
                SetOptions::default(),
            )
            .await
            .unwrap();
    }
    store.run_pending_tasks().await;

    let before = reset_peak();
    let mut listing = store.list(Some(kvkey!["k"]));
    let first = listing.next().await.expect("an entry").expect("no error");
    assert!(first.key.starts_with(&kvkey!["k"]));
    let used = PEAK.load(Ordering::Relaxed) - before;
    // A copy of every entry (what the listing used to build, then sort) is
    // over 30 MB here: ~300 bytes of value and key per entry. A chunk is 64
    // entries, plus the keys of one of moka's 64 hash-table segments.
    let copy_of_all = ENTRIES * 300;
    assert!(
        used < copy_of_all / 20,
        "the first entry cost {used} bytes of heap (a full copy is ~{copy_of_all})"
    );
    // And the listing is complete.
    let rest = listing.count().await;
    assert_eq!(rest + 1, ENTRIES);
}

#[test]
fn max_bytes_bounds_the_heap_entries_take() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    runtime().block_on(max_bytes_holds());
}

async fn max_bytes_holds() {
    const BUDGET: u64 = 4 << 20;
    let store = MemoryKvStore::builder().max_bytes(BUDGET).build();
    // Warm up moka's own structures (frequency sketch, deques) first.
    store
        .set(&kvkey!["warm"], json!(0), SetOptions::default())
        .await
        .unwrap();
    store.run_pending_tasks().await;
    let before = current();
    // 2 bytes of JSON text per element, 32 bytes of heap: weighed by its
    // text, the store would keep 16 times its budget.
    let zeros = Value::Array(vec![json!(0); 1_000]);
    for i in 0..2_000 {
        store
            .set(
                &kvkey!["z", i.to_string()],
                zeros.clone(),
                SetOptions::default(),
            )
            .await
            .unwrap();
        if i % 100 == 0 {
            store.run_pending_tasks().await;
        }
    }
    store.run_pending_tasks().await;
    let held = current().saturating_sub(before);
    assert!(
        held as u64 <= BUDGET * 3 / 2,
        "the store holds {held} bytes of heap for a budget of {BUDGET}"
    );
    assert!(
        held as u64 >= BUDGET / 4,
        "the store holds {held} bytes: it should fill most of its budget of {BUDGET}"
    );
}
