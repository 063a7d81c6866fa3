use super::*;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn at(s: &str) -> Timestamp {
    Timestamp::parse_rfc3339(s).expect("time")
}

fn alert(pairs: &[(&str, &str)], state: AlertState, since: &str) -> Alert {
    Alert {
        source: SourceKind::Prometheus,
        labels: labels(pairs),
        state,
        since: Some(at(since)),
        silenced_by: Vec::new(),
        inhibited: false,
    }
}

/// What holds `alerts` while `in_flight` are: `blocking` (the poller's
/// half), then `holding` (the pass's).
fn held(spec: &AlertsSpec, alerts: &[Alert], in_flight: &[&str]) -> Option<Hold> {
    let refs: Vec<&Alert> = alerts.iter().collect();
    holding(spec, &blocking(spec, &refs, &HashSet::new()), in_flight)
}

fn spec(text: &str) -> AlertsSpec {
    let spec: AlertsSpec = rollcall_proto::diag::parse_toml(text).expect("parses");
    spec.validate().expect("valid");
    spec
}

const PROM: &str = "prometheus_url = \"http://prom:9090/\"\n";

#[test]
fn matchers_parse_with_and_without_braces_and_print_back() {
    let set: MatcherSet = r#"{severity="critical", service=~"galera|rabbitmq",}"#
        .parse()
        .expect("parses");
    assert_eq!(
        set.to_string(),
        r#"{severity="critical", service=~"galera|rabbitmq"}"#
    );
    let bare: MatcherSet = r#" team != "dev" , job!~"test.*" "#.parse().expect("parses");
    assert_eq!(bare.0.len(), 2);
    assert_eq!((bare.0[0].op, bare.0[1].op), (Op::NotEqual, Op::NotRegex));
    let escaped: MatcherSet = r#"{msg="say \"hi\" \\ there"}"#.parse().expect("parses");
    assert_eq!(escaped.0[0].value, r#"say "hi" \ there"#);
    assert_eq!(escaped.to_string(), r#"{msg="say \"hi\" \\ there"}"#);
}

#[test]
fn a_bad_matcher_is_one_line_that_says_where() {
    for (text, needle) in [
        (
            r#"{severity="critical""#,
            "expected ',' or '}', found the end",
        ),
        (
            r#"{severity:"critical"}"#,
            "=, !=, =~ or !~ after severity at character 10",
        ),
        (
            r#"{severity=critical}"#,
            "a double-quoted value for severity",
        ),
        (r#"{severity="critical}"#, "no closing '\"'"),
        (r#"{1abc="x"}"#, "a label name"),
        (r#"{a=~"(unclosed"}"#, "is not a regex"),
        (r#"{a="x"} b="y""#, "expected the end"),
        (r#"a="x" b="y""#, "expected ','"),
        (r#"{a="\d"}"#, "unknown escape \\d"),
    ] {
        let e = text.parse::<MatcherSet>().expect_err(text);
        assert!(e.contains(needle) && !e.contains('\n'), "{text}: {e}");
    }
}

#[test]
fn matchers_match_as_prometheus_does() {
    let l = labels(&[("severity", "critical"), ("service", "galera")]);
    let yes = |s: &str| s.parse::<MatcherSet>().expect(s).matches(&l);
    assert!(yes(r#"{severity="critical", service=~"galera|rabbitmq"}"#));
    assert!(!yes(r#"{service=~"gal"}"#), "a regex is anchored");
    assert!(yes(r#"{service=~"gal.*"}"#));
    assert!(yes(r#"{missing=""}"#), "a missing label is empty");
    assert!(!yes(r#"{missing!=""}"#));
    assert!(yes(r#"{severity!="warning"}"#));
    assert!(!yes(r#"{severity!~"crit.*"}"#));
    assert!(!yes(r#"{severity="critical", team="db"}"#), "every matcher");
}

#[test]
fn an_alert_holds_when_its_name_and_one_matcher_entry_match() {
    let s = spec(&format!(
        "{PROM}alertname = \"Galera.*\"\nmatchers = ['{{severity=\"critical\"}}', '{{severity=\"page\"}}']\n"
    ));
    let a = |name: &str, sev: &str| {
        alert(
            &[("alertname", name), ("severity", sev)],
            AlertState::Firing,
            "2026-11-21T12:00:00Z",
        )
    };
    assert!(s.blocks(&a("GaleraClusterSize", "critical")));
    assert!(s.blocks(&a("GaleraDown", "page")));
    assert!(!s.blocks(&a("GaleraDown", "warning")));
    assert!(
        !s.blocks(&a("XGalera", "critical")),
        "the name matches whole"
    );
    let by_name = spec(&format!("{PROM}alertname = \"Watchdog\"\n"));
    assert!(by_name.blocks(&a("Watchdog", "none")));
}

#[test]
fn pending_alerts_hold_only_when_asked() {
    let firing_only = spec(&format!("{PROM}alertname = \".*\"\n"));
    let pending = vec![alert(
        &[("alertname", "A")],
        AlertState::Pending,
        "2026-11-21T12:00:00Z",
    )];
    assert_eq!(held(&firing_only, &pending, &[]), None);
    let with_pending = spec(&format!("{PROM}alertname = \".*\"\npending = true\n"));
    assert!(held(&with_pending, &pending, &[]).is_some());
}

#[test]
fn alerts_about_nodes_in_flight_are_left_out_unless_asked_not_to() {
    let s = spec(&format!("{PROM}alertname = \".*\"\n"));
    let about = |label: &str, value: &str| {
        vec![alert(
            &[("alertname", "NodeDown"), (label, value)],
            AlertState::Firing,
            "2026-11-21T12:00:00Z",
        )]
    };
    for (label, value) in [
        ("instance", "cmp-01:9100"),
        ("node", "cmp-01"),
        ("host", "cmp-01.example.org"),
        ("hostname", "cmp-01"),
    ] {
        assert_eq!(
            held(&s, &about(label, value), &["cmp-01"]),
            None,
            "{label}={value}"
        );
    }
    assert!(
        held(&s, &about("instance", "cmp-010:9100"), &["cmp-01"]).is_some(),
        "another node"
    );
    assert!(
        held(&s, &about("job", "cmp-01"), &["cmp-01"]).is_some(),
        "not a node label"
    );
    assert!(
        held(&s, &about("instance", "cmp-01:9100"), &["cmp-02"]).is_some(),
        "not in flight"
    );
    let strict = spec(&format!(
        "{PROM}alertname = \".*\"\nignore_nodes_in_flight = false\n"
    ));
    assert!(held(&strict, &about("instance", "cmp-01:9100"), &["cmp-01"]).is_some());
}

#[test]
fn silenced_alerts_and_their_prometheus_copies_are_left_out() {
    let both = format!("{PROM}alertmanager_url = \"http://am:9093\"\nalertname = \".*\"\n");
    let s = spec(&both);
    let prom = alert(
        &[("alertname", "A"), ("instance", "x:1")],
        AlertState::Firing,
        "2026-11-21T12:00:00Z",
    );
    let mut am = prom.clone();
    am.source = SourceKind::Alertmanager;
    am.labels.insert("cluster".into(), "eu1".into()); // an external label
    am.silenced_by = vec!["someone-elses".into()];
    assert_eq!(held(&s, &[prom.clone(), am.clone()], &[]), None);
    // Silenced by the campaign's own silence alone: it holds (the node it
    // is about has left flight, or ignore_nodes_in_flight is off).
    let own: HashSet<String> = ["mine".to_owned()].into();
    let mut ours = am.clone();
    ours.silenced_by = vec!["mine".into()];
    let both_refs = [&prom, &ours];
    let hold = holding(&s, &blocking(&s, &both_refs, &own), &[]);
    assert!(
        matches!(&hold, Some(Hold::Alert { others: 0, .. })),
        "{hold:?}"
    );
    ours.silenced_by.push("someone-elses".into());
    assert_eq!(holding(&s, &blocking(&s, &[&prom, &ours], &own), &[]), None);
    let mut inhibited = ours.clone();
    inhibited.silenced_by = vec!["mine".into()];
    inhibited.inhibited = true;
    assert_eq!(
        holding(&s, &blocking(&s, &[&prom, &inhibited], &own), &[]),
        None
    );
    let hold = held(
        &spec(&format!("{both}ignore_silenced = false\n")),
        &[prom.clone(), am.clone()],
        &[],
    );
    assert!(
        matches!(hold, Some(Hold::Alert { others: 0, .. })),
        "one alert from both APIs holds once: {hold:?}"
    );
    am.silenced_by.clear();
    assert!(matches!(
        held(&s, &[prom, am], &[]),
        Some(Hold::Alert { others: 0, .. })
    ));
}

#[test]
fn the_oldest_alert_is_named_with_the_count_of_the_others() {
    let s = spec(&format!("{PROM}matchers = ['{{severity=\"critical\"}}']\n"));
    let alerts = vec![
        alert(
            &[("alertname", "New"), ("severity", "critical")],
            AlertState::Firing,
            "2026-11-21T12:05:00Z",
        ),
        alert(
            &[
                ("alertname", "GaleraClusterSize"),
                ("instance", "ctl2:9104"),
                ("severity", "critical"),
            ],
            AlertState::Firing,
            "2026-11-21T12:03:10Z",
        ),
        alert(
            &[("alertname", "Minor"), ("severity", "warning")],
            AlertState::Firing,
            "2026-11-21T11:00:00Z",
        ),
    ];
    let hold = held(&s, &alerts, &[]).expect("held");
    assert_eq!(
        hold.describe(),
        r#"held by alert GaleraClusterSize{instance="ctl2:9104", severity="critical"} firing since 12:03:10 (and 1 more)"#
    );
    let again = held(&s, &alerts[..2], &[]).expect("held");
    assert_eq!(hold.key(), again.key(), "the same alert is the same hold");
}

#[test]
fn a_hold_description_is_escaped_and_bounded() {
    let evil = format!("\x1b]0;owned\x07{}", "v".repeat(500));
    let a = alert(
        &[("alertname", "A\u{202e}B"), ("instance", &evil)],
        AlertState::Firing,
        "2026-11-21T12:00:00Z",
    );
    let text = Hold::Alert {
        alert: a,
        others: 0,
    }
    .describe();
    assert!(
        !text.chars().any(|c| c.is_control() || c == '\u{202e}'),
        "{text}"
    );
    assert!(
        text.contains(r"\x1b]0;owned") && text.contains(r"\u{202e}"),
        "{text}"
    );
    assert!(text.chars().count() < 260, "{}", text.len());
}

#[test]
fn the_verdict_fails_closed() {
    let s = spec(&format!(
        "{PROM}alertmanager_url = \"http://am:9093\"\nalertname = \"Boom\"\ncheck_secs = 15\n"
    ));
    let now = at("2026-11-21T12:00:00Z");
    let fine = |kind| Answer {
        kind,
        answered_at: Some(at("2026-11-21T11:59:50Z")),
        failure: None,
    };
    let seen = Observation {
        answers: vec![fine(SourceKind::Prometheus), fine(SourceKind::Alertmanager)],
        ..Observation::default()
    };
    assert_eq!(
        verdict(&s, &seen, &[], None, now),
        None,
        "both answered, nothing fires"
    );

    let mut failed = seen.clone();
    failed.answers[1].failure = Some("unreachable: am:9093: cannot connect: refused".into());
    let hold = verdict(&s, &failed, &[], None, now).expect("held");
    assert_eq!(
        hold.describe(),
        "held: alertmanager at am:9093 unreachable: am:9093: cannot connect: refused"
    );
    assert_eq!(hold.key(), "blind alertmanager at am:9093");

    let mut stale = seen.clone();
    stale.answers[0].answered_at = Some(at("2026-11-21T11:59:29Z"));
    let hold = verdict(&s, &stale, &[], None, now).expect("held");
    assert_eq!(
        hold.describe(),
        "held: prometheus at prom:9090 has not answered for 31s (more than twice check_secs)"
    );
    stale.answers[0].answered_at = Some(at("2026-11-21T11:59:30Z"));
    assert_eq!(
        verdict(&s, &stale, &[], None, now),
        None,
        "exactly twice is still fresh"
    );

    let first = Observation {
        answers: vec![
            Answer::none(SourceKind::Prometheus),
            fine(SourceKind::Alertmanager),
        ],
        ..Observation::default()
    };
    let hold = verdict(&s, &first, &[], None, now).expect("held");
    assert_eq!(
        hold.describe(),
        "held: waiting for the first answer of prometheus at prom:9090"
    );
    assert!(!hold.audited() && failed_hold_audited(&s, now));
    assert!(verdict(&s, &Observation::default(), &[], None, now).is_some());

    let mut firing = seen;
    firing.blocking.push(Alert {
        source: SourceKind::Alertmanager,
        ..alert(
            &[("alertname", "Boom")],
            AlertState::Firing,
            "2026-11-21T11:00:00Z",
        )
    });
    assert!(matches!(
        verdict(&s, &firing, &[], None, now),
        Some(Hold::Alert { .. })
    ));

    // A node left flight after the last look was asked: its alerts count
    // again and may not be in that answer. Held, unaudited, until a look
    // asked after it.
    let left = at("2026-11-21T11:59:55Z");
    let mut quiet = firing.clone();
    quiet.blocking.clear();
    let hold = verdict(&s, &quiet, &[], Some(left), now).expect("held");
    assert_eq!(
        hold.describe(),
        "held: waiting for an answer of prometheus at prom:9090 newer than the last node's finish"
    );
    assert!(!hold.audited());
    for answer in &mut quiet.answers {
        answer.answered_at = Some(at("2026-11-21T11:59:56Z"));
    }
    assert_eq!(verdict(&s, &quiet, &[], Some(left), now), None);
}

#[test]
fn alerts_specs_are_checked_once_with_one_line_errors() {
    let d = AlertsSpec::default();
    assert_eq!((d.check_secs, d.silence.lease_secs), (15, 1_800));
    assert_eq!(d.node_labels, ["instance", "node", "host", "hostname"]);
    assert!(d.ignore_nodes_in_flight && d.ignore_silenced && !d.pending);
    let am = spec("alertmanager_url = \"https://am.example:9093\"\nalertname = \"X\"\n");
    assert!(am.silences(), "on by default with alertmanager_url");
    assert_eq!(am.timeout(), Duration::from_secs(10));
    assert!(!spec(&format!("{PROM}alertname = \"X\"\n")).silences());
    assert_eq!(
        spec(&format!("{PROM}alertname = \"X\"\ncheck_secs = 3\n")).timeout(),
        Duration::from_secs(3)
    );
    for (text, needle) in [
        (
            "alertname = \"X\"",
            "set prometheus_url, alertmanager_url or both",
        ),
        (PROM, "matchers, alertname or both"),
        (
            "prometheus_url = \"prom:9090\"\nalertname = \"X\"",
            "the scheme must be http or https",
        ),
        (
            "prometheus_url = \"http://\"\nalertname = \"X\"",
            "alerts.prometheus_url: invalid URL",
        ),
        (
            "prometheus_url = \"http://p/?x=1\"\nalertname = \"X\"",
            "without a query",
        ),
        (
            "alertmanager_url = \"http://am\"\nalertname = \"X\"\npending = true",
            "only Prometheus knows pending",
        ),
        (
            "prometheus_url = \"http://p\"\nmatchers = ['{}']",
            "matches every alert",
        ),
        (
            "prometheus_url = \"http://p\"\nalertname = \"X\"\ncheck_secs = 0",
            "at least 1 second",
        ),
        (
            "prometheus_url = \"http://p\"\nalertname = \"X\"\ncheck_secs = 5\ntimeout_secs = 6",
            "timeout_secs (6) is longer",
        ),
        (
            "prometheus_url = \"http://p\"\nalertname = \"X\"\nnode_labels = []",
            "node_labels is empty",
        ),
        (
            "prometheus_url = \"http://p\"\nalertname = \"X\"\n[silence]\nenabled = true",
            "needs alertmanager_url",
        ),
        (
            "alertmanager_url = \"http://am\"\nalertname = \"X\"\n[silence]\nmatchers = ['job=\"x\"']",
            "none names {node}",
        ),
        (
            "alertmanager_url = \"http://am\"\nalertname = \"X\"\n[silence]\nmatchers = []",
            "would silence everything",
        ),
        (
            "alertmanager_url = \"http://am\"\nalertname = \"X\"\n[silence]\nmatchers = ['instance=~\"{node}(\"']",
            "is not a regex",
        ),
        (
            "alertmanager_url = \"http://am\"\nalertname = \"X\"\n[silence]\nlease_secs = 30",
            "at least 60",
        ),
        (
            "alertmanager_url = \"http://am\"\nalertname = \"X\"\ncheck_secs = 600\n[silence]\nlease_secs = 1800",
            "4 × check_secs",
        ),
    ] {
        let e = rollcall_proto::diag::parse_toml::<AlertsSpec>(text)
            .and_then(|s| s.validate())
            .expect_err(text);
        assert!(e.contains(needle) && !e.contains('\n'), "{text}: {e}");
    }
    // A password in a URL would be refused by every request and shown in
    // status and audit: refused here, without showing it.
    let e = rollcall_proto::diag::parse_toml::<AlertsSpec>(
        "prometheus_url = \"https://user:hunter2@prom:9090\"\nalertname = \"X\"",
    )
    .and_then(|s| s.validate())
    .expect_err("user info");
    assert!(
        e.contains("user information") && !e.contains("hunter2"),
        "{e}"
    );
    let source = Source::new(SourceKind::Prometheus, "https://user:hunter2@prom:9090/x/");
    assert_eq!(source.host(), "prom:9090");
    assert_eq!(source.to_string(), "prometheus at prom:9090");
    let e =
        rollcall_proto::diag::parse_toml::<AlertsSpec>("matchers = ['{a=\"x\"']").expect_err("bad");
    assert!(
        e.contains("alerts.matchers: matcher") && !e.contains('\n'),
        "{e}"
    );
    let e = rollcall_proto::diag::parse_toml::<AlertsSpec>("alertname = \"(\"").expect_err("bad");
    assert!(
        e.contains("alertname: \"(\" is not a regex") && !e.contains('\n'),
        "{e}"
    );
}

#[test]
fn silence_matchers_name_the_node_escaped_for_regexes() {
    let m = silence_matchers(
        &[
            r#"instance=~"{node}(:.*)?""#.into(),
            r#"{node="{node}", job!="x"}"#.into(),
        ],
        "cmp-01.dc1",
    )
    .expect("renders");
    let shown: Vec<String> = m.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            r#"instance=~"cmp\\-01\\.dc1(:.*)?""#,
            r#"node="cmp-01.dc1""#,
            r#"job!="x""#
        ]
    );
    assert!(m[0].matches(&labels(&[("instance", "cmp-01.dc1:9100")])));
    assert!(
        !m[0].matches(&labels(&[("instance", "cmp-01xdc1:9100")])),
        "the dot is escaped"
    );
}

#[test]
fn the_default_silence_covers_what_names_the_node() {
    let m = silence_matchers(&SilenceSpec::default().matchers, "cmp-01").expect("renders");
    for value in [
        "cmp-01",
        "cmp-01:9100",
        "cmp-01.example.org",
        "cmp-01.example.org:9100",
    ] {
        assert!(names_node(value, "cmp-01"), "{value}");
        assert!(m[0].matches(&labels(&[("instance", value)])), "{value}");
    }
    for value in ["cmp-010:9100", "cmp-01x", "10.0.0.1:9100", "xcmp-01"] {
        assert!(!names_node(value, "cmp-01"), "{value}");
        assert!(!m[0].matches(&labels(&[("instance", value)])), "{value}");
    }
}

#[test]
fn names_node_takes_ports_and_domains_only() {
    assert!(names_node("cmp1", "cmp1"));
    assert!(names_node("cmp1:9100", "cmp1"));
    assert!(names_node("cmp1.example.org", "cmp1"));
    assert!(!names_node("cmp10", "cmp1"));
    assert!(!names_node("xcmp1", "cmp1"));
}

#[test]
fn sources_know_their_urls_and_hosts() {
    let s = spec(&format!(
        "{PROM}alertmanager_url = \"https://am.example/am/\"\nalertname = \"X\"\n"
    ));
    let sources = s.sources();
    assert_eq!(sources[0].alerts_url(), "http://prom:9090/api/v1/alerts");
    assert_eq!(
        sources[1].alerts_url(),
        "https://am.example/am/api/v2/alerts?active=true&silenced=true&inhibited=true&unprocessed=true"
    );
    assert_eq!(sources[1].to_string(), "alertmanager at am.example");
}

fn failed_hold_audited(s: &AlertsSpec, now: Timestamp) -> bool {
    let seen = Observation {
        answers: vec![Answer {
            failure: Some("unreachable".into()),
            ..Answer::none(SourceKind::Prometheus)
        }],
        ..Observation::default()
    };
    verdict(s, &seen, &[], None, now).is_some_and(|h| h.audited())
}

#[test]
fn blocking_scales_to_a_full_answer_from_both_apis() {
    // 10,000 alerts from Prometheus and their 10,000 copies in Alertmanager
    // (an external label added), half of them silenced by someone else:
    // the index finds each copy without comparing every pair.
    let s = spec(&format!(
        "{PROM}alertmanager_url = \"http://am:9093\"\nalertname = \"NodeDown\"\n"
    ));
    let mut alerts = Vec::new();
    for i in 0..10_000 {
        let instance = format!("cmp{i:05}:9100");
        let prom = alert(
            &[
                ("alertname", "NodeDown"),
                ("instance", &instance),
                ("job", "node"),
            ],
            AlertState::Firing,
            "2026-11-21T12:00:00Z",
        );
        let mut am = prom.clone();
        am.source = SourceKind::Alertmanager;
        am.labels.insert("cluster".into(), "eu1".into());
        if i % 2 == 0 {
            am.silenced_by = vec!["someone-elses".into()];
        }
        alerts.push(prom);
        alerts.push(am);
    }
    let refs: Vec<&Alert> = alerts.iter().collect();
    let started = std::time::Instant::now();
    let held = blocking(&s, &refs, &HashSet::new());
    let took = started.elapsed();
    assert_eq!(held.len(), 5_000, "the unsilenced half, each once");
    assert!(held.iter().all(|a| a.source == SourceKind::Prometheus));
    eprintln!("blocking over 20,000 alerts took {took:?}");
}
