//! One behaviour, two backends: every test here runs against the embedded SQLite store and,
//! when `RUNLINK_TEST_POSTGRES_URL` is set (CI always sets it), against PostgreSQL, through
//! the same `Store` trait the server uses. The last tests are about replicas: several store
//! handles on one PostgreSQL database, as several runlink processes would have.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use runlink::audit::AuditEvent;
use runlink::config::StoreUrl;
use runlink::outbox::{
    AcceptOutcome, Accepted, AuditQuery, ItemState, Matching, NewDelivery, Requeue, Settle, Store,
    TargetLoad, now_ms,
};
use runlink::ticket::{DeliveryId, ReplyTarget, SourceKind, Ticket, TicketId};

const LEASE: Duration = Duration::from_secs(30);

struct Backend {
    name: &'static str,
    store: Arc<dyn Store>,
    url: StoreUrl,
    _dir: Option<tempfile::TempDir>,
}

async fn open(url: &StoreUrl) -> Arc<dyn Store> {
    runlink::wiring::open_store(url).await.expect("store opens")
}

async fn backends() -> Vec<Backend> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite =
        StoreUrl::parse(&format!("sqlite://{}", dir.path().join("s.db").display())).unwrap();
    let mut out = vec![Backend {
        name: "sqlite",
        store: open(&sqlite).await,
        url: sqlite,
        _dir: Some(dir),
    }];
    if let Some(admin) = crate::common::pg::admin_url() {
        let url = StoreUrl::parse(&crate::common::pg::fresh_database(&admin).await).unwrap();
        out.push(Backend {
            name: "postgres",
            store: open(&url).await,
            url,
            _dir: None,
        });
    }
    out
}

