//! The store on its own: flushing, sorting, compaction and retention, through its public API.

use std::time::Duration;

use arrow::array::{Array, AsArray, FixedSizeBinaryArray, RecordBatch};
use arrow::datatypes::TimestampNanosecondType;
use sightline_storage::{partition, rollup};
use sightline_storage::{
    AttrValue, DedicatedAttributes, Ingest, SpanBatchBuilder, SpanFields, SpanKind, Store,
    StoreConfig, TableVersion, Version,
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
    c.engine.maintenance_interval = Duration::from_secs(3600);
    c
}

fn spans(v: &Version) -> &TableVersion {
    v.table("spans").unwrap()
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
    let store = Store::open(config(dir.path())).unwrap();
    let t = now();
    for seed in 1..=5 {
        store.append_spans(batch(seed, 200, t)).await.unwrap();
        store.flush().await.unwrap();
    }
    let snap = store.version();
    assert_eq!(spans(&snap).files.len(), 5);
    assert!(spans(&snap).in_memory.is_empty());
    store.compact_now().await.unwrap();
    let snap = store.version();
    let files = &spans(&snap).files;
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0].rows, 1000);
    assert_eq!(files[0].level, 1);
    let batches = snap.read_all("spans").unwrap();
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
        let store = Store::open(config(dir.path())).unwrap();
        store.append_spans(batch(1, 10, t)).await.unwrap();
        store
            .append_spans(batch(2, 10, t - 30 * 24 * HOUR))
            .await
            .unwrap();
        store.flush().await.unwrap();
        let hours: std::collections::HashSet<i64> = spans(&store.version())
            .files
            .iter()
            .map(|f| f.hour)
            .collect();
        assert_eq!(hours.len(), 2);
        store.shutdown();
    }
    // Reopen with maintenance running often: the 30-day-old partition goes, today's stays.
    let mut c = config(dir.path());
    c.engine.maintenance_interval = Duration::from_millis(50);
    let store = Store::open(c).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while spans(&store.version()).files.len() > 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "retention did not run"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let files = spans(&store.version()).files.clone();
    assert_eq!(files[0].hour, partition::hour_of(t as i64));
    assert_eq!(store.version().rows("spans"), 10);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let partitions = std::fs::read_dir(dir.path().join("tenants/default/spans"))
        .unwrap()
        .count();
    assert_eq!(partitions, 1, "the expired partition directory is removed");
    store.shutdown();
}

#[tokio::test(flavor = "current_thread")]
async fn unflushed_spans_are_visible_and_replayed_after_a_crash_like_stop() {
    let dir = tempfile::tempdir().unwrap();
    let t = now();
    let mut c = config(dir.path());
    c.engine.seal_max_age = Duration::from_secs(3600);
    let store = Store::open(c.clone()).unwrap();
    store.append_spans(batch(9, 25, t)).await.unwrap();
    let snap = store.version();
    assert!(spans(&snap).files.is_empty());
    assert_eq!(snap.rows("spans"), 25);
    // Read-only view from outside: the WAL beyond the checkpoint.
    assert_eq!(Store::load_readonly(dir.path()).unwrap().rows("spans"), 25);
    // The store's threads still hold the directory lock: a second store must refuse it.
    assert!(Store::open(c.clone()).is_err());
    drop(store);
}

/// Calls per service in the version's `span_red`, files and memory together.
fn red_calls(snap: &Version) -> Vec<(String, u64)> {
    let batches = snap.read_all("span_red").unwrap();
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
    c.engine.seal_max_age = Duration::from_secs(3600);
    let expected = vec![("a-svc".to_string(), 20), ("b-svc".to_string(), 20)];
    {
        let store = Store::open(c.clone()).unwrap();
        store.append_spans(batch(1, 20, t)).await.unwrap();
        assert_eq!(
            red_calls(&store.version()),
            vec![("a-svc".into(), 10), ("b-svc".into(), 10)]
        );
        store.flush().await.unwrap();
        let snap = store.version();
        let red = snap.table("span_red").unwrap();
        assert!(red.in_memory.is_empty());
        assert_eq!(red.files.len(), 1);
        // Acknowledged but not flushed when the store is dropped without a shutdown.
        store.append_spans(batch(2, 20, t)).await.unwrap();
        assert_eq!(red_calls(&store.version()), expected);
        drop(store);
    }
    // Wait for the dropped store's threads to let go of the directory.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let store = loop {
        match Store::open(c.clone()) {
            Ok(s) => break s,
            Err(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(
        red_calls(&store.version()),
        expected,
        "replayed once, not twice"
    );
    assert_eq!(store.version().table("span_red").unwrap().files.len(), 2);
    store.compact_now().await.unwrap();
    let snap = store.version();
    assert_eq!(snap.table("span_red").unwrap().files.len(), 1);
    assert_eq!(red_calls(&snap), expected);
    store.shutdown();
}

/// Counted spans (SOFATracer's stat lines) are summed into `span_red` with the spans' own rows,
/// replayed once after a crash, and kept apart in `span_stats`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn span_stats_add_to_the_red_rows_and_survive_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let t = now();
    let mut c = config(dir.path());
    c.engine.seal_max_age = Duration::from_secs(3600);
    let mut stats = rollup::Aggregate::<rollup::RedKey>::default();
    stats.add(
        rollup::RedKey {
            service: "a-svc".into(),
            operation: "op".into(),
            span_kind: SpanKind::Server as i8,
            status_code: 0,
            load_test: false,
            minute: rollup::minute_of(t as i64),
        },
        &rollup::Measures::from_totals(7, 0, 7_000),
    );
    let stats = stats.to_batch().unwrap().unwrap();
    let expected = vec![("a-svc".to_string(), 17), ("b-svc".to_string(), 10)];
    {
        let store = Store::open(c.clone()).unwrap();
        store.append_spans(batch(1, 20, t)).await.unwrap();
        let (_, acked) = store
            .submit(sightline_storage::DEFAULT_TENANT, Ingest::SpanStats(stats))
            .unwrap();
        acked.await.unwrap().unwrap();
        assert_eq!(red_calls(&store.version()), expected);
        store.abandon();
    }
    let store = reopen(&c).await;
    assert_eq!(red_calls(&store.version()), expected, "replayed once");
    store.flush().await.unwrap();
    store.compact_now().await.unwrap();
    let snap = store.version();
    assert_eq!(red_calls(&snap), expected);
    let rows: usize = snap
        .read_all("span_stats")
        .unwrap()
        .iter()
        .map(|b| b.num_rows())
        .sum();
    assert_eq!(rows, 1, "the stat row itself is kept");
    // A stat row has no distribution: the percentiles are the spans' alone.
    let mut a = rollup::Measures::default();
    for b in snap.read_all("span_red").unwrap() {
        for (k, m) in rollup::read_rows::<rollup::RedKey>(&b).unwrap() {
            if &*k.service == "a-svc" {
                a.merge(&m);
            }
        }
    }
    assert_eq!((a.calls, a.latency.count()), (17, 10));
    store.shutdown();
}

/// Segment ids in the WAL directory.
fn wal_segments(dir: &std::path::Path) -> Vec<u64> {
    let mut ids: Vec<u64> = std::fs::read_dir(dir.join("wal"))
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".wal")?.parse().ok()
        })
        .collect();
    ids.sort();
    ids
}

