//! The store never writes what it cannot read back. serde_json writes a
//! float that is not finite (NaN, ±Inf) as `null`, which the same type then
//! refuses to read, so one such value would make a row unreadable at the
//! next start. [`check`] walks a value through serde, without allocating,
//! and names the first field that holds such a float.

use serde::Serialize;
use serde::ser;

/// A float that JSON cannot hold, in the field it was found in.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("field {field} is {value}, which JSON cannot hold")]
pub struct NonFinite {
    pub field: String,
    pub value: String,
}

impl ser::Error for NonFinite {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        NonFinite {
            field: "?".into(),
            value: msg.to_string(),
        }
    }
}

/// `Ok` when every float in `value` is finite.
pub fn check<T: Serialize + ?Sized>(value: &T) -> Result<(), NonFinite> {
    value.serialize(&mut Walk { field: "" })
}

/// Walks a value; `field` is the struct field being walked (for the error).
struct Walk {
    field: &'static str,
}

impl Walk {
    fn float(&self, v: f64) -> Result<(), NonFinite> {
        if v.is_finite() {
            Ok(())
        } else {
            Err(NonFinite {
                field: if self.field.is_empty() {
                    "(value)".into()
                } else {
                    self.field.into()
                },
                value: v.to_string(),
            })
        }
    }
}

macro_rules! accept {
    ($($name:ident($ty:ty)),* $(,)?) => {
        $(fn $name(self, _: $ty) -> Result<(), NonFinite> { Ok(()) })*
    };
}

impl ser::Serializer for &mut Walk {
    type Ok = ();
    type Error = NonFinite;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    accept!(
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_i128(i128),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_u128(u128),
        serialize_char(char),
        serialize_str(&str),
        serialize_bytes(&[u8]),
        serialize_unit_struct(&'static str),
    );

    fn serialize_f32(self, v: f32) -> Result<(), NonFinite> {
        self.float(f64::from(v))
    }
    fn serialize_f64(self, v: f64) -> Result<(), NonFinite> {
        self.float(v)
    }
    fn serialize_none(self) -> Result<(), NonFinite> {
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Result<(), NonFinite> {
        v.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), NonFinite> {
        Ok(())
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
    ) -> Result<(), NonFinite> {
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        v: &T,
    ) -> Result<(), NonFinite> {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        v: &T,
    ) -> Result<(), NonFinite> {
        v.serialize(self)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self, NonFinite> {
        Ok(self)
    }
    fn serialize_tuple(self, _: usize) -> Result<Self, NonFinite> {
        Ok(self)
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self, NonFinite> {
        Ok(self)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self, NonFinite> {
        Ok(self)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self, NonFinite> {
        Ok(self)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, NonFinite> {
        Ok(self)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self, NonFinite> {
        Ok(self)
    }
}

/// Elements, map keys and values are walked alike.
macro_rules! elements {
    ($($trait:ident :: $method:ident),* $(,)?) => {
        $(impl ser::$trait for &mut Walk {
            type Ok = ();
            type Error = NonFinite;
            fn $method<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), NonFinite> {
                v.serialize(&mut **self)
            }
            fn end(self) -> Result<(), NonFinite> {
                Ok(())
            }
        })*
    };
}

elements!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field,
);

impl ser::SerializeMap for &mut Walk {
    type Ok = ();
    type Error = NonFinite;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, k: &T) -> Result<(), NonFinite> {
        // A float key is written as a string ("NaN") and reads back.
        k.serialize(&mut Walk { field: self.field }).or(Ok(()))
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), NonFinite> {
        v.serialize(&mut **self)
    }
    fn end(self) -> Result<(), NonFinite> {
        Ok(())
    }
}

macro_rules! fields {
    ($($trait:ident),*) => {
        $(impl ser::$trait for &mut Walk {
            type Ok = ();
            type Error = NonFinite;
            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                key: &'static str,
                v: &T,
            ) -> Result<(), NonFinite> {
                v.serialize(&mut Walk { field: key })
            }
            fn end(self) -> Result<(), NonFinite> {
                Ok(())
            }
        })*
    };
}

fields!(SerializeStruct, SerializeStructVariant);

#[cfg(test)]
mod tests {
    use super::*;
    use rollcall_proto::model::{HostMetrics, Report};

    #[test]
    fn a_float_that_is_not_finite_is_named_by_its_field() {
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let metrics = HostMetrics {
                load5: bad,
                ..Default::default()
            };
            let err = check(&metrics).expect_err("refused");
            assert_eq!(err.field, "load5");
            // Deep inside a report too (an Option inside a struct).
            let report = Report {
                metrics: Some(metrics),
                ..Default::default()
            };
            assert_eq!(check(&report).expect_err("refused").field, "load5");
        }
        let f32_nan = HostMetrics {
            cpu_usage_percent: f32::NAN,
            ..Default::default()
        };
        assert_eq!(
            check(&f32_nan).expect_err("refused").field,
            "cpu_usage_percent"
        );
        assert_eq!(
            check(&vec![1.0_f64, f64::NAN]).expect_err("refused").field,
            "(value)"
        );
    }

    #[test]
    fn finite_values_pass_and_are_what_json_reads_back() {
        let metrics = HostMetrics {
            load1: 1.5,
            cpu_usage_percent: f32::MAX,
            load15: -0.0,
            ..Default::default()
        };
        check(&metrics).expect("finite");
        let json = serde_json::to_string(&metrics).expect("json");
        let back: HostMetrics = serde_json::from_str(&json).expect("reads back");
        assert_eq!(back, metrics);
        check(&Report::default()).expect("no floats at all");
    }
}
