//! Pagination for list RPCs, in the style of Google's AIP-158: a request
//! names a `page_size` and the `page_token` of the page before; an answer
//! carries `next_page_token`, empty on the last page.
//!
//! Pages are keyset pages: a token is the (hex-encoded) sort key of the
//! last item of the page before, so a page never repeats or skips an item
//! that existed across both calls, however the fleet changed in between,
//! and the server keeps no cursor state. Every page is also cut at
//! [`MAX_PAGE_BYTES`] of encoded items, so no answer comes near a client's
//! 4 MiB message limit whatever the items hold.

use prost::Message;
use tonic::Status;

/// What one answer may carry, encoded, before the page ends early.
pub const MAX_PAGE_BYTES: usize = 1 << 20;

/// How many items a list RPC returns by default and at most.
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    pub default: usize,
    pub max: usize,
}

pub const NODES: Sizes = Sizes {
    default: 1_000,
    max: 5_000,
};
pub const CONTAINERS: Sizes = Sizes {
    default: 500,
    max: 1_000,
};
pub const CAMPAIGNS: Sizes = Sizes {
    default: 100,
    max: 1_000,
};
pub const AUDIT: Sizes = Sizes {
    default: 100,
    max: 1_000,
};

/// A checked page request: how many items, starting after which key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageRequest {
    pub size: usize,
    pub after: Option<String>,
}

impl PageRequest {
    pub fn parse(page_size: i32, page_token: &str, sizes: Sizes) -> Result<Self, Status> {
        let size = match usize::try_from(page_size) {
            Err(_) => return Err(Status::invalid_argument("page_size must not be negative")),
            Ok(0) => sizes.default,
            Ok(n) => n.min(sizes.max),
        };
        let after = if page_token.is_empty() {
            None
        } else {
            Some(decode_token(page_token).ok_or_else(foreign_token)?)
        };
        Ok(Self { size, after })
    }
}

/// Cuts `items` (already at most `size` long, in key order) to
/// [`MAX_PAGE_BYTES`] and says where the next page starts: after the last
/// item kept, if the fleet had more (`more`) or the page was cut.
pub fn finish<T: Message>(
    mut items: Vec<T>,
    more: bool,
    key: impl Fn(&T) -> String,
) -> (Vec<T>, String) {
    let mut bytes = 0;
    // Always keep the first item, so that every page makes progress.
    let keep = items
        .iter()
        .position(|item| {
            bytes += item.encoded_len() + 8;
            bytes > MAX_PAGE_BYTES
        })
        .map_or(items.len(), |cut| cut.max(1));
    let cut = keep < items.len();
    items.truncate(keep);
    let token = match items.last() {
        Some(last) if more || cut => encode_token(&key(last)),
        _ => String::new(),
    };
    (items, token)
}

