//! A store outage stops every campaign's clocks. While the store cannot
//! write, the scheduler holds every campaign (nothing could be recorded
//! before it is acted on); when it writes again, every step in flight and
//! every operator's undrain gets the time of the outage back, so no node
//! fails because the disk was full, and its action is asked again at once.

use std::collections::BTreeMap;
use std::time::Duration;

use rollcall_proto::timestamp::Timestamp;

use super::control::Change;
use super::record::{AuditEntry, CampaignWrite, NodeRun};

/// The change that ends campaign `id`'s hold after an outage of `lost`:
/// the runs that get the time back, and one audit line.
pub fn recovered(
    id: &str,
    runs: &BTreeMap<String, NodeRun>,
    lost: Duration,
    now: Timestamp,
) -> Change {
    let shifted: Vec<NodeRun> = runs
        .values()
        .filter(|r| r.step.is_active() || r.undrain.is_some())
        .map(|r| {
            let mut r = r.clone();
            if r.step.is_active() {
                r.since = r.since.saturating_add(lost);
                // Results that came while the store failed are held by
                // their agents (not acknowledged): ask at once.
                r.asked_at = None;
            }
            if let Some(u) = &mut r.undrain {
                u.asked_at = u.asked_at.saturating_add(lost);
                u.sent_at = None;
            }
            r
        })
        .collect();
    let detail = format!(
        "the store failed for {}s; campaign held, and the {} step(s) in flight get that time back",
        lost.as_secs(),
        shifted.len()
    );
    Change {
        write: CampaignWrite {
            campaign: None,
            nodes: shifted.into_iter().map(|r| (id.to_owned(), r)).collect(),
            actions: Vec::new(),
            audit: vec![AuditEntry::new(
                id,
                now,
                "scheduler",
                "",
                "store-recovered",
                detail.clone(),
            )],
        },
        message: detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::campaign::fixtures::t;
    use crate::campaign::lifecycle::Step;
    use crate::campaign::record::ManualUndrain;
    use rollcall_proto::model::Role;

    #[test]
    fn steps_in_flight_and_undrains_get_the_outage_back_and_ask_again() {
        let mut runs = BTreeMap::new();
        for (name, step) in [
            ("cmp1", Step::Patch),
            ("cmp2", Step::Done),
            ("cmp3", Step::Failed),
        ] {
            let mut r = NodeRun::new(name.into(), Role::Compute, t(0));
            r.enter(step, t(10));
            r.asked_at = Some(t(11));
            runs.insert(name.to_owned(), r);
        }
        if let Some(r) = runs.get_mut("cmp3") {
            r.undrain = Some(ManualUndrain {
                action_id: "c1.cmp3.1.undrain-1".into(),
                action_node: "ctl1".into(),
                by: "operator:alice".into(),
                asked_at: t(12),
                sent_at: Some(t(12)),
            });
        }
        let change = recovered("c1", &runs, Duration::from_secs(300), t(400));
        assert_eq!(change.message, change.write.audit[0].detail);
        let w = change.write;
        let by_name: BTreeMap<&str, &NodeRun> =
            w.nodes.iter().map(|(_, r)| (r.node.as_str(), r)).collect();
        assert_eq!(
            by_name.keys().copied().collect::<Vec<_>>(),
            ["cmp1", "cmp3"]
        );
        assert_eq!(
            (by_name["cmp1"].since, by_name["cmp1"].asked_at),
            (t(310), None)
        );
        let u = by_name["cmp3"].undrain.as_ref().expect("undrain");
        assert_eq!((u.asked_at, u.sent_at), (t(312), None));
        assert_eq!(by_name["cmp3"].since, t(10), "a failed node has no clock");
        assert_eq!(
            w.audit[0].detail,
            "the store failed for 300s; campaign held, and the 2 step(s) in flight get that time back"
        );
        assert_eq!(w.audit[0].event, "store-recovered");
    }
}
