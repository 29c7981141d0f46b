//! The options of `CREATE SINK … WITH (…)`: each checked as it is read
//! (ranges, durations, sizes, names), then completed per destination
//! (a PostgreSQL sink's COPY-sized batching, its password sources).

use std::time::Duration;

use datafusion::sql::sqlparser::ast::SqlOption;

use super::option_text;
use crate::catalog::{EndpointDef, PostgresDef, SinkFormat, TimePartition};
use crate::error::{Error, Result};

const SINK_OPTIONS: &str = "location, format, compression, time_partition, event_time, partition_by, rollover_interval, rollover_size, start, sort_by, bloom_filter_columns, compaction, compaction_target_size, compaction_min_files, file_retention, batch_rows, batch_bytes, batch_interval, retry_duration, request_timeout, access_key, table, password_env, password_file, validate";
pub const COMPRESSIONS: &[&str] = &["zstd", "snappy", "gzip", "lz4", "uncompressed"];
const MIN_ROLLOVER_INTERVAL: Duration = Duration::from_millis(100);
const MAX_ROLLOVER_INTERVAL: Duration = Duration::from_secs(24 * 3600);
const MIN_ROLLOVER_SIZE_BYTES: u64 = 1024;
const MAX_ROLLOVER_SIZE_BYTES: u64 = 5 * 1024 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq)]
pub struct SinkOptions {
    pub location: String,
    pub format: SinkFormat,
    pub compression: String,
    /// `None`: hourly when the source has an event-time column.
    pub time_partition: Option<TimePartition>,
    pub event_time: Option<String>,
    pub partition_by: Vec<String>,
    pub rollover_interval: Duration,
    pub rollover_size_bytes: u64,
    pub from_earliest: bool,
    /// Columns each row group (and compacted file) is sorted by.
    pub sort_by: Vec<String>,
    /// Columns that get Parquet bloom filters (point lookups).
    pub bloom_filter_columns: Vec<String>,
    /// Merge a partition's small files in the background; `None`: on for
    /// Delta sinks, off for plain Parquet (readers that list a directory
    /// would see a compaction's inputs and output together).
    pub compaction: Option<bool>,
    pub compaction_target_size_bytes: u64,
    /// Committed files in one partition that start a compaction.
    pub compaction_min_files: u32,
    /// How long compacted-away files stay on storage.
    pub file_retention: Option<Duration>,
    /// HTTP and PostgreSQL sinks: batching and retries.
    pub endpoint: EndpointDef,
    /// PostgreSQL sinks (`location = 'postgresql://…'`).
    pub postgres: PostgresDef,
    /// Reach the destination at CREATE, failing with 08001 when it cannot.
    pub validate: bool,
}

impl Default for SinkOptions {
    fn default() -> Self {
        SinkOptions {
            location: String::new(),
            format: SinkFormat::Parquet,
            compression: "zstd".into(),
            time_partition: None,
            event_time: None,
            partition_by: Vec::new(),
            rollover_interval: Duration::from_secs(60),
            rollover_size_bytes: 128 * 1024 * 1024,
            from_earliest: true,
            sort_by: Vec::new(),
            bloom_filter_columns: Vec::new(),
            compaction: None,
            compaction_target_size_bytes: 128 * 1024 * 1024,
            compaction_min_files: 8,
            file_retention: None,
            endpoint: EndpointDef {
                batch_rows: 500,
                batch_bytes: 1024 * 1024,
                batch_interval_ms: 5_000,
                gzip: false,
                retry_duration_ms: 300_000,
                request_timeout_ms: 30_000,
                access_key: None,
            },
            postgres: PostgresDef {
                table: String::new(),
                password_env: None,
                password_file: None,
                root_cert: None,
            },
            validate: false,
        }
    }
}

