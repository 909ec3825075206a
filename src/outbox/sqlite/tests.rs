use super::*;
use crate::outbox::Enriched;

fn prepared(decided: Option<Decided>) -> Prepared {
    Prepared {
        at_ms: 1_764_000_000_000,
        source: "alertmanager".into(),
        delivery_id: "d-1".into(),
        ticket_id: "alertmanager:abc@2026".into(),
        signature_key: "HighErrorRate|checkout|error rate above <pct>".into(),
        ticket_json: r#"{"title":"Error rate above 5%"}"#.into(),
        events: vec![r#"{"event":"received"}"#.into(), "{}".into()],
        delivery: Some(PreparedDelivery {
            key: "k1".into(),
            destination: "github".into(),
            target_json: r#"{"github_issue":"acme/ops#1"}"#.into(),
            body: "Runbook: ünïcode ✓".into(),
            summary: "Error rate above 5% → Runbook".into(),
        }),
        max_per_ticket: 3,
        decided,
        matched: true,
    }
}

#[test]
fn log_records_read_back_as_written() {
    let entries = [
        Entry::Accept(prepared(None)),
        Entry::Accept(Prepared {
            matched: false,
            ..prepared(None)
        }),
        Entry::Accept(prepared(Some(Decided {
            outcome: AcceptOutcome::CapReached,
            event: Some(r#"{"event":"not_enqueued"}"#.into()),
        }))),
        Entry::Accept(Prepared {
            delivery: None,
            ..prepared(Some(Decided {
                outcome: AcceptOutcome::Stored,
                event: None,
            }))
        }),
        Entry::Audit(AuditRow {
            at_ms: 5,
            ticket: None,
            kind: "reloaded".into(),
            detail: "{}".into(),
        }),
    ];
    for (seq, entry) in entries.iter().enumerate() {
        let decoded = Entry::decode(seq as u64, &entry.encode()).unwrap();
        assert_eq!(&decoded, entry);
    }
}

#[test]
fn a_cut_record_is_an_error_naming_its_sequence_number() {
    let bytes = Entry::Accept(prepared(None)).encode();
    let err = Entry::decode(42, &bytes[..bytes.len() - 3])
        .unwrap_err()
        .to_string();
    assert!(err.contains("record 42"), "{err}");
}

#[test]
fn the_overlay_forgets_only_the_record_that_was_applied() {
    let mut overlay = Overlay::default();
    let p = prepared(Some(Decided {
        outcome: AcceptOutcome::Stored,
        event: None,
    }));
    overlay.add(1, &p, AcceptOutcome::Stored);
    overlay.add(2, &p, AcceptOutcome::Stored);
    assert_eq!(overlay.per_ticket[&p.ticket_id], vec![1, 2]);
    overlay.remove(&Logged {
        seq: 1,
        entry: Entry::Accept(p.clone()),
    });
    // The slot and key now belong to record 2, still waiting.
    assert_eq!(overlay.deliveries[&delivery_slot(&p)], 2);
    assert_eq!(overlay.keys["k1"], 2);
    assert_eq!(overlay.per_ticket[&p.ticket_id], vec![2]);
    overlay.remove(&Logged {
        seq: 2,
        entry: Entry::Accept(p.clone()),
    });
    assert!(overlay.deliveries.is_empty() && overlay.keys.is_empty());
    assert!(overlay.per_ticket.is_empty());
}

#[test]
fn a_failed_write_takes_its_records_and_later_ones_out_of_the_overlay() {
    let mut overlay = Overlay::default();
    let p = |n: u32| Prepared {
        delivery_id: format!("d-{n}"),
        delivery: Some(PreparedDelivery {
            key: format!("k{n}"),
            destination: "github".into(),
            target_json: "{}".into(),
            body: "b".into(),
            summary: String::new(),
        }),
        ..prepared(None)
    };
    for seq in 1..=4 {
        overlay.add(seq, &p(seq as u32), AcceptOutcome::Stored);
    }
    // Records 3 and 4 were decided, then the write of record 3's group failed.
    overlay.forget_from(3);
    assert_eq!(overlay.deliveries.len(), 2);
    assert!(overlay.keys.contains_key("k2") && !overlay.keys.contains_key("k3"));
    assert_eq!(overlay.per_ticket[&p(1).ticket_id], vec![1, 2]);
    overlay.forget_from(1);
    assert!(overlay.deliveries.is_empty() && overlay.keys.is_empty());
    assert!(overlay.per_ticket.is_empty());
}

#[test]
fn the_applier_gathers_while_a_burst_lasts_and_applies_when_it_pauses() {
    let ms = Duration::from_millis;
    // Records still arriving: gather.
    assert!(keep_gathering(1_000, ms(800), ms(1), false));
    // Quiet for long enough, too many held, held too long, or a reader waiting: apply.
    assert!(!keep_gathering(1_000, ms(800), APPLY_QUIET, false));
    assert!(!keep_gathering(DEFER_MAX, ms(800), ms(1), false));
    assert!(!keep_gathering(1_000, DEFER_AGE, ms(1), false));
    assert!(!keep_gathering(1, ms(0), ms(0), true));
}

#[tokio::test]
async fn the_applier_catches_up_on_its_own_once_the_log_is_quiet() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("s.db")).unwrap();
    for n in 0..3 {
        let event = AuditEvent::Received {
            source: "alertmanager".into(),
            delivery: format!("d-{n}"),
            title: "Error rate above 5%".into(),
        };
        store.record(None, event).await.unwrap();
    }
    // Acknowledged records wait for the applier, which starts once arrivals stop; no
    // read hurries it here.
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.backlog() > 0 {
        assert!(Instant::now() < deadline, "never applied");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        store.audit_log(AuditQuery::default()).await.unwrap().len(),
        3
    );
}

