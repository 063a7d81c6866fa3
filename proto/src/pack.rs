//! A compact binary form of the report sections that a server holds for
//! every node: the section's `rollcall.v1` protobuf encoding, compressed
//! with LZ4 (block format, size prepended). A kolla node's containers carry
//! the same dozen labels each, so the section shrinks several times over;
//! its decoded form, with one heap allocation per string and label, is
//! several times larger again. The server keeps sections packed and
//! unpacks one only when someone reads it.
//!
//! Each kind of section is compressed against a dictionary: the first
//! section of its kind this process packs. Nodes of one cloud run the same
//! images with the same labels and wait for the same packages, so what one
//! node's section shares with another's costs almost nothing. The
//! dictionary lives as long as the process and packed bytes never leave it
//! (the store writes JSON).
//!
//! Maps are generated as sorted maps, so equal sections pack to equal
//! bytes: comparing two packed sections tells whether anything changed.

use std::sync::OnceLock;

use prost::Message;

use crate::convert::ConvertError;
use crate::model;
use crate::v1;

/// One section in its packed form.
pub struct Packed<T> {
    bytes: Box<[u8]>,
    kind: std::marker::PhantomData<fn() -> T>,
}

// Not derived: the derives would ask the same of `T`, which a packed
// section does not need.
impl<T> Clone for Packed<T> {
    fn clone(&self) -> Self {
        Self {
            bytes: self.bytes.clone(),
            kind: std::marker::PhantomData,
        }
    }
}

impl<T> PartialEq for Packed<T> {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl<T> Eq for Packed<T> {}

impl<T> std::fmt::Debug for Packed<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Packed({} bytes)", self.bytes.len())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("a packed section is cut short")]
    Truncated,
    #[error("cannot decompress a packed section: {0}")]
    Decompress(#[from] lz4_flex::block::DecompressError),
    #[error("cannot decode a packed section: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("a packed section does not convert back: {0}")]
    Convert(#[from] ConvertError),
}

/// A report section that has a packed form.
pub trait Pack: Sized {
    fn pack(&self) -> Packed<Self>;
    /// [`Pack::pack`] without a copy, for a section that is not needed after.
    fn pack_owned(self) -> Packed<Self>;
    fn unpack(packed: &Packed<Self>) -> Result<Self, UnpackError>;
}

impl<T> Packed<T> {
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// `side` is kept as it is, ahead of the compressed `encoded`.
    fn new(side: &[u8], encoded: &[u8], dictionary: &[u8]) -> Self {
        let compressed = lz4_flex::block::compress_prepend_size_with_dict(encoded, dictionary);
        let mut bytes = Vec::with_capacity(4 + side.len() + compressed.len());
        bytes.extend_from_slice(&u32::try_from(side.len()).unwrap_or(u32::MAX).to_le_bytes());
        bytes.extend_from_slice(side);
        bytes.extend_from_slice(&compressed);
        Self {
            bytes: bytes.into_boxed_slice(),
            kind: std::marker::PhantomData,
        }
    }

    /// The side part and the decompressed encoding.
    fn encoded(&self, dictionary: &[u8]) -> Result<(&[u8], Vec<u8>), UnpackError> {
        let (len, rest) = self
            .bytes
            .split_first_chunk::<4>()
            .ok_or(UnpackError::Truncated)?;
        let len = u32::from_le_bytes(*len) as usize;
        if rest.len() < len {
            return Err(UnpackError::Truncated);
        }
        let (side, compressed) = rest.split_at(len);
        let encoded = lz4_flex::block::decompress_size_prepended_with_dict(compressed, dictionary)?;
        Ok((side, encoded))
    }
}

/// A wire section that packs part of itself better than LZ4 can: taken out
/// before encoding (`take_side`), put back after decoding (`put_side`).
trait SidePart: Message + Default {
    fn take_side(&mut self) -> Vec<u8> {
        Vec::new()
    }
    fn put_side(&mut self, _side: &[u8]) -> Result<(), UnpackError> {
        Ok(())
    }
}

impl SidePart for v1::DisksSection {}
impl SidePart for v1::UpdatesSection {}
impl SidePart for v1::NetworkSection {}
impl SidePart for v1::RebootSection {}

/// Container ids are 64 hex digits, unique to the node: LZ4 cannot shrink
/// them, but as the 32 bytes they spell they take half the room (1.5 KB of
/// a kolla node's 46 containers). Only when every id is such an id.
impl SidePart for v1::ContainersSection {
    fn take_side(&mut self) -> Vec<u8> {
        let hex_id =
            |id: &str| id.len() == 64 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if self.containers.is_empty() || !self.containers.iter().all(|c| hex_id(&c.id)) {
            return Vec::new();
        }
        let mut side = Vec::with_capacity(32 * self.containers.len());
        for c in &mut self.containers {
            for pair in c.id.as_bytes().chunks(2) {
                let digit = |b: u8| if b <= b'9' { b - b'0' } else { b - b'a' + 10 };
                side.push(digit(pair[0]) << 4 | digit(pair[1]));
            }
            c.id.clear();
        }
        side
    }

    fn put_side(&mut self, side: &[u8]) -> Result<(), UnpackError> {
        keep_containers(self, side, |_| true)
    }
}

/// Keeps the containers whose name `keep` accepts and spells out their ids
/// from `side` again; the others are dropped before that work.
fn keep_containers(
    wire: &mut v1::ContainersSection,
    side: &[u8],
    keep: impl Fn(&str) -> bool,
) -> Result<(), UnpackError> {
    if !side.is_empty() && side.len() != 32 * wire.containers.len() {
        return Err(UnpackError::Truncated);
    }
    let all = std::mem::take(&mut wire.containers);
    for (i, mut c) in all.into_iter().enumerate() {
        if keep(&c.name) {
            if let Some(raw) = side.get(32 * i..32 * i + 32) {
                c.id = hex(raw);
            }
            wire.containers.push(c);
        }
    }
    Ok(())
}

/// Lowercase hex, as Docker spells ids.
fn hex(raw: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(2 * raw.len());
    for b in raw {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 15)]));
    }
    out
}

