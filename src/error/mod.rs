//! The one error type of sluice and its protocol-neutral [`ErrorKind`]
//! (GreptimeDB's `StatusCode` is the model).
//!
//! Every module returns [`Error`]; code that must tell failures apart
//! matches on [`Error::kind`], never on codes or messages. A kind has one
//! SQLSTATE ([`ErrorKind::sqlstate`]): it is what pgwire sends, and the
//! `error_code` that `sluice.errors` and the HTTP API's per-record answers
//! carry. HTTP status codes and AWS error types are mapped from the kind
//! in `http`, once.

use datafusion::arrow::error::ArrowError;
use datafusion::error::DataFusionError;

mod query_engine;

use self::query_engine::{datafusion_kind, datafusion_message};

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
    /// 42602: a name that cannot be used (it would become a path that is
    /// not the object's own).
    #[error("{0}")]
    InvalidName(String),
    /// 42701: ADD COLUMN of a name the stream has (or had).
    #[error("{0}")]
    DuplicateColumn(String),
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
    /// 55000: an object in the wrong state for the request (a backward
    /// FETCH from a forward-only cursor).
    #[error("{0}")]
    ObjectNotInPrerequisiteState(String),
    /// 42501: the statement reaches what it may not (a location outside
    /// the allowed ones, a system schema, a read-only table).
    #[error("{0}")]
    InsufficientPrivilege(String),
    /// 42710: CREATE of a role (or other non-relation) whose name is taken.
    #[error("{0}")]
    DuplicateObject(String),
    /// 42704: a role (or other non-relation) that does not exist.
    #[error("{0}")]
    UndefinedObject(String),
    /// 2BP01: DROP of something others depend on.
    #[error("{0}")]
    DependentObjects(String),
    /// 53100: the disk is full; nothing of the statement was acknowledged.
    #[error("{0}")]
    DiskFull(String),
    /// 54000: a statement or record over a configured bound.
    #[error("{0}")]
    ProgramLimit(String),
    /// 54001: a statement whose expressions nest deeper than the
    /// recursive phases (parsing, planning, executing) may go.
    #[error("{0}")]
    TooComplex(String),
    /// 54011: a select list or VALUES row wider than PostgreSQL allows.
    #[error("{0}")]
    TooManyColumns(String),
    /// 55P02: a setting no session may change (it would move the server's
    /// files or resources).
    #[error("{0}")]
    CantChangeSetting(String),
    /// 57014: the client cancelled the statement (CopyFail).
    #[error("{0}")]
    Canceled(String),
    /// 57P01: the server is shutting down and refuses new work.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// XX001: a checksum mismatch or unreadable frame in stored data.
    #[error("data corrupted: {0}")]
    Corrupt(String),
    /// 58030: an I/O error other than a full disk.
    #[error("I/O error: {0}")]
    Io(std::io::Error),
    /// 58030: a stream log whose fsync failed refuses writes until a
    /// restart (a failed fsync may have dropped dirty pages, so a later
    /// successful one would prove nothing).
    #[error("{0}")]
    LogStopped(String),
    /// 58030: the object store (S3, local directory) failed or is unreachable.
    #[error("object store: {0}")]
    Storage(String),
    /// 08001: a destination (a PostgreSQL database, an HTTP endpoint)
    /// could not be reached.
    #[error("{0}")]
    ConnectionFailure(String),
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

/// What went wrong, independent of the protocol that reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    UndefinedTable,
    DuplicateTable,
    Syntax,
    /// A statement the grammar takes but that names something wrongly (42000).
    SyntaxOrAccess,
    UndefinedColumn,
    InvalidName,
    DuplicateColumn,
    AmbiguousColumn,
    UndefinedFunction,
    InvalidText,
    BadCopyFormat,
    NumericOutOfRange,
    DivisionByZero,
    CharacterNotInRepertoire,
    NotNull,
    InvalidParameter,
    DatatypeMismatch,
    WrongObjectType,
    FeatureNotSupported,
    ObjectNotInPrerequisiteState,
    DependentObjects,
    InsufficientPrivilege,
    DuplicateObject,
    UndefinedObject,
    DiskFull,
    OutOfMemory,
    ProgramLimit,
    /// Expressions nested too deep (54001).
    TooComplex,
    /// A target list wider than allowed (54011).
    TooManyColumns,
    /// A setting that cannot be changed (55P02).
    CantChangeSetting,
    Canceled,
    ShuttingDown,
    /// A malformed protocol message (08P01).
    ProtocolViolation,
    /// More connections than `max_connections` (53300).
    TooManyConnections,
    /// A session idle longer than `idle_session_timeout_ms` (57P05).
    IdleSessionTimeout,
    Corrupt,
    Io,
    Storage,
    ConnectionFailure,
    Internal,
}

