//! The store on its own: flushing, sorting, compaction and retention, through its public API.

use std::time::Duration;

use arrow::array::{Array, AsArray, FixedSizeBinaryArray, RecordBatch};
use arrow::datatypes::TimestampNanosecondType;
use sightline_storage::{partition, rollup};
use sightline_storage::{
    AttrValue, DedicatedAttributes, Snapshot, SpanBatchBuilder, SpanFields, SpanKind, SpanStore,
    StoreConfig,
};

const HOUR: u64 = 3_600_000_000_000;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// `n` spans starting at `start`, services alternating, ids from `seed`.
fn batch(seed: u32, n: u32, start: u64) -> RecordBatch {
    let mut b = SpanBatchBuilder::new();
    for i in 0..n {
        let mut trace_id = [0u8; 16];
        trace_id[..4].copy_from_slice(&(seed.wrapping_mul(7919) ^ i).to_be_bytes());
        trace_id[15] = 1;
        let mut span_id = [0u8; 8];
        span_id[..4].copy_from_slice(&seed.to_be_bytes());
        span_id[4..].copy_from_slice(&i.to_be_bytes());
        span_id[0] |= 0x80;
        b.begin_span(&SpanFields {
            trace_id,
            span_id,
            parent_span_id: None,
            trace_state: "",
            service_name: if i % 2 == 0 { "b-svc" } else { "a-svc" },
            name: "op",
            kind: SpanKind::Server,
            start_unix_nano: start + u64::from(i),
            end_unix_nano: start + u64::from(i) + 10,
            status_code: 0,
            status_message: "",
            scope_name: "",
            scope_version: "",
        });
        b.push_attribute("i", AttrValue::Int(i64::from(i)));
        b.finish_span(&DedicatedAttributes::default());
    }
    b.finish().unwrap()
}

fn config(dir: &std::path::Path) -> StoreConfig {
    let mut c = StoreConfig::new(dir);
    c.maintenance_interval = Duration::from_secs(3600);
    c
}

fn span_ids(batches: &[RecordBatch]) -> Vec<Vec<u8>> {
    let mut ids = Vec::new();
    for b in batches {
        let a = b
            .column_by_name("span_id")
            .unwrap()
            .as_any()
            .downcast_ref::<FixedSizeBinaryArray>()
            .unwrap();
        ids.extend((0..a.len()).map(|i| a.value(i).to_vec()));
    }
    ids
}

#[tokio::test(flavor = "current_thread")]
async fn flush_sorts_by_service_then_trace_and_compaction_merges_sorted() {
    let dir = tempfile::tempdir().unwrap();
    let store = SpanStore::open(config(dir.path())).unwrap();
    let t = now();
    for seed in 1..=5 {
        store.append(batch(seed, 200, t)).await.unwrap();
        store.flush().await.unwrap();
    }
    let snap = store.snapshot();
    assert_eq!(snap.files.len(), 5);
    assert!(snap.in_memory.is_empty());
    store.compact_now().await.unwrap();
    let snap = store.snapshot();
    assert_eq!(snap.files.len(), 1, "{:?}", snap.files);
    assert_eq!(snap.files[0].rows, 1000);
    assert_eq!(snap.files[0].level, 1);
    let batches = snap.read_all().unwrap();
    let mut ids = span_ids(&batches);
    assert_eq!(ids.len(), 1000);
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 1000, "every span once");

    // Sorted by service, then trace id, then start time.
    let mut keys = Vec::new();
    for b in &batches {
        let svc = b.column_by_name("service_name").unwrap();
        let svc = arrow::compute::cast(svc, &arrow::datatypes::DataType::Utf8).unwrap();
        let svc = svc.as_string::<i32>();
        let tid = b
            .column_by_name("trace_id")
            .unwrap()
            .as_any()
            .downcast_ref::<FixedSizeBinaryArray>()
            .unwrap();
        let start = b
            .column_by_name("start_time")
            .unwrap()
            .as_primitive::<TimestampNanosecondType>();
        for i in 0..b.num_rows() {
            keys.push((
                svc.value(i).to_string(),
                tid.value(i).to_vec(),
                start.value(i),
            ));
        }
    }
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    store.shutdown();
}