impl<T: Pack> Packed<T> {
    pub fn unpack(&self) -> Result<T, UnpackError> {
        T::unpack(self)
    }
}

/// The largest dictionary kept per kind of section (LZ4 looks back 64 KiB).
const MAX_DICTIONARY: usize = 64 * 1024;

/// The dictionary of one kind of section: set from `first` the first time.
fn dictionary(slot: &'static OnceLock<Box<[u8]>>, first: &[u8]) -> &'static [u8] {
    slot.get_or_init(|| first[..first.len().min(MAX_DICTIONARY)].into())
}

macro_rules! pack_via {
    ($domain:ty, $wire:ty, $convert:ident) => {
        impl Pack for $domain {
            fn pack(&self) -> Packed<Self> {
                self.clone().pack_owned()
            }
            fn pack_owned(self) -> Packed<Self> {
                let mut wire = <$wire>::from(self);
                let side = wire.take_side();
                let encoded = wire.encode_to_vec();
                let dict = dictionary(Self::dictionary_slot(), &encoded);
                Packed::new(&side, &encoded, dict)
            }
            fn unpack(packed: &Packed<Self>) -> Result<Self, UnpackError> {
                let (mut wire, side) = open::<Self, $wire>(packed)?;
                wire.put_side(side)?;
                pack_via!(@$convert wire)
            }
        }
        impl DictionarySlot for $domain {
            fn dictionary_slot() -> &'static OnceLock<Box<[u8]>> {
                static SLOT: OnceLock<Box<[u8]>> = OnceLock::new();
                &SLOT
            }
        }
    };
    (@infallible $wire:ident) => { Ok($wire.into()) };
    (@fallible $wire:ident) => { Ok($wire.try_into()?) };
}

impl Packed<model::ContainersSection> {
    /// Unpacks only the containers whose name `keep` accepts; the others
    /// are dropped as soon as they are decoded, before any conversion (a
    /// fleet-wide search by name reads every node's section).
    pub fn unpack_where(
        &self,
        keep: impl Fn(&str) -> bool,
    ) -> Result<model::ContainersSection, UnpackError> {
        let (mut wire, side) = open::<_, v1::ContainersSection>(self)?;
        keep_containers(&mut wire, side, keep)?;
        Ok(wire.try_into()?)
    }
}

