//! Metrics through the store: what is written is what is read back, series rows are written once
//! per hour, limits refuse new series by name, acknowledged samples survive a crash once and
//! only once, and duplicates collapse when files merge.

use std::time::Duration;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, TimestampMillisecondType, UInt64Type};
use sightline_storage::metrics::tables::{self, col};
use sightline_storage::metrics::{BucketSpan, MetricBatchBuilder, MetricType, NativeHistogram};
use sightline_storage::{Store, StoreConfig, Version};

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn config(dir: &std::path::Path) -> StoreConfig {
    let mut c = StoreConfig::new(dir);
    c.engine.maintenance_interval = Duration::from_secs(3600);
    c.engine.seal_max_age = Duration::from_secs(3600);
    c
}

/// (series id, timestamp, value bits) of every stored sample, sorted.
fn samples(v: &Version) -> Vec<(u64, i64, u64)> {
    sample_rows(&v.read_all(tables::SAMPLES_TABLE).unwrap())
}

fn series_rows(v: &Version) -> Vec<RecordBatch> {
    v.read_all(tables::SERIES_TABLE).unwrap()
}

fn count_rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(|b| b.num_rows()).sum()
}

/// One request: `n` series of metric `name`, each with one sample at `ts` of value `i`.
fn request(store: &Store, name: &str, n: usize, ts: i64) -> MetricBatchBuilder {
    let mut b = MetricBatchBuilder::new(store.metrics_config(), now_ms());
    for i in 0..n {
        let instance = format!("host-{i}");
        let mut labels = vec![
            ("__name__", name),
            ("instance", instance.as_str()),
            ("job", "node"),
        ];
        let s = b.series(&mut labels, 1).unwrap();
        b.sample(s, ts, i as f64, None);
    }
    b
}

#[tokio::test(flavor = "current_thread")]
async fn samples_histograms_exemplars_and_metadata_come_back_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    let t = now_ms();
    let mut b = MetricBatchBuilder::new(store.metrics_config(), t);
    let up = b
        .series(&mut vec![("job", "a"), ("__name__", "up")], 3)
        .unwrap();
    let stale = f64::from_bits(0x7ff0_0000_0000_0002);
    b.sample(up, t - 2000, 1.0, None);
    b.sample(up, t - 1000, f64::INFINITY, Some(t - 60_000));
    b.sample(up, t, stale, None);
    b.exemplar(
        up,
        t - 1000,
        0.25,
        &[("trace_id", "0af7651916cd43dd8448eb211c80319c")],
    );
    let hist = b
        .series(&mut vec![("__name__", "latency_seconds"), ("job", "a")], 1)
        .unwrap();
    let h = NativeHistogram {
        count: 5.0,
        sum: 1.5,
        schema: 3,
        zero_threshold: 1e-128,
        zero_count: 1.0,
        positive_spans: vec![
            BucketSpan {
                offset: -2,
                length: 2,
            },
            BucketSpan {
                offset: 3,
                length: 1,
            },
        ],
        positive_buckets: vec![1.0, 2.0, 1.0],
        negative_spans: Vec::new(),
        negative_buckets: Vec::new(),
        custom_values: Vec::new(),
        reset_hint: 2,
        float: false,
    };
    b.histogram(hist, t, None, h.clone());
    b.metadata("up", MetricType::Gauge, "", "whether the target is up");
    let report = store.write_metrics(b.finish()).await.unwrap();
    assert_eq!(report.total(), 0, "{report:?}");
    assert_eq!(report.rows(tables::SAMPLES_TABLE), 3);

    // Read back from memory, then from files: the same.
    for flush in [false, true] {
        if flush {
            store.flush().await.unwrap();
        }
        let v = store.version();
        let s = samples(&v);
        assert_eq!(s.len(), 3, "flushed: {flush}");
        let bits: Vec<u64> = s.iter().map(|x| x.2).collect();
        assert_eq!(
            bits,
            vec![1f64.to_bits(), f64::INFINITY.to_bits(), stale.to_bits()]
        );
        let series = series_rows(&v);
        assert_eq!(count_rows(&series), 2);
        let histograms = v.read_all(tables::HISTOGRAMS_TABLE).unwrap();
        assert_eq!(count_rows(&histograms), 1);
        let hb = &histograms[0];
        let pos = hb
            .column_by_name(col::POSITIVE_BUCKETS)
            .unwrap()
            .as_list::<i32>();
        let pos = pos.value(0);
        assert_eq!(pos.as_primitive::<Float64Type>().values(), &[1.0, 2.0, 1.0]);
        let spans = hb
            .column_by_name(col::POSITIVE_SPANS)
            .unwrap()
            .as_list::<i32>();
        assert_eq!(spans.value(0).len(), 2);
        let schema = hb.column_by_name(col::SCHEMA).unwrap();
        assert_eq!(
            schema
                .as_primitive::<arrow::datatypes::Int32Type>()
                .value(0),
            3
        );
        let exemplars = v.read_all(tables::EXEMPLARS_TABLE).unwrap();
        assert_eq!(count_rows(&exemplars), 1);
        let metadata = v.read_all(tables::METADATA_TABLE).unwrap();
        assert_eq!(count_rows(&metadata), 1);
    }
    store.shutdown();
}

