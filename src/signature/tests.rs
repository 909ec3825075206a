use super::*;

fn rule(name: &str, text: &str) -> String {
    Normalizer::default().apply_rule(name, text).unwrap()
}

#[test]
fn label_dump_rule_replaces_go_maps_of_labels() {
    assert_eq!(
        rule(
            "label_dump",
            "failed\n  LABELS = map[instance:a:9090 job:x]"
        ),
        "failed\n  <labels>"
    );
}

#[test]
fn value_dump_rule_replaces_printed_values() {
    assert_eq!(
        rule("value_dump", "down\n  VALUE = 0.93"),
        "down\n  <value>"
    );
}

#[test]
fn timestamp_rule_replaces_iso_times() {
    assert_eq!(
        rule("timestamp", "since 2026-11-23T19:40:30.109Z ok"),
        "since <time> ok"
    );
    assert_eq!(rule("timestamp", "on 2026-11-23 12:00"), "on <time>");
}

#[test]
fn uuid_rule_replaces_uuids() {
    assert_eq!(
        rule("uuid", "req 3f2b8c1e-9a4d-4c2b-8e1f-0a1b2c3d4e5f failed"),
        "req <uuid> failed"
    );
}

#[test]
fn ip_rules_replace_addresses_with_ports() {
    assert_eq!(
        rule("ipv4", "target 10.0.2.41:9090 down"),
        "target <ip> down"
    );
    assert_eq!(rule("ipv6", "peer fe80::1:2:3 lost"), "peer <ip> lost");
    assert_eq!(rule("ipv6", "2001:db8:0:0:0:0:2:1 up"), "<ip> up");
    assert_eq!(
        rule("ipv6", "std::vector at 12:30:45"),
        "std::vector at 12:30:45"
    );
}

#[test]
fn path_rule_replaces_file_paths() {
    assert_eq!(
        rule("path", "space left on /dev/xvda1, at /var/log"),
        "space left on <path>, at <path>"
    );
}

#[test]
fn fqdn_rule_replaces_host_names() {
    assert_eq!(
        rule("fqdn", "db-01.prod.example.com is slow"),
        "<host> is slow"
    );
    assert_eq!(rule("fqdn", "ip-10-0-0-1.ec2.internal"), "<host>");
}

#[test]
fn pod_rule_replaces_pod_names_with_hashes() {
    assert_eq!(
        rule("pod", "pod checkout-7d9f8b6c5d-x2k4q restarting"),
        "pod <pod> restarting"
    );
}

#[test]
fn numbered_host_rule_replaces_hosts_like_logs_1() {
    assert_eq!(
        rule("numbered_host", "Disk on logs-1 will fill"),
        "Disk on <host> will fill"
    );
    assert_eq!(rule("numbered_host", "web-03a down"), "<host> down");
}

#[test]
fn hex_rule_replaces_long_ids_and_keeps_short_words() {
    let n = Normalizer::default();
    assert_eq!(
        n.normalize("fingerprint 40a5816a039039f7"),
        "fingerprint <hex>"
    );
    assert_eq!(n.normalize("5xx rate"), "5xx rate");
    assert_eq!(n.normalize("e2e tests"), "e2e tests");
}

#[test]
fn percent_rule_replaces_percentages() {
    assert_eq!(rule("percent", "at 97.5% used"), "at <pct> used");
}

#[test]
fn quantity_rule_replaces_numbers_with_units() {
    assert_eq!(
        rule("quantity", "within 4h, 512 MiB left"),
        "within <qty>, <qty> left"
    );
    assert_eq!(rule("quantity", "p99 250ms"), "p99 <qty>");
}

#[test]
fn number_rule_replaces_bare_numbers() {
    assert_eq!(rule("number", "3 replicas of 5"), "<num> replicas of <num>");
}

