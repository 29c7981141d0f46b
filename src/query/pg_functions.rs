//! Catalog functions that client libraries call while introspecting
//! (SQLAlchemy's inspector, pgjdbc's DatabaseMetaData, DBeaver, psql's
//! `\du+`) and that the pg_catalog layer lacks. sluice has no sequences
//! and no object comments, so each answers NULL as PostgreSQL does for an
//! object without one.

use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Signature, Volatility};

/// `pg_get_serial_sequence(table, column)`: no column owns a sequence.
/// `obj_description(oid[, catalog])`, `shobj_description(oid, catalog)`:
/// no object has a comment. `pg_get_indexdef(oid[, column, pretty])`:
/// sluice relations have no indexes.
pub fn null_text_functions() -> Vec<ScalarUDF> {
    [
        ("pg_get_serial_sequence", vec![2]),
        ("obj_description", vec![1, 2]),
        ("shobj_description", vec![2]),
        ("pg_get_indexdef", vec![1, 3]),
    ]
    .into_iter()
    .map(|(name, arities)| {
        let signature = Signature::one_of(
            arities
                .into_iter()
                .map(datafusion::logical_expr::TypeSignature::Any)
                .collect(),
            Volatility::Immutable,
        );
        ScalarUDF::from(NullText { name, signature })
    })
    .collect()
}

/// `to_regtype(name)`: the oid of a built-in type named as PostgreSQL
/// names it, NULL for any other name (psycopg's `TypeInfo.fetch`, which
/// SQLAlchemy calls for `hstore` on connect, then finds no such type).
pub fn to_regtype() -> ScalarUDF {
    use datafusion::arrow::array::{Array, Int32Array, StringArray};
    datafusion::logical_expr::create_udf(
        "to_regtype",
        vec![DataType::Utf8],
        DataType::Int32,
        Volatility::Immutable,
        std::sync::Arc::new(|args: &[ColumnarValue]| {
            let names = ColumnarValue::values_to_arrays(args)?;
            let Some(names) = names[0].as_any().downcast_ref::<StringArray>() else {
                return Err(datafusion::error::DataFusionError::Plan(
                    "to_regtype takes text".into(),
                ));
            };
            let oids: Int32Array = (0..names.len())
                .map(|i| {
                    (!names.is_null(i))
                        .then(|| type_oid(names.value(i)))
                        .flatten()
                })
                .collect();
            Ok(ColumnarValue::Array(std::sync::Arc::new(oids)))
        }),
    )
}

fn type_oid(name: &str) -> Option<i32> {
    let oid = match name.trim().to_ascii_lowercase().as_str() {
        "bool" | "boolean" => 16,
        "bytea" => 17,
        "int8" | "bigint" => 20,
        "int2" | "smallint" => 21,
        "int4" | "integer" | "int" => 23,
        "text" => 25,
        "json" => 114,
        "float4" | "real" => 700,
        "float8" | "double precision" => 701,
        "varchar" | "character varying" => 1043,
        "date" => 1082,
        "time" | "time without time zone" => 1083,
        "timestamp" | "timestamp without time zone" => 1114,
        "timestamptz" | "timestamp with time zone" => 1184,
        "interval" => 1186,
        "numeric" | "decimal" => 1700,
        "uuid" => 2950,
        "jsonb" => 3802,
        _ => return None,
    };
    Some(oid)
}