#[test]
fn the_outbox_rebuild_keeps_rows_and_its_state_check() {
    let mut conn = Connection::open_in_memory().unwrap();
    conn.execute_batch("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        .unwrap();
    for (i, sql) in MIGRATIONS[..5].iter().enumerate() {
        conn.execute_batch(sql).unwrap();
        conn.execute(
            "INSERT INTO schema_version (version) VALUES (?1)",
            [i as i64 + 1],
        )
        .unwrap();
    }
    conn.execute(
        "INSERT INTO outbox (delivery_key, ticket_id, destination, target, body, state,
                             next_attempt_at, created_at, updated_at, claims)
         VALUES ('k1', 't1', 'github', '{}', 'body', 'dead', 7, 7, 7, 2)",
        [],
    )
    .unwrap();
    migrate(&mut conn).unwrap();
    let row: (String, String, i64) = conn
        .query_row("SELECT delivery_key, state, claims FROM outbox", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap();
    assert_eq!(row, ("k1".to_string(), "dead".to_string(), 2));
    assert!(
        conn.execute("UPDATE outbox SET state = 'lost'", [])
            .is_err()
    );
    // The point of the rebuild: an insert no longer opens a temporary B-tree.
    let ops: Vec<String> = conn
        .prepare(
            "EXPLAIN INSERT INTO outbox (delivery_key, ticket_id, destination, target, body,
                                         state, next_attempt_at, created_at, updated_at)
             VALUES ('k2', 't2', 'github', '{}', 'b', 'pending', 1, 1, 1)",
        )
        .unwrap()
        .query_map([], |r| r.get(1))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(ops.iter().any(|op| op == "Insert"), "{ops:?}");
    assert!(!ops.iter().any(|op| op == "OpenEphemeral"), "{ops:?}");
}

