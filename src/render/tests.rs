use super::*;
use crate::matcher::{Matcher, MatcherSettings};
use crate::runbooks::Runbook;
use crate::search::RunbookIndex;
use crate::signature::Normalizer;
use std::sync::Arc;

/// The key the renderers under test sign their markers with.
fn key() -> MarkerKey {
    MarkerKey::new(b"test marker secret")
}

fn setup() -> (Renderer, Matcher) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
    let renderer = Renderer::load(&dir, "Nothing found.", TEMPLATES, key()).unwrap();
    let base = url::Url::parse("https://rb.example/").unwrap();
    let rb = Runbook::parse(
        Path::new("disk.md"),
        "---\ntitle: Disk full\nalarms: [DiskFull]\n---\n# Disk\n\n## Diagnosis\n\n- Run `df -h`\n\n```sh\ndu -xh / | sort -h\n```\n\n- Then check growth.\n",
        &base,
    )
    .unwrap();
    let index = Arc::new(RunbookIndex::build(vec![rb]).unwrap());
    let matcher = Matcher::new(
        index,
        MatcherSettings {
            top_k: 3,
            min_confidence: 0.5,
        },
    );
    (renderer, matcher)
}

fn ticket(title: &str) -> Ticket {
    crate::ingest::manual::ManualTicket {
        title: title.into(),
        ..Default::default()
    }
    .into_ticket(0)
}

fn render(title: &str) -> String {
    let (renderer, matcher) = setup();
    let t = ticket(title);
    let sig = AlarmSignature::of(&t, &Normalizer::default());
    let decision = matcher.decide(&sig, 3).unwrap();
    renderer
        .render("github.md.j2", &t, &sig, &decision, "k123")
        .unwrap()
}

#[test]
fn confident_match_shows_link_steps_and_marker() {
    let out = render("[FIRING:1] DiskFull");
    assert!(
        out.contains("**[Disk full](https://rb.example/disk)**"),
        "{out}"
    );
    assert!(
        out.contains("\n\nFirst steps:\n\n1. Run `df -h`\n"),
        "{out}"
    );
    assert!(out.contains("```sh\ndu -xh / | sort -h\n```"), "{out}");
    let marker = key().html("k123");
    assert!(
        out.ends_with(&format!("{marker}\n")) || out.ends_with(&marker),
        "{out}"
    );
    assert!(key().is_own(&out));
    assert!(!MarkerKey::new(b"another server").is_own(&out));
}

#[test]
fn no_confident_match_says_so_and_lists_no_steps() {
    let out = render("Payment invoices are duplicated");
    assert!(out.contains("No runbook found\n\nNothing found."), "{out}");
    assert!(!out.contains("First steps"), "{out}");
    assert!(out.contains(&key().html("k123")), "{out}");
}

#[test]
fn ticket_text_cannot_become_markup_mentions_links_or_markers() {
    use pulldown_cmark::{Event, Parser, Tag};
    let (renderer, matcher) = setup();
    let hostile = "Disk full `x` @acme/oncall [click](javascript:alert(1)) \
                   <img src=x onerror=alert(1)> <!-- runlink:delivery=deadbeef --> \
                   [code]<b>x</b>[/code]";
    let t = ticket(hostile);
    let sig = AlarmSignature::of(&t, &Normalizer::default());
    let decision = matcher.decide(&sig, 3).unwrap();
    for name in ["github.md.j2", "generic.md.j2", "jira.md.j2"] {
        let out = renderer.render(name, &t, &sig, &decision, "k123").unwrap();
        let mut html = Vec::new();
        for event in Parser::new(&out) {
            match event {
                Event::Start(Tag::Link { dest_url, .. }) => {
                    assert!(
                        dest_url.starts_with("https://rb.example/"),
                        "{name}: {dest_url}"
                    )
                }
                Event::Start(Tag::Image { .. }) => panic!("{name}: an image: {out}"),
                Event::Html(h) | Event::InlineHtml(h) => html.push(h.to_string()),
                _ => {}
            }
        }
        let expected: Vec<String> = if name == "jira.md.j2" {
            Vec::new()
        } else {
            vec![key().html("k123")]
        };
        // The template's own tags are its own; nothing else may be HTML.
        let html: Vec<String> = html
            .iter()
            .map(|h| h.trim().to_string())
            .filter(|h| h != "<sub>" && h != "</sub>")
            .collect();
        assert_eq!(html, expected, "{name}: {out}");
        assert!(!out.contains("deadbeef -->"), "{name}: {out}");
        assert!(
            out.match_indices('@')
                .all(|(i, _)| out[..i].ends_with('\\')),
            "{name}: an unescaped mention: {out}"
        );
    }
    let out = renderer
        .render("servicenow.txt.j2", &t, &sig, &decision, "k123")
        .unwrap();
    assert!(!out.to_lowercase().contains("[code]"), "{out}");
    assert!(!out.contains("runlink:delivery=deadbeef"), "{out}");
    assert!(out.contains(&key().token("k123")), "{out}");
    assert!(
        !key().is_own(&out.replace(&key().token("k123"), "")),
        "{out}"
    );
}