/// A PostgreSQL sink's batching when not given: COPY is cheapest in large
/// batches, and the target commits once per batch.
const POSTGRES_BATCH_ROWS: u32 = 65_536;
const POSTGRES_BATCH_BYTES: u64 = 64 * 1024 * 1024;
const POSTGRES_BATCH_INTERVAL_MS: u64 = 1_000;
const POSTGRES_REQUEST_TIMEOUT_MS: u64 = 600_000;
/// Most records an HTTP request carries (Firehose's own bound is 500).
pub(super) const MAX_HTTP_BATCH_ROWS: u32 = 10_000;

/// Checks and completes a PostgreSQL sink's options: the format follows
/// the scheme, `table` is required, the password never comes from SQL
/// text, and unset batching takes COPY-sized defaults.
pub(super) fn postgres_options(
    o: &mut SinkOptions,
    format_given: bool,
    given: &dyn Fn(&str) -> bool,
) -> Result<()> {
    if format_given && o.format != SinkFormat::Postgres {
        return Err(Error::InvalidParameter(format!(
            "location '{}' is a PostgreSQL database: leave out format (or say format = 'postgresql')",
            o.location
        )));
    }
    o.format = SinkFormat::Postgres;
    let url = url::Url::parse(&o.location)
        .map_err(|e| Error::InvalidParameter(format!("location '{}': {e}", o.location)))?;
    if url.password().is_some() {
        return Err(Error::InvalidParameter(
            "location must not carry a password (SQL text is logged and shown): give password_env = 'PGPASSWORD' or password_file = '…'".into(),
        ));
    }
    if url.query_pairs().any(|(k, _)| k == "password") {
        return Err(Error::InvalidParameter(
            "location must not carry a password parameter: give password_env or password_file"
                .into(),
        ));
    }
    if o.postgres.table.is_empty() {
        return Err(Error::InvalidParameter(
            "a PostgreSQL sink needs table = 'name' (or 'schema.name'): the table rows are copied into".into(),
        ));
    }
    if let Some(var) = &o.postgres.password_env {
        // The variable's value is sent to a host the statement names: only
        // variables meant for this are allowed, never the server's others
        // (cloud credentials, say).
        if var != "PGPASSWORD" && !var.starts_with("SLUICE_PASSWORD_") {
            return Err(Error::InsufficientPrivilege(format!(
                "password_env '{var}': only PGPASSWORD or variables named SLUICE_PASSWORD_… may hold sink passwords"
            )));
        }
    }
    if !given("batch_rows") {
        o.endpoint.batch_rows = POSTGRES_BATCH_ROWS;
    }
    if !given("batch_bytes") {
        o.endpoint.batch_bytes = POSTGRES_BATCH_BYTES;
    }
    if !given("batch_interval") {
        o.endpoint.batch_interval_ms = POSTGRES_BATCH_INTERVAL_MS;
    }
    if !given("request_timeout") {
        // One transaction carries up to a whole batch (64 MB): give a slow
        // link time, or a batch that never fits would be retried forever.
        o.endpoint.request_timeout_ms = POSTGRES_REQUEST_TIMEOUT_MS;
    }
    Ok(())
}

/// Reads one `key = value` of `CREATE SINK … WITH (…)` into `o`, checked.
pub(super) fn apply_sink_option(o: &mut SinkOptions, opt: &SqlOption) -> Result<()> {
    let SqlOption::KeyValue { key, value } = opt else {
        return Err(Error::Syntax(format!(
            "sink option {opt} must be written key = value; valid options: {SINK_OPTIONS}"
        )));
    };
    let value = OptionValue {
        key: key.value.to_lowercase(),
        text: option_text(value).unwrap_or_default(),
    };
    if apply_destination_option(o, &value)?
        || apply_file_option(o, &value)?
        || apply_endpoint_option(o, &value)?
    {
        return Ok(());
    }
    Err(Error::Syntax(format!(
        "unknown sink option \"{}\"; valid options: {SINK_OPTIONS}",
        value.key
    )))
}

/// One option's key and text, with the checks options share.
struct OptionValue {
    key: String,
    text: String,
}

impl OptionValue {
    fn invalid(&self, why: String) -> Error {
        Error::InvalidParameter(format!("{}: {why}", self.key))
    }

