//! The one error type of sluice, and its single mapping to SQLSTATE codes
//! (pgwire) and HTTP status codes (HTTP API).
//!
//! Every module returns [`Error`]; front ends call [`Error::sqlstate`] or
//! [`Error::http_status`] and nothing else decides what a failure looks like
//! on the wire.

use datafusion::arrow::error::ArrowError;
use datafusion::error::DataFusionError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// 42P01: a stream, sink or table that does not exist.
    #[error("relation \"{0}\" does not exist")]
    UndefinedTable(String),
    /// 42P07: CREATE of a name that is taken.
    #[error("relation \"{0}\" already exists")]
    DuplicateTable(String),
    /// 42601: the statement does not parse, or names an unknown option.
    #[error("{0}")]
    Syntax(String),
    /// 42703: a column that does not exist.
    #[error("{0}")]
    UndefinedColumn(String),
    /// 22P02: a value that does not parse as its column's type.
    #[error("{0}")]
    InvalidText(String),
    /// 23502: NULL into a NOT NULL column.
    #[error("{0}")]
    NotNull(String),
    /// 22003: a number too large or small for its column.
    #[error("{0}")]
    NumericOutOfRange(String),
    /// 22P04: COPY data that is not in the declared format.
    #[error("{0}")]
    BadCopyFormat(String),
    /// 22021: bytes that are not valid UTF-8.
    #[error("{0}")]
    CharacterNotInRepertoire(String),
    /// An error with Postgres's CONTEXT line (e.g. `COPY t, line 3`).
    #[error("{error}")]
    WithContext { error: Box<Error>, context: String },
    /// 22023: an option value out of range (shards = 0, retention = 'soon').
    #[error("{0}")]
    InvalidParameter(String),
    /// 42804: a value of the wrong type where no implicit cast exists.
    #[error("{0}")]
    DatatypeMismatch(String),
    /// 42809: the statement does not fit the object (INSERT into a derived stream).
    #[error("{0}")]
    WrongObjectType(String),
    /// 0A000: valid SQL that sluice does not do (yet).
    #[error("{0}")]
    FeatureNotSupported(String),
    /// 2BP01: DROP of something others depend on.
    #[error("{0}")]
    DependentObjects(String),
    /// 53100: the disk is full; nothing of the statement was acknowledged.
    #[error("could not write to the stream log: disk full ({0})")]
    DiskFull(String),
    /// 54000: a statement or record over a configured bound.
    #[error("{0}")]
    ProgramLimit(String),
    /// 57P01: the server is shutting down and refuses new work.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// XX001: a checksum mismatch or unreadable frame in stored data.
    #[error("data corrupted: {0}")]
    Corrupt(String),
    /// 58030: an I/O error other than a full disk.
    #[error("I/O error: {0}")]
    Io(std::io::Error),
    /// 58030: the object store (S3, local directory) failed or is unreachable.
    #[error("object store: {0}")]
    Storage(String),
    /// The catalog store failed (XX000).
    #[error("catalog: {0}")]
    Catalog(String),
    /// An error from the query engine that is not one of ours; shown by
    /// its root cause, without DataFusion's wrapping.
    #[error("{}", datafusion_message(.0))]
    DataFusion(DataFusionError),
    /// A bug: an invariant did not hold (XX000).
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Attaches a CONTEXT line (shown by psql after the message).
    pub fn with_context(self, context: String) -> Error {
        Error::WithContext {
            error: Box::new(self),
            context,
        }
    }

    /// The CONTEXT line, if any.
    pub fn context(&self) -> Option<&str> {
        match self {
            Error::WithContext { context, .. } => Some(context),
            _ => None,
        }
    }

    /// 23502 with Postgres's wording.
    pub fn not_null(column: &str, relation: &str) -> Error {
        Error::NotNull(format!(
            "null value in column \"{column}\" of relation \"{relation}\" violates not-null constraint"
        ))
    }

    /// The SQLSTATE a Postgres client sees for this error.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            Error::UndefinedTable(_) => "42P01",
            Error::DuplicateTable(_) => "42P07",
            Error::Syntax(_) => "42601",
            Error::UndefinedColumn(_) => "42703",
            Error::InvalidText(_) => "22P02",
            Error::BadCopyFormat(_) => "22P04",
            Error::NumericOutOfRange(_) => "22003",
            Error::CharacterNotInRepertoire(_) => "22021",
            Error::WithContext { error, .. } => error.sqlstate(),
            Error::NotNull(_) => "23502",
            Error::InvalidParameter(_) => "22023",
            Error::DatatypeMismatch(_) => "42804",
            Error::WrongObjectType(_) => "42809",
            Error::FeatureNotSupported(_) => "0A000",
            Error::DependentObjects(_) => "2BP01",
            Error::DiskFull(_) => "53100",
            Error::ProgramLimit(_) => "54000",
            Error::ShuttingDown => "57P01",
            Error::Corrupt(_) => "XX001",
            Error::Io(_) | Error::Storage(_) => "58030",
            Error::Catalog(_) | Error::Internal(_) => "XX000",
            Error::DataFusion(e) => datafusion_sqlstate(e),
        }
    }

    /// The HTTP status the HTTP API answers with for this error.
    pub fn http_status(&self) -> u16 {
        match self.sqlstate() {
            "42P01" => 404,
            "42P07" | "2BP01" => 409,
            "53100" | "57P01" => 503,
            "54000" => 413,
            s if s.starts_with("XX") || s.starts_with("58") => 500,
            _ => 400,
        }
    }

    /// Wraps a DataFusion error, recovering one of ours if it travelled
    /// through DataFusion (table providers and sinks return `Error` boxed).
    pub fn from_datafusion(e: DataFusionError) -> Error {
        if let Some(own) = own_error(&e) {
            return own;
        }
        if let DataFusionError::Plan(msg) = e.find_root() {
            // "table 'sluice.public.x' not found" → relation "x" does not exist
            if let Some(name) = msg
                .strip_prefix("table '")
                .and_then(|rest| rest.strip_suffix("' not found"))
            {
                let short = name.rsplit('.').next().unwrap_or(name);
                return Error::UndefinedTable(short.to_string());
            }
        }
        Error::DataFusion(e)
    }

    /// Rebuilds an equivalent error (our errors are not `Clone` because of
    /// `io::Error`); used to pull an `Error` back out of a shared box.
    fn duplicate(&self) -> Error {
        let msg = self.to_string();
        match self {
            Error::UndefinedTable(n) => Error::UndefinedTable(n.clone()),
            Error::DuplicateTable(n) => Error::DuplicateTable(n.clone()),
            Error::Syntax(_) => Error::Syntax(msg),
            Error::UndefinedColumn(_) => Error::UndefinedColumn(msg),
            Error::InvalidText(_) => Error::InvalidText(msg),
            Error::BadCopyFormat(_) => Error::BadCopyFormat(msg),
            Error::NumericOutOfRange(_) => Error::NumericOutOfRange(msg),
            Error::CharacterNotInRepertoire(_) => Error::CharacterNotInRepertoire(msg),
            Error::WithContext { error, context } => Error::WithContext {
                error: Box::new(error.duplicate()),
                context: context.clone(),
            },
            Error::NotNull(_) => Error::NotNull(msg),
            Error::InvalidParameter(_) => Error::InvalidParameter(msg),
            Error::DatatypeMismatch(_) => Error::DatatypeMismatch(msg),
            Error::WrongObjectType(_) => Error::WrongObjectType(msg),
            Error::FeatureNotSupported(_) => Error::FeatureNotSupported(msg),
            Error::DependentObjects(_) => Error::DependentObjects(msg),
            Error::DiskFull(d) => Error::DiskFull(d.clone()),
            Error::ProgramLimit(_) => Error::ProgramLimit(msg),
            Error::ShuttingDown => Error::ShuttingDown,
            Error::Corrupt(d) => Error::Corrupt(d.clone()),
            Error::Io(e) => Error::Io(std::io::Error::new(e.kind(), e.to_string())),
            Error::Catalog(d) => Error::Catalog(d.clone()),
            Error::Storage(d) => Error::Storage(d.clone()),
            Error::DataFusion(_) | Error::Internal(_) => Error::Internal(msg),
        }
    }
}

