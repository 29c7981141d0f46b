//! Deterministic clickstream rows (~200 bytes as CSV): time over one day,
//! user and session ids, e-mail, ip, one of 200 urls, referrer, status,
//! latency and user agent.

pub const COLUMNS: &str =
    "(event_time TIMESTAMP NOT NULL, user_id BIGINT, session_id BIGINT, email TEXT, ip TEXT, \
     url TEXT, referrer TEXT, status INT, latency_ms INT, user_agent TEXT)";

/// Row `i` of `rows`, spread evenly over 2026-11-25 (UTC).
pub struct Click {
    pub secs_of_day: u64,
    pub user: u64,
    pub session: u64,
    pub ip: [u64; 3],
    pub url: u64,
    pub referrer: u64,
    pub status: u32,
    pub latency_ms: u64,
}

impl Click {
    pub fn new(i: u64, rows: u64) -> Click {
        let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let user = next() % 100_000;
        Click {
            secs_of_day: i * 86_400 / rows.max(1),
            user,
            session: next() % 1_000_000,
            ip: [next() % 256, next() % 256, next() % 256],
            url: next() % 200,
            referrer: next() % 50,
            status: match next() % 100 {
                0..=89 => 200,
                90..=95 => 404,
                96..=98 => 500,
                _ => 302,
            },
            latency_ms: 5 + next() % 2000,
        }
    }

    pub fn time(&self) -> String {
        let s = self.secs_of_day;
        format!(
            "2026-11-25 {:02}:{:02}:{:02}",
            s / 3600,
            s / 60 % 60,
            s % 60
        )
    }

    pub fn csv(&self) -> String {
        format!(
            "{},{},{},user{}@example.com,10.{}.{}.{},/products/{},https://ref.example.com/{},{},{},Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101\n",
            self.time(), self.user, self.session, self.user, self.ip[0], self.ip[1], self.ip[2],
            self.url, self.referrer, self.status, self.latency_ms
        )
    }

    pub fn sql_values(&self) -> String {
        format!(
            "('{}', {}, {}, 'user{}@example.com', '10.{}.{}.{}', '/products/{}', 'https://ref.example.com/{}', {}, {}, 'Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101')",
            self.time(), self.user, self.session, self.user, self.ip[0], self.ip[1], self.ip[2],
            self.url, self.referrer, self.status, self.latency_ms
        )
    }

    pub fn json(&self) -> String {
        format!(
            "{{\"event_time\":\"{}\",\"user_id\":{},\"session_id\":{},\"email\":\"user{}@example.com\",\"ip\":\"10.{}.{}.{}\",\"url\":\"/products/{}\",\"referrer\":\"https://ref.example.com/{}\",\"status\":{},\"latency_ms\":{},\"user_agent\":\"Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101\"}}",
            self.time().replace(' ', "T"), self.user, self.session, self.user, self.ip[0], self.ip[1], self.ip[2],
            self.url, self.referrer, self.status, self.latency_ms
        )
    }
}

/// `rows` rows as CSV.
pub fn csv(rows: u64) -> bytes::Bytes {
    let mut out = String::with_capacity(rows as usize * 200);
    for i in 0..rows {
        out.push_str(&Click::new(i, rows).csv());
    }
    bytes::Bytes::from(out)
}

/// `INSERT INTO table VALUES` of rows `from .. from + n` (of `rows`).
pub fn insert_sql(table: &str, from: u64, n: u64, rows: u64) -> String {
    let values: Vec<String> = (from..from + n)
        .map(|i| Click::new(i, rows).sql_values())
        .collect();
    format!("INSERT INTO {table} VALUES {}", values.join(", "))
}
