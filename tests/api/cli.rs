//! The command-line tools, run as the real binary.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use crate::common::repo_path;

fn runlink(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_runlink"))
        .args(args)
        .env("RUST_LOG", "error")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn match_writes_one_ranked_line_per_ticket() {
    let runbooks = repo_path("index/runbooks");
    let input = "{\"title\":\"[FIRING:1] KubePodCrashLooping\"}\nnot json\n{\"title\":\"Inodes exhausted on build agent\"}\n";
    let out = runlink(
        &[
            "match",
            "--runbooks",
            runbooks.to_str().unwrap(),
            "--top",
            "2",
        ],
        Some(input),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(
        lines[0]["matches"][0]["runbook"],
        "kubernetes/pod-crash-looping.md"
    );
    assert_eq!(lines[0]["matches"][0]["confident"], true);
    assert!(lines[0]["matches"].as_array().unwrap().len() <= 2);
    assert!(lines[1]["error"].as_str().unwrap().contains("line 2"));
    assert_eq!(
        lines[2]["matches"][0]["runbook"],
        "host/inodes-exhausted.md"
    );
}

#[test]
fn lint_accepts_the_bundled_runbooks() {
    let runbooks = repo_path("index/runbooks");
    let out = runlink(&["lint", "--runbooks", runbooks.to_str().unwrap()], None);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stderr).contains("0 error(s)"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn lint_fails_on_planted_errors_naming_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.md"),
        "---\nalrms: [DiskFull]\nalarms: [DiskFull]\n---\n# A\n\n## Diagnosis\n\n- `kubectl delete pod web-1`\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("b.md"),
        "---\nalarms: [DiskFull]\n---\n# B\n\n## Diagnosis\n\n- check\n",
    )
    .unwrap();
    let out = runlink(&["lint", "--runbooks", dir.path().to_str().unwrap()], None);
    assert!(!out.status.success());
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(
            "a.md:2: warning: key `alrms`: unknown front matter key (did you mean `alarms`?)"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "a.md:3: error: key `alarms`: alarm `diskfull` is claimed by several runbooks"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("a.md:9: error: key `first_steps`: first step runs a destructive command (`kubectl delete`)"), "{stdout}");
}

#[test]
fn explain_shows_the_signature_the_candidates_and_the_decision() {
    let runbooks = repo_path("index/runbooks");
    let out = runlink(
        &["explain", "-", "--runbooks", runbooks.to_str().unwrap()],
        Some("{\"title\":\"Disk on logs-1 will fill up within 4 hours\"}"),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("title        Disk on <host> will fill up within <qty>"),
        "{stdout}"
    );
    assert!(stdout.contains("1. host/disk-full.md"), "{stdout}");
    assert!(
        stdout.contains("decision: link host/disk-full.md (match rule"),
        "{stdout}"
    );

    let out = runlink(
        &[
            "explain",
            "-",
            "--json",
            "--source",
            "alertmanager",
            "--runbooks",
            runbooks.to_str().unwrap(),
        ],
        Some(include_str!("../fixtures/alertmanager-firing.json")),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(v["signature"]["alertname"], "HighErrorRate");
    assert_eq!(v["candidates"][0]["runbook"], "service/http-5xx-errors.md");
    assert_eq!(v["confident"], true);
}

#[test]
fn a_bad_config_stops_with_a_message_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[server]\nlisten = \"not-an-address\"\n").unwrap();
    let out = runlink(&["serve", "--config", config.to_str().unwrap()], None);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("server.listen"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn golden_cases_of_the_bundled_runbooks_pass() {
    let runbooks = repo_path("index/runbooks");
    let out = runlink(&["test", "--runbooks", runbooks.to_str().unwrap()], None);
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains(" passed, 0 failed"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn a_failing_golden_case_fails_the_run_with_its_explanation() {
    let dir = tempfile::tempdir().unwrap();
    let cases = dir.path().join("cases.yaml");
    std::fs::write(
        &cases,
        "- name: wrong on purpose\n  ticket: { title: \"[FIRING:1] KubePodCrashLooping\" }\n  expect: host/disk-full.md\n",
    )
    .unwrap();
    let runbooks = repo_path("index/runbooks");
    let out = runlink(
        &[
            "test",
            cases.to_str().unwrap(),
            "--runbooks",
            runbooks.to_str().unwrap(),
        ],
        None,
    );
    assert!(!out.status.success());
    let stdout = text(&out.stdout);
    assert!(stdout.contains("FAIL"), "{stdout}");
    assert!(
        stdout.contains("expected host/disk-full.md, got kubernetes/pod-crash-looping.md"),
        "{stdout}"
    );
    assert!(
        stdout.contains("1. kubernetes/pod-crash-looping.md"),
        "{stdout}"
    );
}

/// `runlink migrate` creates the PostgreSQL schema, is idempotent, and the operator tools
/// then read that store like the embedded one.
#[tokio::test]
async fn migrate_and_the_outbox_tools_work_on_postgres() {
    let Some(admin) = crate::common::pg::admin_url() else {
        return;
    };
    // The test cluster trusts loopback; the password is there to be kept out of the output.
    let url =
        crate::common::pg::fresh_database(&admin)
            .await
            .replacen("runlink@", "runlink:hunter2@", 1);
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_runlink"))
            .args(args)
            .env("RUST_LOG", "warn")
            .env("RUNLINK__STORE__URL", &url)
            .output()
            .unwrap()
    };
    for _ in 0..2 {
        let out = run(&["migrate"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(
            text(&out.stdout).contains("up to date"),
            "{}",
            text(&out.stdout)
        );
        assert!(
            !text(&out.stdout).contains("runlink@"),
            "the URL is printed without secrets"
        );
        assert!(
            text(&out.stderr).is_empty(),
            "no notices: {}",
            text(&out.stderr)
        );
    }
    let out = run(&["outbox", "list", "--dead"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("0 item(s)"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&["outbox", "retry", "--all"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}
