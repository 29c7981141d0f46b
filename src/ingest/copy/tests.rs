//! Record splitting in any chunking, line numbers, field decoding.

use datafusion::arrow::array::AsArray;

use super::*;
use crate::catalog::StreamDef;
use crate::config::Config;
use crate::types::ColumnDef;

fn stream(dir: &std::path::Path) -> Arc<Stream> {
    let column = |name: &str, sql_type| ColumnDef {
        name: name.into(),
        sql_type,
        nullable: true,
        default: None,
    };
    let def = StreamDef::new(
        "t",
        vec![
            column("k", SqlType::Text),
            column("v", SqlType::Text),
            column("n", SqlType::Integer),
        ],
    );
    Stream::open(&Config::ephemeral(dir), def, &[]).unwrap()
}

/// Decodes `data` fed in chunks of `chunk` bytes; the `v` column.
fn decode(sql: &str, data: &str, chunk: usize) -> Result<Vec<Option<String>>> {
    let dir = tempfile::tempdir().unwrap();
    let copy = crate::sql::parse_copy(sql).unwrap();
    let mut decoder = CopyIn::new(stream(dir.path()), vec![0, 1, 2], copy.options, 1 << 30);
    for piece in data.as_bytes().chunks(chunk) {
        decoder.feed(piece)?;
    }
    let CopyRows::InMemory(batches) = decoder.finish()? else {
        panic!("spilled");
    };
    Ok(batches
        .iter()
        .flat_map(|b| {
            b.column(1)
                .as_string::<i32>()
                .iter()
                .map(|v| v.map(str::to_string))
                .collect::<Vec<_>>()
        })
        .collect())
}

#[test]
fn records_split_the_same_in_any_chunking() {
    let csv = "a,\"multi\nline\",1\nb,\"x\"\"y\",2\nc,plain,3\nd,,4\n";
    let want = vec![
        Some("multi\nline".to_string()),
        Some("x\"y".to_string()),
        Some("plain".to_string()),
        None,
    ];
    let sql = "COPY t FROM STDIN WITH (FORMAT csv)";
    for chunk in [1, 2, 3, 7, 1 << 20] {
        assert_eq!(decode(sql, csv, chunk).unwrap(), want, "chunks of {chunk}");
    }
    let escaped = "a,\"p\\\"q\",1\n";
    let sql = "COPY t FROM STDIN WITH (FORMAT csv, ESCAPE '\\')";
    for chunk in [1, 2, 1 << 20] {
        assert_eq!(
            decode(sql, escaped, chunk).unwrap(),
            vec![Some("p\"q".to_string())]
        );
    }
    let text = "a\tx\\ty\t1\nb\t\\N\t2\n";
    for chunk in [1, 4, 1 << 20] {
        assert_eq!(
            decode("COPY t FROM STDIN", text, chunk).unwrap(),
            vec![Some("x\ty".to_string()), None]
        );
    }
}

#[test]
fn line_numbers_count_newlines_inside_quotes() {
    let csv = "a,\"two\nlines\",1\nb,x,2\nc,y,oops\n";
    for chunk in [1, 5, 1 << 20] {
        let err = decode("COPY t FROM STDIN WITH (FORMAT csv)", csv, chunk).unwrap_err();
        assert_eq!(
            err.context(),
            Some("COPY t, line 4"),
            "chunks of {chunk}: {err}"
        );
    }
}

/// The converting stage fails on row 100 while the splitting stage goes
/// on: the next full chunk learns of it and the COPY fails with row 100,
/// not with a later row or an error of its own.
#[test]
fn a_failed_conversion_stops_the_copy_with_its_row() {
    let dir = tempfile::tempdir().unwrap();
    let copy = crate::sql::parse_copy("COPY t FROM STDIN WITH (FORMAT csv)").unwrap();
    let mut decoder = CopyIn::new(stream(dir.path()), vec![0, 1, 2], copy.options, 1 << 30);
    let row = |i: usize| match i {
        100 => "k,v,oops\n".to_string(),
        _ => format!("k,v,{i}\n"),
    };
    let first: String = (1..=CHUNK_ROWS).map(row).collect();
    decoder.feed(first.as_bytes()).unwrap();
    // Wait until the stage has converted (and failed on) the first chunk.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !decoder.stage.as_ref().is_some_and(Stage::failed) {
        assert!(
            std::time::Instant::now() < deadline,
            "the stage never failed"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let second: String = (CHUNK_ROWS + 1..=2 * CHUNK_ROWS).map(row).collect();
    let err = decoder.feed(second.as_bytes()).unwrap_err();
    assert_eq!(err.sqlstate(), "22P02", "{err}");
    assert_eq!(err.context(), Some("COPY t, line 100"), "{err}");
}
