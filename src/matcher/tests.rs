use super::*;
use crate::signature::Normalizer;
use std::path::Path;
use url::Url;

fn matcher(docs: &[(&str, &str)]) -> Matcher {
    let base = Url::parse("https://x.example/").unwrap();
    let runbooks = docs
        .iter()
        .map(|(p, s)| Runbook::parse(Path::new(p), s, &base).unwrap())
        .collect();
    Matcher::new(
        Arc::new(RunbookIndex::build(runbooks).unwrap()),
        MatcherSettings {
            top_k: 3,
            min_confidence: 0.5,
        },
    )
}

fn signature(title: &str, alertname: Option<&str>) -> AlarmSignature {
    let ticket = crate::ingest::manual::ManualTicket {
        title: title.into(),
        alertname: alertname.map(str::to_string),
        ..Default::default()
    }
    .into_ticket(0);
    AlarmSignature::of(&ticket, &Normalizer::default())
}

const DOCS: &[(&str, &str)] = &[
    (
        "disk.md",
        "---\nalarms: [HostOutOfDiskSpace]\n---\n# Disk space\n\n## Meaning\n\nA filesystem is almost full of data.\n",
    ),
    (
        "cpu.md",
        "---\nmatch: ['cpu (usage|load) (is )?high']\n---\n# High CPU\n\n## Meaning\n\nProcessor saturation.\n",
    ),
    (
        "KubePodCrashLooping.md",
        "# KubePodCrashLooping\n\n## Meaning\n\nA pod container keeps restarting.\n",
    ),
];

#[test]
fn exact_alarm_name_beats_everything_case_insensitively() {
    let m = matcher(DOCS);
    let d = m
        .decide(&signature("x", Some("hostoutofdiskspace")), 3)
        .unwrap();
    assert_eq!(d.candidates[0].runbook.id.as_str(), "disk.md");
    assert!(d.is_confident());
    assert!(matches!(d.candidates[0].reason, MatchReason::Alarm { .. }));
}

#[test]
fn file_stem_is_an_alarm_name() {
    let m = matcher(DOCS);
    let d = m
        .decide(&signature("[FIRING:1] KubePodCrashLooping", None), 3)
        .unwrap();
    assert_eq!(
        d.candidates[0].runbook.id.as_str(),
        "KubePodCrashLooping.md"
    );
}

#[test]
fn match_rule_fires_on_the_text() {
    let m = matcher(DOCS);
    let d = m
        .decide(&signature("CPU load is high on web-1", None), 3)
        .unwrap();
    assert_eq!(d.candidates[0].runbook.id.as_str(), "cpu.md");
    assert!(matches!(d.candidates[0].reason, MatchReason::Rule { .. }));
}

#[test]
fn full_text_finds_the_runbook_by_description() {
    let m = matcher(DOCS);
    let d = m
        .decide(&signature("container keeps restarting in pod", None), 3)
        .unwrap();
    assert_eq!(
        d.candidates[0].runbook.id.as_str(),
        "KubePodCrashLooping.md"
    );
    assert!(d.is_confident(), "{:?}", d.candidates[0].confidence);
}

#[test]
fn unrelated_text_is_not_confident() {
    let m = matcher(DOCS);
    let d = m
        .decide(
            &signature("payment gateway returns invoices twice", None),
            3,
        )
        .unwrap();
    assert!(!d.is_confident());
}