    fn duration(&self, like: &str) -> Result<Duration> {
        humantime::parse_duration(&self.text).map_err(|e| {
            self.invalid(format!(
                "'{}' is not a duration like {like} ({e})",
                self.text
            ))
        })
    }

    /// A duration within [min_ms, max_ms], in ms.
    fn duration_ms(&self, min_ms: u64, max_ms: u64) -> Result<u64> {
        let ms = self.duration("'1 s' or '5min'")?.as_millis() as u64;
        if !(min_ms..=max_ms).contains(&ms) {
            return Err(self.invalid(format!(
                "'{}' is outside {} .. {}",
                self.text,
                humantime::format_duration(Duration::from_millis(min_ms)),
                humantime::format_duration(Duration::from_millis(max_ms))
            )));
        }
        Ok(ms)
    }

    /// A file size (rollover, compaction target): 1 kB .. 5 GB.
    fn file_size(&self) -> Result<u64> {
        let text = &self.text;
        let bytes = parse_size_bytes(text)
            .ok_or_else(|| self.invalid(format!("'{text}' is not a size like '128 MB'")))?;
        if !(MIN_ROLLOVER_SIZE_BYTES..=MAX_ROLLOVER_SIZE_BYTES).contains(&bytes) {
            return Err(self.invalid(format!("'{text}' is outside 1 kB .. 5 GB")));
        }
        Ok(bytes)
    }

    /// A whole number in `range`.
    fn number(&self, range: std::ops::RangeInclusive<u32>) -> Result<u32> {
        self.text
            .parse::<u32>()
            .ok()
            .filter(|n| range.contains(n))
            .ok_or_else(|| {
                self.invalid(format!(
                    "'{}' is not a number from {} to {}",
                    self.text,
                    range.start(),
                    range.end()
                ))
            })
    }

    /// The value of the first of `choices` whose words hold the text (any
    /// case); `expected` says what was wanted.
    fn choice<T: Copy>(&self, choices: &[(&[&str], T)], expected: &str) -> Result<T> {
        let text = self.text.to_lowercase();
        choices
            .iter()
            .find(|(words, _)| words.contains(&text.as_str()))
            .map(|(_, value)| *value)
            .ok_or_else(|| self.invalid(format!("'{}' is not {expected}", self.text)))
    }
}

/// Where and what a sink writes, and from where it starts; `false` if the
/// option is not one of these.
fn apply_destination_option(o: &mut SinkOptions, v: &OptionValue) -> Result<bool> {
    match v.key.as_str() {
        "location" => o.location = v.text.clone(),
        "format" => o.format = sink_format(&v.text)?,
        "start" => {
            o.from_earliest = v.choice(
                &[(&["earliest"], true), (&["latest"], false)],
                "'earliest' or 'latest'",
            )?
        }
        "validate" => {
            o.validate = v.choice(
                &[(&["true", "on"], true), (&["false", "off"], false)],
                "true or false",
            )?
        }
        _ => return Ok(false),
    }
    Ok(true)
}

fn sink_format(text: &str) -> Result<SinkFormat> {
    Ok(match text.to_lowercase().as_str() {
        "parquet" => SinkFormat::Parquet,
        "delta" => SinkFormat::Delta,
        "firehose" => SinkFormat::Firehose,
        "ndjson" => SinkFormat::Ndjson,
        "postgresql" | "postgres" => SinkFormat::Postgres,
        _ => {
            return Err(Error::FeatureNotSupported(format!(
                "sink format '{text}' is not supported; sinks write 'parquet' or 'delta' (files), 'firehose' or 'ndjson' (HTTP) or 'postgresql'"
            )))
        }
    })
}

