//! Property tests of every payload parser: arbitrary bytes, and the captured fixtures with
//! one value replaced by arbitrary JSON. Nothing may panic, and a refusal names what is
//! wrong. `cargo test` runs proptest's default number of cases; a longer run by hand:
//! `PROPTEST_CASES=100000 cargo test --lib fuzz`.

use actix_web::test::TestRequest;
use proptest::prelude::*;
use serde_json::Value;

use super::{Inbound, IngestError, Source, SourceSet};
use crate::config::Config;

/// Built once: a configuration compiles the normalizer's regexes.
fn sources() -> &'static SourceSet {
    static SET: std::sync::LazyLock<SourceSet> = std::sync::LazyLock::new(|| {
        let config = Config::from_toml(
        "[sources.generic.desk]\ntitle = \"/ticket/title\"\nid = \"/ticket/id\"\nbody = \"/ticket/text\"\nlabels = \"/ticket/tags\"\n",
    )
    .expect("config is valid");
        SourceSet::new(&config.sources, &crate::render::MarkerKey::ephemeral())
    });
    &SET
}

/// Every source, with the headers its sender always sets.
fn each_source(set: &SourceSet) -> Vec<(&dyn Source, TestRequest)> {
    vec![
        (
            &set.github as &dyn Source,
            TestRequest::default()
                .insert_header(("X-GitHub-Event", "issues"))
                .insert_header(("X-GitHub-Delivery", "d-1")),
        ),
        (&set.alertmanager, TestRequest::default()),
        (&set.grafana, TestRequest::default()),
        (&set.pagerduty, TestRequest::default()),
        (&set.jira, TestRequest::default()),
        (&set.opsgenie, TestRequest::default()),
        (&set.servicenow, TestRequest::default()),
        (
            set.generic.get("desk").expect("configured"),
            TestRequest::default(),
        ),
    ]
}

fn fixtures() -> Vec<(&'static str, &'static str)> {
    vec![
        ("github", GITHUB),
        (
            "alertmanager",
            include_str!("../../tests/fixtures/alertmanager-firing.json"),
        ),
        (
            "grafana",
            include_str!("../../tests/fixtures/grafana-firing.json"),
        ),
        (
            "pagerduty",
            include_str!("../../tests/fixtures/pagerduty-incident-triggered.json"),
        ),
        (
            "jira",
            include_str!("../../tests/fixtures/jira-issue-created.json"),
        ),
        (
            "opsgenie",
            include_str!("../../tests/fixtures/opsgenie-create.json"),
        ),
        (
            "servicenow",
            include_str!("../../tests/fixtures/servicenow-incident.json"),
        ),
        (
            "generic",
            include_str!("../../tests/fixtures/generic-ticket.json"),
        ),
    ]
}

const GITHUB: &str = r#"{"action":"opened","issue":{"number":1,"title":"Disk full","body":"b","labels":[{"name":"service:db"}]},"repository":{"name":"ops","owner":{"login":"acme"}}}"#;

/// A refusal must say what is wrong: a field, a header, or why the body is no JSON.
fn check(source: &str, result: Result<Inbound, IngestError>) {
    if let Err(error) = result {
        let message = error.to_string();
        assert!(!message.trim().is_empty(), "{source}: empty error");
        if let IngestError::InvalidField { field, .. } = &error {
            assert!(!field.is_empty(), "{source}: {message}");
        }
    }
}

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-1e12f64..1e12).prop_map(Value::from),
        ".{0,40}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Replaces the value at a path picked by `choices` (one index per level) with `new`.
fn mutate(doc: &mut Value, choices: &[usize], new: Value) {
    let Some((&choice, rest)) = choices.split_first() else {
        *doc = new;
        return;
    };
    match doc {
        Value::Object(map) if !map.is_empty() => {
            let key = map
                .keys()
                .nth(choice % map.len())
                .cloned()
                .expect("in range");
            mutate(map.get_mut(&key).expect("present"), rest, new);
        }
        Value::Array(items) if !items.is_empty() => {
            let len = items.len();
            mutate(&mut items[choice % len], rest, new);
        }
        _ => *doc = new,
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_a_parser(body in prop::collection::vec(any::<u8>(), 0..2048)) {
        for (source, request) in each_source(sources()) {
            check(source.name(), source.parse(&request.to_http_request(), &body));
        }
    }

    #[test]
    fn a_fixture_with_one_value_replaced_is_parsed_or_refused_by_name(
        which in 0usize..8,
        choices in prop::collection::vec(any::<usize>(), 1..6),
        new in json(),
    ) {
        let (name, fixture) = fixtures()[which];
        let (source, request) = each_source(sources()).swap_remove(which);
        prop_assert_eq!(source.name(), name);
        let mut doc: Value = serde_json::from_str(fixture).expect("fixture is JSON");
        mutate(&mut doc, &choices, new);
        let body = serde_json::to_vec(&doc).expect("serializes");
        check(name, source.parse(&request.to_http_request(), &body));
    }
}
