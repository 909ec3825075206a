//! The normalizer: the rules that replace the volatile parts of a text (ids, IPs, hosts,
//! numbers, times) by class tokens, the built-in table and the `[[matcher.normalize]]` ones.

use super::*;

/// One normalization rule as written in config: every match of `pattern` becomes `replace`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct NormalizeRule {
    pub name: String,
    pub pattern: String,
    pub replace: String,
}

#[derive(Debug, thiserror::Error)]
#[error("rule `{name}`: {source}")]
pub struct RuleError {
    name: String,
    #[source]
    source: regex::Error,
}

/// Built-in rules, applied in order: the most specific shapes first, so that an IP is not
/// eaten digit by digit by the number rule.
pub const DEFAULT_RULES: &[(&str, &str, &str)] = &[
    // Alert templates that print `$labels` / `$value` (Go's map formatting) repeat the
    // labels as text; they say nothing about the condition and read like words.
    (
        "label_dump",
        r"(?i)\b(?:labels\s*[=:]\s*)?map\[[^\]]*\]",
        "<labels>",
    ),
    ("value_dump", r"(?i)\bvalue\s*[=:]\s*\S+", "<value>"),
    (
        "timestamp",
        r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?\b",
        "<time>",
    ),
    (
        "uuid",
        r"(?i)\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b",
        "<uuid>",
    ),
    ("ipv4", r"\b(?:\d{1,3}\.){3}\d{1,3}(?::\d{1,5})?\b", "<ip>"),
    (
        "ipv6",
        r"(?i)\b(?:[0-9a-f]{1,4}:){7}[0-9a-f]{1,4}\b|\b[0-9a-f]{1,4}(?::[0-9a-f]{1,4})*::(?:[0-9a-f]{1,4}(?::[0-9a-f]{1,4})*\b)?|::[0-9a-f]{1,4}(?::[0-9a-f]{1,4})*\b",
        "<ip>",
    ),
    ("url", r"\bhttps?://\S+", "<url>"),
    (
        "path",
        r"(?:^|\s|=|\()(?:/[A-Za-z0-9._-]+){1,}/?",
        " <path>",
    ),
    (
        "fqdn",
        r"(?i)\b[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*\.(?:com|net|org|io|internal|local|lan|cluster|svc|corp|cloud|dev)(?::\d{1,5})?\b",
        "<host>",
    ),
    (
        "pod",
        r"\b[a-z0-9]+(?:-[a-z0-9]+)*-[a-f0-9]{6,10}-[a-z0-9]{5}\b",
        "<pod>",
    ),
    (
        "numbered_host",
        r"(?i)\b[a-z][a-z0-9]*(?:-[a-z0-9]+)*-\d+[a-z]?\b",
        "<host>",
    ),
    (
        "hex_id",
        r"(?i)\b(?:0x)?[0-9a-f]*\d[0-9a-f]*[a-f][0-9a-f]*\b|\b(?:0x)?[0-9a-f]*[a-f][0-9a-f]*\d[0-9a-f]*\b",
        "<hex>",
    ),
    ("percent", r"\b\d+(?:\.\d+)?\s?%", "<pct>"),
    (
        "quantity",
        r"(?i)\b\d+(?:\.\d+)?\s?(?:ns|us|µs|ms|s|sec|secs|seconds?|m|mins?|minutes?|h|hours?|d|days?|w|weeks?|[kmgtp]i?b|bytes?|[kmgt]b/s|rps|qps)\b",
        "<qty>",
    ),
    ("number", r"\b\d+(?:[.,]\d+)*\b", "<num>"),
];

/// A compiled, ordered list of rules. Hex ids shorter than eight characters are left alone by
/// the hex rule's callers (see `Normalizer::normalize`), because "5xx" or "ab12" are words.
#[derive(Debug, Clone)]
pub struct Normalizer {
    rules: Vec<(String, Regex, String)>,
    /// The same patterns in one automaton: a single pass over the text says which rules
    /// match at all, and most rules match nothing on most texts.
    any: RegexSet,
}