/// `current_setting(name[, missing_ok])`: the server settings clients
/// ask for by name (SQLAlchemy's table reflection reads
/// `default_table_access_method`). An unknown name is 42704, as in
/// PostgreSQL, or NULL with `missing_ok`.
pub fn current_setting() -> ScalarUDF {
    use datafusion::logical_expr::TypeSignature;
    ScalarUDF::from(CurrentSetting {
        signature: Signature::one_of(
            vec![
                TypeSignature::Exact(vec![DataType::Utf8]),
                TypeSignature::Exact(vec![DataType::Utf8, DataType::Boolean]),
            ],
            Volatility::Stable,
        ),
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct CurrentSetting {
    signature: Signature,
}

impl datafusion::logical_expr::ScalarUDFImpl for CurrentSetting {
    fn name(&self) -> &str {
        "current_setting"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(
        &self,
        args: datafusion::logical_expr::ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        use datafusion::arrow::array::{Array, BooleanArray, StringArray};
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let Some(names) = arrays[0].as_any().downcast_ref::<StringArray>() else {
            return Err(datafusion::error::DataFusionError::Plan(
                "current_setting takes text".into(),
            ));
        };
        let missing_ok = arrays
            .get(1)
            .and_then(|a| a.as_any().downcast_ref::<BooleanArray>());
        let mut out = Vec::with_capacity(names.len());
        for i in 0..names.len() {
            if names.is_null(i) {
                out.push(None);
                continue;
            }
            let value = setting(names.value(i));
            let tolerant = missing_ok.is_some_and(|m| !m.is_null(i) && m.value(i));
            if value.is_none() && !tolerant {
                return Err(datafusion::error::DataFusionError::External(Box::new(
                    crate::error::Error::UndefinedObject(format!(
                        "unrecognized configuration parameter \"{}\"",
                        names.value(i)
                    )),
                )));
            }
            out.push(value);
        }
        Ok(ColumnarValue::Array(std::sync::Arc::new(
            StringArray::from(out),
        )))
    }
}

fn setting(name: &str) -> Option<String> {
    let value = match name.to_ascii_lowercase().as_str() {
        "server_version" => crate::sql::SERVER_VERSION,
        "server_version_num" => crate::sql::SERVER_VERSION_NUM,
        "server_encoding" | "client_encoding" => "UTF8",
        "default_table_access_method" => "heap",
        "search_path" => "public",
        "timezone" => "UTC",
        "datestyle" => "ISO, MDY",
        "intervalstyle" => "postgres",
        "standard_conforming_strings" | "integer_datetimes" => "on",
        "transaction_isolation" | "default_transaction_isolation" => "read committed",
        "max_identifier_length" => "63",
        "application_name" => "",
        _ => return None,
    };
    Some(value.to_string())
}

/// `pg_collation_is_visible(oid)`: sluice has the default collation only,
/// visible everywhere.
pub fn pg_collation_is_visible() -> ScalarUDF {
    datafusion::logical_expr::create_udf(
        "pg_collation_is_visible",
        vec![DataType::Int32],
        DataType::Boolean,
        Volatility::Immutable,
        std::sync::Arc::new(|_args: &[ColumnarValue]| {
            Ok(ColumnarValue::Scalar(ScalarValue::Boolean(Some(true))))
        }),
    )
}

/// `json_build_object(key, value, …)`: a JSON object of the pairs, as
/// text (SQLAlchemy's column reflection builds identity and collation
/// details with it).
pub fn json_build_object() -> ScalarUDF {
    ScalarUDF::from(JsonBuildObject {
        signature: Signature::variadic_any(Volatility::Immutable),
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct JsonBuildObject {
    signature: Signature,
}

impl datafusion::logical_expr::ScalarUDFImpl for JsonBuildObject {
    fn name(&self) -> &str {
        "json_build_object"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(
        &self,
        args: datafusion::logical_expr::ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        use datafusion::arrow::array::StringArray;
        use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
        if !args.args.len().is_multiple_of(2) {
            return Err(datafusion::error::DataFusionError::Plan(
                "argument list must have even number of elements".into(),
            ));
        }
        let rows = args.number_rows;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let options = FormatOptions::default();
        let formatters = arrays
            .iter()
            .map(|a| ArrayFormatter::try_new(a.as_ref(), &options))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let objects: StringArray = (0..rows)
            .map(|row| {
                let mut object = serde_json::Map::new();
                for pair in (0..arrays.len()).step_by(2) {
                    let key = formatters[pair].value(row).to_string();
                    let value = &arrays[pair + 1];
                    let json = if value.is_null(row) {
                        serde_json::Value::Null
                    } else {
                        let text = formatters[pair + 1].value(row).to_string();
                        match value.data_type() {
                            DataType::Boolean
                            | DataType::Int8
                            | DataType::Int16
                            | DataType::Int32
                            | DataType::Int64
                            | DataType::Float32
                            | DataType::Float64 => serde_json::from_str(&text)
                                .unwrap_or(serde_json::Value::String(text)),
                            _ => serde_json::Value::String(text),
                        }
                    };
                    object.insert(key, json);
                }
                Some(serde_json::Value::Object(object).to_string())
            })
            .collect();
        Ok(ColumnarValue::Array(std::sync::Arc::new(objects)))
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct NullText {
    name: &'static str,
    signature: Signature,
}

impl datafusion::logical_expr::ScalarUDFImpl for NullText {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(
        &self,
        _args: datafusion::logical_expr::ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        Ok(ColumnarValue::Scalar(ScalarValue::Utf8(None)))
    }
}
