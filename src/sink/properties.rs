//! The Parquet settings of the files sinks (and tables made by CTAS)
//! write: compression, bounded row groups, bloom filters, and the source
//! schema version each file records.

use datafusion::parquet::basic::{Compression, GzipLevel, ZstdLevel};
use datafusion::parquet::file::metadata::KeyValue;
use datafusion::parquet::file::properties::{WriterProperties, WriterPropertiesBuilder};
use datafusion::parquet::schema::types::ColumnPath;

use crate::catalog::SinkDef;

/// Rows per Parquet row group: small enough to bound a writer's memory,
/// large enough for good compression and min/max pruning.
pub const ROW_GROUP_ROWS: usize = 128 * 1024;
/// The key-value metadata key of a file's source schema version.
pub const SCHEMA_VERSION_KEY: &str = "sluice.schema_version";

/// Parquet settings of a sink's files: its compression, bounded row
/// groups with page statistics (min/max pruning), bloom filters on the
/// columns chosen for point lookups, and the declared sort order.
/// Each file records the schema version of its source it was written in
/// (`sluice.schema_version`), so a reader can tell files across an ALTER.
pub(super) fn writer_properties(def: &SinkDef, schema_version: u32) -> WriterProperties {
    let mut builder = parquet_properties(&def.compression)
        .set_created_by(format!(
            "sluice {} (sink {})",
            env!("CARGO_PKG_VERSION"),
            def.name
        ))
        .set_key_value_metadata(Some(vec![KeyValue::new(
            SCHEMA_VERSION_KEY.to_string(),
            schema_version.to_string(),
        )]));
    for column in &def.bloom_filter_columns {
        builder = builder.set_column_bloom_filter_enabled(ColumnPath::from(column.as_str()), true);
    }
    builder.build()
}

/// Settings every Parquet file sluice writes shares: the compression and
/// row groups of at most [`ROW_GROUP_ROWS`] rows, so a writer holds one
/// bounded row group in memory and min/max statistics stay selective.
pub fn parquet_properties(compression: &str) -> WriterPropertiesBuilder {
    let compression = match compression {
        "snappy" => Compression::SNAPPY,
        "gzip" => Compression::GZIP(GzipLevel::default()),
        "lz4" => Compression::LZ4_RAW,
        "uncompressed" => Compression::UNCOMPRESSED,
        _ => Compression::ZSTD(ZstdLevel::default()),
    };
    WriterProperties::builder()
        .set_compression(compression)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_created_by(format!("sluice {}", env!("CARGO_PKG_VERSION")))
}
