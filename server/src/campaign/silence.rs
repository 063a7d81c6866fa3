//! Silences for nodes under maintenance, pure: which nodes want one, when
//! a lease is renewed, what Alertmanager is asked, and what it answered.
//!
//! A node wants a silence from the start of its drain to the end of its
//! undrain (`wanted`). The silence is a lease: it ends by itself
//! `lease_secs` after it was made or last renewed, and the poller renews it
//! once less than half is left, so a server that dies leaves only silences
//! that lapse by themselves. Its id is stored with the node's run
//! (`NodeRun::silence`), so a restarted server renews or expires it.
//!
//! Alertmanager updates a silence in place only while it is active with
//! the same matchers and start; a renewal therefore sends the lease's own
//! `startsAt`. Should Alertmanager still answer with a new id (it expired
//! the old one), the new id is the lease's from then on, and audited.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rollcall_proto::timestamp::Timestamp;
use serde::{Deserialize, Serialize};

use super::alerts::{AlertsSpec, Matcher, silence_matchers};
use super::lifecycle::Step;

/// Who made a silence, as Alertmanager shows it.
pub const CREATED_BY: &str = "rollcall";
/// The longest silence id kept; Alertmanager's are UUIDs (36 characters).
const MAX_ID_CHARS: usize = 128;

/// A silence made for a node, as stored with its run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Alertmanager's silence id.
    pub id: String,
    /// Its `startsAt`, sent again with every renewal.
    pub from: Timestamp,
    /// Its `endsAt`: it lapses then unless renewed.
    pub until: Timestamp,
}

/// Whether a node in `step` wants a silence: from its drain to the end of
/// its undrain (an undrain after a failure included).
pub fn wanted(step: Step) -> bool {
    matches!(
        step,
        Step::Drain
            | Step::Patch
            | Step::Reboot
            | Step::WaitReturn
            | Step::Postcheck
            | Step::GateAfter
            | Step::Undrain
    )
}

/// What the poller does about one node's silence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Act {
    Create {
        node: String,
    },
    Renew {
        node: String,
        lease: Lease,
    },
    Expire {
        node: String,
        lease: Lease,
    },
    /// The lease ended by itself (an expiry kept failing): nothing to ask.
    Lapsed {
        node: String,
        lease: Lease,
    },
}

/// What to do now, for the nodes that want a silence (`wanted`) and the
/// leases held: create the missing, renew those with less than half left,
/// expire those no node wants any more.
pub fn acts(
    wanted: &BTreeSet<String>,
    held: &BTreeMap<String, Lease>,
    lease: Duration,
    now: Timestamp,
) -> Vec<Act> {
    let mut out = Vec::new();
    for node in wanted {
        match held.get(node) {
            None => out.push(Act::Create { node: node.clone() }),
            Some(l) if l.until.since(now) < lease / 2 => out.push(Act::Renew {
                node: node.clone(),
                lease: l.clone(),
            }),
            Some(_) => {}
        }
    }
    for (node, l) in held.iter().filter(|(n, _)| !wanted.contains(*n)) {
        let (node, lease) = (node.clone(), l.clone());
        out.push(if now >= l.until {
            Act::Lapsed { node, lease }
        } else {
            Act::Expire { node, lease }
        });
    }
    out
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PostableSilence<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    matchers: Vec<WireMatcher>,
    starts_at: String,
    ends_at: String,
    created_by: &'a str,
    comment: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireMatcher {
    name: String,
    value: String,
    is_regex: bool,
    is_equal: bool,
}

/// A silence to post: new, or a renewal of `lease`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Post {
    /// The JSON body of `POST /api/v2/silences`.
    pub body: Vec<u8>,
    pub from: Timestamp,
    pub until: Timestamp,
    pub matchers: Vec<Matcher>,
}

/// The silence of `node` in `campaign`, from now (or the lease's start)
/// for `lease_secs`.
pub fn post(
    spec: &AlertsSpec,
    campaign: &str,
    node: &str,
    renewing: Option<&Lease>,
    now: Timestamp,
) -> Result<Post, String> {
    let matchers = silence_matchers(&spec.silence.matchers, node)?;
    let from = renewing.map_or(now, |l| l.from);
    let until = now.saturating_add(Duration::from_secs(spec.silence.lease_secs));
    let body = PostableSilence {
        id: renewing.map(|l| l.id.as_str()),
        matchers: matchers
            .iter()
            .map(|m| WireMatcher {
                name: m.name.clone(),
                value: m.value.clone(),
                is_regex: m.op.is_regex(),
                is_equal: m.op.is_equal(),
            })
            .collect(),
        starts_at: from.to_string(),
        ends_at: until.to_string(),
        created_by: CREATED_BY,
        comment: format!(
            "rollcall campaign {campaign}: {node} is under maintenance (drain to undrain); renewed while it is, expired after"
        ),
    };
    let body = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
    Ok(Post {
        body,
        from,
        until,
        matchers,
    })
}

/// The id in Alertmanager's answer to a post (`{"silenceID": "…"}`).
pub fn posted_id(body: &[u8]) -> Result<String, String> {
    #[derive(Deserialize)]
    struct Answer {
        #[serde(rename = "silenceID")]
        silence_id: String,
    }
    let a: Answer = serde_json::from_slice(body)
        .map_err(|e| format!("answered what the API does not document: {e}"))?;
    let id = a.silence_id;
    let ok = !id.is_empty()
        && id.chars().count() <= MAX_ID_CHARS
        && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if !ok {
        let shown: String = id.chars().take(40).collect();
        return Err(format!(
            "answered a silence id that is not one: {}",
            rollcall_proto::text::for_terminal(&shown)
        ));
    }
    Ok(id)
}

