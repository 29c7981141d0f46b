//! COPY FROM STDIN / TO STDOUT through psql's `\copy` and tokio-postgres.

use bytes::Bytes;
use futures::SinkExt;

use crate::harness::{scalar, sqlstate, staged_bulks, Server};

const CLICKS: &str =
    "CREATE STREAM clicks (event_time TIMESTAMP NOT NULL, user_id BIGINT, email TEXT, url TEXT, status INT)";

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[tokio::test]
async fn csv_with_header_quotes_newlines_and_nulls() {
    let server = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let csv = write(
        tmp.path(),
        "c.csv",
        "event_time,user_id,email,url,status\n\
         2026-11-25 13:00:01,7,a@x.io,/home,200\n\
         2026-11-25 13:00:02,8,,\"/buy, now\",500\n\
         \"2026-11-25 13:00:03\",9,\"\",\"/multi\nline \"\"quoted\"\"\",404\r\n",
    );
    let (out, err, _) = server.psql(&format!(
        "{CLICKS};\n\\copy clicks FROM '{csv}' WITH (FORMAT csv, HEADER true)\n"
    ));
    assert!(err.is_empty(), "{err}");
    assert!(out.contains("COPY 3"), "{out}");
    let client = server.client().await;
    let rows = client
        .query(
            "SELECT user_id, email, url, status FROM clicks ORDER BY user_id",
            &[],
        )
        .await
        .unwrap();
    let got: Vec<(i64, Option<String>, String, i32)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(
        got,
        vec![
            (7, Some("a@x.io".into()), "/home".into(), 200),
            (8, None, "/buy, now".into(), 500),
            (
                9,
                Some(String::new()),
                "/multi\nline \"quoted\"".into(),
                404
            ),
        ],
        "unquoted empty is NULL, quoted empty is an empty string"
    );

    // And back out, as CSV with a header and as text.
    let out_csv = tmp.path().join("out.csv");
    let out_txt = tmp.path().join("out.txt");
    let (out, err, _) = server.psql(&format!(
        "\\copy (SELECT user_id, email, url FROM clicks ORDER BY user_id) TO '{}' WITH (FORMAT csv, HEADER true)\n\
         \\copy clicks (user_id, email) TO '{}'\n",
        out_csv.display(),
        out_txt.display()
    ));
    assert!(err.is_empty(), "{err}");
    assert!(out.contains("COPY 3"), "{out}");
    assert_eq!(
        std::fs::read_to_string(&out_csv).unwrap(),
        "user_id,email,url\n7,a@x.io,/home\n8,,\"/buy, now\"\n9,\"\",\"/multi\nline \"\"quoted\"\"\"\n"
    );
    let mut text_lines: Vec<String> = std::fs::read_to_string(&out_txt)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    text_lines.sort();
    assert_eq!(text_lines, vec!["7\ta@x.io", "8\t\\N", "9\t"]);
}

#[tokio::test]
async fn a_bad_row_aborts_the_whole_copy_with_its_line() {
    let server = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let csv = write(
        tmp.path(),
        "bad.csv",
        "event_time,user_id,email,url,status\n\
         2026-11-25 13:00:01,7,a@x.io,/home,200\n\
         2026-11-25 13:00:02,8,,/buy,abc\n\
         ,9,,/x,200\n",
    );
    let (_, err, _) = server.psql(&format!(
        "\\set VERBOSITY verbose\n{CLICKS};\n\\copy clicks FROM '{csv}' WITH (FORMAT csv, HEADER true)\n"
    ));
    assert!(
        err.contains("ERROR:  22P02: invalid input syntax for type integer: \"abc\" (column \"status\" of relation \"clicks\")"),
        "{err}"
    );
    assert!(err.contains("CONTEXT:  COPY clicks, line 3"), "{err}");
    let client = server.client().await;
    let n = scalar(&client, "SELECT count(*) FROM clicks").await;
    assert_eq!(n, 0, "nothing of a failed COPY is stored");

    let wrong_columns = write(tmp.path(), "cols.csv", "2026-11-25 13:00:01,7\n");
    let (_, err, _) = server.psql(&format!(
        "\\set VERBOSITY verbose\n\\copy clicks FROM '{wrong_columns}' WITH (FORMAT csv)\n"
    ));
    assert!(
        err.contains("22P04: missing data for column \"email\""),
        "{err}"
    );
    let quote = write(
        tmp.path(),
        "quote.csv",
        "2026-11-25 13:00:01,7,\"open,/x,200\n",
    );
    let (_, err, _) = server.psql(&format!(
        "\\set VERBOSITY verbose\n\\copy clicks FROM '{quote}' WITH (FORMAT csv)\n"
    ));
    assert!(
        err.contains("22P04: unterminated CSV quoted field"),
        "{err}"
    );
}