/// Options of file sinks (Parquet, Delta): layout, rollover, compaction;
/// `false` if the option is not one of these.
fn apply_file_option(o: &mut SinkOptions, v: &OptionValue) -> Result<bool> {
    let text = &v.text;
    match v.key.as_str() {
        "compression" => {
            let c = text.to_lowercase();
            if !COMPRESSIONS.contains(&c.as_str()) {
                return Err(v.invalid(format!(
                    "'{text}' is not one of {}",
                    COMPRESSIONS.join(", ")
                )));
            }
            o.compression = c;
        }
        "time_partition" => {
            o.time_partition = Some(v.choice(
                &[
                    (&["hour"], TimePartition::Hour),
                    (&["day"], TimePartition::Day),
                    (&["none"], TimePartition::None),
                ],
                "'hour', 'day' or 'none'",
            )?)
        }
        "event_time" => o.event_time = Some(text.clone()),
        "partition_by" => o.partition_by = column_list(text),
        "sort_by" => o.sort_by = column_list(text),
        "bloom_filter_columns" => o.bloom_filter_columns = column_list(text),
        "rollover_interval" => {
            let d = v.duration("'60 s' or '5min'")?;
            if !(MIN_ROLLOVER_INTERVAL..=MAX_ROLLOVER_INTERVAL).contains(&d) {
                return Err(v.invalid(format!("'{text}' is outside 100 ms .. 24 h")));
            }
            o.rollover_interval = d;
        }
        "rollover_size" => o.rollover_size_bytes = v.file_size()?,
        "compaction" => {
            o.compaction = Some(v.choice(
                &[(&["on", "true"], true), (&["off", "false"], false)],
                "'on' or 'off'",
            )?)
        }
        "compaction_target_size" => o.compaction_target_size_bytes = v.file_size()?,
        "compaction_min_files" => o.compaction_min_files = v.number(2..=10_000)?,
        "file_retention" => {
            let d = v.duration("'1h' or '7days'")?;
            if d > Duration::from_secs(365 * 24 * 3600) {
                return Err(v.invalid(format!("'{text}' is longer than a year")));
            }
            o.file_retention = Some(d);
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// Options of HTTP endpoint and PostgreSQL sinks: batching, retries,
/// credentials; `false` if the option is not one of these.
fn apply_endpoint_option(o: &mut SinkOptions, v: &OptionValue) -> Result<bool> {
    let text = &v.text;
    match v.key.as_str() {
        "batch_rows" => o.endpoint.batch_rows = v.number(1..=1_000_000)?,
        "batch_bytes" => {
            o.endpoint.batch_bytes = parse_size_bytes(text)
                .filter(|b| (1024..=64 * 1024 * 1024).contains(b))
                .ok_or_else(|| v.invalid(format!("'{text}' is not a size from 1 kB to 64 MB")))?;
        }
        "batch_interval" => o.endpoint.batch_interval_ms = v.duration_ms(0, 900_000)?,
        "retry_duration" => o.endpoint.retry_duration_ms = v.duration_ms(0, 7_200_000)?,
        "request_timeout" => o.endpoint.request_timeout_ms = v.duration_ms(100, 600_000)?,
        "access_key" => o.endpoint.access_key = Some(text.clone()),
        "table" => o.postgres.table = text.clone(),
        "password_env" => o.postgres.password_env = Some(text.clone()),
        "password_file" => o.postgres.password_file = Some(text.clone()),
        _ => return Ok(false),
    }
    Ok(true)
}

/// `'a, b'` → `["a", "b"]` (unquoted names fold to lower case).
fn column_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(|c| {
            let c = c.trim();
            match c.strip_prefix('"').and_then(|c| c.strip_suffix('"')) {
                Some(quoted) => quoted.to_string(),
                None => c.to_lowercase(),
            }
        })
        .filter(|c| !c.is_empty())
        .collect()
}

/// `'128 MB'`, `'64kB'`, `'1 GiB'`, `'4096'` (bytes). Units are powers of
/// 1024, as in Postgres settings.
pub fn parse_size_bytes(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let multiplier: u64 = match unit.trim().to_lowercase().as_str() {
        "" | "b" | "bytes" => 1,
        "kb" | "kib" | "k" => 1 << 10,
        "mb" | "mib" | "m" => 1 << 20,
        "gb" | "gib" | "g" => 1 << 30,
        _ => return None,
    };
    let bytes = number * multiplier as f64;
    (bytes.is_finite() && bytes >= 0.0).then_some(bytes as u64)
}
