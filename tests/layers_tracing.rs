//! TracingLayer: spans carry op, store, outcome and latency; key parts never
//! reach INFO level. Checked with a capturing subscriber layer.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use kvtower::layers::TracingLayer;
use kvtower::{kvkey, KvStore, KvStoreExt, MemoryKvStore, SetOptions};
use serde_json::json;
use tower::Layer as _;
use tracing::field::{Field, Visit};
use tracing::{Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// Every span and event, one line each, with its level.
#[derive(Clone, Default)]
struct Capture {
    lines: Arc<Mutex<Vec<(Level, String)>>>,
}

struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, " {}={:?}", field.name(), value);
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _: &tracing::span::Id,
        _: Context<'_, S>,
    ) {
        let mut fields = Fields(format!("span {}", attrs.metadata().name()));
        attrs.record(&mut fields);
        self.lines
            .lock()
            .unwrap()
            .push((*attrs.metadata().level(), fields.0));
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        ctx: Context<'_, S>,
    ) {
        let level = ctx
            .span(id)
            .map(|s| *s.metadata().level())
            .unwrap_or(Level::TRACE);
        let mut fields = Fields("record".to_owned());
        values.record(&mut fields);
        self.lines.lock().unwrap().push((level, fields.0));
    }

    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let mut fields = Fields("event".to_owned());
        event.record(&mut fields);
        self.lines
            .lock()
            .unwrap()
            .push((*event.metadata().level(), fields.0));
    }
}

#[tokio::test(flavor = "current_thread")]
async fn spans_have_outcomes_and_keys_stay_below_info() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry().with(capture.clone());
    let _guard = tracing::subscriber::set_default(subscriber);

    let store = TracingLayer::new("sessions").layer(MemoryKvStore::new());
    let key = kvkey!["user", "secret-user-id"];
    store
        .set(&key, json!("v"), SetOptions::default())
        .await
        .unwrap();
    store.get(&key).await.unwrap();
    store.get(&kvkey!["other-secret"]).await.unwrap();
    store
        .list_all(Some(kvkey!["user", "secret-user-id"]))
        .await
        .unwrap();
    store.get_many(std::slice::from_ref(&key)).await.unwrap();
    store.delete_many(std::slice::from_ref(&key)).await.unwrap();

    let lines = capture.lines.lock().unwrap().clone();
    let at_info: String = lines
        .iter()
        .filter(|(level, _)| *level <= Level::INFO)
        .map(|(_, line)| format!("{line}\n"))
        .collect();
    let all: String = lines.iter().map(|(_, line)| format!("{line}\n")).collect();

    assert!(
        at_info.contains(r#"span kvtower op="set" store="sessions""#),
        "{at_info}"
    );
    assert!(
        at_info.contains(r#"op="get""#) && at_info.contains(r#"op="list""#),
        "{at_info}"
    );
    assert!(at_info.contains(r#"outcome="hit""#), "{at_info}");
    assert!(at_info.contains(r#"outcome="miss""#), "{at_info}");
    assert!(at_info.contains(r#"outcome="ok""#), "{at_info}");
    assert!(at_info.contains("latency_us="), "{at_info}");
    assert!(
        !at_info.contains("secret"),
        "a key part reached INFO:\n{at_info}"
    );
    // The keys are there at DEBUG, so the check above can fail.
    assert!(
        all.contains("secret-user-id") && all.contains("other-secret"),
        "{all}"
    );
}

/// Issue 13: a loader call runs inside an INFO span `kvtower.aside.load`
/// that names the cache; a front hit calls no loader, so opens no span.
#[tokio::test(flavor = "current_thread")]
async fn aside_loader_calls_run_in_their_own_span() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry().with(capture.clone());
    let _guard = tracing::subscriber::set_default(subscriber);

    let aside = kvtower::aside::CacheAside::builder(MemoryKvStore::new())
        .name("users")
        .no_lease()
        .build()
        .unwrap();
    let key = kvkey!["user", "1"];
    let loaded = aside
        .get_or_set(&key, aside.options(), || async {
            tracing::info!("inside the loader");
            Ok::<_, std::io::Error>(json!({"name": "Ada"}))
        })
        .await
        .unwrap();
    assert_eq!(loaded, json!({"name": "Ada"}));
    let spans = |lines: &[(Level, String)]| {
        lines
            .iter()
            .filter(|(_, line)| line.starts_with("span kvtower.aside.load"))
            .cloned()
            .collect::<Vec<_>>()
    };
    let first = spans(&capture.lines.lock().unwrap());
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0].0, Level::INFO);
    assert!(first[0].1.contains("cache=users"), "{first:?}");

    let hit = aside
        .get_or_set(&key, aside.options(), || async {
            Ok::<_, std::io::Error>(json!("never"))
        })
        .await
        .unwrap();
    assert_eq!(hit, json!({"name": "Ada"}));
    assert_eq!(spans(&capture.lines.lock().unwrap()).len(), 1);
}
