//! Deterministic clickstream rows: time over one day, user and session
//! ids, e-mail, ip, one of 200 urls, referrer, status, latency and user
//! agent. Two shapes of the same columns: [`Shape::Narrow`] (~160 bytes as
//! CSV: one short user agent, bare referrers) and [`Shape::Wide`] (~290
//! bytes: real browsers' user agents, search referrers with their query),
//! since PostgreSQL's cost is per row and sluice's per byte.

pub const COLUMNS: &str =
    "(event_time TIMESTAMP NOT NULL, user_id BIGINT, session_id BIGINT, email TEXT, ip TEXT, \
     url TEXT, referrer TEXT, status INT, latency_ms INT, user_agent TEXT)";

/// How wide a row's text columns are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Narrow,
    Wide,
}

impl Shape {
    pub fn name(self) -> &'static str {
        match self {
            Shape::Narrow => "~160 B rows",
            Shape::Wide => "~290 B rows",
        }
    }
}

const NARROW_AGENT: &str = "Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101";

/// User agents as real clickstreams carry them.
const WIDE_AGENTS: [&str; 4] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
];

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
    pub shape: Shape,
}

impl Click {
    /// Row `i` of `rows` in `shape` (the same values, other text widths).
    pub fn shaped(i: u64, rows: u64, shape: Shape) -> Click {
        Click {
            shape,
            ..Click::new(i, rows)
        }
    }

    fn agent(&self) -> &'static str {
        match self.shape {
            Shape::Narrow => NARROW_AGENT,
            Shape::Wide => WIDE_AGENTS[(self.session % 4) as usize],
        }
    }

    fn referrer(&self) -> String {
        match self.shape {
            Shape::Narrow => format!("https://ref.example.com/{}", self.referrer),
            Shape::Wide => format!(
                "https://www.search.example.com/search?q=product+{}&src={}&utm_source=newsletter&utm_medium=email",
                self.url, self.referrer
            ),
        }
    }

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
            shape: Shape::Narrow,
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
            "{},{},{},user{}@example.com,10.{}.{}.{},/products/{},{},{},{},{}\n",
            self.time(),
            self.user,
            self.session,
            self.user,
            self.ip[0],
            self.ip[1],
            self.ip[2],
            self.url,
            self.referrer(),
            self.status,
            self.latency_ms,
            csv_field(self.agent())
        )
    }

    pub fn sql_values(&self) -> String {
        format!(
            "('{}', {}, {}, 'user{}@example.com', '10.{}.{}.{}', '/products/{}', '{}', {}, {}, '{}')",
            self.time(), self.user, self.session, self.user, self.ip[0], self.ip[1], self.ip[2],
            self.url, self.referrer(), self.status, self.latency_ms, self.agent()
        )
    }

    pub fn json(&self) -> String {
        format!(
            "{{\"event_time\":\"{}\",\"user_id\":{},\"session_id\":{},\"email\":\"user{}@example.com\",\"ip\":\"10.{}.{}.{}\",\"url\":\"/products/{}\",\"referrer\":\"{}\",\"status\":{},\"latency_ms\":{},\"user_agent\":\"{}\"}}",
            self.time().replace(' ', "T"), self.user, self.session, self.user, self.ip[0], self.ip[1], self.ip[2],
            self.url, self.referrer(), self.status, self.latency_ms, self.agent()
        )
    }
}

/// A CSV field: quoted when it holds the delimiter (browsers' user agents
/// do: `(KHTML, like Gecko)`).
fn csv_field(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains([',', '"']) {
        format!("\"{}\"", text.replace('"', "\"\"")).into()
    } else {
        text.into()
    }
}

/// `rows` rows of `shape` as CSV.
pub fn csv_shaped(rows: u64, shape: Shape) -> bytes::Bytes {
    let mut out = String::with_capacity(rows as usize * 300);
    for i in 0..rows {
        out.push_str(&Click::shaped(i, rows, shape).csv());
    }
    bytes::Bytes::from(out)
}

/// `INSERT INTO table VALUES` of rows `from .. from + n` (of `rows`) of
/// `shape`.
pub fn insert_sql_shaped(table: &str, from: u64, n: u64, rows: u64, shape: Shape) -> String {
    let values: Vec<String> = (from..from + n)
        .map(|i| Click::shaped(i, rows, shape).sql_values())
        .collect();
    format!("INSERT INTO {table} VALUES {}", values.join(", "))
}