#[tokio::test(flavor = "current_thread")]
async fn spans_of_several_hours_land_in_their_partitions_and_old_ones_expire() {
    let dir = tempfile::tempdir().unwrap();
    let t = now();
    {
        let store = SpanStore::open(config(dir.path())).unwrap();
        store.append(batch(1, 10, t)).await.unwrap();
        store
            .append(batch(2, 10, t - 30 * 24 * HOUR))
            .await
            .unwrap();
        store.flush().await.unwrap();
        let hours: std::collections::HashSet<i64> =
            store.snapshot().files.iter().map(|f| f.hour).collect();
        assert_eq!(hours.len(), 2);
        store.shutdown();
    }
    // Reopen with maintenance running often: the 30-day-old partition goes, today's stays.
    let mut c = config(dir.path());
    c.maintenance_interval = Duration::from_millis(50);
    let store = SpanStore::open(c).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.snapshot().files.len() > 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "retention did not run"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let files = store.snapshot().files;
    assert_eq!(files[0].hour, partition::hour_of(t as i64));
    assert_eq!(store.snapshot().total_rows(), 10);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let partitions = std::fs::read_dir(dir.path().join("spans")).unwrap().count();
    assert_eq!(partitions, 1, "the expired partition directory is removed");
    store.shutdown();
}

#[tokio::test(flavor = "current_thread")]
async fn unflushed_spans_are_visible_and_replayed_after_a_crash_like_stop() {
    let dir = tempfile::tempdir().unwrap();
    let t = now();
    let mut c = config(dir.path());
    c.seal_max_age = Duration::from_secs(3600);
    let store = SpanStore::open(c.clone()).unwrap();
    store.append(batch(9, 25, t)).await.unwrap();
    let snap = store.snapshot();
    assert!(snap.files.is_empty());
    assert_eq!(snap.total_rows(), 25);
    // Read-only view from outside: the WAL beyond the checkpoint.
    assert_eq!(
        Snapshot::load_readonly(dir.path()).unwrap().total_rows(),
        25
    );
    // The store's threads still hold the directory lock: a second store must refuse it.
    assert!(SpanStore::open(c.clone()).is_err());
    drop(store);
}

/// Calls per service in the snapshot's `span_red`, files and memory together.
fn red_calls(snap: &Snapshot) -> Vec<(String, u64)> {
    let mut batches = snap.span_red.in_memory.clone();
    for f in &snap.span_red.files {
        batches.extend(rollup::files::read(&snap.data_dir, f).unwrap());
    }
    let mut sum = rollup::Aggregate::<rollup::RedKey>::default();
    for b in &batches {
        sum.add_batch(b).unwrap();
    }
    let mut per_service = std::collections::BTreeMap::<String, u64>::new();
    for (k, m) in sum.iter() {
        *per_service.entry(k.service.to_string()).or_default() += m.calls;
    }
    per_service.into_iter().collect()
}

#[tokio::test(flavor = "current_thread")]
async fn rollups_follow_their_spans_through_flush_replay_and_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let t = now();
    let mut c = config(dir.path());
    c.seal_max_age = Duration::from_secs(3600);
    let expected = vec![("a-svc".to_string(), 20), ("b-svc".to_string(), 20)];
    {
        let store = SpanStore::open(c.clone()).unwrap();
        store.append(batch(1, 20, t)).await.unwrap();
        assert_eq!(
            red_calls(&store.snapshot()),
            vec![("a-svc".into(), 10), ("b-svc".into(), 10)]
        );
        store.flush().await.unwrap();
        let snap = store.snapshot();
        assert!(snap.span_red.in_memory.is_empty());
        assert_eq!(snap.span_red.files.len(), 1);
        // Acknowledged but not flushed when the store is dropped without a shutdown.
        store.append(batch(2, 20, t)).await.unwrap();
        assert_eq!(red_calls(&store.snapshot()), expected);
        drop(store);
    }
    // Wait for the dropped store's threads to let go of the directory.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let store = loop {
        match SpanStore::open(c.clone()) {
            Ok(s) => break s,
            Err(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(
        red_calls(&store.snapshot()),
        expected,
        "replayed once, not twice"
    );
    assert_eq!(store.snapshot().span_red.files.len(), 2);
    store.compact_now().await.unwrap();
    let snap = store.snapshot();
    assert_eq!(snap.span_red.files.len(), 1);
    assert_eq!(red_calls(&snap), expected);
    store.shutdown();
}