fn encode_token(key: &str) -> String {
    key.bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_token(token: &str) -> Option<String> {
    if !token.len().is_multiple_of(2) || token.len() > 2_048 {
        return None;
    }
    let bytes = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(token.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

/// The key of a container in a fleet-wide listing: node, then name. The
/// node's length comes first, so no name can forge another node's key.
pub fn container_key(node: &str, name: &str) -> String {
    format!("{}:{node}{name}", node.len())
}

fn foreign_token() -> Status {
    Status::invalid_argument("page_token is not one this server issued; start again without it")
}

/// The key of a line of a listing in `seq` order (the operator audit).
pub fn seq_key(seq: u64) -> String {
    seq.to_string()
}

/// Where a listing in `seq` order goes on: after the `seq` a page token
/// names (0: from the start).
pub fn seq_after(after: Option<String>) -> Result<u64, Status> {
    after.map_or(Ok(0), |key| key.parse().map_err(|_| foreign_token()))
}

/// Where a container listing goes on: the (node, name) a page token names.
pub fn container_after(after: Option<String>) -> Result<Option<(String, String)>, Status> {
    after
        .map(|key| split_container_key(&key).ok_or_else(foreign_token))
        .transpose()
}

/// Splits a [`container_key`] back into node and name.
fn split_container_key(key: &str) -> Option<(String, String)> {
    let (len, rest) = key.split_once(':')?;
    let len: usize = len.parse().ok()?;
    let node = rest.get(..len)?;
    let name = rest.get(len..)?;
    Some((node.to_owned(), name.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rollcall_proto::v1;

    #[test]
    fn sizes_default_cap_and_refuse_negatives() {
        let p = |n| PageRequest::parse(n, "", NODES);
        assert_eq!(p(0).expect("ok").size, 1_000);
        assert_eq!(p(7).expect("ok").size, 7);
        assert_eq!(p(1_000_000).expect("ok").size, 5_000);
        assert!(p(-1).is_err());
    }

    #[test]
    fn tokens_round_trip_and_garbage_is_refused() {
        let (items, token) = finish(
            vec![
                v1::Node {
                    name: "a".into(),
                    ..Default::default()
                },
                v1::Node {
                    name: "ctl-ä".into(),
                    ..Default::default()
                },
            ],
            true,
            |n| n.name.clone(),
        );
        assert_eq!(items.len(), 2);
        let next = PageRequest::parse(0, &token, NODES).expect("our own token");
        assert_eq!(next.after.as_deref(), Some("ctl-ä"));
        for bad in ["zz", "abc", "ff", &"00".repeat(2_000)] {
            assert!(PageRequest::parse(0, bad, NODES).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_last_page_has_no_token() {
        let node = |name: &str| v1::Node {
            name: name.into(),
            ..Default::default()
        };
        let (_, token) = finish(vec![node("a")], false, |n| n.name.clone());
        assert_eq!(token, "");
        let (_, token) = finish(Vec::<v1::Node>::new(), true, |n| n.name.clone());
        assert_eq!(token, "");
    }

    #[test]
    fn a_page_is_cut_at_the_byte_cap_and_goes_on_after_the_last_item_kept() {
        let big = |name: &str| v1::Node {
            name: name.into(),
            os_pretty_name: "x".repeat(400 * 1024),
            ..Default::default()
        };
        let (items, token) = finish(vec![big("a"), big("b"), big("c")], false, |n| {
            n.name.clone()
        });
        assert_eq!(items.len(), 2);
        let next = PageRequest::parse(0, &token, NODES).expect("token");
        assert_eq!(next.after.as_deref(), Some("b"));
        // One item above the cap still goes, alone: every page makes progress.
        let huge = v1::Node {
            name: "h".into(),
            os_pretty_name: "x".repeat(2 << 20),
            ..Default::default()
        };
        let (items, token) = finish(vec![huge, big("i")], false, |n| n.name.clone());
        assert_eq!(items.len(), 1);
        assert!(!token.is_empty());
    }

    #[test]
    fn seq_tokens_round_trip_and_other_keys_are_refused() {
        let (_, token) = finish(
            vec![v1::AuditRecord {
                seq: 42,
                ..Default::default()
            }],
            true,
            |r| seq_key(r.seq),
        );
        let next = PageRequest::parse(0, &token, AUDIT).expect("our token");
        assert_eq!(seq_after(next.after).expect("a seq"), 42);
        assert_eq!(seq_after(None).expect("the start"), 0);
        assert!(seq_after(Some("cmp1".into())).is_err());
    }

    #[test]
    fn container_keys_split_back_even_with_separators_in_names() {
        for (node, name) in [("cmp-1", "nova_compute"), ("a:b", "1:x"), ("n", "")] {
            let key = container_key(node, name);
            assert_eq!(
                split_container_key(&key),
                Some((node.to_owned(), name.to_owned()))
            );
        }
        assert_eq!(split_container_key("9:ab"), None);
        assert_eq!(split_container_key("x:ab"), None);
    }
}
