//! The embedded store answers a webhook before the ticket is matched and matches it behind
//! its ingest log; a store without a log (PostgreSQL, or a second process on the same
//! SQLite file) gets it matched before the accept. The two must leave the same comment and
//! the same audit trail.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use runlink::audit::AuditEvent;
use runlink::deliver::retry::RetryPolicy;
use runlink::metrics::Metrics;
use runlink::outbox::sqlite::SqliteStore;
use runlink::outbox::{AcceptOutcome, AuditQuery, Enrich, Store};
use runlink::pipeline::{Enricher, Pipeline, delivery_key};
use runlink::signature::AlarmSignature;
use runlink::ticket::{DeliveryId, ReplyTarget, SourceKind, Ticket, TicketId};

fn enricher(config: &runlink::config::Config) -> Arc<Enricher> {
    let client = runlink::deliver::http_client(Duration::from_secs(5)).unwrap();
    let policy = RetryPolicy {
        base: Duration::from_millis(50),
        cap: Duration::from_millis(200),
        max_attempts: 3,
    };
    let marker = runlink::render::MarkerKey::ephemeral();
    let (_, templates) =
        runlink::wiring::build_destinations(&config.destinations, &client, &policy, &marker)
            .unwrap();
    Arc::new(
        runlink::wiring::build_enricher(config, templates, Arc::new(Metrics::new()), marker, None)
            .unwrap(),
    )
}

fn pipeline(enricher: Arc<Enricher>, store: Arc<dyn Store>) -> Pipeline {
    Pipeline {
        enricher,
        store,
        router: Default::default(),
        max_per_ticket: 3,
    }
}

fn crash_looping(n: u64) -> Ticket {
    let labels: BTreeMap<String, String> = [
        ("alertname", "KubePodCrashLooping"),
        ("namespace", "payments"),
        ("pod", "api-7d9f8b6c5d-x2k4q"),
        ("severity", "warning"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    Ticket {
        id: TicketId::parse(format!("alertmanager:fp{n}@2026-12-03T07:00:00Z")).unwrap(),
        source: SourceKind::Alertmanager,
        delivery: DeliveryId::parse(format!("d-{n}")).unwrap(),
        title: "[FIRING:1] KubePodCrashLooping".into(),
        body: String::new(),
        annotations: [(
            "description".to_string(),
            "Pod payments/api-7d9f8b6c5d-x2k4q (api) is restarting 2.5 times / 10 minutes."
                .to_string(),
        )]
        .into_iter()
        .collect(),
        alertname: labels.get("alertname").cloned(),
        labels,
        reply: Some(ReplyTarget::GithubIssue {
            owner: "acme".into(),
            repo: "ops".into(),
            number: n,
        }),
        query: None,
    }
}

/// The comment queued for a ticket, and its audit trail without the times.
async fn left_behind(
    store: &SqliteStore,
    ticket: &Ticket,
    enricher: &Enricher,
) -> (String, Vec<AuditEvent>) {
    let key = delivery_key(
        ticket,
        &AlarmSignature::key_of(ticket, &enricher.normalizer),
    );
    let body = store
        .body_of(&key)
        .await
        .unwrap()
        .expect("a comment is queued");
    let events = store
        .audit_log(AuditQuery {
            ticket: Some(ticket.id.to_string()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.event)
        .collect();
    (body, events)
}

#[tokio::test]
async fn matching_behind_the_log_leaves_what_matching_before_the_accept_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let config = crate::common::test_config(dir.path(), "http://127.0.0.1:9", "");
    let enricher = enricher(&config);

    let before = SqliteStore::open(&dir.path().join("before.db")).unwrap();
    let behind = SqliteStore::open_with(
        &dir.path().join("behind.db"),
        Some(enricher.clone() as Arc<dyn Enrich>),
    )
    .unwrap();
    assert!(!before.defers_matching());
    assert!(behind.defers_matching());
    let inline = pipeline(enricher.clone(), Arc::new(before.clone()));
    let deferred = pipeline(enricher.clone(), Arc::new(behind.clone()));

    for n in 1..=3 {
        let ticket = crash_looping(n);
        assert_eq!(
            inline.accept(ticket.clone()).await.unwrap(),
            AcceptOutcome::Stored
        );
        assert_eq!(
            deferred.accept(ticket.clone()).await.unwrap(),
            AcceptOutcome::Stored
        );
        let (body, events) = left_behind(&behind, &ticket, &enricher).await;
        assert_eq!(
            (body.clone(), events.clone()),
            left_behind(&before, &ticket, &enricher).await
        );
        assert!(
            body.contains("crash"),
            "the crash-looping runbook is in the comment: {body}"
        );
        let kinds: Vec<&str> = events.iter().map(AuditEvent::kind).collect();
        assert_eq!(kinds, ["received", "decided", "enqueued"]);
    }
}

/// A new delivery of a ticket whose comment is already queued (a tracker echoing runlink's
/// own enrichment) is answered `already_enriched` without a second match, whether the store
/// matches before its accept or behind its log.
#[tokio::test]
async fn an_echo_of_an_enriched_ticket_is_not_matched_again() {
    let dir = tempfile::tempdir().unwrap();
    let config = crate::common::test_config(dir.path(), "http://127.0.0.1:9", "");
    for defer in [false, true] {
        let enricher = enricher(&config);
        let path = dir.path().join(format!("echo-{defer}.db"));
        let store = if defer {
            SqliteStore::open_with(&path, Some(enricher.clone() as Arc<dyn Enrich>)).unwrap()
        } else {
            SqliteStore::open(&path).unwrap()
        };
        let pipeline = pipeline(enricher.clone(), Arc::new(store.clone()));
        let ticket = crash_looping(1);
        assert_eq!(
            pipeline.accept(ticket.clone()).await.unwrap(),
            AcceptOutcome::Stored
        );
        let echo = Ticket {
            delivery: DeliveryId::parse("d-echo").unwrap(),
            ..ticket
        };
        assert_eq!(
            pipeline.accept(echo).await.unwrap(),
            AcceptOutcome::AlreadyEnriched
        );
        store.counts().await.unwrap();
        let matched: f64 = enricher
            .metrics
            .encode()
            .lines()
            .filter(|l| l.starts_with("runlink_matches_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        assert_eq!(matched, 1.0, "deferred: {defer}");
    }
}

/// A storm's first tickets of one alarm arrive together: one of them makes the decision and
/// the others wait for it, rather than each running the search (and the model) before any
/// is remembered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickets_of_one_alarm_arriving_together_share_one_decision() {
    let dir = tempfile::tempdir().unwrap();
    let config = crate::common::test_config(dir.path(), "http://127.0.0.1:9", "");
    let enricher = enricher(&config);
    let decisions = futures::future::join_all((0..8).map(|n| {
        let enricher = enricher.clone();
        let signature = AlarmSignature::of(&crash_looping(n), &enricher.normalizer);
        tokio::spawn(async move { enricher.decide(signature).await.unwrap() })
    }))
    .await;
    let decisions: Vec<_> = decisions.into_iter().map(|d| d.unwrap()).collect();
    assert!(
        decisions.iter().all(|d| Arc::ptr_eq(d, &decisions[0])),
        "every ticket got the one decision"
    );
    assert_eq!(enricher.metrics.coalesced.get(), 7);
}