fn accepted(ticket: &str, delivery: &str, key: &str) -> Accepted {
    Accepted {
        ticket: Ticket {
            id: TicketId::parse(ticket).unwrap(),
            source: SourceKind::Github,
            delivery: DeliveryId::parse(delivery).unwrap(),
            title: "Disk full".into(),
            body: String::new(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            alertname: None,
            reply: None,
            query: None,
        },
        signature_key: "sig".into(),
        events: vec![AuditEvent::Received {
            source: "github".into(),
            delivery: delivery.into(),
            title: "Disk full".into(),
        }],
        delivery: Some(NewDelivery {
            delivery_key: key.into(),
            destination: "github".into(),
            target: ReplyTarget::GithubIssue {
                owner: "acme".into(),
                repo: "ops".into(),
                number: 1,
            },
            body: "hello".into(),
            summary: format!("{ticket} → [Disk](https://r/disk)"),
        }),
        max_per_ticket: 2,
        matching: Matching::Done,
    }
}

fn event() -> AuditEvent {
    AuditEvent::NotEnqueued {
        reason: "test".into(),
    }
}

#[tokio::test]
async fn duplicates_and_the_per_ticket_cap() {
    for b in backends().await {
        let s = &b.store;
        let t = "github:acme/ops#1";
        assert_eq!(
            s.accept(accepted(t, "d1", "k1")).await.unwrap(),
            AcceptOutcome::Stored,
            "{}",
            b.name
        );
        assert_eq!(
            s.accept(accepted(t, "d1", "k1")).await.unwrap(),
            AcceptOutcome::DuplicateDelivery,
            "{}",
            b.name
        );
        assert_eq!(
            s.accept(accepted(t, "d2", "k1")).await.unwrap(),
            AcceptOutcome::AlreadyEnriched,
            "{}",
            b.name
        );
        assert_eq!(
            s.accept(accepted(t, "d3", "k2")).await.unwrap(),
            AcceptOutcome::Stored,
            "{}",
            b.name
        );
        assert_eq!(
            s.accept(accepted(t, "d4", "k3")).await.unwrap(),
            AcceptOutcome::CapReached,
            "{}",
            b.name
        );
        assert_eq!(s.counts().await.unwrap().pending, 2, "{}", b.name);
        assert_eq!(s.pending().await.unwrap(), 2, "{}", b.name);
        let tickets = s.tickets_since(0, 100).await.unwrap();
        assert_eq!(
            tickets.len(),
            4,
            "{}: every distinct delivery is kept",
            b.name
        );
        assert_eq!(tickets[0].ticket.title, "Disk full");
    }
}

#[tokio::test]
async fn claims_lease_items_and_unsettled_ones_return_uncertain() {
    for b in backends().await {
        let s = &b.store;
        s.accept(accepted("github:acme/ops#1", "d1", "k1"))
            .await
            .unwrap();
        let now = now_ms() + 10;
        let first = s.claim_due("github", now, 10, LEASE).await.unwrap();
        assert_eq!(first.len(), 1, "{}", b.name);
        assert!(!first[0].uncertain);
        assert_eq!(
            first[0].target,
            accepted("x:1", "d", "k").delivery.unwrap().target
        );
        assert!(
            s.claim_due("github", now, 10, LEASE)
                .await
                .unwrap()
                .is_empty(),
            "{}: leased",
            b.name
        );
        assert!(
            s.claim_due("jira", now + 31_000, 10, LEASE)
                .await
                .unwrap()
                .is_empty()
        );
        let again = s
            .claim_due("github", now + 31_000, 10, LEASE)
            .await
            .unwrap();
        assert_eq!(again.len(), 1, "{}: the lease ran out", b.name);
        assert!(
            !again[0].uncertain,
            "{}: a claim that never started its request has sent nothing",
            b.name
        );
        assert!(
            !s.sending(&first[0]).await.unwrap(),
            "{}: a claim whose lease ran out may not send",
            b.name
        );
        assert!(s.sending(&again[0]).await.unwrap(), "{}", b.name);
        let third = s
            .claim_due("github", now + 62_000, 10, LEASE)
            .await
            .unwrap();
        assert_eq!(third.len(), 1, "{}: the lease ran out again", b.name);
        assert!(
            third[0].uncertain,
            "{}: a claim that started sending and was never settled may have posted",
            b.name
        );
    }
}

#[tokio::test]
async fn settling_records_state_and_audit() {
    for b in backends().await {
        let s = &b.store;
        s.accept(accepted("github:acme/ops#1", "d1", "k1"))
            .await
            .unwrap();
        s.accept(accepted("github:acme/ops#2", "d2", "k2"))
            .await
            .unwrap();
        s.accept(accepted("github:acme/ops#3", "d3", "k3"))
            .await
            .unwrap();
        // Reads wait for what was acknowledged before them; a claim that finds work does not.
        assert_eq!(s.counts().await.unwrap().pending, 3, "{}", b.name);
        let items = s
            .claim_due("github", now_ms() + 10, 10, LEASE)
            .await
            .unwrap();
        assert_eq!(items.len(), 3, "{}", b.name);
        s.settle(&items[0], Settle::Delivered, event())
            .await
            .unwrap();
        s.settle(
            &items[1],
            Settle::RetryAt {
                at_ms: now_ms() + 60_000,
                error: "HTTP 503".into(),
                uncertain: true,
            },
            event(),
        )
        .await
        .unwrap();
        s.settle(
            &items[2],
            Settle::Dead {
                error: "HTTP 404".into(),
            },
            event(),
        )
        .await
        .unwrap();
        let counts = s.counts().await.unwrap();
        assert_eq!(
            (counts.pending, counts.delivered, counts.dead),
            (1, 1, 1),
            "{}",
            b.name
        );
        // Not due yet.
        assert!(
            s.claim_due("github", now_ms() + 10, 10, LEASE)
                .await
                .unwrap()
                .is_empty()
        );
        let retried = s
            .claim_due("github", now_ms() + 61_000, 10, LEASE)
            .await
            .unwrap();
        assert_eq!(retried.len(), 1);
        assert_eq!(retried[0].attempts, 1);
        assert!(
            retried[0].uncertain,
            "{}: a timed-out attempt stays uncertain",
            b.name
        );

        let dead = s.list(Some(ItemState::Dead), 10).await.unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].last_error.as_deref(), Some("HTTP 404"));
        assert_eq!(s.list(None, 10).await.unwrap().len(), 3);
        assert_eq!(
            s.requeue(Requeue::One(dead[0].id)).await.unwrap(),
            1,
            "{}",
            b.name
        );
        assert_eq!(s.requeue(Requeue::AllDead).await.unwrap(), 0);
        let back = s
            .claim_due("github", now_ms() + 10, 10, LEASE)
            .await
            .unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(
            back[0].attempts, 0,
            "{}: requeued with a fresh count",
            b.name
        );

        let log = s
            .audit_log(AuditQuery {
                ticket: Some("github:acme/ops#1".into()),
                since_ms: None,
                limit: None,
            })
            .await
            .unwrap();
        let kinds: Vec<&str> = log.iter().map(|r| r.event.kind()).collect();
        assert_eq!(
            kinds,
            ["received", "enqueued", "not_enqueued"],
            "{}",
            b.name
        );
        s.record(None, event()).await.unwrap();
        let all = s.audit_log(AuditQuery::default()).await.unwrap();
        assert!(all.last().unwrap().ticket.is_none());
        let limited = s
            .audit_log(AuditQuery {
                limit: Some(2),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(limited.len(), 2);
    }
}

#[tokio::test]
async fn items_for_unconfigured_destinations_are_orphans() {
    for b in backends().await {
        let s = &b.store;
        let mut a = accepted("jira:OPS-1", "d1", "k1");
        a.delivery.as_mut().unwrap().destination = "jira".into();
        s.accept(a).await.unwrap();
        s.accept(accepted("github:acme/ops#1", "d2", "k2"))
            .await
            .unwrap();
        let orphans = s.orphans(&["github"]).await.unwrap();
        assert_eq!(orphans.len(), 1, "{}", b.name);
        assert_eq!(orphans[0].destination, "jira");
        assert!(s.orphans(&["github", "jira"]).await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn state_survives_reopening_the_store() {
    for b in backends().await {
        b.store
            .accept(accepted("github:acme/ops#1", "d1", "k1"))
            .await
            .unwrap();
        let reopened = open(&b.url).await;
        assert_eq!(reopened.counts().await.unwrap().pending, 1, "{}", b.name);
        assert_eq!(
            reopened
                .accept(accepted("github:acme/ops#1", "d1", "k1"))
                .await
                .unwrap(),
            AcceptOutcome::DuplicateDelivery,
            "{}",
            b.name
        );
    }
}

#[tokio::test]
async fn concurrent_accepts_are_all_stored() {
    for b in backends().await {
        let mut tasks = Vec::new();
        for i in 0..200 {
            let s = b.store.clone();
            tasks.push(tokio::spawn(async move {
                s.accept(accepted(
                    &format!("github:acme/ops#{i}"),
                    &format!("d{i}"),
                    &format!("k{i}"),
                ))
                .await
                .unwrap()
            }));
        }
        for task in tasks {
            assert_eq!(task.await.unwrap(), AcceptOutcome::Stored, "{}", b.name);
        }
        assert_eq!(b.store.counts().await.unwrap().pending, 200, "{}", b.name);
    }
}

/// Three handles on one database, as three replicas: the same retried webhook arriving at
/// all of them at once is stored once, and their claims never hand out an item twice.
#[tokio::test]
async fn replicas_on_one_postgres_store_once_and_never_claim_the_same_item() {
    let Some(admin) = crate::common::pg::admin_url() else {
        return;
    };
    let url = StoreUrl::parse(&crate::common::pg::fresh_database(&admin).await).unwrap();
    let replicas: Vec<Arc<dyn Store>> = vec![open(&url).await, open(&url).await, open(&url).await];

    let mut tasks = Vec::new();
    for i in 0..100 {
        for r in &replicas {
            let r = r.clone();
            tasks.push(tokio::spawn(async move {
                r.accept(accepted(
                    &format!("github:acme/ops#{i}"),
                    &format!("d{i}"),
                    &format!("k{i}"),
                ))
                .await
                .unwrap()
            }));
        }
    }
    let mut stored = 0;
    for task in tasks {
        if task.await.unwrap() == AcceptOutcome::Stored {
            stored += 1;
        }
    }
    assert_eq!(
        stored, 100,
        "each delivery is stored by exactly one replica"
    );
    assert_eq!(replicas[0].counts().await.unwrap().pending, 100);

    let now = now_ms() + 10;
    let mut claims = Vec::new();
    for _ in 0..5 {
        for r in &replicas {
            let r = r.clone();
            claims.push(tokio::spawn(async move {
                r.claim_due("github", now, 5, LEASE).await.unwrap()
            }));
        }
    }
    let mut seen = HashSet::new();
    for claim in claims {
        for item in claim.await.unwrap() {
            assert!(seen.insert(item.id), "item {} was claimed twice", item.id);
        }
    }
    assert_eq!(seen.len(), 75);
}

#[tokio::test]
async fn migrations_are_idempotent_and_safe_to_run_concurrently() {
    let Some(admin) = crate::common::pg::admin_url() else {
        return;
    };
    let raw = crate::common::pg::fresh_database(&admin).await;
    let opened = futures::future::join_all(
        (0..4).map(|_| runlink::outbox::postgres::PostgresStore::open(&raw)),
    )
    .await;
    let stores: Vec<_> = opened
        .into_iter()
        .map(|store| store.expect("every replica starts"))
        .collect();
    for store in &stores {
        assert_eq!(store.migrate().await.unwrap(), 10);
    }
    // Replicas starting together each offer a secret of their own; all get the first one
    // stored, and so does a later start.
    let offered: Vec<String> = (0..stores.len()).map(|i| format!("secret-{i}")).collect();
    let kept = futures::future::join_all(
        stores
            .iter()
            .zip(&offered)
            .map(|(store, fresh)| store.stored_secret("marker", fresh)),
    )
    .await;
    let kept: Vec<String> = kept.into_iter().map(|k| k.unwrap()).collect();
    assert!(offered.contains(&kept[0]), "{kept:?}");
    assert!(kept.iter().all(|k| *k == kept[0]), "{kept:?}");
    let later = stores[0].stored_secret("marker", "later").await.unwrap();
    assert_eq!(later, kept[0]);
}

/// A worker whose lease ran out must not overwrite the new owner's claim, and an item given
/// back unsent is due at once, possibly posted only if an earlier owner's claim was unsettled.
#[tokio::test]
async fn only_the_lease_holder_settles_and_released_items_keep_their_uncertainty() {
    for b in backends().await {
        let s = &b.store;
        s.accept(accepted("github:acme/ops#1", "d1", "k1"))
            .await
            .unwrap();
        let now = now_ms() + 10;
        let old = s
            .claim_due("github", now, 10, LEASE)
            .await
            .unwrap()
            .remove(0);
        assert!(s.sending(&old).await.unwrap(), "{}", b.name);
        let new = s
            .claim_due("github", now + 31_000, 10, LEASE)
            .await
            .unwrap()
            .remove(0);
        s.settle(
            &old,
            Settle::Dead {
                error: "stale".into(),
            },
            event(),
        )
        .await
        .unwrap();
        assert_eq!(
            s.counts().await.unwrap().dead,
            0,
            "{}: stale settle ignored",
            b.name
        );
        s.release(&old).await.unwrap();
        assert!(
            s.claim_due("github", now + 31_000, 10, LEASE)
                .await
                .unwrap()
                .is_empty(),
            "{}: a stale release leaves the new lease alone",
            b.name
        );
        // `new` was claimed after `old` started sending and its lease ran out unsettled:
        // `old` may have posted.
        assert!(new.uncertain, "{}: an unsettled claim before", b.name);
        s.release(&new).await.unwrap();
        let again = s
            .claim_due("github", now + 31_000, 10, LEASE)
            .await
            .unwrap();
        assert_eq!(again.len(), 1, "{}: released items are due at once", b.name);
        assert!(
            again[0].uncertain,
            "{}: giving it back does not forget that an earlier owner may have posted",
            b.name
        );

        // An item claimed certain and given back unsent stays certain.
        s.accept(accepted("github:acme/ops#2", "d2", "k2"))
            .await
            .unwrap();
        assert_eq!(s.counts().await.unwrap().pending, 2, "{}", b.name);
        let claim_k2 = async || {
            s.claim_due("github", now + 62_000, 10, LEASE)
                .await
                .unwrap()
                .into_iter()
                .find(|i| i.delivery_key == "k2")
        };
        let fresh = claim_k2().await.expect("k2 is due");
        assert!(!fresh.uncertain, "{}: first claim", b.name);
        s.release(&fresh).await.unwrap();
        let back = claim_k2().await;
        assert!(back.is_some(), "{}: released", b.name);
        assert!(!back.unwrap().uncertain, "{}: nothing was sent", b.name);
    }
}

#[tokio::test]
async fn a_destinations_pause_is_shared_and_only_ever_extended() {
    for b in backends().await {
        let s = &b.store;
        assert_eq!(s.paused_until("github").await.unwrap(), 0, "{}", b.name);
        s.pause("github", 5_000).await.unwrap();
        s.pause("github", 3_000).await.unwrap();
        assert_eq!(s.paused_until("github").await.unwrap(), 5_000, "{}", b.name);
        s.pause("github", 9_000).await.unwrap();
        assert_eq!(s.paused_until("github").await.unwrap(), 9_000);
        assert_eq!(s.paused_until("jira").await.unwrap(), 0);
        assert_eq!(s.shared(), b.name == "postgres");
    }
}

/// A reply target's last comment takes in the target's other pending alerts, once: a retry
/// of it lists the same ones; an alert over the cap is recorded as folded.
#[tokio::test]
async fn a_reply_targets_last_comment_takes_in_its_other_alerts() {
    for b in backends().await {
        let s = &b.store;
        // Every `accepted` ticket replies on acme/ops#1.
        for n in 1..=4 {
            s.accept(accepted(
                &format!("github:acme/ops#{n}"),
                &format!("d{n}"),
                &format!("k{n}"),
            ))
            .await
            .unwrap();
        }
        assert_eq!(s.counts().await.unwrap().pending, 4, "{}", b.name);
        let now = now_ms() + 10;
        let since = now - 3_600_000;
        let items = s.claim_due("github", now, 2, LEASE).await.unwrap();
        assert_eq!(items.len(), 2, "{}", b.name);
        assert_eq!(
            s.target_load(&items[0], since).await.unwrap(),
            TargetLoad::default(),
            "{}: nothing posted yet",
            b.name
        );
        assert!(s.sending(&items[0]).await.unwrap());
        assert_eq!(
            s.target_load(&items[1], since).await.unwrap().comments,
            1,
            "{}: a send in flight counts",
            b.name
        );
        s.settle(&items[0], Settle::Delivered, event())
            .await
            .unwrap();
        assert_eq!(
            s.target_load(&items[1], since).await.unwrap().comments,
            1,
            "{}: a posted comment counts",
            b.name
        );
        assert_eq!(
            s.target_load(&items[1], now + 10).await.unwrap().comments,
            0,
            "{}: only within the window",
            b.name
        );

        let fold = s
            .fold_into(&items[1], now)
            .await
            .unwrap()
            .expect("lease held");
        assert_eq!(fold.newly_folded, 2, "{}", b.name);
        let tickets: Vec<_> = fold.lines.iter().map(|l| l.ticket.as_str()).collect();
        assert_eq!(
            tickets,
            ["github:acme/ops#3", "github:acme/ops#4"],
            "{}",
            b.name
        );
        assert_eq!(
            fold.lines[0].summary,
            "github:acme/ops#3 → [Disk](https://r/disk)"
        );
        assert!(s.target_load(&items[1], since).await.unwrap().holds_folds);
        let again = s.fold_into(&items[1], now).await.unwrap().unwrap();
        assert_eq!(
            (again.newly_folded, again.lines),
            (0, fold.lines.clone()),
            "{}: a retry lists the same alerts",
            b.name
        );
        let counts = s.counts().await.unwrap();
        assert_eq!(
            (counts.pending, counts.delivered, counts.folded),
            (1, 1, 2),
            "{}",
            b.name
        );
        let trail = s
            .audit_log(AuditQuery {
                ticket: Some("github:acme/ops#3".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(
            trail.iter().any(|r| matches!(
                &r.event,
                AuditEvent::Folded { into: Some(into), .. } if into == "k2"
            )),
            "{}: {trail:?}",
            b.name
        );
        // A claim that lost its lease folds nothing.
        let stale = runlink::outbox::OutboxItem {
            lease_until_ms: 1,
            ..items[1].clone()
        };
        assert!(s.fold_into(&stale, now).await.unwrap().is_none());

        // Later, with the last comment out: over the cap, recorded only.
        s.settle(&items[1], Settle::Delivered, event())
            .await
            .unwrap();
        assert_eq!(
            s.accept(accepted("github:acme/ops#5", "d5", "k5"))
                .await
                .unwrap(),
            AcceptOutcome::Stored
        );
        assert_eq!(s.counts().await.unwrap().pending, 1, "{}", b.name);
        let late = s
            .claim_due("github", now_ms() + 10, 5, LEASE)
            .await
            .unwrap();
        assert_eq!(late.len(), 1, "{}", b.name);
        assert_eq!(s.target_load(&late[0], since).await.unwrap().comments, 2);
        s.settle(
            &late[0],
            Settle::Folded {
                reason: "over the cap".into(),
            },
            event(),
        )
        .await
        .unwrap();
        let counts = s.counts().await.unwrap();
        assert_eq!((counts.pending, counts.folded), (0, 3), "{}", b.name);
        let folded = s.list(Some(ItemState::Folded), 10).await.unwrap();
        assert_eq!(folded.len(), 3, "{}", b.name);
    }
}

fn feedback(delivery: &str, kind: runlink::feedback::FeedbackKind) -> runlink::feedback::Feedback {
    runlink::feedback::Feedback {
        at_ms: now_ms(),
        source: "github".into(),
        delivery: delivery.into(),
        ticket: "github:acme/ops#1".into(),
        author: "ana".into(),
        kind,
        runbook: Some("host/disk-full.md".into()),
        lesson_key: Some("alert:diskfull".into()),
        signature: "DiskFull: disk full".into(),
        alertname: Some("DiskFull".into()),
        answered: None,
        answered_confident: false,
        answered_taught: false,
        index_version: "v1".into(),
    }
}

#[tokio::test]
async fn feedback_is_recorded_once_read_back_and_forgotten_with_audit_events() {
    use runlink::feedback::FeedbackKind;
    for b in backends().await {
        let store = &b.store;
        let first = store
            .record_feedback(&feedback("c-1", FeedbackKind::Use))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{}: first record", b.name));
        // The same comment event again (a sender's retry) records nothing.
        let again = store
            .record_feedback(&feedback("c-1", FeedbackKind::Use))
            .await
            .unwrap();
        assert_eq!(again, None, "{}", b.name);
        let second = store
            .record_feedback(&feedback("c-2", FeedbackKind::Right))
            .await
            .unwrap()
            .unwrap();
        assert!(second > first, "{}", b.name);

        let rows = store.feedback_since(0).await.unwrap();
        assert_eq!(rows.len(), 2, "{}", b.name);
        assert_eq!(rows[0].id, first);
        let mut expected = feedback("c-1", FeedbackKind::Use);
        expected.at_ms = rows[0].feedback.at_ms;
        assert_eq!(rows[0].feedback, expected, "{}", b.name);
        assert!(store.forget_feedback(first).await.unwrap(), "{}", b.name);
        assert!(!store.forget_feedback(first).await.unwrap(), "{}", b.name);
        assert!(!store.forget_feedback(9_999).await.unwrap(), "{}", b.name);
        let rows = store.feedback_since(0).await.unwrap();
        assert!(rows[0].forgotten_ms.is_some() && rows[1].forgotten_ms.is_none());
        let kinds: Vec<String> = store
            .audit_log(AuditQuery::default())
            .await
            .unwrap()
            .iter()
            .map(|r| r.event.kind().to_string())
            .collect();
        assert_eq!(
            kinds,
            ["feedback", "feedback", "feedback_forgotten"],
            "{}",
            b.name
        );
    }
}

#[tokio::test]
async fn a_ticket_is_found_by_its_id_and_a_reply_is_queued_once() {
    for b in backends().await {
        let store = &b.store;
        assert!(
            store
                .ticket(&TicketId::parse("github:acme/ops#1").unwrap())
                .await
                .unwrap()
                .is_none()
        );
        store
            .accept(accepted("github:acme/ops#1", "d-1", "k-1"))
            .await
            .unwrap();
        let found = store
            .ticket(&TicketId::parse("github:acme/ops#1").unwrap())
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{}: ticket by id", b.name));
        assert_eq!(found.ticket.title, "Disk full");

        let reply = accepted("github:acme/ops#1", "d-1", "reply-1")
            .delivery
            .unwrap();
        let ticket = TicketId::parse("github:acme/ops#1").unwrap();
        let refused = AuditEvent::FeedbackRefused {
            author: "bo".into(),
            reason: "no runbook `x`".into(),
        };
        assert!(
            store
                .enqueue_reply(&ticket, reply.clone(), refused.clone())
                .await
                .unwrap()
        );
        assert!(
            !store.enqueue_reply(&ticket, reply, refused).await.unwrap(),
            "{}",
            b.name
        );
        let due = store
            .claim_due("github", now_ms() + 1, 10, LEASE)
            .await
            .unwrap();
        assert_eq!(
            due.len(),
            2,
            "{}: the accept's comment and the reply",
            b.name
        );
        assert!(due.iter().any(|i| i.delivery_key == "reply-1"));
    }
}

fn decided(ticket: &str, delivery: &str, key: &str, runbook: Option<&str>) -> Accepted {
    let mut accepted = accepted(ticket, delivery, key);
    accepted.events.push(AuditEvent::Decided {
        signature: format!("sig of {ticket}"),
        confident: runbook.is_some(),
        candidates: vec![runlink::audit::AuditCandidate {
            runbook: runbook.unwrap_or("host/high-cpu.md").into(),
            score: 1.0,
            confidence: if runbook.is_some() { 0.9 } else { 0.2 },
            confident: runbook.is_some(),
            reason: "full_text".into(),
        }],
        index_version: "v".into(),
        probe: false,
    });
    accepted
}

#[tokio::test]
async fn the_console_index_follows_every_decision_and_filters_by_what_is_set() {
    use runlink::outbox::console::TicketFilter;
    for b in backends().await {
        let store = &b.store;
        store
            .accept(decided(
                "github:acme/ops#1",
                "d-1",
                "k-1",
                Some("host/disk-full.md"),
            ))
            .await
            .unwrap();
        store
            .accept(decided("github:acme/ops#2", "d-2", "k-2", None))
            .await
            .unwrap();
        store
            .accept(decided("github:acme/ops#3", "d-3", "k-3", None))
            .await
            .unwrap();
        // The console reads what the tables hold (it never waits out a burst); counts
        // does wait, so after it the three accepts are there.
        store.counts().await.unwrap();
        let all = store
            .console_tickets(&TicketFilter {
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        let ids: Vec<&str> = all.iter().map(|t| t.ticket.as_str()).collect();
        assert_eq!(
            ids,
            [
                "github:acme/ops#3",
                "github:acme/ops#2",
                "github:acme/ops#1"
            ],
            "{}",
            b.name
        );
        assert_eq!(all[2].outcome, "text");
        assert_eq!(all[2].runbook.as_deref(), Some("host/disk-full.md"));
        assert_eq!(all[0].destination.as_deref(), Some("github"), "{}", b.name);
        let none = store
            .console_tickets(&TicketFilter {
                outcome: Some("none".into()),
                before: Some(all[0].id),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(none.len(), 1, "{}", b.name);
        assert_eq!(none[0].ticket, "github:acme/ops#2");
        let found = store
            .console_tickets(&TicketFilter {
                text: Some("disk".into()),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(found.len(), 3, "every title says Disk full: {}", b.name);
        let summary = store.console_summary(0).await.unwrap();
        let mut outcomes = summary.outcomes.clone();
        outcomes.sort();
        assert_eq!(
            outcomes,
            [("none".to_string(), 2), ("text".to_string(), 1)],
            "{}",
            b.name
        );
        assert_eq!(
            store.console_runbooks(0).await.unwrap(),
            [("host/disk-full.md".to_string(), 1)]
        );
        let gaps = store.console_gaps(0, 10).await.unwrap();
        assert_eq!(gaps.len(), 2, "{}", b.name);
        assert!(gaps.iter().all(|g| g.tickets == 1));
    }
}
