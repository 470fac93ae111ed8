//! `attr_match(attributes, resource_attributes, key, op, value)`: whether a span's attribute
//! `key` — looked up in its own attributes, then its resource's — compares to `value` with `op`
//! (`=`, `!=`, `>`, `>=`, `<`, `<=`). A value that parses as a number compares numerically with
//! int and double attributes (and `=` / `!=` also as text with string ones); any other value
//! compares as text.
//!
//! One pass over each row's map, where the equivalent SQL (`attributes['k']['int']`, ...) scans
//! the map once per lookup and needs six lookups: the trace search's filter on an arbitrary
//! attribute costs a fraction of what it did.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanBuilder, Float64Array, Int64Array, MapArray, StringArray,
    StructArray,
};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{exec_err, Result as DfResult, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

pub const NAME: &str = "attr_match";

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct AttrMatch {
    signature: Signature,
}

impl Default for AttrMatch {
    fn default() -> Self {
        Self {
            signature: Signature::any(5, Volatility::Immutable),
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

impl Op {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "=" => Op::Eq,
            "!=" => Op::Ne,
            ">" => Op::Gt,
            ">=" => Op::Ge,
            "<" => Op::Lt,
            "<=" => Op::Le,
            _ => return None,
        })
    }

    fn holds<T: PartialOrd>(self, a: T, b: T) -> bool {
        match self {
            Op::Eq => a == b,
            Op::Ne => a != b,
            Op::Gt => a > b,
            Op::Ge => a >= b,
            Op::Lt => a < b,
            Op::Le => a <= b,
        }
    }
}

/// One attribute value: its text and its number, either of which may be absent.
struct Found<'a> {
    text: Option<&'a str>,
    number: Option<f64>,
}

/// The typed value columns of an attribute map.
struct MapColumns<'a> {
    map: &'a MapArray,
    keys: &'a StringArray,
    str: &'a StringArray,
    int: &'a Int64Array,
    double: &'a Float64Array,
}

impl<'a> MapColumns<'a> {
    fn of(array: &'a ArrayRef) -> Option<Self> {
        let map = array.as_map_opt()?;
        let keys = map.keys().as_string_opt::<i32>()?;
        let values: &StructArray = map.values().as_struct_opt()?;
        Some(Self {
            map,
            keys,
            str: values.column(0).as_string_opt::<i32>()?,
            int: values.column(1).as_primitive_opt()?,
            double: values.column(2).as_primitive_opt()?,
        })
    }

    fn find(&self, row: usize, key: &str) -> Option<Found<'a>> {
        if self.map.is_null(row) {
            return None;
        }
        let offsets = self.map.value_offsets();
        let (from, to) = (offsets[row] as usize, offsets[row + 1] as usize);
        (from..to)
            .find(|&i| self.keys.value(i) == key)
            .map(|i| Found {
                text: self.str.is_valid(i).then(|| self.str.value(i)),
                number: if self.int.is_valid(i) {
                    Some(self.int.value(i) as f64)
                } else if self.double.is_valid(i) {
                    Some(self.double.value(i))
                } else {
                    None
                },
            })
    }
}

fn scalar_text(v: &ColumnarValue, what: &str) -> DfResult<String> {
    match v {
        ColumnarValue::Scalar(ScalarValue::Utf8(Some(s)))
        | ColumnarValue::Scalar(ScalarValue::LargeUtf8(Some(s)))
        | ColumnarValue::Scalar(ScalarValue::Utf8View(Some(s))) => Ok(s.clone()),
        _ => exec_err!("{NAME}: {what} must be a string literal"),
    }
}

impl ScalarUDFImpl for AttrMatch {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let [attributes, resource, key, op, value] = args.args.as_slice() else {
            return exec_err!("{NAME} takes 5 arguments");
        };
        let key = scalar_text(key, "the key")?;
        let op_text = scalar_text(op, "the operator")?;
        let Some(op) = Op::parse(&op_text) else {
            return exec_err!("{NAME}: unknown operator {op_text:?}");
        };
        let value = scalar_text(value, "the value")?;
        let number = value.parse::<f64>().ok().filter(|n| n.is_finite());
        let rows = args.number_rows;
        let (attributes, resource) = (attributes.to_array(rows)?, resource.to_array(rows)?);
        let (Some(span_map), Some(resource_map)) =
            (MapColumns::of(&attributes), MapColumns::of(&resource))
        else {
            return exec_err!("{NAME}: the first two arguments must be attribute maps");
        };
        let mut out = BooleanBuilder::with_capacity(rows);
        for row in 0..rows {
            let found = span_map
                .find(row, &key)
                .or_else(|| resource_map.find(row, &key));
            let matched = match (found, number) {
                (None, _) => false,
                (Some(f), Some(n)) => match op {
                    Op::Eq | Op::Ne => {
                        f.number.is_some_and(|x| op.holds(x, n))
                            || f.text.is_some_and(|t| op.holds(t, value.as_str()))
                    }
                    _ => f.number.is_some_and(|x| op.holds(x, n)),
                },
                (Some(f), None) => f.text.is_some_and(|t| op.holds(t, value.as_str())),
            };
            out.append_value(matched);
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}