/// Opens the store again once the threads of an abandoned one let go of the directory.
async fn reopen(c: &StoreConfig) -> Store {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match Store::open(c.clone()) {
            Ok(s) => return s,
            Err(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("{e}"),
        }
    }
}

/// When the next WAL segment cannot be created, nothing is sealed: writes go on into the
/// current segment and every acknowledged one survives a crash. (Before, the seal went ahead,
/// the flush deleted the segment, and writes acknowledged into it after the seal were lost.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_a_crash_after_a_failed_wal_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let t = now();
    let mut c = config(dir.path());
    c.engine.seal_max_age = Duration::from_secs(3600);
    let store = Store::open(c.clone()).unwrap();
    store.append_spans(batch(1, 10, t)).await.unwrap();
    let current = *wal_segments(dir.path()).last().unwrap();
    // A directory where the next segment must go: creating it fails.
    let obstacle = dir.path().join(format!("wal/{:020}.wal", current + 1));
    std::fs::create_dir(&obstacle).unwrap();

    let acked = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(10));
    let writers: Vec<_> = (0..4u32)
        .map(|w| {
            let store = store.clone();
            let acked = acked.clone();
            tokio::spawn(async move {
                for i in 0..50u32 {
                    if store
                        .append_spans(batch(100 + w * 1000 + i, 10, t))
                        .await
                        .is_ok()
                    {
                        acked.fetch_add(10, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    // Forced seals while writes are in flight: each must fail, none may lose a write.
    for _ in 0..5 {
        let err = store.flush().await.unwrap_err();
        assert!(err.to_string().contains("wal"), "{err}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for w in writers {
        w.await.unwrap();
    }
    assert!(store.is_healthy(), "a failed rotation does not stop writes");
    let acked = acked.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(acked, 10 + 4 * 50 * 10, "every write was acknowledged");
    assert_eq!(store.version().rows("spans"), acked);
    store.abandon();

    std::fs::remove_dir(&obstacle).unwrap();
    let store = reopen(&c).await;
    assert_eq!(
        store.version().rows("spans"),
        acked,
        "nothing acknowledged is lost"
    );
    store.flush().await.unwrap();
    assert_eq!(store.version().rows("spans"), acked);
    store.shutdown();
}

/// A reader never sees a row twice, nor misses one acknowledged before it looked, however the
/// flushes fall (before, a chunk just flushed could be counted in memory and in its file).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_counts_every_acknowledged_row_once() {
    let dir = tempfile::tempdir().unwrap();
    let t = now();
    let mut c = config(dir.path());
    c.engine.seal_max_age = Duration::from_millis(20);
    let store = Store::open(c).unwrap();
    let acked = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (store, acked, stop) = (store.clone(), acked.clone(), stop.clone());
        tokio::spawn(async move {
            let mut seed = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                seed += 1;
                store.append_spans(batch(seed, 20, t)).await.unwrap();
                acked.fetch_add(20, std::sync::atomic::Ordering::SeqCst);
            }
        })
    };
    let mut answers = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < deadline {
        let before = acked.load(std::sync::atomic::Ordering::SeqCst);
        let v = store.version();
        let after = acked.load(std::sync::atomic::Ordering::SeqCst);
        let rows = v.rows("spans");
        // Acknowledgement is sent after the rows are buffered, so `after` may lag by one write
        // in flight; never by a whole chunk.
        assert!(
            rows >= before,
            "{rows} rows seen, {before} acknowledged before"
        );
        assert!(
            rows <= after + 20,
            "{rows} rows seen, only {after} acknowledged"
        );
        let red: u64 = red_calls(&v).iter().map(|(_, n)| n).sum();
        assert_eq!(red, rows, "rollups count each span once too");
        answers += 1;
        tokio::task::yield_now().await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.await.unwrap();
    assert!(answers > 50, "{answers}");
    assert!(
        store
            .engine()
            .stats()
            .files_flushed
            .load(std::sync::atomic::Ordering::Relaxed)
            > 5,
        "flushes happened while reading"
    );
    store.shutdown();
}