#[tokio::test]
async fn records_left_in_the_log_are_applied_once_when_the_store_opens() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let json = |e: &AuditEvent| serde_json::to_string(e).unwrap();
    let received = AuditEvent::Received {
        source: "alertmanager".into(),
        delivery: "d-1".into(),
        title: "Error rate above 5%".into(),
    };
    let stored = Prepared {
        events: vec![json(&received)],
        decided: Some(Decided {
            outcome: AcceptOutcome::Stored,
            event: Some(json(&AuditEvent::Enqueued {
                delivery_key: "k1".into(),
                destination: "github".into(),
            })),
        }),
        ..prepared(None)
    };
    let duplicate = Prepared {
        decided: Some(Decided {
            outcome: AcceptOutcome::DuplicateDelivery,
            event: Some(json(&AuditEvent::DuplicateDelivery {
                source: "alertmanager".into(),
                delivery: "d-1".into(),
            })),
        }),
        ..stored.clone()
    };
    // A run that acknowledged both and died before applying either.
    let log_dir = journal::dir_for(&db);
    std::fs::create_dir_all(&log_dir).unwrap();
    let (mut log, _) = Journal::start(&log_dir, 1).unwrap();
    let mut framed = Vec::new();
    journal::frame(&mut framed, 1, &Entry::Accept(stored).encode());
    journal::frame(&mut framed, 2, &Entry::Accept(duplicate).encode());
    log.append(&framed, 2).unwrap();
    drop(log);

    let store = SqliteStore::open(&db).unwrap();
    assert_eq!(store.counts().await.unwrap().pending, 1);
    let kinds: Vec<&str> = store
        .audit_log(AuditQuery::default())
        .await
        .unwrap()
        .iter()
        .map(|r| r.event.kind())
        .collect();
    assert_eq!(kinds, ["received", "enqueued", "duplicate_delivery"]);
    drop(store);

    // Applied means applied: a second start finds nothing left to do.
    let store = SqliteStore::open(&db).unwrap();
    assert_eq!(store.counts().await.unwrap().pending, 1);
    assert_eq!(
        store.audit_log(AuditQuery::default()).await.unwrap().len(),
        3
    );
}

/// Matches every ticket the same way, and renders its title with the delivery key.
#[derive(Debug)]
struct StubMatcher {
    fail: bool,
    calls: std::sync::atomic::AtomicUsize,
}

impl StubMatcher {
    fn new(fail: bool) -> Arc<Self> {
        Arc::new(StubMatcher {
            fail,
            calls: Default::default(),
        })
    }
}

impl Enrich for StubMatcher {
    fn enrich(
        &self,
        ticket: &crate::ticket::Ticket,
        delivery: Option<Comment<'_>>,
    ) -> Result<Enriched, EnrichError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.fail {
            return Err(EnrichError("the index is gone".into()));
        }
        if ticket.title.contains("panic") {
            panic!("a template blew up");
        }
        Ok(Enriched {
            decided: AuditEvent::Decided {
                probe: false,
                signature: ticket.title.clone(),
                confident: false,
                candidates: Vec::new(),
                index_version: "v1".into(),
            },
            body: delivery.map(|c| {
                format!(
                    "{} for {} [{}]",
                    ticket.title, c.destination, c.delivery_key
                )
            }),
            summary: format!("{} → runbook", ticket.title),
        })
    }
}

/// A matcher whose runbooks do not load.
#[derive(Debug)]
struct Unready;

impl Enrich for Unready {
    fn ready(&self) -> Result<(), EnrichError> {
        Err(EnrichError("runbooks.dir: no such directory".into()))
    }

    fn enrich(
        &self,
        _: &crate::ticket::Ticket,
        _: Option<Comment<'_>>,
    ) -> Result<Enriched, EnrichError> {
        Err(EnrichError("runbooks.dir: no such directory".into()))
    }
}

fn ticket(n: u32) -> crate::ticket::Ticket {
    use crate::ticket::{DeliveryId, ReplyTarget, SourceKind, TicketId};
    crate::ticket::Ticket {
        id: TicketId::parse(format!("alertmanager:fp{n}")).unwrap(),
        source: SourceKind::Alertmanager,
        delivery: DeliveryId::parse(format!("d-{n}")).unwrap(),
        title: format!("Disk full {n}"),
        body: String::new(),
        labels: Default::default(),
        annotations: Default::default(),
        alertname: None,
        reply: Some(ReplyTarget::GithubIssue {
            owner: "acme".into(),
            repo: "ops".into(),
            number: u64::from(n),
        }),
        query: None,
    }
}