#[test]
fn whole_pipeline_gives_two_firings_one_title() {
    let n = Normalizer::default();
    let a = n.normalize("Disk on logs-1 (10.0.0.4) will fill up within 4 hours");
    let b = n.normalize("Disk on logs-7 (10.0.9.12) will fill up within 11 hours");
    assert_eq!(a, b);
    assert_eq!(a, "Disk on <host> (<ip>) will fill up within <qty>");
}

#[test]
fn whitespace_runs_become_one_space() {
    assert_eq!(
        collapse_spaces("  disk\t full \n\n on\u{a0}<host>  "),
        "disk full on <host>"
    );
    assert_eq!(collapse_spaces(" \n "), "");
}

#[test]
fn configured_rules_run_before_built_in_ones() {
    let n = Normalizer::with_rules(vec![NormalizeRule {
        name: "jira_key".into(),
        pattern: r"\b[A-Z]{2,}-\d+\b".into(),
        replace: "<ticket>".into(),
    }])
    .unwrap();
    assert_eq!(n.normalize("see OPS-1234"), "see <ticket>");
    assert_eq!(n.rule_names().next(), Some("jira_key"));
}

#[test]
fn camel_case_words_in_prose_are_split() {
    assert_eq!(
        split_words("PersistentVolume is filling, etcdNoLeader (x.y)"),
        "Persistent Volume is filling, etcd No Leader (x.y)"
    );
}

#[test]
fn metric_names_come_from_promql_without_functions_or_labels() {
    let q = r#"(kube_hpa_status_desired_replicas{job="ksm"} >= kube_hpa_spec_max_replicas) and sum by (namespace, pod) (rate(container_cpu_usage_seconds_total[5m])) > 0"#;
    assert_eq!(
        metric_names(q),
        vec![
            "kube_hpa_status_desired_replicas",
            "kube_hpa_spec_max_replicas",
            "container_cpu_usage_seconds_total"
        ]
    );
}

#[test]
fn identifiers_split_into_words() {
    assert_eq!(
        split_identifier("NodeFilesystemSpaceFillingUp"),
        "Node Filesystem Space Filling Up"
    );
    assert_eq!(split_identifier("KubeAPIDown"), "Kube API Down");
    assert_eq!(
        split_identifier("etcdHighFsyncDurations"),
        "etcd High Fsync Durations"
    );
    assert_eq!(split_identifier("disk_usage_high"), "disk usage high");
}

fn ticket(title: &str) -> Ticket {
    crate::ingest::manual::ManualTicket {
        title: title.into(),
        ..Default::default()
    }
    .into_ticket(0)
}

#[test]
fn alertname_comes_from_title_patterns() {
    let cases = [
        (
            "[FIRING:2] KubePodCrashLooping (default)",
            Some("KubePodCrashLooping"),
        ),
        ("ALARM: \"HighCPU-prod\" in US East", Some("HighCPU-prod")),
        (
            "NodeFilesystemAlmostOutOfSpace",
            Some("NodeFilesystemAlmostOutOfSpace"),
        ),
        ("disk_usage_high", Some("disk_usage_high")),
        ("Inodes exhausted on build agent", None),
        ("Database", None),
    ];
    for (title, expected) in cases {
        assert_eq!(
            extract_alertname(&ticket(title)).as_deref(),
            expected,
            "{title}"
        );
    }
}

#[test]
fn alertname_label_beats_title() {
    let mut t = ticket("[FIRING:1] Other");
    t.labels.insert("alertname".into(), "TargetDown".into());
    assert_eq!(extract_alertname(&t).as_deref(), Some("TargetDown"));
}

#[test]
fn signature_ignores_the_instance() {
    let n = Normalizer::default();
    let mut a = ticket("Disk on logs-1 full");
    a.labels.insert("instance".into(), "logs-1".into());
    let mut b = ticket("Disk on logs-2 full");
    b.labels.insert("instance".into(), "logs-2".into());
    let (sa, sb) = (AlarmSignature::of(&a, &n), AlarmSignature::of(&b, &n));
    assert_ne!(sa.instance, sb.instance);
    assert_eq!(sa.key(), sb.key());
    assert_eq!(sa.digest(), sb.digest());
}