/// Sibling runbooks that plain BM25 confuses: the same words, a different condition.
const SIBLINGS: &[(&str, &str)] = &[
    (
        "node/NodeFilesystemSpaceFillingUp.md",
        "# NodeFilesystemSpaceFillingUp\n\n## Meaning\n\nThe free disk space of a filesystem is predicted to run out within hours, extrapolated from its recent usage trend.\n\n## Diagnosis\n\nCheck which directories grow with du.\n",
    ),
    (
        "node/NodeFilesystemAlmostOutOfSpace.md",
        "# NodeFilesystemAlmostOutOfSpace\n\n## Meaning\n\nA filesystem has less than a few percent of its space left.\n\n## Diagnosis\n\nFree space now: remove old logs and images.\n",
    ),
    (
        "node/NodeFilesystemFilesFillingUp.md",
        "# NodeFilesystemFilesFillingUp\n\n## Meaning\n\nThe free inodes of a filesystem are predicted to run out within hours.\n\n## Diagnosis\n\nFind directories with many small files.\n",
    ),
    (
        "node/NodeFilesystemAlmostOutOfFiles.md",
        "# NodeFilesystemAlmostOutOfFiles\n\n## Meaning\n\nA filesystem has less than a few percent of its inodes left; new files cannot be created.\n\n## Diagnosis\n\nDelete stale small files.\n",
    ),
    (
        "kubernetes/KubeAPIDown.md",
        "# KubeAPIDown\n\n## Meaning\n\nThe Kubernetes API server target disappeared from Prometheus target discovery.\n",
    ),
    (
        "kubernetes/KubeSchedulerDown.md",
        "# KubeSchedulerDown\n\n## Meaning\n\nThe Kubernetes scheduler target disappeared from Prometheus target discovery; new pods are not scheduled.\n",
    ),
    (
        "kubernetes/KubeControllerManagerDown.md",
        "# KubeControllerManagerDown\n\n## Meaning\n\nThe Kubernetes controller manager target disappeared from Prometheus target discovery.\n",
    ),
    (
        "kubernetes/KubeDeploymentReplicasMismatch.md",
        "# KubeDeploymentReplicasMismatch\n\n## Meaning\n\nA deployment has not matched the expected number of replicas for a while.\n",
    ),
    (
        "kubernetes/KubeStatefulSetReplicasMismatch.md",
        "# KubeStatefulSetReplicasMismatch\n\n## Meaning\n\nA StatefulSet has not matched the expected number of replicas for a while.\n",
    ),
    (
        "kubernetes/KubeHpaReplicasMismatch.md",
        "# KubeHpaReplicasMismatch\n\n## Meaning\n\nA horizontal pod autoscaler has not matched the desired number of replicas.\n",
    ),
];

fn best(m: &Matcher, title: &str) -> String {
    let d = m.decide(&signature(title, None), 3).unwrap();
    d.candidates[0].runbook.id.to_string()
}

#[test]
fn inodes_are_not_space() {
    let m = matcher(SIBLINGS);
    let got = best(&m, "Inodes exhausted on build agent");
    assert!(got.contains("Files"), "{got}");
    let got = best(&m, "Filesystem on db-3 has less than 4% space left");
    assert_eq!(got, "node/NodeFilesystemAlmostOutOfSpace.md");
}

#[test]
fn filling_up_is_not_almost_out() {
    let m = matcher(SIBLINGS);
    assert_eq!(
        best(&m, "Disk on logs-1 will fill up within 4 hours"),
        "node/NodeFilesystemSpaceFillingUp.md"
    );
    assert_eq!(
        best(&m, "Filesystem on web-2 has less than 3% inodes left"),
        "node/NodeFilesystemAlmostOutOfFiles.md"
    );
}

#[test]
fn down_family_is_told_apart_by_the_component() {
    let m = matcher(SIBLINGS);
    assert_eq!(
        best(&m, "Kube scheduler has disappeared from target discovery"),
        "kubernetes/KubeSchedulerDown.md"
    );
    assert_eq!(
        best(
            &m,
            "KubeControllerManager has disappeared from Prometheus target discovery"
        ),
        "kubernetes/KubeControllerManagerDown.md"
    );
}

#[test]
fn replicas_mismatch_family_is_told_apart_by_the_workload() {
    let m = matcher(SIBLINGS);
    assert_eq!(
        best(
            &m,
            "StatefulSet shop/web has not matched the expected number of replicas"
        ),
        "kubernetes/KubeStatefulSetReplicasMismatch.md"
    );
    assert_eq!(
        best(
            &m,
            "HPA shop/api has not matched the desired number of replicas"
        ),
        "kubernetes/KubeHpaReplicasMismatch.md"
    );
}