#[tokio::test]
async fn dead_letter_keeps_good_rows_and_records_bad_ones() {
    let server = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let csv = write(
        tmp.path(),
        "mixed.csv",
        "2026-11-25 13:00:01,7,a@x.io,/home,200\n\
         2026-11-25 13:00:02,8,,/buy,abc\n\
         ,9,,/x,200\n\
         2026-11-25 13:00:04,10,,/y,201,extra\n\
         2026-11-25 13:00:05,11,,/z,204\n",
    );
    let (out, err, _) = server.psql(&format!(
        "{CLICKS};\n\\copy clicks FROM '{csv}' WITH (FORMAT csv, ON_ERROR 'dead_letter')\n"
    ));
    assert!(err.is_empty(), "{err}");
    assert!(out.contains("COPY 2"), "the tag counts rows stored: {out}");
    let client = server.client().await;
    let rows = client
        .query("SELECT error_code, error_message, raw, stage, stream FROM sluice.errors ORDER BY error_message", &[])
        .await
        .unwrap();
    let got: Vec<(String, String, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(got.iter().any(|(c, m, r)| c == "22P02"
        && m.contains("\"abc\"")
        && r == "2026-11-25 13:00:02,8,,/buy,abc"));
    assert!(got
        .iter()
        .any(|(c, _, r)| c == "23502" && r == ",9,,/x,200"));
    assert!(got
        .iter()
        .any(|(c, m, _)| c == "22P04" && m.contains("extra data")));
    assert!(rows
        .iter()
        .all(|r| r.get::<_, String>(3) == "ingest" && r.get::<_, String>(4) == "clicks"));
    let n = scalar(&client, "SELECT count(*) FROM clicks").await;
    assert_eq!(n, 2);
    let dead: i64 = client
        .query_one(
            "SELECT errors FROM sluice.streams WHERE name = 'clicks'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(dead, 3, "dead letters are counted per stream");
    let metrics = server.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l == "sluice_stream_dead_letters{stream=\"clicks\"} 3"),
        "{metrics}"
    );
}

#[tokio::test]
async fn text_format_from_stdin_in_a_script() {
    let server = Server::start();
    let (out, err, _) = server.psql(&format!(
        "{CLICKS};\nCOPY clicks (user_id, event_time, url) FROM STDIN;\n\
         5\t2026-11-25 10:00:00\t/tab\\there\n\
         6\t2026-11-25 10:00:01\t\\N\n\
         \\.\nSELECT user_id, url FROM clicks ORDER BY user_id;\n"
    ));
    assert!(err.is_empty(), "{err}");
    assert!(out.contains("COPY 2"), "{out}");
    let client = server.client().await;
    let rows = client
        .query("SELECT user_id, url FROM clicks ORDER BY user_id", &[])
        .await
        .unwrap();
    let got: Vec<(i64, Option<String>)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(got, vec![(5, Some("/tab\there".into())), (6, None)]);
}

