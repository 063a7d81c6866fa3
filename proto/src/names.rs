//! Enums as the words people and files use for them: `as_str` gives a
//! variant's name, `FromStr` reads it back, and a name that is no variant
//! is an [`UnknownName`] that says which field it was in and what would do.
//!
//! The names are the enums' serde names too (each enum's tests check it),
//! so the store, `--json` and a spec file all read the same words.

use std::fmt;

/// A name that is not one of a field's values.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown {field} {value:?}: use {}", OneOf(.expected))]
pub struct UnknownName {
    /// What the name was meant to be, e.g. `role` or `step`.
    pub field: &'static str,
    pub value: String,
    /// Every name the field takes.
    pub expected: Vec<&'static str>,
}

/// `a, b or c`.
struct OneOf<'a>(&'a [&'static str]);

impl fmt::Display for OneOf<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, name) in self.0.iter().enumerate() {
            match i {
                0 => {}
                i if i + 1 == self.0.len() => f.write_str(" or ")?,
                _ => f.write_str(", ")?,
            }
            f.write_str(name)?;
        }
        Ok(())
    }
}

/// The variant of `all` that `name(variant)` calls `value`: the `FromStr`
/// of an enum that has an `as_str` and a list of its variants.
pub fn parse<T: Copy>(
    field: &'static str,
    value: &str,
    all: &[T],
    name: fn(T) -> &'static str,
) -> Result<T, UnknownName> {
    all.iter()
        .copied()
        .find(|v| name(*v) == value)
        .ok_or_else(|| UnknownName {
            field,
            value: value.to_owned(),
            expected: all.iter().map(|v| name(*v)).collect(),
        })
}

/// Gives a fieldless enum its names from one table: `ALL` (every variant,
/// in the table's order), `as_str`, `Display` and `FromStr` (with
/// [`UnknownName`] naming `$field`).
#[macro_export]
macro_rules! names {
    ($ty:ident, $field:literal { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $ty {
            /// Every variant.
            pub const ALL: [$ty; [$($text),+].len()] = [$($ty::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $text),+
                }
            }
        }

        // `pad`, not `write_str`: a table column's width applies.
        impl ::std::fmt::Display for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.pad(self.as_str())
            }
        }

        impl ::std::str::FromStr for $ty {
            type Err = $crate::names::UnknownName;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $crate::names::parse($field, s, &$ty::ALL, $ty::as_str)
            }
        }
    };
}

/// Checks, for a test, that every variant's name reads back as itself and
/// is its serde name: the words already in stores and scripts stay valid.
/// Panics with the variant that breaks it.
#[cfg(test)]
pub(crate) fn assert_names_match_serde<T>(all: &[T])
where
    T: Copy
        + fmt::Debug
        + fmt::Display
        + PartialEq
        + std::str::FromStr<Err = UnknownName>
        + serde::Serialize
        + serde::de::DeserializeOwned,
{
    for &v in all {
        let name = v.to_string();
        assert_eq!(name.parse::<T>(), Ok(v), "{v:?} reads back from {name:?}");
        assert_eq!(
            serde_json::to_value(v).expect("serializes"),
            serde_json::Value::String(name.clone()),
            "{v:?}: its name is its serde name"
        );
        let back: T =
            serde_json::from_value(serde_json::Value::String(name.clone())).expect("deserializes");
        assert_eq!(back, v, "{name:?} deserializes to {v:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_fills_its_column() {
        assert_eq!(
            format!("[{:<10}]", crate::model::Role::Compute),
            "[compute   ]"
        );
    }

    #[test]
    fn an_unknown_name_says_the_field_the_value_and_what_would_do() {
        let e = UnknownName {
            field: "role",
            value: "kitchen".into(),
            expected: vec!["controller", "compute", "storage"],
        };
        assert_eq!(
            e.to_string(),
            r#"unknown role "kitchen": use controller, compute or storage"#
        );
        let one = UnknownName {
            field: "kind",
            value: "x\n".into(),
            expected: vec!["only"],
        };
        assert_eq!(one.to_string(), r#"unknown kind "x\n": use only"#);
    }
}