#[test]
fn normalizing_runs_every_rule_in_order_on_what_the_last_left() {
    let extra = NormalizeRule {
        name: "ticket_key".into(),
        pattern: r"\bOPS-\d+\b".into(),
        replace: "<ticket>".into(),
    };
    for n in [
        Normalizer::default(),
        Normalizer::with_rules(vec![extra]).unwrap(),
    ] {
        for text in [
            "",
            "HighErrorRate",
            "[FIRING:1] HighErrorRate (checkout critical)",
            "5xx ratio on web-17 is 7.3% over the last 5 minutes",
            "Disk /var/lib/data on db-3.prod.internal:9100 at 93% since 2026-11-23T19:40:30Z",
            "pod api-7d9f8b6c5d-x2k4q restarted, trace 1b4e28ba-2fa1-11d2-883f-0016d3cca427",
            "OPS-42 value=0.93 labels = map[instance:10.0.0.7:9090 job:node] fe80::1",
            "latency 250ms for 3 hours at https://grafana.example.com/d/x?from=now-1h, 0xdeadbeef99",
            "µs and ünïcode: 12 µs on nœud-4",
        ] {
            let mut expected = text.to_string();
            for name in n.rule_names() {
                expected = n.apply_rule(name, &expected).unwrap();
            }
            assert_eq!(n.normalize(text), collapse_spaces(&expected), "{text}");
        }
    }
}

#[test]
fn the_key_alone_is_the_whole_signature_s_key() {
    let n = Normalizer::default();
    let mut t = ticket("[FIRING:1] Disk on logs-7 at 93% since 2026-11-23T19:40:30Z");
    t.labels.insert("service".into(), "Logs".into());
    t.annotations.insert("namespace".into(), "obs".into());
    t.annotations
        .insert("description".into(), "volume /var/log on 10.0.0.7".into());
    assert_eq!(
        AlarmSignature::key_of(&t, &n),
        AlarmSignature::of(&t, &n).key()
    );
    let bare = ticket("HighErrorRate");
    assert_eq!(
        AlarmSignature::key_of(&bare, &n),
        AlarmSignature::of(&bare, &n).key()
    );
}

#[test]
fn search_text_drops_class_tokens_and_splits_the_name() {
    let n = Normalizer::default();
    let mut t = ticket("[FIRING:1] KubePodCrashLooping");
    t.annotations
        .insert("summary".into(), "Pod web-1 restarted 5 times".into());
    let sig = AlarmSignature::of(&t, &n);
    let words = sig.search_text();
    assert!(words.starts_with("Kube Pod Crash Looping"), "{words}");
    assert!(!words.contains('<'), "{words}");
}

proptest::proptest! {
    // The signature's regexes are slow in a debug build: fewer cases here, as many as
    // PROPTEST_CASES asks for by hand.
    #![proptest_config(proptest::test_runner::Config::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(24)
    ))]
    /// Any text, any labels: the signature is made without a panic, and its key does not
    /// grow with the text's volatile parts (numbers all become one token).
    #[test]
    fn any_ticket_has_a_signature(
        title in "[ -~\u{a0}-\u{17f}]{0,160}",
        body in "[ -~\n\u{a0}-\u{17f}]{0,300}",
        number in proptest::prelude::any::<u64>(),
    ) {
        let normalizer = Normalizer::default();
        let ticket = |n: u64| crate::ingest::manual::ManualTicket {
            title: format!("{title} {n}"),
            body: body.clone(),
            ..Default::default()
        }
        .into_ticket(0);
        let a = AlarmSignature::of(&ticket(number), &normalizer);
        let b = AlarmSignature::of(&ticket(number / 2 + 1), &normalizer);
        proptest::prop_assert_eq!(a.key(), b.key());
        let _ = normalizer.normalize(&body);
    }
}