/// A packed section's wire form, decoded, and the side part still to be
/// put back.
fn open<T: DictionarySlot, W: Message + Default>(
    packed: &Packed<T>,
) -> Result<(W, &[u8]), UnpackError> {
    // Nothing is packed before the dictionary is set.
    let dict = T::dictionary_slot().get().map_or(&[][..], |d| &d[..]);
    let (side, encoded) = packed.encoded(dict)?;
    Ok((W::decode(&*encoded)?, side))
}

/// Where a kind of section keeps its dictionary.
trait DictionarySlot {
    fn dictionary_slot() -> &'static OnceLock<Box<[u8]>>;
}

pack_via!(model::ContainersSection, v1::ContainersSection, fallible);
pack_via!(model::DisksSection, v1::DisksSection, infallible);
pack_via!(model::UpdatesSection, v1::UpdatesSection, infallible);
pack_via!(model::NetworkSection, v1::NetworkSection, infallible);
pack_via!(model::RebootSection, v1::RebootSection, infallible);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Container, ContainerHealth, ContainerState, ContainersSection};
    use crate::timestamp::Timestamp;

    fn section() -> ContainersSection {
        ContainersSection {
            available: true,
            engine: "docker 28.2.2".into(),
            containers: (0..3)
                .map(|i| Container {
                    id: format!("{i:064x}"),
                    name: format!("nova_{i}"),
                    image: "kolla/nova-compute:2024.1".into(),
                    state: ContainerState::Running,
                    health: ContainerHealth::Healthy,
                    started_at: Some(Timestamp::from_unix_millis(1_700_000_000_000 + i)),
                    labels: (0..12)
                        .map(|l| (format!("label-{l}"), format!("value-{l}")))
                        .collect(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_section_unpacks_to_what_was_packed() {
        let s = section();
        assert_eq!(s.pack().unpack().expect("unpacks"), s);
    }

    #[test]
    fn hex_ids_go_in_binary_and_other_ids_as_they_are() {
        let s = section();
        let packed = s.pack();
        assert_eq!(packed.unpack().expect("unpacks"), s);
        let side = u32::from_le_bytes(packed.bytes[..4].try_into().expect("4 bytes"));
        assert_eq!(side as usize, 32 * s.containers.len());
        let mut odd = section();
        odd.containers[0].id = "podman-7".into();
        odd.containers[1].id = "F".repeat(64);
        let packed = odd.pack();
        assert_eq!(packed.unpack().expect("unpacks"), odd);
    }

    #[test]
    fn repeated_labels_pack_small() {
        let s = section();
        let encoded = v1::ContainersSection::from(s.clone()).encoded_len();
        assert!(
            s.pack().len() * 2 < encoded,
            "{} of {encoded}",
            s.pack().len()
        );
    }

    #[test]
    fn unpacking_by_name_keeps_only_the_matches() {
        let s = section();
        let some = s.pack().unpack_where(|n| n == "nova_1").expect("unpacks");
        assert_eq!(some.containers, vec![s.containers[1].clone()]);
        let mut odd = section();
        odd.containers[1].id = "podman-7".into();
        let some = odd.pack().unpack_where(|n| n != "nova_0").expect("unpacks");
        assert_eq!(some.containers, odd.containers[1..]);
        assert_eq!(some.engine, s.engine);
    }

    #[test]
    fn garbage_does_not_unpack() {
        let garbage = Packed::<ContainersSection> {
            bytes: vec![0, 0, 0, 0, 200, 0, 0, 0, 1, 2, 3].into_boxed_slice(),
            kind: std::marker::PhantomData,
        };
        assert!(garbage.unpack().is_err());
    }

    #[test]
    fn equal_sections_pack_to_equal_bytes_and_a_change_shows() {
        let (a, b) = (section(), section());
        assert_eq!(a.pack(), b.pack());
        let mut c = section();
        c.containers[1].restart_count += 1;
        assert_ne!(a.pack(), c.pack());
    }
}