fn unmatched(n: u32) -> Accepted {
    let ticket = ticket(n);
    Accepted {
        events: vec![AuditEvent::Received {
            source: "alertmanager".into(),
            delivery: ticket.delivery.to_string(),
            title: ticket.title.clone(),
        }],
        delivery: Some(crate::outbox::NewDelivery {
            delivery_key: format!("k{n}"),
            destination: "github".into(),
            target: ticket.reply.clone().unwrap(),
            body: String::new(),
            summary: String::new(),
        }),
        signature_key: format!("sig{n}"),
        ticket,
        max_per_ticket: 3,
        matching: Matching::Deferred,
    }
}

async fn kinds(store: &SqliteStore, ticket: &str) -> Vec<String> {
    store
        .audit_log(AuditQuery {
            ticket: Some(ticket.into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .iter()
        .map(|r| r.event.kind().to_string())
        .collect()
}

#[tokio::test]
async fn a_ticket_acknowledged_unmatched_reaches_the_tables_matched() {
    let dir = tempfile::tempdir().unwrap();
    let enrich = StubMatcher::new(false);
    let store = SqliteStore::open_with(&dir.path().join("s.db"), Some(enrich.clone())).unwrap();
    assert!(store.defers_matching());
    assert_eq!(
        store.accept(unmatched(1)).await.unwrap(),
        AcceptOutcome::Stored
    );
    // A redelivery is decided at once, and never matched: nothing of it is written but
    // its audit event.
    assert_eq!(
        store.accept(unmatched(1)).await.unwrap(),
        AcceptOutcome::DuplicateDelivery
    );
    assert_eq!(
        store.body_of("k1").await.unwrap().as_deref(),
        Some("Disk full 1 for github [k1]")
    );
    assert_eq!(
        kinds(&store, "alertmanager:fp1").await,
        ["received", "decided", "enqueued", "duplicate_delivery"]
    );
    assert_eq!(enrich.calls.load(Ordering::SeqCst), 1);
    assert_eq!(store.counts().await.unwrap().pending, 1);
}

#[tokio::test]
async fn a_ticket_that_cannot_be_matched_is_kept_with_the_reason_and_nothing_queued() {
    let dir = tempfile::tempdir().unwrap();
    let store =
        SqliteStore::open_with(&dir.path().join("s.db"), Some(StubMatcher::new(true))).unwrap();
    assert_eq!(
        store.accept(unmatched(2)).await.unwrap(),
        AcceptOutcome::Stored
    );
    assert_eq!(store.body_of("k2").await.unwrap(), None);
    assert_eq!(store.counts().await.unwrap().pending, 0);
    let log = store
        .audit_log(AuditQuery {
            ticket: Some("alertmanager:fp2".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let reasons: Vec<&str> = log
        .iter()
        .filter_map(|r| match &r.event {
            AuditEvent::NotEnqueued { reason } => Some(reason.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(reasons.len(), 1, "{log:?}");
    assert!(reasons[0].contains("the index is gone"), "{}", reasons[0]);
    assert_eq!(
        kinds(&store, "alertmanager:fp2").await,
        ["received", "not_enqueued"]
    );
    assert_eq!(store.tickets_since(0, 10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_panic_while_matching_costs_the_ticket_its_comment_not_the_store_its_applier() {
    let dir = tempfile::tempdir().unwrap();
    let store =
        SqliteStore::open_with(&dir.path().join("s.db"), Some(StubMatcher::new(false))).unwrap();
    let mut doomed = unmatched(5);
    doomed.ticket.title = "panic at the disco".into();
    assert_eq!(store.accept(doomed).await.unwrap(), AcceptOutcome::Stored);
    assert_eq!(
        store.accept(unmatched(6)).await.unwrap(),
        AcceptOutcome::Stored
    );
    assert_eq!(store.body_of("k5").await.unwrap(), None);
    assert_eq!(
        store.body_of("k6").await.unwrap().as_deref(),
        Some("Disk full 6 for github [k6]")
    );
    assert_eq!(
        kinds(&store, "alertmanager:fp5").await,
        ["received", "not_enqueued"]
    );
}

#[tokio::test]
async fn a_store_without_a_matcher_takes_only_matched_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("s.db")).unwrap();
    assert!(!store.defers_matching());
    assert!(store.accept(unmatched(3)).await.is_err());
    assert_eq!(store.counts().await.unwrap().pending, 0);
}

#[tokio::test]
async fn unmatched_records_left_in_the_log_are_matched_when_the_store_opens() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let mut record = Prepared::new(unmatched(4)).unwrap();
    record.decided = Some(Decided {
        outcome: AcceptOutcome::Stored,
        event: Some(
            serde_json::to_string(&AuditEvent::Enqueued {
                delivery_key: "k4".into(),
                destination: "github".into(),
            })
            .unwrap(),
        ),
    });
    // A run that acknowledged it and died before applying it.
    let log_dir = journal::dir_for(&db);
    std::fs::create_dir_all(&log_dir).unwrap();
    let (mut log, _) = Journal::start(&log_dir, 1).unwrap();
    let mut framed = Vec::new();
    journal::frame(&mut framed, 1, &Entry::Accept(record).encode());
    log.append(&framed, 1).unwrap();
    drop(log);

    // Without the runbooks, or with runbooks that do not load, it cannot be applied,
    // and is left in the log for a start that has them.
    match SqliteStore::open(&db) {
        Err(StoreError::Unmatched(1)) => {}
        other => panic!("expected Unmatched(1), got {other:?}"),
    }
    match SqliteStore::open_with(&db, Some(Arc::new(Unready))) {
        Err(StoreError::CannotMatch { records: 1, reason }) => {
            assert!(reason.contains("no such directory"), "{reason}");
        }
        other => panic!("expected CannotMatch, got {other:?}"),
    }
    let enrich = StubMatcher::new(false);
    let store = SqliteStore::open_with(&db, Some(enrich.clone())).unwrap();
    assert_eq!(
        store.body_of("k4").await.unwrap().as_deref(),
        Some("Disk full 4 for github [k4]")
    );
    assert_eq!(
        kinds(&store, "alertmanager:fp4").await,
        ["received", "decided", "enqueued"]
    );
    assert_eq!(enrich.calls.load(Ordering::SeqCst), 1);
}

/// A full disk fails the batch whole: not one acknowledged record is skipped, and once
/// there is room again every record is applied. A record whose delivery is already in the
/// tables is applied without a second delivery, not skipped.
#[test]
fn a_full_disk_skips_no_record_and_a_known_delivery_is_applied_not_skipped() {
    let mut conn = Connection::open_in_memory().unwrap();
    migrate(&mut conn).unwrap();
    let record = |seq: u64, key: &str| Logged {
        seq,
        entry: Entry::Accept(Prepared {
            delivery_id: format!("d-{seq}"),
            ticket_id: format!("alertmanager:t{seq}@2026"),
            ..with_key(key)
        }),
    };
    fn with_key(key: &str) -> Prepared {
        let mut p = prepared(Some(Decided {
            outcome: AcceptOutcome::Stored,
            event: Some(r#"{"event":"enqueued"}"#.into()),
        }));
        if let Some(d) = p.delivery.as_mut() {
            d.key = key.to_string();
            d.body = "x".repeat(2000);
        }
        p
    }
    let batch: Vec<Logged> = (1..=200).map(|n| record(n, &format!("k{n}"))).collect();
    let pages: i64 = conn
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .unwrap();
    conn.pragma_update(None, "max_page_count", pages + 4)
        .unwrap();
    let error = apply_batch(&mut conn, &batch).unwrap_err();
    assert!(environmental(&error), "{error}");
    let applied: i64 = conn
        .query_row("SELECT seq FROM journal_applied", [], |r| r.get(0))
        .unwrap();
    assert_eq!(applied, 0, "nothing was marked applied");

    conn.pragma_update(None, "max_page_count", 1_000_000)
        .unwrap();
    // The same delivery logged twice (a replay): the second is applied without a row.
    let mut batch = batch;
    batch.push(record(201, "k1"));
    assert_eq!(apply_batch(&mut conn, &batch).unwrap(), 201);
    let (tickets, outbox): (i64, i64) = conn
        .query_row(
            "SELECT (SELECT COUNT(*) FROM tickets), (SELECT COUNT(*) FROM outbox)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((tickets, outbox), (201, 200));
}