/// Whether Alertmanager's answer says the silence asked about does not
/// exist: 404, or (Alertmanager 0.25 on `DELETE`) 500 with
/// `silence not found`. Expiring such a silence is done; renewing it makes
/// a new one.
pub fn not_found(status: u16, body: &[u8]) -> bool {
    status == 404
        || (status == 500
            && String::from_utf8_lossy(body)
                .to_ascii_lowercase()
                .contains("silence not found"))
}

/// `POST` here to create or renew.
pub fn post_url(base: &str) -> String {
    crate::http::join(base, "/api/v2/silences")
}

/// `DELETE` here to expire (the id is checked by `posted_id`).
pub fn expire_url(base: &str, id: &str) -> String {
    crate::http::join(base, &format!("/api/v2/silence/{id}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        Timestamp::parse_rfc3339(s).expect("time")
    }

    fn lease(id: &str, until: &str) -> Lease {
        Lease {
            id: id.into(),
            from: at("2026-11-21T12:00:00Z"),
            until: at(until),
        }
    }

    #[test]
    fn a_node_is_silenced_from_its_drain_to_the_end_of_its_undrain() {
        let silenced: Vec<Step> = Step::ALL.into_iter().filter(|s| wanted(*s)).collect();
        assert_eq!(
            silenced,
            [
                Step::Drain,
                Step::Patch,
                Step::Reboot,
                Step::WaitReturn,
                Step::Postcheck,
                Step::GateAfter,
                Step::Undrain
            ]
        );
    }

    #[test]
    fn leases_are_made_renewed_at_half_and_expired_when_unwanted() {
        let half = Duration::from_secs(1_800);
        let now = at("2026-11-21T12:20:00Z");
        let wanted: BTreeSet<String> = ["new", "young", "old"].map(String::from).into();
        let held: BTreeMap<String, Lease> = [
            ("young", lease("y", "2026-11-21T12:35:01Z")),
            ("old", lease("o", "2026-11-21T12:34:59Z")),
            ("done", lease("d", "2026-11-21T12:30:00Z")),
            ("gone", lease("g", "2026-11-21T12:20:00Z")),
        ]
        .into_iter()
        .map(|(n, l)| (n.to_owned(), l))
        .collect();
        let acts = acts(&wanted, &held, half, now);
        assert_eq!(
            acts,
            [
                Act::Create { node: "new".into() },
                Act::Renew {
                    node: "old".into(),
                    lease: held["old"].clone()
                },
                Act::Expire {
                    node: "done".into(),
                    lease: held["done"].clone()
                },
                Act::Lapsed {
                    node: "gone".into(),
                    lease: held["gone"].clone()
                },
            ],
            "young has more than half of its lease left"
        );
    }

    #[test]
    fn a_post_names_the_node_and_a_renewal_keeps_id_and_start() {
        let spec: AlertsSpec = rollcall_proto::diag::parse_toml(
            "alertmanager_url = \"http://am:9093\"\nalertname = \"X\"\n[silence]\nlease_secs = 600\n",
        )
        .expect("spec");
        let now = at("2026-11-21T12:10:00Z");
        let new = post(&spec, "20261121-120000-1", "cmp-01", None, now).expect("post");
        let json: serde_json::Value = serde_json::from_slice(&new.body).expect("json");
        assert_eq!(
            json,
            serde_json::json!({
                "matchers": [{"name": "instance", "value": "cmp\\-01([.:].*)?", "isRegex": true, "isEqual": true}],
                "startsAt": "2026-11-21T12:10:00.000Z",
                "endsAt": "2026-11-21T12:20:00.000Z",
                "createdBy": "rollcall",
                "comment": "rollcall campaign 20261121-120000-1: cmp-01 is under maintenance (drain to undrain); renewed while it is, expired after",
            })
        );
        let old = lease("abc-1", "2026-11-21T12:14:00Z");
        let renewal = post(&spec, "c", "cmp-01", Some(&old), now).expect("post");
        let json: serde_json::Value = serde_json::from_slice(&renewal.body).expect("json");
        assert_eq!(json["id"], "abc-1");
        assert_eq!(json["startsAt"], "2026-11-21T12:00:00.000Z");
        assert_eq!(renewal.until, at("2026-11-21T12:20:00Z"));
    }

    #[test]
    fn only_a_plain_silence_id_is_taken() {
        assert_eq!(
            posted_id(br#"{"silenceID":"7d5f1d4e-0a6b-4c3e-9f5e-2b1f0e8c9a11"}"#),
            Ok("7d5f1d4e-0a6b-4c3e-9f5e-2b1f0e8c9a11".into())
        );
        for body in [
            &br#"{"silenceID":"../../x"}"#[..],
            br#"{"silenceID":""}"#,
            br#"{"id":"x"}"#,
            b"oops",
        ] {
            assert!(
                posted_id(body).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert_eq!(
            expire_url("http://am:9093/", "abc"),
            "http://am:9093/api/v2/silence/abc"
        );
        assert_eq!(post_url("http://am/x"), "http://am/x/api/v2/silences");
    }

    #[test]
    fn an_unknown_silence_is_not_found_in_either_dialect() {
        assert!(not_found(404, b""));
        // Alertmanager 0.25's DELETE of an unknown id.
        assert!(not_found(500, b"\"silence not found\"\n"));
        assert!(!not_found(500, b"\"context deadline exceeded\""));
        assert!(!not_found(200, b"silence not found"));
    }
}