impl ErrorKind {
    /// The SQLSTATE of this kind: the one table of codes.
    pub fn sqlstate(self) -> &'static str {
        match self {
            ErrorKind::UndefinedTable => "42P01",
            ErrorKind::DuplicateTable => "42P07",
            ErrorKind::Syntax => "42601",
            ErrorKind::SyntaxOrAccess => "42000",
            ErrorKind::UndefinedColumn => "42703",
            ErrorKind::InvalidName => "42602",
            ErrorKind::DuplicateColumn => "42701",
            ErrorKind::AmbiguousColumn => "42702",
            ErrorKind::UndefinedFunction => "42883",
            ErrorKind::InvalidText => "22P02",
            ErrorKind::BadCopyFormat => "22P04",
            ErrorKind::NumericOutOfRange => "22003",
            ErrorKind::DivisionByZero => "22012",
            ErrorKind::CharacterNotInRepertoire => "22021",
            ErrorKind::NotNull => "23502",
            ErrorKind::InvalidParameter => "22023",
            ErrorKind::DatatypeMismatch => "42804",
            ErrorKind::WrongObjectType => "42809",
            ErrorKind::FeatureNotSupported => "0A000",
            ErrorKind::ObjectNotInPrerequisiteState => "55000",
            ErrorKind::DependentObjects => "2BP01",
            ErrorKind::InsufficientPrivilege => "42501",
            ErrorKind::DuplicateObject => "42710",
            ErrorKind::UndefinedObject => "42704",
            ErrorKind::DiskFull => "53100",
            ErrorKind::OutOfMemory => "53200",
            ErrorKind::ProgramLimit => "54000",
            ErrorKind::TooComplex => "54001",
            ErrorKind::CantChangeSetting => "55P02",
            ErrorKind::TooManyColumns => "54011",
            ErrorKind::Canceled => "57014",
            ErrorKind::ShuttingDown => "57P01",
            ErrorKind::ProtocolViolation => "08P01",
            ErrorKind::TooManyConnections => "53300",
            ErrorKind::IdleSessionTimeout => "57P05",
            ErrorKind::Corrupt => "XX001",
            ErrorKind::Io | ErrorKind::Storage => "58030",
            ErrorKind::ConnectionFailure => "08001",
            ErrorKind::Internal => "XX000",
        }
    }

    /// A failure of the server or its storage rather than of the request:
    /// retrying the same request later can succeed.
    pub fn is_server_side(self) -> bool {
        matches!(
            self,
            ErrorKind::DiskFull
                | ErrorKind::OutOfMemory
                | ErrorKind::ShuttingDown
                | ErrorKind::Corrupt
                | ErrorKind::Io
                | ErrorKind::Storage
                | ErrorKind::ConnectionFailure
                | ErrorKind::Internal
        )
    }
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

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::UndefinedTable(_) => ErrorKind::UndefinedTable,
            Error::DuplicateTable(_) => ErrorKind::DuplicateTable,
            Error::Syntax(_) => ErrorKind::Syntax,
            Error::UndefinedColumn(_) => ErrorKind::UndefinedColumn,
            Error::InvalidName(_) => ErrorKind::InvalidName,
            Error::DuplicateColumn(_) => ErrorKind::DuplicateColumn,
            Error::InvalidText(_) => ErrorKind::InvalidText,
            Error::BadCopyFormat(_) => ErrorKind::BadCopyFormat,
            Error::NumericOutOfRange(_) => ErrorKind::NumericOutOfRange,
            Error::CharacterNotInRepertoire(_) => ErrorKind::CharacterNotInRepertoire,
            Error::WithContext { error, .. } => error.kind(),
            Error::NotNull(_) => ErrorKind::NotNull,
            Error::InvalidParameter(_) => ErrorKind::InvalidParameter,
            Error::DatatypeMismatch(_) => ErrorKind::DatatypeMismatch,
            Error::WrongObjectType(_) => ErrorKind::WrongObjectType,
            Error::FeatureNotSupported(_) => ErrorKind::FeatureNotSupported,
            Error::ObjectNotInPrerequisiteState(_) => ErrorKind::ObjectNotInPrerequisiteState,
            Error::DependentObjects(_) => ErrorKind::DependentObjects,
            Error::InsufficientPrivilege(_) => ErrorKind::InsufficientPrivilege,
            Error::DuplicateObject(_) => ErrorKind::DuplicateObject,
            Error::UndefinedObject(_) => ErrorKind::UndefinedObject,
            Error::DiskFull(_) => ErrorKind::DiskFull,
            Error::ProgramLimit(_) => ErrorKind::ProgramLimit,
            Error::TooComplex(_) => ErrorKind::TooComplex,
            Error::CantChangeSetting(_) => ErrorKind::CantChangeSetting,
            Error::TooManyColumns(_) => ErrorKind::TooManyColumns,
            Error::Canceled(_) => ErrorKind::Canceled,
            Error::ShuttingDown => ErrorKind::ShuttingDown,
            Error::Corrupt(_) => ErrorKind::Corrupt,
            Error::Io(_) | Error::LogStopped(_) => ErrorKind::Io,
            Error::Storage(_) => ErrorKind::Storage,
            Error::ConnectionFailure(_) => ErrorKind::ConnectionFailure,
            Error::Catalog(_) | Error::Internal(_) => ErrorKind::Internal,
            Error::DataFusion(e) => datafusion_kind(e),
        }
    }

    /// The SQLSTATE of [`Error::kind`].
    pub fn sqlstate(&self) -> &'static str {
        self.kind().sqlstate()
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
    /// `io::Error`): to pull an `Error` back out of a shared box, or to
    /// answer every statement of a failed group with the same error.
    pub fn duplicate(&self) -> Error {
        let msg = self.to_string();
        match self {
            Error::UndefinedTable(n) => Error::UndefinedTable(n.clone()),
            Error::DuplicateTable(n) => Error::DuplicateTable(n.clone()),
            Error::Syntax(_) => Error::Syntax(msg),
            Error::UndefinedColumn(_) => Error::UndefinedColumn(msg),
            Error::InvalidName(_) => Error::InvalidName(msg),
            Error::DuplicateColumn(_) => Error::DuplicateColumn(msg),
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
            Error::ObjectNotInPrerequisiteState(_) => Error::ObjectNotInPrerequisiteState(msg),
            Error::DependentObjects(_) => Error::DependentObjects(msg),
            Error::InsufficientPrivilege(_) => Error::InsufficientPrivilege(msg),
            Error::DuplicateObject(_) => Error::DuplicateObject(msg),
            Error::UndefinedObject(_) => Error::UndefinedObject(msg),
            Error::DiskFull(d) => Error::DiskFull(d.clone()),
            Error::ProgramLimit(_) => Error::ProgramLimit(msg),
            Error::TooComplex(_) => Error::TooComplex(msg),
            Error::CantChangeSetting(_) => Error::CantChangeSetting(msg),
            Error::TooManyColumns(_) => Error::TooManyColumns(msg),
            Error::Canceled(_) => Error::Canceled(msg),
            Error::ShuttingDown => Error::ShuttingDown,
            Error::Corrupt(d) => Error::Corrupt(d.clone()),
            Error::Io(e) => Error::Io(match e.raw_os_error() {
                Some(code) => std::io::Error::from_raw_os_error(code),
                None => std::io::Error::new(e.kind(), e.to_string()),
            }),
            Error::LogStopped(d) => Error::LogStopped(d.clone()),
            Error::Catalog(d) => Error::Catalog(d.clone()),
            Error::Storage(d) => Error::Storage(d.clone()),
            Error::ConnectionFailure(d) => Error::ConnectionFailure(d.clone()),
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

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        // ENOSPC (28) and EDQUOT (122): refuse with 53100 so clients back off.
        match e.raw_os_error() {
            Some(28) | Some(122) => Error::DiskFull(format!("disk full: {e}")),
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
        assert_eq!(e.kind(), ErrorKind::DiskFull);
        assert_eq!(e.sqlstate(), "53100");
    }

    #[test]
    fn datafusion_plan_errors_get_codes() {
        let e = Error::from_datafusion(DataFusionError::Plan("table 'x' not found".into()));
        assert_eq!(e.sqlstate(), "42P01");
    }
}