pub(super) static CLASS_TOKEN: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"<[a-z]+>").unwrap());

impl Default for Normalizer {
    fn default() -> Self {
        Normalizer::with_rules(Vec::new()).expect("built-in normalization rules compile")
    }
}

impl Normalizer {
    /// The built-in rules, with the configured ones first: a team's own id formats (ticket
    /// keys, account numbers) must win over the generic number rule.
    pub fn with_rules(extra: Vec<NormalizeRule>) -> Result<Self, RuleError> {
        let mut rules = Vec::new();
        for rule in extra {
            let regex = Regex::new(&rule.pattern).map_err(|source| RuleError {
                name: rule.name.clone(),
                source,
            })?;
            rules.push((rule.name, regex, rule.replace));
        }
        for (name, pattern, replace) in DEFAULT_RULES {
            rules.push((
                name.to_string(),
                Regex::new(pattern).map_err(|source| RuleError {
                    name: name.to_string(),
                    source,
                })?,
                replace.to_string(),
            ));
        }
        let any =
            RegexSet::new(rules.iter().map(|(_, regex, _)| regex.as_str())).map_err(|source| {
                RuleError {
                    name: "(all rules together)".into(),
                    source,
                }
            })?;
        Ok(Normalizer { rules, any })
    }

    pub fn rule_names(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|(name, _, _)| name.as_str())
    }

    /// Applies one named rule only; used by tests that pin each rule down on its own.
    pub fn apply_rule(&self, name: &str, text: &str) -> Option<String> {
        self.rules
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, re, rep)| apply(re, rep, text).into_owned())
    }

    pub fn normalize(&self, text: &str) -> String {
        let mut out = Cow::Borrowed(text);
        // Rules run in order, each on what the ones before it left. A rule that matches
        // nothing leaves the text as it is, so only the rules the set finds are run, and the
        // set looks again only once a rule has changed the text.
        let mut matching = self.any.matches(&out);
        let mut next = 0;
        while let Some(i) = matching.iter().find(|&i| i >= next) {
            let (_, regex, replace) = &self.rules[i];
            next = i + 1;
            if let Cow::Owned(changed) = apply(regex, replace, &out) {
                out = Cow::Owned(changed);
                matching = self.any.matches(&out);
            }
        }
        collapse_spaces(&out)
    }
}

/// Replaces every match with `replace` (literally); borrows when nothing matched, which is
/// what most rules do on most tickets. Matches are found with `find_iter`, not through
/// capture groups: the rules run on every ticket, and a capture search costs several times
/// a plain one.
pub(super) fn apply<'t>(regex: &Regex, replace: &str, text: &'t str) -> Cow<'t, str> {
    let mut out = String::new();
    let mut last = 0;
    for found in regex.find_iter(text) {
        // A short hex-looking word ("5xx", "e2e", "ab12") is a word, not an id.
        if replace == "<hex>" && found.as_str().trim_start_matches("0x").len() < 8 {
            continue;
        }
        if last == 0 && out.is_empty() {
            out.reserve(text.len() + replace.len());
        }
        out.push_str(&text[last..found.start()]);
        out.push_str(replace);
        last = found.end();
    }
    if out.is_empty() && last == 0 {
        return Cow::Borrowed(text);
    }
    out.push_str(&text[last..]);
    Cow::Owned(out)
}

/// Removes class tokens, leaving only words that describe the condition.
pub fn strip_class_tokens(text: &str) -> String {
    collapse_spaces(&CLASS_TOKEN.replace_all(text, " "))
}

/// Trims and turns every run of whitespace into one space. By hand rather than with `\s+`:
/// the same Unicode whitespace, at a tenth of a regex replacement's cost on every ticket.
pub(super) fn collapse_spaces(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}