#[tokio::test(flavor = "current_thread")]
async fn a_series_row_is_written_once_per_hour_even_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path());
    let t = now_ms();
    {
        let store = Store::open(c.clone()).unwrap();
        store
            .write_metrics(request(&store, "cpu", 10, t - 3000).finish())
            .await
            .unwrap();
        store
            .write_metrics(request(&store, "cpu", 10, t - 2000).finish())
            .await
            .unwrap();
        assert_eq!(count_rows(&series_rows(&store.version())), 10);
        assert_eq!(store.active_series(), 10);
        store.shutdown();
    }
    let store = Store::open(c).unwrap();
    assert_eq!(store.active_series(), 10, "rebuilt from the series files");
    store
        .write_metrics(request(&store, "cpu", 12, t - 1000).finish())
        .await
        .unwrap();
    let v = store.version();
    assert_eq!(
        count_rows(&series_rows(&v)),
        12,
        "only the two new series got rows"
    );
    assert_eq!(samples(&v).len(), 32);
    // Each series row has its postings: the name, `instance` and `job`.
    let mut postings: Vec<(String, String, String)> = Vec::new();
    for b in v.read_all(tables::POSTINGS_TABLE).unwrap() {
        let text = |name: &str| {
            let c = arrow::compute::cast(
                b.column_by_name(name).unwrap(),
                &arrow::datatypes::DataType::Utf8,
            )
            .unwrap();
            let c = c.as_string::<i32>().clone();
            (0..c.len()).map(move |i| c.value(i).to_string())
        };
        postings.extend(
            text(col::METRIC)
                .zip(text(col::LABEL))
                .zip(text(col::LABEL_VALUE))
                .map(|((m, l), v)| (m, l, v)),
        );
    }
    postings.sort();
    assert_eq!(postings.len(), 36);
    let posting = |l: &str, v: &str| ("cpu".to_string(), l.to_string(), v.to_string());
    assert_eq!(
        postings
            .iter()
            .filter(|p| **p == posting("job", "node"))
            .count(),
        12
    );
    assert_eq!(
        postings
            .iter()
            .filter(|p| **p == posting("__name__", "cpu"))
            .count(),
        12
    );
    assert!(postings.contains(&posting("instance", "host-11")));
    store.shutdown();
}