/// Finds an `Error` of ours inside a DataFusion error chain.
fn own_error(e: &DataFusionError) -> Option<Error> {
    match e {
        DataFusionError::External(inner) => inner.downcast_ref::<Error>().map(Error::duplicate),
        DataFusionError::Context(_, inner) => own_error(inner),
        DataFusionError::Shared(inner) => own_error(inner),
        DataFusionError::ArrowError(inner, _) => match inner.as_ref() {
            ArrowError::ExternalError(x) => x.downcast_ref::<Error>().map(Error::duplicate),
            _ => None,
        },
        _ => None,
    }
}

/// The root cause's message, without the engine's stage prefixes and
/// backtraces: "Cannot cast string 'x' to value of Int32 type".
fn datafusion_message(e: &DataFusionError) -> String {
    let root = e.find_root();
    let msg = match root {
        DataFusionError::ArrowError(inner, _) => match inner.as_ref() {
            ArrowError::CastError(m)
            | ArrowError::ParseError(m)
            | ArrowError::InvalidArgumentError(m)
            | ArrowError::ComputeError(m) => m.clone(),
            other => other.to_string(),
        },
        other => other.message().to_string(),
    };
    msg.split(DataFusionError::BACK_TRACE_SEP)
        .next()
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn datafusion_sqlstate(e: &DataFusionError) -> &'static str {
    match e {
        DataFusionError::SQL(_, _) => "42601",
        DataFusionError::NotImplemented(_) => "0A000",
        DataFusionError::SchemaError(inner, _) => {
            use datafusion::common::SchemaError;
            match inner.as_ref() {
                SchemaError::FieldNotFound { .. } => "42703",
                SchemaError::DuplicateQualifiedField { .. }
                | SchemaError::DuplicateUnqualifiedField { .. } => "42701",
                SchemaError::AmbiguousReference { .. } => "42702",
            }
        }
        DataFusionError::ArrowError(inner, _) => match inner.as_ref() {
            ArrowError::CastError(_) | ArrowError::ParseError(_) => "22P02",
            ArrowError::DivideByZero => "22012",
            ArrowError::ArithmeticOverflow(_) => "22003",
            _ => "XX000",
        },
        DataFusionError::Plan(msg) => plan_sqlstate(msg),
        DataFusionError::Execution(msg) => {
            if msg.contains("Cannot cast") || msg.contains("Cast error") {
                "22P02"
            } else if msg.contains("non-nullable") {
                "23502"
            } else if msg.contains("Divide by zero") {
                "22012"
            } else {
                "XX000"
            }
        }
        DataFusionError::ResourcesExhausted(_) => "53200",
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
            datafusion_sqlstate(inner)
        }
        DataFusionError::Shared(inner) => datafusion_sqlstate(inner),
        _ => "XX000",
    }
}

