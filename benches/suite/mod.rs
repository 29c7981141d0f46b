//! The phases of the end-to-end benchmark (`benches/e2e.rs`): each
//! measures sluice and, where one exists, a peer on the same machine in the
//! same run, and returns rows for the one table the suite prints.

pub mod data;
pub mod delivery;
pub mod ingest;
pub mod transform;

/// How big a run is: `--quick` is a smoke test of every phase.
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    pub quick: bool,
    /// Rows for COPY, the transform backlog and delivery.
    pub rows: u64,
    /// Length of each timed measurement.
    pub seconds: u64,
}

/// One line of the result table.
pub struct Row {
    pub phase: &'static str,
    pub what: String,
    pub sluice: String,
    pub peer: String,
    /// sluice ÷ peer, oriented so that > 1 means sluice is better.
    pub ratio: Option<f64>,
    pub peak_rss_mb: Option<f64>,
}

impl Row {
    pub fn new(phase: &'static str, what: impl Into<String>, sluice: impl Into<String>) -> Row {
        Row {
            phase,
            what: what.into(),
            sluice: sluice.into(),
            peer: String::new(),
            ratio: None,
            peak_rss_mb: None,
        }
    }

    pub fn peer(mut self, peer: impl Into<String>, ratio: Option<f64>) -> Row {
        self.peer = peer.into();
        self.ratio = ratio;
        self
    }

    pub fn rss(mut self, mb: f64) -> Row {
        self.peak_rss_mb = Some(mb);
        self
    }
}

/// p-th quantile of sorted durations, in ms.
pub fn quantile_ms(sorted: &[std::time::Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)].as_secs_f64() * 1e3
}

pub async fn scalar(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.expect(sql).get(0)
}
