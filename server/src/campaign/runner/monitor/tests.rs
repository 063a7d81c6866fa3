//! What a pass audits of the holds it finds.

use super::*;
use crate::campaign::alerts::{Alert, AlertState};

fn alert(name: &str) -> Hold {
    Hold::Alert {
        alert: Alert {
            source: SourceKind::Prometheus,
            labels: [("alertname".to_owned(), name.to_owned())].into(),
            state: AlertState::Firing,
            since: None,
            silenced_by: Vec::new(),
            inhibited: false,
        },
        others: 0,
    }
}

fn blind() -> Hold {
    Hold::Blind {
        source: Source::new(SourceKind::Prometheus, "http://prom:9090"),
        why: "unreachable: refused".into(),
    }
}

/// The events `take_hold` audits for one hold per look (`looks` counts
/// them on).
fn audited(
    alerting: &mut Alerting,
    looks: &mut u64,
    holds: Vec<Option<Hold>>,
) -> Vec<&'static str> {
    let mut events = Vec::new();
    for hold in holds {
        *looks += 1;
        if let Some((event, _)) = alerting.take_hold(hold, *looks) {
            events.push(event);
        }
    }
    events
}

#[test]
fn a_flapping_api_or_alert_is_audited_once_and_its_end_after_three_good_looks() {
    let mut a = Alerting::default();
    let mut looks = 0;
    let flapping = vec![
        Some(blind()),
        None,
        Some(blind()),
        None,
        Some(alert("X")),
        Some(blind()),
        Some(alert("X")),
        None,
        Some(blind()),
        None,
        None,
    ];
    assert_eq!(
        audited(&mut a, &mut looks, flapping),
        ["alert-hold", "alert-hold"],
        "each hold once; no end while the holds keep coming back"
    );
    assert!(a.hold_text().is_empty(), "nothing holds now");
    assert_eq!(
        audited(&mut a, &mut looks, vec![None]),
        ["alert-clear"],
        "the third good look"
    );
    assert_eq!(
        audited(&mut a, &mut looks, vec![None, None]),
        Vec::<&str>::new()
    );
    assert_eq!(
        audited(&mut a, &mut looks, vec![Some(alert("X"))]),
        ["alert-hold"],
        "a new episode"
    );
}

#[test]
fn the_end_names_the_hold_and_unaudited_holds_neither_start_nor_end_one() {
    let mut a = Alerting::default();
    let first_look = Hold::FirstLook {
        source: Source::new(SourceKind::Prometheus, "http://prom:9090"),
    };
    assert_eq!(a.take_hold(Some(first_look), 1), None);
    let (event, detail) = a.take_hold(Some(alert("Boom")), 2).expect("audited");
    assert_eq!(
        (event, detail.as_str()),
        ("alert-hold", "new starts held by alert Boom{} firing")
    );
    assert_eq!(a.take_hold(None, 3), None);
    let recheck = Hold::Recheck {
        source: Source::new(SourceKind::Prometheus, "http://prom:9090"),
    };
    assert_eq!(a.take_hold(Some(recheck), 4), None);
    let (event, detail) = a
        .take_hold(None, 5)
        .expect("three looks since the first good one");
    assert_eq!(
        (event, detail.as_str()),
        (
            "alert-clear",
            "new starts go on: no longer held by alert Boom{} firing"
        )
    );
}

#[test]
fn a_phase_change_forgets_the_hold() {
    let mut a = Alerting::default();
    assert!(a.take_hold(Some(alert("Boom")), 1).is_some());
    assert!(!a.hold_text().is_empty());
    a.phase_changed();
    assert_eq!(a.hold_text(), "", "a paused campaign shows no old hold");
    assert!(
        a.take_hold(Some(alert("Boom")), 2).is_some(),
        "after a resume the hold is audited again"
    );
}
