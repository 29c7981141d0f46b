//! Engine-level tests (a `#[cfg(test)]` module of `engine`) that need
//! control over when pipeline tasks run: on the single-threaded test
//! runtime, spawned tasks wait until the test yields.

use std::time::Duration;

use super::*;
use crate::config::Config;
use crate::sql::{parse, Parsed};

fn config(dir: &std::path::Path) -> Config {
    let mut config = Config::ephemeral(dir);
    config.limits.segment_size_bytes = 4096;
    config
}

async fn run(engine: &Engine, sql: &str) {
    match parse(sql).unwrap() {
        Parsed::CreateStream(c) => {
            engine.create_stream(c).await.unwrap();
        }
        Parsed::CreateDerived(c) => {
            engine.create_derived(c).await.unwrap();
        }
        Parsed::InsertValues { insert, .. } => {
            crate::ingest::Writer::open(&engine.registry.streams, &insert.table, u64::MAX)
                .unwrap()
                .insert_values(&insert)
                .await
                .unwrap();
        }
        other => panic!("{other:?}"),
    }
}

/// An engine with stream `src` of 2000 rows over many small segments, all
/// expired already (retention 1 ms): what retention may delete is exactly
/// what its consumers let go.
async fn expiring_stream(dir: &std::path::Path) -> (Arc<Engine>, Arc<Stream>, u64) {
    let engine = Engine::open(config(dir)).unwrap();
    run(
        &engine,
        "CREATE STREAM src (n BIGINT NOT NULL, pad TEXT) WITH (retention = '1ms')",
    )
    .await;
    for chunk in 0..20 {
        let values: Vec<String> = (chunk * 100..(chunk + 1) * 100)
            .map(|n| format!("({n}, 'padding-{n}')"))
            .collect();
        run(
            &engine,
            &format!("INSERT INTO src VALUES {}", values.join(", ")),
        )
        .await;
    }
    let src = engine.registry.get("src").unwrap();
    let segments = src.log.shard_stats()[0].segments;
    assert!(segments > 5, "{segments}");
    (engine, src, segments)
}

#[tokio::test]
async fn retention_keeps_what_a_pipeline_has_not_processed() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, src, segments) = expiring_stream(dir.path()).await;
    // The derived stream's pipeline is started but has not run yet (this
    // runtime has one thread and the test has not yielded since).
    run(&engine, "CREATE STREAM copy AS SELECT n FROM src").await;
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(
        engine.enforce_retention(),
        0,
        "everything is held for the pipeline"
    );
    assert_eq!(src.log.shard_stats()[0].segments, segments);

    // Caught up means the pipeline has moved its position (and with it its
    // hold), not only that its output is visible: the output is published
    // before the pipeline task hears the append's acknowledgement.
    let pipeline = engine.registry.pipelines().pop().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while pipeline.lag_records() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "pipeline did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(
        engine.enforce_retention(),
        segments - 1,
        "consumed segments expire"
    );
    engine.close().await;
}

#[tokio::test]
async fn retention_keeps_what_a_sink_has_not_committed() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, src, segments) = expiring_stream(dir.path()).await;
    let Parsed::CreateSink(sink) =
        parse("CREATE SINK out FROM src WITH (location = 'out', rollover_interval = '1 h')")
            .unwrap()
    else {
        panic!("not a sink");
    };
    engine.create_sink(*sink).await.unwrap();
    // Let the sink read everything into its open files: read, not committed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(
        engine.enforce_retention(),
        0,
        "buffered but uncommitted records are held"
    );
    assert_eq!(src.log.shard_stats()[0].segments, segments);
    engine.flush_sink("out").await.unwrap();
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(
        engine.enforce_retention(),
        segments - 1,
        "delivered segments expire"
    );
    engine.close().await;
}

/// Start-up deletes the log of a stream the catalog records as dropped (a
/// crash between the DROP's commit and the deletion) and moves any other
/// directory the catalog does not list to quarantine, contents intact.
#[tokio::test]
async fn start_up_deletes_only_dropped_logs_and_quarantines_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let streams = dir.path().join("streams");
    let stranger = streams.join("999999");
    let dropped_dir = {
        let engine = Engine::open(config(dir.path())).unwrap();
        run(&engine, "CREATE STREAM gone (n BIGINT)").await;
        run(&engine, "INSERT INTO gone VALUES (1)").await;
        let gone = engine.registry.get("gone").unwrap();
        // The DROP's catalog commit without the deletion that follows it.
        engine.catalog.drop_stream("gone").unwrap();
        // A log no catalog entry names (say, of a lost catalog.redb).
        std::fs::create_dir_all(stranger.join("shard-0")).unwrap();
        std::fs::write(stranger.join("shard-0").join("0.seg"), b"records").unwrap();
        engine.close().await;
        gone.log.dir().to_path_buf()
    };
    assert!(dropped_dir.exists());

    let engine = Engine::open(config(dir.path())).unwrap();
    assert!(!dropped_dir.exists(), "the dropped stream's log is deleted");
    assert!(engine.catalog.dropped_streams().unwrap().is_empty());
    assert!(!stranger.exists());
    let aside: Vec<std::path::PathBuf> = std::fs::read_dir(dir.path().join("quarantine/streams"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    let name = aside[0].file_name().unwrap().to_string_lossy().to_string();
    assert!(name.starts_with("999999-"), "{name}");
    assert_eq!(
        std::fs::read(aside[0].join("shard-0").join("0.seg")).unwrap(),
        b"records"
    );
    // Visible where operators look, on this start and the next ones.
    let check = |engine: &Engine| {
        let quarantined = engine.registry.quarantined();
        assert_eq!(quarantined.len(), 1);
        assert_eq!(quarantined[0].dir, format!("quarantine/streams/{name}"));
        assert_eq!((quarantined[0].shards, quarantined[0].bytes), (1, 7));
    };
    check(&engine);
    engine.close().await;
    drop(engine);
    check(&Engine::open(config(dir.path())).unwrap());
}

/// Start-up deletes the directory of a CTAS that began and never committed,
/// and nothing else in the warehouse (another table's or a sink's files,
/// files put there by hand).
#[tokio::test]
async fn start_up_removes_only_interrupted_ctas_output() {
    let dir = tempfile::tempdir().unwrap();
    let warehouse = dir.path().join("warehouse");
    let interrupted = warehouse.join("half");
    let custom = warehouse.join("custom").join("a");
    std::fs::create_dir_all(&interrupted).unwrap();
    std::fs::create_dir_all(&custom).unwrap();
    std::fs::write(interrupted.join("part-00000.parquet"), b"partial").unwrap();
    std::fs::write(custom.join("data.parquet"), b"someone's").unwrap();
    {
        let engine = Engine::open(config(dir.path())).unwrap();
        let prefix = interrupted.canonicalize().unwrap();
        let prefix = prefix.to_string_lossy();
        engine
            .catalog
            .begin_ctas(prefix.trim_start_matches('/'))
            .unwrap();
        engine.close().await;
    }
    let engine = Engine::open(config(dir.path())).unwrap();
    engine.open_tables().await.unwrap();
    assert!(
        !interrupted.exists(),
        "the interrupted CTAS output is removed"
    );
    assert!(engine.catalog.pending_ctas().unwrap().is_empty());
    assert_eq!(
        std::fs::read(custom.join("data.parquet")).unwrap(),
        b"someone's"
    );
}