/// With the model, a text winner the words alone did not rank first is never confident, and
/// a winner both signals agree on can be. Runbooks that share words with one ticket and
/// meaning with another make the signals disagree.
#[test]
fn a_winner_the_words_did_not_choose_is_not_confident() {
    let Some(model) = crate::semantic::test_model() else {
        return;
    };
    let matcher = matcher(&[
        (
            "crash.md",
            "# Container crash loop\n\n## Meaning\n\nA container exits soon after it starts and the kubelet backs off before the next attempt.\n",
        ),
        (
            "backup.md",
            "# Restarting the nightly backup\n\n## Meaning\n\nHow to restart the backup job repeatedly skipped by the scheduler in namespace shop.\n",
        ),
        (
            "disk.md",
            "# Disk space\n\n## Meaning\n\nA filesystem is almost full of data.\n",
        ),
    ]);
    let semantic = crate::semantic::SemanticIndex::build(
        Arc::new(model),
        matcher.index().runbooks(),
        None,
        "",
    )
    .unwrap();
    let matcher = matcher.with_semantic(Semantic {
        index: Arc::new(semantic),
        weight: 0.6,
    });
    let mut disagreed = 0;
    for title in [
        "pods restarting repeatedly in namespace shop",
        "pods keep dying and coming back over and over in namespace shop",
        "pod keeps crashing right after start, back-off restarting failed container",
        "filesystem on db-1 is almost full",
    ] {
        let decision = matcher.decide(&signature(title, None), 3).unwrap();
        let first = &decision.candidates[0];
        let MatchReason::FullText { lexical_rank, .. } = &first.reason else {
            panic!("a text answer: {:?}", first.reason);
        };
        if *lexical_rank != Some(1) {
            disagreed += 1;
            assert!(!first.confident, "{title}: {first:?}");
        }
    }
    assert!(disagreed > 0, "no ticket made the two signals disagree");
    let agreed = matcher
        .decide(
            &signature("filesystem on db-1 is almost full of data", None),
            3,
        )
        .unwrap();
    assert_eq!(agreed.candidates[0].runbook.id.as_str(), "disk.md");
    assert!(agreed.is_confident(), "{:?}", agreed.candidates[0]);
}

fn taught(alarm: &str, runbook: &str) -> crate::feedback::Lessons {
    let row = crate::feedback::FeedbackRow {
        id: 7,
        forgotten_ms: None,
        feedback: crate::feedback::Feedback {
            at_ms: 1_764_720_000_000,
            source: "github".into(),
            delivery: "d".into(),
            ticket: "github:acme/ops#3".into(),
            author: "ana".into(),
            kind: crate::feedback::FeedbackKind::Use,
            runbook: Some(runbook.into()),
            lesson_key: Some(format!("alert:{}", alarm.to_lowercase())),
            signature: String::new(),
            alertname: Some(alarm.into()),
            answered: None,
            answered_confident: false,
            answered_taught: false,
            index_version: String::new(),
        },
    };
    crate::feedback::Lessons::from_rows(&[row], 1)
}

#[test]
fn a_taught_answer_is_confident_above_text_and_below_explicit_rules() {
    let m = matcher(DOCS);
    let lessons = taught("PodsRestarting", "KubePodCrashLooping.md");
    let sig = signature("processor saturation on node", Some("PodsRestarting"));
    let d = m.decide_with(&sig, 3, Some(&lessons)).unwrap();
    assert_eq!(
        d.candidates[0].runbook.id.as_str(),
        "KubePodCrashLooping.md"
    );
    assert!(d.is_confident());
    assert_eq!(
        d.candidates[0].reason.describe(),
        "taught by ana in github:acme/ops#3 on 2025-12-03"
    );
    // Without the lesson the words decide.
    let d = m.decide(&sig, 3).unwrap();
    assert_ne!(
        d.candidates[0].runbook.id.as_str(),
        "KubePodCrashLooping.md"
    );

    // The corpus's own alarm names still win over a lesson.
    let lessons = taught("HostOutOfDiskSpace", "cpu.md");
    let d = m
        .decide_with(
            &signature("x", Some("HostOutOfDiskSpace")),
            3,
            Some(&lessons),
        )
        .unwrap();
    assert_eq!(d.candidates[0].runbook.id.as_str(), "disk.md");
    assert_eq!(d.candidates[1].runbook.id.as_str(), "cpu.md");
}

#[test]
fn not_alarms_keeps_a_runbook_from_answering_that_alarm_by_text() {
    let docs = [
        DOCS[0],
        (
            "restarts.md",
            "---\nnot_alarms: [KubeContainerWaiting]\n---\n# Container restarts\n\n## Meaning\n\nA pod container keeps restarting.\n",
        ),
    ];
    let m = matcher(&docs);
    let text = "pod container keeps restarting";
    let d = m
        .decide(&signature(text, Some("KubeContainerWaiting")), 3)
        .unwrap();
    assert!(
        d.candidates
            .iter()
            .all(|c| c.runbook.id.as_str() != "restarts.md")
    );
    let d = m.decide(&signature(text, Some("Other")), 3).unwrap();
    assert_eq!(d.candidates[0].runbook.id.as_str(), "restarts.md");
}
