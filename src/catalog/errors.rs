//! redb's errors as sluice's: a failed read or write of the catalog file
//! keeps its I/O kind (ENOSPC is 53100, like the log's); the rest is a
//! catalog error (XX000).

use crate::error::Error;

impl From<redb::Error> for Error {
    fn from(e: redb::Error) -> Self {
        Error::Catalog(e.to_string())
    }
}

/// A catalog error; a failed read or write of its file keeps its I/O
/// kind (ENOSPC is 53100, like the log's).
fn catalog_error(e: impl std::fmt::Display, storage: Option<redb::StorageError>) -> Error {
    match storage {
        Some(redb::StorageError::Io(io)) => {
            let kind = Error::from(io);
            match kind {
                Error::DiskFull(m) => Error::DiskFull(format!("could not write the catalog: {m}")),
                other => Error::Io(std::io::Error::other(format!("catalog: {other}"))),
            }
        }
        Some(redb::StorageError::PreviousIo) => Error::Io(std::io::Error::other(
            "catalog: an earlier I/O error is being recovered from; retry",
        )),
        _ => Error::Catalog(e.to_string()),
    }
}

impl From<redb::StorageError> for Error {
    fn from(e: redb::StorageError) -> Self {
        let text = e.to_string();
        catalog_error(text, Some(e))
    }
}

macro_rules! redb_error {
    ($($t:ident),*) => {$(
        impl From<redb::$t> for Error {
            fn from(e: redb::$t) -> Self {
                let text = e.to_string();
                let storage = match e {
                    redb::$t::Storage(s) => Some(s),
                    _ => None,
                };
                catalog_error(text, storage)
            }
        }
    )*};
}
redb_error!(DatabaseError, TransactionError, TableError, CommitError);