#[tokio::test]
async fn copy_in_from_a_driver_and_a_client_that_disconnects() {
    let server = Server::start();
    let client = server.client().await;
    client.batch_execute(CLICKS).await.unwrap();
    // Many rows in many small chunks: records are cut across CopyData
    // messages and span several conversion chunks.
    let mut data = String::new();
    for i in 0..20_000 {
        data.push_str(&format!(
            "2026-11-25 13:00:00,{i},u{i}@x.io,/p/{},200\n",
            i % 97
        ));
    }
    let sink = client
        .copy_in::<_, Bytes>("COPY clicks FROM STDIN WITH (FORMAT csv)")
        .await
        .unwrap();
    futures::pin_mut!(sink);
    for chunk in data.as_bytes().chunks(777) {
        sink.send(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    let n = sink.finish().await.unwrap();
    assert_eq!(n, 20_000);
    let stored = scalar(&client, "SELECT count(DISTINCT user_id) FROM clicks").await;
    assert_eq!(stored, 20_000);

    // A client that goes away mid-COPY stores nothing.
    {
        let quitter = server.client().await;
        let sink = quitter
            .copy_in::<_, Bytes>("COPY clicks FROM STDIN WITH (FORMAT csv)")
            .await
            .unwrap();
        futures::pin_mut!(sink);
        sink.send(Bytes::from_static(b"2026-11-25 13:00:00,-1,gone,/x,200\n"))
            .await
            .unwrap();
        // Dropped without finish: the connection closes.
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let n = scalar(&client, "SELECT count(*) FROM clicks WHERE user_id = -1").await;
    assert_eq!(n, 0);

    let err = client
        .copy_in::<_, Bytes>("COPY nope FROM STDIN")
        .await
        .err()
        .expect("unknown stream");
    assert_eq!(sqlstate(&err), "42P01");
}

#[tokio::test]
async fn invalid_utf8_and_huge_fields() {
    let server = Server::start();
    let client = server.client().await;
    client
        .batch_execute("CREATE STREAM t (id INT NOT NULL, body TEXT)")
        .await
        .unwrap();
    let sink = client
        .copy_in::<_, Bytes>("COPY t FROM STDIN WITH (FORMAT csv)")
        .await
        .unwrap();
    futures::pin_mut!(sink);
    sink.send(Bytes::from_static(b"1,ok\n2,bad \xff\xfe bytes\n"))
        .await
        .unwrap();
    let err = sink.finish().await.unwrap_err();
    assert_eq!(sqlstate(&err), "22021");
    assert!(err.as_db_error().unwrap().message().contains("UTF8"));

    // A 50 MB field arrives in many chunks and is stored whole.
    let big = "x".repeat(50 * 1024 * 1024);
    let sink = client
        .copy_in::<_, Bytes>("COPY t FROM STDIN WITH (FORMAT csv)")
        .await
        .unwrap();
    futures::pin_mut!(sink);
    let line = format!("3,\"{big}\"\n");
    for chunk in line.as_bytes().chunks(1 << 20) {
        sink.send(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    assert_eq!(sink.finish().await.unwrap(), 1);
    let len: i64 = client
        .query_one(
            "SELECT CAST(length(body) AS BIGINT) FROM t WHERE id = 3",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(len, 50 * 1024 * 1024);
    let n = scalar(&client, "SELECT count(*) FROM t").await;
    assert_eq!(n, 1, "the COPY with invalid UTF-8 stored nothing");
}

/// With `max_statement_bytes` at 1 MiB, a COPY of several MiB is spilled to
/// disk and stored as one bulk append: all of it, or (bad row at the end)
/// none of it, and no spill files stay behind.
#[tokio::test]
async fn a_copy_larger_than_memory_is_spilled_and_still_atomic() {
    let server = Server::start_with_config("[limits]\nmax_statement_bytes = 1048576\n");
    let client = server.client().await;
    crate::crash::create_big(&client).await;
    let rows = 60_000;
    let mut data = String::new();
    for i in 0..rows {
        data.push_str(&format!("{i},payload-{i}-{}\n", "y".repeat(60)));
    }
    let copy = |data: String| {
        let client = &client;
        async move {
            let sink = client
                .copy_in::<_, Bytes>("COPY big FROM STDIN WITH (FORMAT csv)")
                .await
                .unwrap();
            futures::pin_mut!(sink);
            for chunk in data.as_bytes().chunks(64 * 1024) {
                sink.send(Bytes::copy_from_slice(chunk)).await.unwrap();
            }
            sink.finish().await
        }
    };
    assert_eq!(copy(data.clone()).await.unwrap(), rows);
    assert_eq!(
        scalar(&client, "SELECT count(DISTINCT id) FROM big").await,
        rows as i64
    );

    let err = copy(format!("{data}not-a-number,x\n")).await.unwrap_err();
    assert_eq!(sqlstate(&err), "22P02");
    assert_eq!(
        scalar(&client, "SELECT count(*) FROM big").await,
        rows as i64,
        "the failed COPY stored nothing"
    );
    assert_eq!(
        staged_bulks(server.data_dir()),
        0,
        "staging files are removed"
    );
}

/// Binary COPY, as drivers send it (tokio-postgres' BinaryCopyInWriter).
#[tokio::test]
async fn binary_copy_from_a_driver() {
    use tokio_postgres::binary_copy::BinaryCopyInWriter;
    use tokio_postgres::types::Type;
    let server = Server::start();
    let client = server.client().await;
    client
        .batch_execute(
            "CREATE STREAM b (id BIGINT NOT NULL, name TEXT, at TIMESTAMP, score DOUBLE PRECISION, ok BOOLEAN, n INT)",
        )
        .await
        .unwrap();
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_micros(1_795_611_600_123_456);
    let sink = client
        .copy_in("COPY b FROM STDIN WITH (FORMAT binary)")
        .await
        .unwrap();
    let writer = BinaryCopyInWriter::new(
        sink,
        &[
            Type::INT8,
            Type::TEXT,
            Type::TIMESTAMP,
            Type::FLOAT8,
            Type::BOOL,
            Type::INT4,
        ],
    );
    futures::pin_mut!(writer);
    for i in 0..1000i64 {
        let name = (i % 3 != 0).then(|| format!("name {i}"));
        writer
            .as_mut()
            .write(&[
                &i,
                &name,
                &at,
                &(i as f64 / 4.0),
                &(i % 2 == 0),
                &(i as i32 - 500),
            ])
            .await
            .unwrap();
    }
    assert_eq!(writer.finish().await.unwrap(), 1000);
    let row = client
        .query_one("SELECT name, at, score, ok, n FROM b WHERE id = 7", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, Option<String>>(0).as_deref(), Some("name 7"));
    assert_eq!(row.get::<_, std::time::SystemTime>(1), at);
    assert_eq!(row.get::<_, f64>(2), 1.75);
    assert!(!row.get::<_, bool>(3));
    assert_eq!(row.get::<_, i32>(4), -493);
    assert_eq!(
        scalar(&client, "SELECT count(*) FROM b WHERE name IS NULL").await,
        334
    );

    // Bytes that are not binary COPY data are refused, and nothing is stored.
    let sink = client
        .copy_in::<_, Bytes>("COPY b FROM STDIN WITH (FORMAT binary)")
        .await
        .unwrap();
    futures::pin_mut!(sink);
    sink.send(Bytes::from_static(b"1,not binary\n"))
        .await
        .unwrap();
    let err = sink.finish().await.unwrap_err();
    assert_eq!(sqlstate(&err), "22P04");
    assert_eq!(scalar(&client, "SELECT count(*) FROM b").await, 1000);
}

/// Rows are split into fields on one thread and converted to columns on
/// another: the COPY still fails with its first bad row, whichever of the
/// two finds it, and stores nothing.
#[tokio::test]
async fn the_first_bad_row_wins_across_the_two_decoding_stages() {
    let server = Server::start();
    let client = server.client().await;
    client.batch_execute(CLICKS).await.unwrap();
    let rows = |bad_type_at: usize, bad_shape_at: usize| {
        let mut data = String::new();
        for i in 1..=30_000 {
            data.push_str(&match i {
                _ if i == bad_type_at => format!("2026-11-25 13:00:00,{i},e,/p,notanumber\n"),
                _ if i == bad_shape_at => format!("2026-11-25 13:00:00,{i},e,/p,200,extra\n"),
                _ => format!("2026-11-25 13:00:00,{i},e,/p,200\n"),
            });
        }
        data
    };
    // A type error in the first chunk (found by the converting stage) and
    // a shape error two chunks later (found by the splitting one), then
    // the other way round; sent in 64 KiB messages, and in 37-byte ones
    // (joined by the server before decoding, as psql's one line a message).
    for (data, line, code, message_bytes) in [
        (rows(100, 20_000), 100, "22P02", 64 * 1024),
        (rows(20_000, 100), 100, "22P04", 64 * 1024),
        (rows(100, 20_000), 100, "22P02", 37),
        (rows(20_000, 100), 100, "22P04", 37),
    ] {
        let sink = client
            .copy_in::<_, Bytes>("COPY clicks FROM STDIN WITH (FORMAT csv)")
            .await
            .unwrap();
        futures::pin_mut!(sink);
        let mut failed = None;
        for chunk in data.as_bytes().chunks(message_bytes) {
            if let Err(e) = sink.send(Bytes::copy_from_slice(chunk)).await {
                failed = Some(e);
                break;
            }
        }
        let err = match failed {
            Some(e) => e,
            None => sink.finish().await.unwrap_err(),
        };
        let db = err.as_db_error().expect("a database error");
        assert_eq!(db.code().code(), code, "{db:?}");
        assert_eq!(
            db.where_(),
            Some(format!("COPY clicks, line {line}").as_str()),
            "{db:?}"
        );
        assert_eq!(scalar(&client, "SELECT count(*) FROM clicks").await, 0);
    }
}
