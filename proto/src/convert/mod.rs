//! Conversions between the generated wire types and the domain types.
//!
//! Wire → domain is fallible: a message from the network may lack a section
//! or carry an unknown enum value, and that is an error for the caller to
//! report, never a panic.

use crate::model;
use crate::timestamp::Timestamp;
use crate::v1;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConvertError {
    #[error("missing field {0}")]
    Missing(&'static str),
    #[error("field {field} has invalid value {value}")]
    Invalid { field: &'static str, value: i32 },
}

pub fn timestamp_to_wire(t: Timestamp) -> prost_types::Timestamp {
    let ms = t.unix_millis();
    prost_types::Timestamp {
        seconds: ms.div_euclid(1_000),
        nanos: i32::try_from(ms.rem_euclid(1_000) * 1_000_000).unwrap_or(0),
    }
}

/// Years 0000 to 9999, the range RFC 3339 (and so the store) can hold.
const MIN_MILLIS: i64 = -62_167_219_200_000;
const MAX_MILLIS: i64 = 253_402_300_799_999;

/// A wire time, clamped to years 0000..=9999: a peer's absurd clock must
/// not write a time the store cannot read back.
pub fn timestamp_from_wire(t: &prost_types::Timestamp) -> Timestamp {
    Timestamp::from_unix_millis(
        t.seconds
            .saturating_mul(1_000)
            .saturating_add(i64::from(t.nanos / 1_000_000))
            .clamp(MIN_MILLIS, MAX_MILLIS),
    )
}

fn opt_ts(t: &Option<prost_types::Timestamp>) -> Option<Timestamp> {
    t.as_ref().map(timestamp_from_wire)
}

impl From<model::Role> for v1::Role {
    fn from(r: model::Role) -> Self {
        match r {
            model::Role::Controller => v1::Role::Controller,
            model::Role::Compute => v1::Role::Compute,
            model::Role::Storage => v1::Role::Storage,
        }
    }
}

/// `ROLE_UNSPECIFIED` (or an unknown value) is `None`.
pub fn role_from_wire(raw: i32) -> Option<model::Role> {
    match v1::Role::try_from(raw).ok()? {
        v1::Role::Unspecified => None,
        v1::Role::Controller => Some(model::Role::Controller),
        v1::Role::Compute => Some(model::Role::Compute),
        v1::Role::Storage => Some(model::Role::Storage),
    }
}

/// A role where one is required: `ROLE_UNSPECIFIED` is an error too.
pub fn required_role(field: &'static str, raw: i32) -> Result<model::Role, ConvertError> {
    role_from_wire(raw).ok_or(ConvertError::Invalid { field, value: raw })
}

/// Field-for-field conversions between structs whose fields have the same
/// names and types on both sides.
macro_rules! same_fields {
    ($model:ty, $wire:ty { $($field:ident),* $(,)? }) => {
        impl From<$model> for $wire {
            fn from(m: $model) -> Self {
                Self { $($field: m.$field),* }
            }
        }
        impl From<$wire> for $model {
            fn from(w: $wire) -> Self {
                Self { $($field: w.$field),* }
            }
        }
    };
}

mod action;
mod node;
mod report;

pub use action::{
    action_kind_from_wire, action_kind_to_wire, action_result_from_wire, action_state_from_wire,
    action_state_to_wire,
};
pub use report::{
    container_health_from_wire, container_health_to_wire, container_state_from_wire,
    container_state_to_wire,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absurd_wire_times_are_clamped_to_what_rfc3339_holds() {
        for seconds in [i64::MAX, 1_000_000_000_000, i64::MIN, -100_000_000_000] {
            let t = timestamp_from_wire(&prost_types::Timestamp { seconds, nanos: 0 });
            assert_eq!(
                Timestamp::parse_rfc3339(&t.to_string()),
                Some(t),
                "{seconds}"
            );
        }
    }

    #[test]
    fn negative_timestamps_survive() {
        let t = Timestamp::from_unix_millis(-1_500);
        assert_eq!(timestamp_from_wire(&timestamp_to_wire(t)), t);
    }
}
