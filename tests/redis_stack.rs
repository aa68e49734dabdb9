//! The conformance suite through layer stacks over the real Redis: the full
//! stack (metrics + prefix + default TTL + cache) and a cache layer with the
//! cross-node invalidation bus. Each test gets its own namespace on the shared
//! Redis, deleted afterwards.

mod support;

use std::time::Duration;

use kvtower::invalidation::RedisInvalidationBus;
use kvtower::layers::{CacheLayer, CircuitBreakerLayer};
use kvtower::{KvStore, MemoryKvStore, RedisKvStore};
use support::{full_stack, WithGuard};
use support::{redis_url, unique_namespace, NamespaceGuard};
use tower::ServiceBuilder;

async fn redis(namespace: &str) -> RedisKvStore {
    RedisKvStore::builder()
        .namespace(namespace)
        .timeout(Duration::from_secs(5))
        .connect(&redis_url())
        .await
        .expect("connect to the shared Redis")
}

async fn full_stack_over_redis() -> impl KvStore {
    let namespace = unique_namespace();
    WithGuard {
        store: full_stack(redis(&namespace).await),
        _guard: NamespaceGuard(namespace),
    }
}

async fn cache_with_bus_over_redis() -> impl KvStore {
    let namespace = unique_namespace();
    let bus = RedisInvalidationBus::connect(&redis_url(), format!("{namespace}:invalidate"))
        .await
        .expect("the bus connects");
    let store = ServiceBuilder::new()
        .layer(
            CacheLayer::builder(MemoryKvStore::new())
                .invalidation_bus(bus)
                .build(),
        )
        .service(redis(&namespace).await);
    WithGuard {
        store,
        _guard: NamespaceGuard(namespace),
    }
}

/// The cache over a circuit breaker over Redis (the breaker closed: the
/// conformance suite must not tell it is there).
async fn cache_over_breaker_over_redis() -> impl KvStore {
    let namespace = unique_namespace();
    let store = ServiceBuilder::new()
        .layer(CacheLayer::new(MemoryKvStore::new()))
        .layer(CircuitBreakerLayer::new("conformance"))
        .service(redis(&namespace).await);
    WithGuard {
        store,
        _guard: NamespaceGuard(namespace),
    }
}

mod cache_over_circuit_breaker {
    kvtower::conformance_suite!(
        super::cache_over_breaker_over_redis,
        32,
        requires = crate::support::redis_available
    );
}

/// The breaker alone over Redis, so that every method (batch ones and
/// `list` included) is checked to reach the store unchanged.
async fn breaker_over_redis() -> impl KvStore {
    let namespace = unique_namespace();
    WithGuard {
        store: ServiceBuilder::new()
            .layer(CircuitBreakerLayer::new("conformance"))
            .service(redis(&namespace).await),
        _guard: NamespaceGuard(namespace),
    }
}

mod circuit_breaker {
    kvtower::conformance_suite!(
        super::breaker_over_redis,
        32,
        requires = crate::support::redis_available
    );
}

mod full_stack {
    kvtower::conformance_suite!(
        super::full_stack_over_redis,
        32,
        requires = crate::support::redis_available
    );
}

mod cache_with_invalidation_bus {
    kvtower::conformance_suite!(
        super::cache_with_bus_over_redis,
        32,
        requires = crate::support::redis_available
    );
}

#[allow(dead_code)] // its main() is the example's
#[path = "../examples/redis_middleware.rs"]
mod redis_middleware;

async fn tower_middleware_over_redis() -> impl KvStore {
    let namespace = unique_namespace();
    WithGuard {
        store: redis_middleware::stack(redis(&namespace).await),
        _guard: NamespaceGuard(namespace),
    }
}

mod tower_timeout_and_retry {
    kvtower::conformance_suite!(
        super::tower_middleware_over_redis,
        32,
        requires = crate::support::redis_available
    );
}

#[tokio::test]
async fn the_redis_middleware_example_runs() {
    if support::redis().is_none() {
        return;
    }
    let namespace = unique_namespace();
    let _guard = NamespaceGuard(namespace.clone());
    redis_middleware::run(&redis_url(), &namespace)
        .await
        .unwrap();
}

/// The front issue 14's figures recommend over Redis: a `MemoryKvStore`
/// with one global TTL (`max_ttl`) and fills that read the value with a
/// plain `GET` (`fill_without_inner_ttl`). Every write goes through the
/// layer here, so the suite must not tell it from Redis alone.
async fn plain_fill_front_over_redis() -> impl KvStore {
    let namespace = unique_namespace();
    let front_max_ttl = Duration::from_secs(60);
    let front = MemoryKvStore::builder()
        .max_entries(10_000)
        .max_ttl(front_max_ttl)
        .build();
    let store = ServiceBuilder::new()
        .layer(
            CacheLayer::builder(front)
                .front_max_ttl(front_max_ttl)
                .fill_without_inner_ttl()
                .build(),
        )
        .service(redis(&namespace).await);
    WithGuard {
        store,
        _guard: NamespaceGuard(namespace),
    }
}

mod plain_fill_front {
    kvtower::conformance_suite!(
        super::plain_fill_front_over_redis,
        32,
        requires = crate::support::redis_available
    );
}
