//! What query-engine errors are: their root cause's message and their
//! kind. DataFusion reports many failures as text only, so those are
//! classified by wording, here and nowhere else.

use datafusion::arrow::error::ArrowError;
use datafusion::error::DataFusionError;

use super::ErrorKind;

/// The root cause's message, without the engine's stage prefixes and
/// backtraces: "Cannot cast string 'x' to value of Int32 type".
pub(super) fn datafusion_message(e: &DataFusionError) -> String {
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

/// The kind of a query-engine error. DataFusion reports most plan and
/// execution failures as text only, so those are classified by wording.
pub(super) fn datafusion_kind(e: &DataFusionError) -> ErrorKind {
    match e {
        DataFusionError::SQL(_, _) => ErrorKind::Syntax,
        DataFusionError::NotImplemented(_) => ErrorKind::FeatureNotSupported,
        DataFusionError::SchemaError(inner, _) => {
            use datafusion::common::SchemaError;
            match inner.as_ref() {
                SchemaError::FieldNotFound { .. } => ErrorKind::UndefinedColumn,
                SchemaError::DuplicateQualifiedField { .. }
                | SchemaError::DuplicateUnqualifiedField { .. } => ErrorKind::DuplicateColumn,
                SchemaError::AmbiguousReference { .. } => ErrorKind::AmbiguousColumn,
            }
        }
        DataFusionError::ArrowError(inner, _) => match inner.as_ref() {
            ArrowError::CastError(_) | ArrowError::ParseError(_) => ErrorKind::InvalidText,
            ArrowError::DivideByZero => ErrorKind::DivisionByZero,
            ArrowError::ArithmeticOverflow(_) => ErrorKind::NumericOutOfRange,
            _ => ErrorKind::Internal,
        },
        DataFusionError::Plan(msg) => plan_kind(msg),
        DataFusionError::Execution(msg) => {
            if msg.contains("Cannot cast") || msg.contains("Cast error") {
                ErrorKind::InvalidText
            } else if msg.contains("non-nullable") {
                ErrorKind::NotNull
            } else if msg.contains("Divide by zero") {
                ErrorKind::DivisionByZero
            } else {
                ErrorKind::Internal
            }
        }
        DataFusionError::ResourcesExhausted(_) => ErrorKind::OutOfMemory,
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
            datafusion_kind(inner)
        }
        DataFusionError::Shared(inner) => datafusion_kind(inner),
        _ => ErrorKind::Internal,
    }
}

fn plan_kind(msg: &str) -> ErrorKind {
    let lower = msg.to_ascii_lowercase();
    if lower.contains("table") && lower.contains("not found") {
        ErrorKind::UndefinedTable
    } else if lower.contains("already exists") {
        ErrorKind::DuplicateTable
    } else if lower.contains("no field named")
        || lower.contains("column") && lower.contains("not found")
    {
        ErrorKind::UndefinedColumn
    } else if lower.contains("cannot cast") || lower.contains("cast error") {
        ErrorKind::InvalidText
    } else if lower.contains("invalid function") || lower.contains("no function matches") {
        ErrorKind::UndefinedFunction
    } else if lower.contains("unsupported") || lower.contains("not supported") {
        ErrorKind::FeatureNotSupported
    } else {
        ErrorKind::SyntaxOrAccess
    }
}
