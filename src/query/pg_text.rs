//! Casts to text in PostgreSQL's form. The engine casts a timestamp to
//! text as `2026-01-01T10:00:00` (RFC 3339) and floats as `1e20`/`inf`;
//! PostgreSQL writes `2026-01-01 10:00:00`, `… 10:00:00.5+00`, `1e+20`,
//! `Infinity`, `1 day 02:00:00`, and clients parse or compare those
//! strings (`ts::text LIKE '2026-01-01 %'`). An analyzer rule, run after type coercion, replaces
//! every cast to text with `pg_text(x)`, which formats those types as
//! PostgreSQL does and casts anything else as the engine would; result
//! columns keep their names.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, IntervalMonthDayNanoType, IntervalUnit, TimeUnit, TimestampMicrosecondType,
};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::{
    ColumnarValue, Expr, LogicalPlan, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::optimizer::AnalyzerRule;

/// Rewrites casts to text into `pg_text` calls.
#[derive(Debug)]
pub struct PgTextCasts {
    udf: Arc<ScalarUDF>,
}

impl PgTextCasts {
    pub fn new() -> PgTextCasts {
        PgTextCasts {
            udf: Arc::new(pg_text()),
        }
    }
}

impl AnalyzerRule for PgTextCasts {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> DfResult<LogicalPlan> {
        plan.transform_up_with_subqueries(|plan| {
            let names = NamePreserver::new(&plan);
            plan.map_expressions(|expr| {
                let original = names.save(&expr);
                let rewritten = expr.transform_up(|e| match e {
                    Expr::Cast(c)
                        if matches!(c.field.data_type(), DataType::Utf8 | DataType::Utf8View)
                            && !is_pg_text(&c.expr) =>
                    {
                        let target = c.field.data_type().clone();
                        let text = Expr::ScalarFunction(ScalarFunction::new_udf(
                            self.udf.clone(),
                            vec![*c.expr],
                        ));
                        // `::text` is a string view: keep the type the
                        // rest of the plan was coerced to.
                        Ok(Transformed::yes(if target == DataType::Utf8 {
                            text
                        } else {
                            Expr::Cast(datafusion::logical_expr::Cast::new(Box::new(text), target))
                        }))
                    }
                    other => Ok(Transformed::no(other)),
                })?;
                Ok(rewritten.update_data(|e| original.restore(e)))
            })
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "pg_text_casts"
    }
}

/// Whether `expr` is already a `pg_text` call (a plan analyzed twice).
fn is_pg_text(expr: &Expr) -> bool {
    matches!(expr, Expr::ScalarFunction(f) if f.func.name() == "pg_text")
}

pub fn pg_text() -> ScalarUDF {
    ScalarUDF::from(PgText {
        signature: Signature::any(1, Volatility::Immutable),
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct PgText {
    signature: Signature,
}

impl ScalarUDFImpl for PgText {
    fn name(&self) -> &str {
        "pg_text"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(
        &self,
        args: datafusion::logical_expr::ScalarFunctionArgs,
    ) -> DfResult<ColumnarValue> {
        let scalar = matches!(args.args[0], ColumnarValue::Scalar(_));
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let text = as_pg_text(&arrays[0])?;
        Ok(if scalar {
            ColumnarValue::Scalar(datafusion::common::ScalarValue::try_from_array(&text, 0)?)
        } else {
            ColumnarValue::Array(text)
        })
    }
}

fn as_pg_text(array: &ArrayRef) -> DfResult<ArrayRef> {
    match array.data_type() {
        DataType::Timestamp(_, tz) => {
            let micros = cast(
                array,
                &DataType::Timestamp(TimeUnit::Microsecond, tz.clone()),
            )?;
            let micros = micros.as_primitive::<TimestampMicrosecondType>();
            let mut out = StringBuilder::with_capacity(micros.len(), micros.len() * 26);
            for v in micros.iter() {
                match v {
                    Some(us) => out.append_value(timestamp_text(us, tz.is_some())),
                    None => out.append_null(),
                }
            }
            Ok(Arc::new(out.finish()))
        }
        DataType::Float16 | DataType::Float32 | DataType::Float64 => {
            let text = cast(array, &DataType::Utf8)?;
            let text = text.as_string::<i32>();
            let mut out = StringBuilder::with_capacity(text.len(), text.value_data().len());
            for v in text.iter() {
                match v {
                    Some(v) => out.append_value(float_text(v)),
                    None => out.append_null(),
                }
            }
            Ok(Arc::new(out.finish()))
        }
        DataType::Interval(_) => {
            let mdn = cast(array, &DataType::Interval(IntervalUnit::MonthDayNano))?;
            let mdn = mdn.as_primitive::<IntervalMonthDayNanoType>();
            let mut out = StringBuilder::with_capacity(mdn.len(), mdn.len() * 16);
            for v in mdn.iter() {
                match v {
                    Some(v) => out.append_value(interval_text(v.months, v.days, v.nanoseconds)),
                    None => out.append_null(),
                }
            }
            Ok(Arc::new(out.finish()))
        }
        _ => Ok(cast(array, &DataType::Utf8)?),
    }
}

/// PostgreSQL's interval text (`IntervalStyle = postgres`): `1 year 2
/// mons 3 days 04:05:06.5`, `-1 days +02:00:00`, `00:00:00` for zero.
/// After a negative field, positive ones carry a `+`, as PostgreSQL
/// prints them.
fn interval_text(months: i32, days: i32, nanos: i64) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut is_before = false;
    let mut is_zero = true;
    let mut add = |value: i64, unit: &str| {
        if value == 0 {
            return;
        }
        let sign = if is_before && value > 0 { "+" } else { "" };
        let plural = if value == 1 { "" } else { "s" };
        parts.push(format!("{sign}{value} {unit}{plural}"));
        is_before |= value < 0;
        is_zero = false;
    };
    add(i64::from(months / 12), "year");
    add(i64::from(months % 12), "mon");
    add(i64::from(days), "day");
    let micros = nanos / 1_000;
    if is_zero || micros != 0 {
        let sign = if micros < 0 {
            "-"
        } else if is_before {
            "+"
        } else {
            ""
        };
        let abs = micros.unsigned_abs();
        let secs = abs / 1_000_000;
        let mut time = format!(
            "{sign}{:02}:{:02}:{:02}",
            secs / 3600,
            secs / 60 % 60,
            secs % 60
        );
        let frac = abs % 1_000_000;
        if frac != 0 {
            time.push('.');
            time.push_str(format!("{frac:06}").trim_end_matches('0'));
        }
        parts.push(time);
    }
    parts.join(" ")
}

/// `YYYY-MM-DD HH:MM:SS[.ffffff]`, the fraction without trailing zeros;
/// with a time zone, the instant in UTC (sluice's session zone) and `+00`.
fn timestamp_text(micros: i64, with_zone: bool) -> String {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400);
    let (y, m, d) = crate::types::civil_from_days(days);
    let mut text = format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60
    );
    if frac != 0 {
        let digits = format!("{frac:06}");
        text.push('.');
        text.push_str(digits.trim_end_matches('0'));
    }
    if with_zone {
        text.push_str("+00");
    }
    text
}

/// PostgreSQL's float text: `1e+20`, `Infinity`, `-Infinity`, `NaN`.
fn float_text(v: &str) -> String {
    match v {
        "inf" => "Infinity".into(),
        "-inf" => "-Infinity".into(),
        "NaN" | "nan" => "NaN".into(),
        _ => match v.split_once('e') {
            Some((mantissa, exp)) if !exp.starts_with('-') && !exp.starts_with('+') => {
                format!("{mantissa}e+{exp}")
            }
            _ => v.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_and_floats_read_as_postgresql_writes_them() {
        assert_eq!(timestamp_text(0, false), "1970-01-01 00:00:00");
        assert_eq!(timestamp_text(1_500_000, true), "1970-01-01 00:00:01.5+00");
        assert_eq!(timestamp_text(-1, false), "1969-12-31 23:59:59.999999");
        assert_eq!(float_text("1e20"), "1e+20");
        assert_eq!(float_text("1e-7"), "1e-7");
        assert_eq!(float_text("-inf"), "-Infinity");
        assert_eq!(float_text("2.5"), "2.5");
        assert_eq!(interval_text(0, 0, 0), "00:00:00");
        assert_eq!(
            interval_text(14, 3, 14_706_500_000_000),
            "1 year 2 mons 3 days 04:05:06.5"
        );
        assert_eq!(interval_text(0, -1, 7_200_000_000_000), "-1 days +02:00:00");
        assert_eq!(interval_text(0, 1, 0), "1 day");
        assert_eq!(interval_text(0, 0, -90_000_000_000), "-00:01:30");
    }
}