#[tokio::test(flavor = "current_thread")]
async fn new_series_past_a_limit_are_refused_by_name_and_the_rest_stored() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.metrics.max_series_per_metric = 5;
    c.metrics.max_active_series = 8;
    let store = Store::open(c).unwrap();
    let t = now_ms();
    let report = store
        .write_metrics(request(&store, "cpu", 7, t).finish())
        .await
        .unwrap();
    assert_eq!(report.total(), 2);
    let message = report.message("samples").unwrap();
    assert!(message.contains("series_per_metric_limit"), "{message}");
    assert!(
        message.contains("metric cpu has 5 active series"),
        "{message}"
    );
    // Known series still write; new ones of another metric fill the global limit.
    let report = store
        .write_metrics(request(&store, "mem", 4, t).finish())
        .await
        .unwrap();
    assert_eq!(report.total(), 1);
    assert!(report
        .message("samples")
        .unwrap()
        .contains("active_series_limit"));
    let report = store
        .write_metrics(request(&store, "cpu", 5, t + 1).finish())
        .await
        .unwrap();
    assert_eq!(report.total(), 0);
    assert_eq!(samples(&store.version()).len(), 5 + 3 + 5);
    let refusals = store.refusals();
    assert_eq!(refusals["series_per_metric_limit"], 2);
    assert_eq!(refusals["active_series_limit"], 1);
    store.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_samples_survive_a_crash_once_and_duplicates_collapse() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path());
    let t = now_ms();
    let store = Store::open(c.clone()).unwrap();
    store
        .write_metrics(request(&store, "cpu", 50, t - 1000).finish())
        .await
        .unwrap();
    store.flush().await.unwrap();
    // The same samples again (a sender retrying after a lost acknowledgement), unflushed.
    store
        .write_metrics(request(&store, "cpu", 50, t - 1000).finish())
        .await
        .unwrap();
    store
        .write_metrics(request(&store, "cpu", 50, t).finish())
        .await
        .unwrap();
    store.abandon();
    let store = loop {
        match Store::open(c.clone()) {
            Ok(s) => break s,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let v = store.version();
    // Replayed once: 50 flushed, 50 duplicates and 50 new in files now.
    assert_eq!(v.rows(tables::SAMPLES_TABLE), 150);
    store.compact_now().await.unwrap();
    let v = store.version();
    let s = samples(&v);
    assert_eq!(
        s.len(),
        100,
        "the retried samples are one row each after the merge"
    );
    let mut distinct = s.clone();
    distinct.dedup();
    assert_eq!(distinct.len(), 100);
    assert_eq!(v.table(tables::SAMPLES_TABLE).unwrap().files.len(), 1);
    store.shutdown();
}

/// (series id, timestamp ms, value bits) of sample rows, sorted.
fn sample_rows(batches: &[RecordBatch]) -> Vec<(u64, i64, u64)> {
    let mut out = Vec::new();
    for b in batches {
        let ids = b
            .column_by_name(col::SERIES_ID)
            .unwrap()
            .as_primitive::<UInt64Type>();
        let ts = b
            .column_by_name(col::TIMESTAMP)
            .unwrap()
            .as_primitive::<TimestampMillisecondType>();
        let vals = b
            .column_by_name(col::VALUE)
            .unwrap()
            .as_primitive::<Float64Type>();
        for i in 0..b.num_rows() {
            out.push((ids.value(i), ts.value(i), vals.value(i).to_bits()));
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_lookups_find_exactly_the_rows_a_full_read_holds() {
    use sightline_storage::{KeyLookup, OneOf};
    use std::sync::atomic::AtomicBool;

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    let t = now_ms() - 240_000;
    // Enough series that a file's row group has many pages, so pages are pruned; a second
    // metric sorts among the first; the last samples stay in memory.
    for (minute, name) in [(0, "cpu"), (0, "disk"), (1, "cpu"), (2, "disk")] {
        store
            .write_metrics(request(&store, name, 30_000, t + minute * 60_000).finish())
            .await
            .unwrap();
    }
    store.flush().await.unwrap();
    store
        .write_metrics(request(&store, "cpu", 50, t + 180_000).finish())
        .await
        .unwrap();
    let v = store.version();
    assert!(!v.table(tables::SAMPLES_TABLE).unwrap().files.is_empty());
    let all = samples(&v);
    let ids_of = |name: &str| -> Vec<u64> {
        let mut ids = Vec::new();
        for b in series_rows(&v) {
            let metric = arrow::compute::cast(
                b.column_by_name(col::METRIC).unwrap(),
                &arrow::datatypes::DataType::Utf8,
            )
            .unwrap();
            let metric = metric.as_string::<i32>();
            let id = b
                .column_by_name(col::SERIES_ID)
                .unwrap()
                .as_primitive::<UInt64Type>();
            ids.extend(
                (0..b.num_rows())
                    .filter(|&r| metric.value(r) == name)
                    .map(|r| id.value(r)),
            );
        }
        // A series has a row per hour it has samples in.
        ids.sort_unstable();
        ids.dedup();
        ids
    };
    let (cpu, disk) = (ids_of("cpu"), ids_of("disk"));
    assert_eq!((cpu.len(), disk.len()), (30_000, 30_000));
    let ms = 1_000_000;
    let never = AtomicBool::new(false);
    let lookup = |names: &[&str], ids: Option<Vec<u64>>, from: i64, to: i64| {
        let mut equal = vec![(
            col::METRIC,
            OneOf::Strings(names.iter().map(|n| n.to_string()).collect()),
        )];
        equal.extend(ids.map(|ids| (col::SERIES_ID, OneOf::Ids(ids))));
        let key = KeyLookup {
            equal,
            time: (from * ms, to * ms),
            columns: vec![col::SERIES_ID, col::TIMESTAMP, col::VALUE],
        };
        sample_rows(&v.lookup(tables::SAMPLES_TABLE, &key, &never).unwrap())
    };
    let expect = |ids: &[u64], from: i64, to: i64| -> Vec<(u64, i64, u64)> {
        all.iter()
            .filter(|(id, ts, _)| ids.contains(id) && (from..=to).contains(ts))
            .copied()
            .collect()
    };
    let cpu_set: std::collections::HashSet<u64> = cpu.iter().copied().collect();
    let cpu_rows: Vec<_> = all
        .iter()
        .filter(|r| cpu_set.contains(&r.0))
        .copied()
        .collect();
    assert_eq!(lookup(&["cpu"], None, t, t + 180_000), cpu_rows);
    assert_eq!(cpu_rows.len(), 60_050, "files and memory");
    // A few series, by id, of one minute and of all of them.
    let some = vec![cpu[7], cpu[29_999], cpu[12_345], disk[3]];
    assert_eq!(
        lookup(&["cpu", "disk"], Some(some.clone()), t, t),
        expect(&some, t, t)
    );
    assert_eq!(
        lookup(&["cpu", "disk"], Some(some.clone()), t, t + 180_000),
        expect(&some, t, t + 180_000)
    );
    assert_eq!(lookup(&["cpu", "disk"], Some(some.clone()), t, t).len(), 4);
    // A bound just past a sample's millisecond leaves it out.
    assert!(lookup(&["cpu"], Some(vec![cpu[7]]), t + 1, t + 59_999).is_empty());
    assert!(lookup(&["memory"], None, t, t + 180_000).is_empty());
    assert!(lookup(&["disk"], Some(vec![cpu[7]]), t, t + 180_000).is_empty());

    // Postings: a label pair's series, found in the sorted label values.
    let key = KeyLookup {
        equal: vec![
            (col::METRIC, OneOf::Strings(vec!["cpu".into()])),
            (col::LABEL, OneOf::Strings(vec!["instance".into()])),
            (col::LABEL_VALUE, OneOf::Strings(vec!["host-12345".into()])),
        ],
        time: (0, i64::MAX),
        columns: vec![col::LABEL, col::LABEL_VALUE, col::SERIES_ID],
    };
    let found = v.lookup(tables::POSTINGS_TABLE, &key, &never).unwrap();
    assert_eq!(count_rows(&found), 1);
    assert_eq!(
        found[0].schema().field_with_name(col::LABEL).unwrap(),
        tables::postings_schema()
            .field_with_name(col::LABEL)
            .unwrap(),
        "columns come in the table's types (a dictionary column read as strings is cast back)"
    );
    let id = found[0]
        .column_by_name(col::SERIES_ID)
        .unwrap()
        .as_primitive::<UInt64Type>();
    // The request gave host-i's samples the value i.
    let rows = lookup(&["cpu"], Some(vec![id.value(0)]), t, t);
    assert_eq!(rows.len(), 1);
    assert_eq!(f64::from_bits(rows[0].2), 12_345.0);
    assert_eq!(found[0].num_columns(), 3, "only the columns asked for");

    // A cancelled lookup stops.
    let cancelled = AtomicBool::new(true);
    let key = KeyLookup {
        equal: Vec::new(),
        time: (0, i64::MAX),
        columns: vec![col::SERIES_ID],
    };
    assert!(v
        .lookup(tables::SAMPLES_TABLE, &key, &cancelled)
        .unwrap()
        .is_empty());
    store.shutdown();
}