fn plan_sqlstate(msg: &str) -> &'static str {
    let lower = msg.to_ascii_lowercase();
    if lower.contains("table") && lower.contains("not found") {
        "42P01"
    } else if lower.contains("already exists") {
        "42P07"
    } else if lower.contains("no field named")
        || lower.contains("column") && lower.contains("not found")
    {
        "42703"
    } else if lower.contains("cannot cast") || lower.contains("cast error") {
        "22P02"
    } else if lower.contains("invalid function") || lower.contains("no function matches") {
        "42883"
    } else if lower.contains("unsupported") || lower.contains("not supported") {
        "0A000"
    } else {
        "42000"
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        // ENOSPC (28) and EDQUOT (122): refuse with 53100 so clients back off.
        match e.raw_os_error() {
            Some(28) | Some(122) => Error::DiskFull(e.to_string()),
            _ => Error::Io(e),
        }
    }
}

impl From<DataFusionError> for Error {
    fn from(e: DataFusionError) -> Self {
        Error::from_datafusion(e)
    }
}

impl From<ArrowError> for Error {
    fn from(e: ArrowError) -> Self {
        Error::from_datafusion(DataFusionError::ArrowError(Box::new(e), None))
    }
}

impl From<Error> for DataFusionError {
    fn from(e: Error) -> Self {
        match e {
            Error::DataFusion(inner) => inner,
            other => DataFusionError::External(Box::new(other)),
        }
    }
}

impl From<object_store::Error> for Error {
    fn from(e: object_store::Error) -> Self {
        Error::Storage(e.to_string())
    }
}

impl From<object_store::path::Error> for Error {
    fn from(e: object_store::path::Error) -> Self {
        Error::Storage(e.to_string())
    }
}

impl From<datafusion::parquet::errors::ParquetError> for Error {
    fn from(e: datafusion::parquet::errors::ParquetError) -> Self {
        Error::Storage(e.to_string())
    }
}

impl From<redb::Error> for Error {
    fn from(e: redb::Error) -> Self {
        Error::Catalog(e.to_string())
    }
}

macro_rules! redb_error {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::Catalog(e.to_string())
            }
        }
    )*};
}
redb_error!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_errors_survive_a_trip_through_datafusion() {
        let df: DataFusionError = Error::NotNull("null value in column \"a\"".into()).into();
        let back = Error::from_datafusion(df);
        assert_eq!(back.sqlstate(), "23502");
        assert_eq!(back.to_string(), "null value in column \"a\"");
    }

    #[test]
    fn disk_full_maps_to_53100() {
        let e: Error = std::io::Error::from_raw_os_error(28).into();
        assert_eq!(e.sqlstate(), "53100");
        assert_eq!(e.http_status(), 503);
    }

    #[test]
    fn datafusion_plan_errors_get_codes() {
        let e = Error::from_datafusion(DataFusionError::Plan("table 'x' not found".into()));
        assert_eq!(e.sqlstate(), "42P01");
    }
}
