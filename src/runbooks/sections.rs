//! Pages of runbooks: one long Markdown file with a section per alert (Grafana Mimir's
//! `### MimirIngesterUnhealthy`, the Loki Operator's `## Loki Request Errors`). Each section
//! at the page's runbook level becomes a runbook named `<path>#<anchor>`, running to the next
//! heading of the same or a higher level, so its subsections belong to it. What is outside
//! those sections (the introduction, a parent heading, a table of contents) is not a runbook:
//! it would only ever answer "somewhere on this page".

use std::collections::{HashMap, HashSet};

use super::front_matter::Sections;
use super::markdown::{Document, Section};

/// The heading level whose sections are the page's runbooks, or `None` for a file that is
/// one runbook. Front matter decides when it says; otherwise a page is split when, at the
/// level with the most distinct headings, at least `MIN_SECTIONS` headings are alert names
/// (`CertManagerAbsent`) or their sections share a template of subsections (every
/// `## Loki Request Errors` has its `### Impact`, `### Steps`). A runbook's own `## Meaning`,
/// `## Diagnosis` has neither.
pub(super) fn level(setting: Option<Sections>, doc: &Document) -> Option<u8> {
    match setting {
        Some(Sections::Split(false)) => None,
        Some(Sections::Level(level)) => Some(level),
        Some(Sections::Split(true)) => candidate_level(doc),
        None => candidate_level(doc).filter(|level| looks_like_a_page(doc, *level)),
    }
}

/// At least this many sections make a page of runbooks.
const MIN_SECTIONS: usize = 3;

fn candidate_level(doc: &Document) -> Option<u8> {
    let mut distinct: HashMap<u8, HashSet<String>> = HashMap::new();
    for s in doc.sections.iter().filter(|s| s.level >= 2) {
        distinct
            .entry(s.level)
            .or_default()
            .insert(s.heading.to_lowercase());
    }
    distinct
        .into_iter()
        .filter(|(_, headings)| headings.len() >= MIN_SECTIONS)
        // The most distinct headings; on a tie the shallower level.
        .max_by_key(|(level, headings)| (headings.len(), std::cmp::Reverse(*level)))
        .map(|(level, _)| level)
}

fn looks_like_a_page(doc: &Document, level: u8) -> bool {
    let at_level: Vec<usize> = (0..doc.sections.len())
        .filter(|i| doc.sections[*i].level == level)
        .collect();
    let named = at_level
        .iter()
        .filter(|i| is_alert_name(&doc.sections[**i].heading))
        .count();
    if named >= MIN_SECTIONS {
        return true;
    }
    // Subsection headings per section; a heading under several sections is a template.
    let mut under: HashMap<String, usize> = HashMap::new();
    let children: Vec<HashSet<String>> = at_level
        .iter()
        .map(|i| {
            span(doc, *i)[1..]
                .iter()
                .map(|s| s.heading.to_lowercase())
                .collect::<HashSet<_>>()
        })
        .collect();
    for set in &children {
        for heading in set {
            *under.entry(heading.clone()).or_default() += 1;
        }
    }
    let templated = children
        .iter()
        .filter(|set| set.iter().any(|h| under[h] >= 2))
        .count();
    templated >= MIN_SECTIONS
}

/// An identifier as alerting rules name alerts: one word, letters and digits, with a capital
/// after the first letter (`KubePodCrashLooping`) or an underscore (`disk_full`).
pub(super) fn is_alert_name(heading: &str) -> bool {
    let word = heading.trim();
    !word.is_empty()
        && word.chars().all(|c| c.is_alphanumeric() || c == '_')
        && word.chars().any(char::is_alphabetic)
        && (word.chars().skip(1).any(char::is_uppercase) || word.contains('_'))
}

/// The section at `index` and its subsections: up to the next heading of the same or a
/// higher level.
pub(super) fn span(doc: &Document, index: usize) -> &[Section] {
    let level = doc.sections[index].level;
    let end = doc.sections[index + 1..]
        .iter()
        .position(|s| s.level <= level)
        .map_or(doc.sections.len(), |p| index + 1 + p);
    &doc.sections[index..end]
}

/// The alert name a heading stands for: the heading itself when it is one, else its words
/// run together (`Loki Request Errors` is `LokiRequestErrors`); `None` for a heading that
/// is a sentence rather than a name.
pub(super) fn alarm_of(heading: &str) -> Option<String> {
    let heading = heading.trim();
    if is_alert_name(heading) {
        return Some(heading.to_string());
    }
    let words: Vec<&str> = heading.split_whitespace().collect();
    let name_like = !words.is_empty()
        && words.len() <= 8
        && words.iter().all(|w| {
            w.chars()
                .all(|c| c.is_alphanumeric() || c == '-' || c == '_')
        });
    name_like.then(|| {
        words
            .iter()
            .map(|w| {
                let mut chars = w.chars();
                chars.next().map_or(String::new(), |first| {
                    first.to_uppercase().chain(chars).collect::<String>()
                })
            })
            .collect::<String>()
            .replace('-', "")
    })
}

#[cfg(test)]
mod tests {
    use super::super::markdown::parse;
    use super::*;

    #[test]
    fn a_page_of_alert_sections_is_split_at_their_level() {
        let doc = parse(
            "# Mimir runbooks\n\n## Alerts\n\n### MimirIngesterUnhealthy\n\nText.\n\n#### How to investigate\n\nLook.\n\n### MimirRequestErrors\n\nMore.\n\n### MimirRulerFailedRingCheck\n\nEven more.\n",
        );
        assert_eq!(level(None, &doc), Some(3));
        let first = doc.sections.iter().position(|s| s.level == 3).unwrap();
        let headings: Vec<_> = span(&doc, first)
            .iter()
            .map(|s| s.heading.as_str())
            .collect();
        assert_eq!(headings, ["MimirIngesterUnhealthy", "How to investigate"]);
    }

    #[test]
    fn sections_sharing_a_template_of_subsections_are_a_page() {
        let doc = parse(
            "# SOP\n\n## Loki Request Errors\n\n### Impact\n\n### Steps\n\n## Loki Request Panics\n\n### Impact\n\n### Steps\n\n## Loki Request Latency\n\n### Impact\n\n### Steps\n",
        );
        assert_eq!(level(None, &doc), Some(2));
    }

    #[test]
    fn an_ordinary_runbook_is_not_split() {
        let doc = parse(
            "# KubeNodeDown\n\n## Meaning\n\nGone.\n\n## Impact\n\nBad.\n\n## Diagnosis\n\nLook.\n\n## Mitigation\n\nFix.\n",
        );
        assert_eq!(level(None, &doc), None);
        assert_eq!(level(Some(Sections::Split(true)), &doc), Some(2));
        assert_eq!(level(Some(Sections::Level(3)), &doc), Some(3));
    }

    #[test]
    fn headings_name_alarms_as_written_or_by_their_words() {
        assert_eq!(
            alarm_of("TempoPartitionLag").as_deref(),
            Some("TempoPartitionLag")
        );
        assert_eq!(
            alarm_of("Loki Request Errors").as_deref(),
            Some("LokiRequestErrors")
        );
        assert_eq!(
            alarm_of("Compaction is failing because of `x` (reason)"),
            None
        );
        assert!(!is_alert_name("Meaning"));
        assert!(is_alert_name("disk_full"));
    }
}