#[test]
fn steps_are_numbered_without_the_commands_between_them() {
    let steps = vec![
        Step::Text {
            text: "Check the node:".into(),
        },
        Step::Code {
            lang: "sh".into(),
            code: "kubectl get nodes".into(),
        },
        Step::Text {
            text: "Then the kubelet.".into(),
        },
    ];
    let numbers: Vec<Option<usize>> = numbered(&steps).iter().map(|s| s.number).collect();
    assert_eq!(numbers, vec![Some(1), None, Some(2)]);
    let json = serde_json::to_value(numbered(&steps)).unwrap();
    assert_eq!(json[2]["number"], 2);
    assert_eq!(json[2]["kind"], "text");
    assert_eq!(json[1]["code"], "kubectl get nodes");
}

#[test]
fn every_default_template_carries_the_marker_link_and_steps() {
    let (renderer, matcher) = setup();
    let t = ticket("[FIRING:1] DiskFull");
    let sig = AlarmSignature::of(&t, &Normalizer::default());
    let decision = matcher.decide(&sig, 3).unwrap();
    for name in TEMPLATES {
        let out = renderer.render(name, &t, &sig, &decision, "k123").unwrap();
        assert!(out.contains("https://rb.example/disk"), "{name}: {out}");
        assert!(out.contains("df -h"), "{name}: {out}");
        assert!(out.contains("du -xh / | sort -h"), "{name}: {out}");
        // The command belongs to the first step: the next one is the second.
        assert!(out.contains("2. Then check growth."), "{name}: {out}");
        assert!(!out.contains("3. "), "{name}: {out}");
        // Jira carries the marker as a comment property instead.
        if *name != "jira.md.j2" {
            assert!(out.contains(&key().token("k123")), "{name}: {out}");
        }
    }
}

/// A renderer over one custom template, in a directory of its own.
fn custom(source: &str) -> (tempfile::TempDir, Renderer) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("custom.j2"), source).unwrap();
    let renderer = Renderer::load(dir.path(), "Nothing found.", &["custom.j2"], key()).unwrap();
    (dir, renderer)
}

/// Renders both tickets with one shared decision (as the coalescer hands it out) and
/// checks each against a rendering of its own.
fn shared_and_fresh(renderer: &Renderer, template: &str, titles: [&str; 2]) -> Vec<String> {
    let (_, matcher) = setup();
    let first = ticket(titles[0]);
    let sig = AlarmSignature::of(&first, &Normalizer::default());
    let decision = Arc::new(matcher.decide(&sig, 3).unwrap());
    let _coalescer_holds_it = decision.clone();
    let mut outs = Vec::new();
    for (i, title) in titles.iter().enumerate() {
        let t = ticket(title);
        let key = format!("{i:032x}");
        let shared = renderer
            .render_shared(template, &t, &sig, &decision, &key)
            .unwrap();
        let fresh = renderer
            .render(template, &t, &sig, &decision, &key)
            .unwrap();
        assert_eq!(shared, fresh, "ticket {i}");
        outs.push(shared);
    }
    outs
}

#[test]
fn a_shared_decision_renders_once_and_each_ticket_gets_its_own_marker() {
    let (renderer, _) = setup();
    let outs = shared_and_fresh(
        &renderer,
        "github.md.j2",
        ["[FIRING:1] DiskFull", "[FIRING:1] DiskFull"],
    );
    assert!(
        outs[0].contains(&key().html(&format!("{:032x}", 0))),
        "{}",
        outs[0]
    );
    assert!(
        outs[1].contains(&key().html(&format!("{:032x}", 1))),
        "{}",
        outs[1]
    );
    assert_eq!(renderer.reused.lock().unwrap().len(), 1);
}

#[test]
fn a_template_that_reads_the_ticket_is_rendered_for_each() {
    let (_dir, renderer) = custom("{{ ticket.title }} {{ marker }}");
    let outs = shared_and_fresh(
        &renderer,
        "custom.j2",
        ["[FIRING:1] DiskFull on a", "[FIRING:1] DiskFull on b"],
    );
    assert!(
        outs[1].starts_with("[FIRING:1] DiskFull on b"),
        "{}",
        outs[1]
    );
    assert!(renderer.reused.lock().unwrap().is_empty());
}

#[test]
fn a_template_that_changes_the_marker_fails_the_check_and_is_not_reused() {
    let (_dir, renderer) = custom("{{ marker_text|upper }}");
    let outs = shared_and_fresh(
        &renderer,
        "custom.j2",
        ["[FIRING:1] DiskFull", "[FIRING:1] DiskFull"],
    );
    assert_eq!(outs[1], key().token(&format!("{:032x}", 1)).to_uppercase());
    assert!(renderer.reused.lock().unwrap().is_empty());
    assert!(!renderer.reusable["custom.j2"].load(Ordering::Relaxed));
}
