//! Front matter: the YAML block between `---` lines at the top of a runbook. Runbooks in the
//! wild carry Hugo keys (`title`, `weight`); runlink adds its own. Unknown keys are kept, not
//! rejected, so a Hugo site's runbooks load as they are; `runlink lint` is where they are
//! questioned.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
pub(super) struct FrontMatter {
    pub title: Option<String>,
    #[serde(default)]
    pub alarms: Vec<String>,
    #[serde(default, rename = "match")]
    pub match_rules: Vec<String>,
    /// Alert names this runbook must never answer by text or by a taught answer (an alarm
    /// operators repeatedly called it wrong for).
    #[serde(default)]
    pub not_alarms: Vec<String>,
    /// On a page of runbooks: `alarms` and `not_alarms` per section, by anchor.
    #[serde(default)]
    pub section_alarms: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub section_not_alarms: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub services: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    pub url: Option<String>,
    #[serde(default)]
    pub first_steps: Vec<String>,
    /// Whether the file is a page of runbooks, one per section: `true`, `false`, or the
    /// heading level of the sections (`3` for `###`). Unset: decided from the page.
    pub sections: Option<Sections>,
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_yaml::Value>,
}

/// The keys runlink itself understands, for "did you mean" hints.
pub(super) const KNOWN_KEYS: &[&str] = &[
    "title",
    "alarms",
    "match",
    "not_alarms",
    "section_alarms",
    "section_not_alarms",
    "services",
    "tags",
    "url",
    "first_steps",
    "sections",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub(super) enum Sections {
    Split(bool),
    Level(u8),
}

#[derive(Debug, thiserror::Error)]
pub enum FrontMatterError {
    #[error("front matter starts with `---` but has no closing `---` line")]
    Unclosed,
    #[error("front matter: {0}")]
    Yaml(#[from] serde_yaml::Error),
}

/// Splits a document into its front matter (parsed) and the Markdown after it.
/// `body_line` is the 1-based line on which the Markdown starts, so later errors can point
/// at the right line of the file.
pub(super) fn split(source: &str) -> Result<(FrontMatter, &str, usize), FrontMatterError> {
    let source = source.strip_prefix('\u{feff}').unwrap_or(source);
    let Some(rest) = source
        .strip_prefix("---\n")
        .or_else(|| source.strip_prefix("---\r\n"))
    else {
        return Ok((FrontMatter::default(), source, 1));
    };
    let mut offset = 0;
    for (i, line) in rest.split_inclusive('\n').enumerate() {
        if line.trim_end() == "---" || line.trim_end() == "..." {
            let yaml = &rest[..offset];
            let body = &rest[offset + line.len()..];
            let front: FrontMatter = if yaml.trim().is_empty() {
                FrontMatter::default()
            } else {
                serde_yaml::from_str(yaml)?
            };
            return Ok((front, body, i + 3));
        }
        offset += line.len();
    }
    Err(FrontMatterError::Unclosed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hugo_front_matter_is_read_and_extra_keys_kept() {
        let (fm, body, line) =
            split("---\ntitle: Node Down\nweight: 20\n---\n# NodeDown\n").unwrap();
        assert_eq!(fm.title.as_deref(), Some("Node Down"));
        assert!(fm.other.contains_key("weight"));
        assert_eq!(body, "# NodeDown\n");
        assert_eq!(line, 5);
    }

    #[test]
    fn runlink_keys_are_read() {
        let src =
            "---\nalarms: [DiskFull]\nmatch: ['disk.*full']\nfirst_steps:\n  - df -h\n---\nbody";
        let (fm, _, _) = split(src).unwrap();
        assert_eq!(fm.alarms, vec!["DiskFull"]);
        assert_eq!(fm.match_rules, vec!["disk.*full"]);
        assert_eq!(fm.first_steps, vec!["df -h"]);
    }

    #[test]
    fn no_front_matter_means_defaults() {
        let (fm, body, _) = split("# Title\n").unwrap();
        assert!(fm.title.is_none());
        assert_eq!(body, "# Title\n");
    }

    #[test]
    fn unclosed_front_matter_is_an_error() {
        assert!(matches!(
            split("---\ntitle: x\n# no end"),
            Err(FrontMatterError::Unclosed)
        ));
    }

    #[test]
    fn wrong_type_is_an_error_naming_the_key() {
        let err = split("---\nalarms: 3\n---\n").unwrap_err().to_string();
        assert!(err.contains("alarms"), "{err}");
    }
}
