//! Reading query results back into Rust values: the one place that casts and downcasts result
//! columns for the API's JSON.

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, FixedSizeBinaryArray, Int64Array, RecordBatch, StringArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;

use crate::error::QueryError;

pub fn by_name<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef, QueryError> {
    b.column_by_name(name)
        .ok_or_else(|| QueryError::Execution(format!("column {name} missing")))
}

/// A column of the given concrete type.
pub fn typed<'a, T: 'static>(b: &'a RecordBatch, name: &str) -> Result<&'a T, QueryError> {
    by_name(b, name)?
        .as_any()
        .downcast_ref::<T>()
        .ok_or_else(|| QueryError::Execution(format!("column {name} is of another type")))
}

/// Any string-like array (dictionary, view, plain) as plain UTF-8.
pub fn as_strings(a: &ArrayRef) -> Result<StringArray, QueryError> {
    let c = cast(a, &DataType::Utf8).map_err(|e| QueryError::Execution(e.to_string()))?;
    Ok(c.as_string::<i32>().clone())
}

pub fn strings(b: &RecordBatch, name: &str) -> Result<StringArray, QueryError> {
    as_strings(by_name(b, name)?)
}

/// Any integer column as `i64`s.
pub fn ints(b: &RecordBatch, name: &str) -> Result<Int64Array, QueryError> {
    let c = cast(by_name(b, name)?, &DataType::Int64)
        .map_err(|e| QueryError::Execution(e.to_string()))?;
    Ok(c.as_primitive().clone())
}

/// `Some(value)` unless null.
pub fn opt_string(a: &StringArray, i: usize) -> Option<String> {
    (!a.is_null(i)).then(|| a.value(i).to_string())
}

/// Ids as lower-case hex, as every API shows them.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The `trace_id` column of query results, in order.
pub fn trace_ids(batches: &[RecordBatch]) -> Result<Vec<[u8; 16]>, QueryError> {
    let mut ids = Vec::new();
    for b in batches {
        let column = typed::<FixedSizeBinaryArray>(b, "trace_id")?;
        for r in 0..column.len() {
            let mut id = [0u8; 16];
            id.copy_from_slice(column.value(r));
            ids.push(id);
        }
    }
    Ok(ids)
}
