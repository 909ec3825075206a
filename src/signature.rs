//! The alarm signature: what identifies "the same alarm" across tickets. Two tickets from one
//! alert rule differ in hosts, IPs, pod hashes, numbers and times; the signature replaces those
//! volatile parts by class tokens so both tickets get one signature (for coalescing and for
//! delivery keys) and the search sees only the words that describe the condition.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::LazyLock;

use regex::{Regex, RegexSet};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::memo::Memo;
use crate::ticket::Ticket;

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

static CLASS_TOKEN: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"<[a-z]+>").unwrap());

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
fn apply<'t>(regex: &Regex, replace: &str, text: &'t str) -> Cow<'t, str> {
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
fn collapse_spaces(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

static FIRING_TITLE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^\s*\[(?i:firing|resolved)(?::\s*\d+)?\]\s*([A-Za-z_][A-Za-z0-9_:.-]*)").unwrap()
});
static CLOUDWATCH_TITLE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"^\s*(?:ALARM|OK|INSUFFICIENT_DATA):\s*"([^"]+)""#).unwrap());
/// A title that is a single identifier with inner capitals or underscores, the way alert
/// rules are named (`KubePodCrashLooping`, `disk_usage_high`).
static IDENTIFIER_TITLE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^\s*([A-Za-z][a-z0-9]+(?:[A-Z][A-Za-z0-9]*)+|[a-z][a-z0-9]*(?:_[a-z0-9]+)+)\s*$")
        .unwrap()
});

const NAME_KEYS: &[&str] = &["alertname", "alert_name", "alarm", "alarm_name"];
const SERVICE_KEYS: &[&str] = &[
    "service",
    "app",
    "app_kubernetes_io_name",
    "job",
    "component",
];
const INSTANCE_KEYS: &[&str] = &["instance", "host", "hostname", "node", "pod"];

/// The alert name a ticket carries, if any: an explicit field, a label or annotation, or a
/// title in one of the shapes alerting systems use.
pub fn extract_alertname(ticket: &Ticket) -> Option<String> {
    if let Some(name) = ticket.alertname.as_deref().filter(|n| !n.trim().is_empty()) {
        return Some(name.trim().to_string());
    }
    for map in [&ticket.labels, &ticket.annotations] {
        if let Some(name) = first_value(map, NAME_KEYS) {
            return Some(name);
        }
    }
    let title = ticket.title.as_str();
    for re in [&*FIRING_TITLE, &*CLOUDWATCH_TITLE, &*IDENTIFIER_TITLE] {
        if let Some(caps) = re.captures(title) {
            return Some(caps[1].to_string());
        }
    }
    None
}

fn first_value(map: &BTreeMap<String, String>, keys: &[&str]) -> Option<String> {
    keys.iter()
        .filter_map(|k| map.get(*k))
        .map(|v| v.trim())
        .find(|v| !v.is_empty())
        .map(str::to_string)
}

static PROMQL_LABELS: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\{[^}]*\}").unwrap());
static PROMQL_STRINGS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#""[^"]*"|'[^']*'|`[^`]*`"#).unwrap());
static PROMQL_IDENT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[A-Za-z_:][A-Za-z0-9_:]*").unwrap());

/// PromQL functions, aggregations and keywords: identifiers that are not metrics.
const PROMQL_WORDS: &[&str] = &[
    "abs",
    "absent",
    "absent_over_time",
    "and",
    "avg",
    "avg_over_time",
    "bool",
    "bottomk",
    "by",
    "ceil",
    "changes",
    "clamp",
    "clamp_max",
    "clamp_min",
    "count",
    "count_over_time",
    "count_values",
    "day_of_month",
    "day_of_week",
    "delta",
    "deriv",
    "exp",
    "floor",
    "group",
    "group_left",
    "group_right",
    "histogram_quantile",
    "holt_winters",
    "hour",
    "idelta",
    "ignoring",
    "increase",
    "irate",
    "label_join",
    "label_replace",
    "last_over_time",
    "ln",
    "log10",
    "log2",
    "max",
    "max_over_time",
    "min",
    "min_over_time",
    "minute",
    "month",
    "offset",
    "on",
    "or",
    "predict_linear",
    "quantile",
    "quantile_over_time",
    "rate",
    "resets",
    "round",
    "scalar",
    "sort",
    "sort_desc",
    "sqrt",
    "stddev",
    "stddev_over_time",
    "stdvar",
    "sum",
    "sum_over_time",
    "time",
    "timestamp",
    "topk",
    "unless",
    "vector",
    "without",
    "year",
    "inf",
    "nan",
];

/// One alert rule's expression arrives with each of its alerts: it is read once.
static METRIC_NAMES: LazyLock<Memo<Vec<String>>> = LazyLock::new(|| Memo::new(1024));

/// The metric names a PromQL expression reads, in order, without duplicates. Label matchers,
/// strings, durations and functions are dropped.
pub fn metric_names(query: &str) -> Vec<String> {
    let without_labels = PROMQL_LABELS.replace_all(query, " ");
    let without_strings = PROMQL_STRINGS.replace_all(&without_labels, " ");
    let mut out: Vec<String> = Vec::new();
    for m in PROMQL_IDENT.find_iter(&without_strings) {
        let word = m.as_str();
        let after = without_strings[m.end()..].trim_start();
        let is_call = after.starts_with('(');
        // A duration like `5m` or a label list after `by (` is not a metric either.
        let before = without_strings[..m.start()].trim_end();
        let in_grouping = before.ends_with('(')
            && [
                "by",
                "without",
                "on",
                "ignoring",
                "group_left",
                "group_right",
            ]
            .iter()
            .any(|k| before[..before.len() - 1].trim_end().ends_with(k));
        if is_call
            || in_grouping
            || PROMQL_WORDS.contains(&word.to_ascii_lowercase().as_str())
            || !word.contains(['_', ':'])
        {
            continue;
        }
        if !out.iter().any(|o| o == word) {
            out.push(word.to_string());
        }
    }
    out
}

fn format_key(
    alertname: Option<&str>,
    service: Option<&str>,
    namespace: Option<&str>,
    title: &str,
) -> String {
    format!(
        "{}|{}|{}|{}",
        alertname.unwrap_or(""),
        service.unwrap_or(""),
        namespace.unwrap_or(""),
        title.to_lowercase()
    )
}

/// What a ticket is about, stripped of what varies between two firings of the same alarm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlarmSignature {
    pub alertname: Option<String>,
    pub service: Option<String>,
    pub namespace: Option<String>,
    pub instance: Option<String>,
    /// The normalized title: the part of the signature that identifies the alarm.
    pub title: String,
    /// Title, summary, description and body, normalized: what the search reads.
    pub text: String,
    /// Metric names from the alert's query, split into words (`node filesystem avail bytes`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<String>,
}

impl AlarmSignature {
    pub fn of(ticket: &Ticket, normalizer: &Normalizer) -> Self {
        let mut text = String::new();
        let mut seen: Vec<&str> = Vec::new();
        for part in [
            Some(ticket.title.as_str()),
            ticket.annotations.get("summary").map(String::as_str),
            ticket.annotations.get("message").map(String::as_str),
            ticket.annotations.get("description").map(String::as_str),
            Some(ticket.body.as_str()),
        ]
        .into_iter()
        .flatten()
        {
            // The title is often repeated as the summary: once is enough to normalize.
            if !part.trim().is_empty() && !seen.contains(&part) {
                seen.push(part);
                text.push_str(part);
                text.push('\n');
            }
        }
        let all = |keys: &[&str]| {
            first_value(&ticket.labels, keys).or_else(|| first_value(&ticket.annotations, keys))
        };
        AlarmSignature {
            alertname: extract_alertname(ticket),
            service: all(SERVICE_KEYS),
            namespace: all(&["namespace"]),
            instance: all(INSTANCE_KEYS),
            title: normalizer.normalize(&ticket.title),
            text: normalizer.normalize(&text),
            metrics: ticket
                .query
                .as_deref()
                .map(|query| METRIC_NAMES.get(query, metric_names))
                .unwrap_or_default(),
        }
    }

    /// The stable identity of this alarm, used in delivery keys and for coalescing.
    /// The instance is left out on purpose: the same alarm on two hosts is one signature.
    pub fn key(&self) -> String {
        format_key(
            self.alertname.as_deref(),
            self.service.as_deref(),
            self.namespace.as_deref(),
            &self.title,
        )
    }

    /// `AlarmSignature::of(ticket, normalizer).key()` without normalizing the ticket's text:
    /// what a webhook needs before it is answered (its delivery key) costs a fraction of the
    /// whole signature, which is left to the match behind the ingest log.
    pub fn key_of(ticket: &Ticket, normalizer: &Normalizer) -> String {
        let all = |keys: &[&str]| {
            first_value(&ticket.labels, keys).or_else(|| first_value(&ticket.annotations, keys))
        };
        format_key(
            extract_alertname(ticket).as_deref(),
            all(SERVICE_KEYS).as_deref(),
            all(&["namespace"]).as_deref(),
            &normalizer.normalize(&ticket.title),
        )
    }

    /// Everything a match decision depends on: two tickets with the same match key get the
    /// same runbooks, so one search can answer both.
    pub fn match_key(&self) -> String {
        let mut hash = Sha256::new();
        for part in [
            self.alertname.as_deref().unwrap_or(""),
            &self.text,
            &self.metrics.join(" "),
        ] {
            hash.update(part.as_bytes());
            hash.update([0u8]);
        }
        hex::encode(&hash.finalize()[..16])
    }

    /// A short fixed-length digest of `key()`, safe to put in a marker or a URL.
    pub fn digest(&self) -> String {
        let hash = Sha256::digest(self.key().as_bytes());
        hex::encode(&hash[..12])
    }

    /// The words a search should use: the alert name split into words plus the text with
    /// class tokens removed.
    pub fn search_text(&self) -> String {
        let mut out = String::new();
        if let Some(name) = &self.alertname {
            out.push_str(&split_identifier(name));
            out.push(' ');
        }
        out.push_str(&strip_class_tokens(&self.text));
        out
    }

    /// The words of the metric names, for a weaker second query: metrics say what was
    /// measured, but their words (`bytes`, `total`, `status`) are shared by many runbooks.
    pub fn metric_text(&self) -> String {
        self.metrics
            .iter()
            .map(|m| m.replace(['_', ':'], " "))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl fmt::Display for AlarmSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(name) = &self.alertname {
            write!(f, "{name}")?;
            if let Some(service) = &self.service {
                write!(f, "/{service}")?;
            }
            write!(f, ": ")?;
        }
        f.write_str(&self.title)
    }
}

static WORD: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"[A-Za-z][A-Za-z0-9]*").unwrap());

/// Splits every CamelCase word of a text (`PersistentVolume is filling` ->
/// `Persistent Volume is filling`), so prose and identifiers meet on the same words.
pub fn split_words(text: &str) -> String {
    WORD.replace_all(text, |caps: &regex::Captures<'_>| {
        let word = &caps[0];
        if word.chars().skip(1).any(char::is_uppercase) {
            split_identifier(word)
        } else {
            word.to_string()
        }
    })
    .into_owned()
}

/// `NodeFilesystemSpaceFillingUp` -> `Node Filesystem Space Filling Up`; also splits on `_`,
/// `-`, `.` and `:`. Runs of capitals stay together (`KubeAPIDown` -> `Kube API Down`).
pub fn split_identifier(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::with_capacity(name.len() + 8);
    for (i, &c) in chars.iter().enumerate() {
        if matches!(c, '_' | '-' | '.' | ':' | '/') {
            out.push(' ');
            continue;
        }
        if i > 0 && c.is_uppercase() {
            let prev = chars[i - 1];
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
            if prev.is_lowercase() || prev.is_ascii_digit() || (prev.is_uppercase() && next_lower) {
                out.push(' ');
            }
        }
        out.push(c);
    }
    collapse_spaces(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(name: &str, text: &str) -> String {
        Normalizer::default().apply_rule(name, text).unwrap()
    }

    #[test]
    fn label_dump_rule_replaces_go_maps_of_labels() {
        assert_eq!(
            rule(
                "label_dump",
                "failed\n  LABELS = map[instance:a:9090 job:x]"
            ),
            "failed\n  <labels>"
        );
    }

    #[test]
    fn value_dump_rule_replaces_printed_values() {
        assert_eq!(
            rule("value_dump", "down\n  VALUE = 0.93"),
            "down\n  <value>"
        );
    }

    #[test]
    fn timestamp_rule_replaces_iso_times() {
        assert_eq!(
            rule("timestamp", "since 2026-11-23T19:40:30.109Z ok"),
            "since <time> ok"
        );
        assert_eq!(rule("timestamp", "on 2026-11-23 12:00"), "on <time>");
    }

    #[test]
    fn uuid_rule_replaces_uuids() {
        assert_eq!(
            rule("uuid", "req 3f2b8c1e-9a4d-4c2b-8e1f-0a1b2c3d4e5f failed"),
            "req <uuid> failed"
        );
    }

    #[test]
    fn ip_rules_replace_addresses_with_ports() {
        assert_eq!(
            rule("ipv4", "target 10.0.2.41:9090 down"),
            "target <ip> down"
        );
        assert_eq!(rule("ipv6", "peer fe80::1:2:3 lost"), "peer <ip> lost");
        assert_eq!(rule("ipv6", "2001:db8:0:0:0:0:2:1 up"), "<ip> up");
        assert_eq!(
            rule("ipv6", "std::vector at 12:30:45"),
            "std::vector at 12:30:45"
        );
    }

    #[test]
    fn path_rule_replaces_file_paths() {
        assert_eq!(
            rule("path", "space left on /dev/xvda1, at /var/log"),
            "space left on <path>, at <path>"
        );
    }

    #[test]
    fn fqdn_rule_replaces_host_names() {
        assert_eq!(
            rule("fqdn", "db-01.prod.example.com is slow"),
            "<host> is slow"
        );
        assert_eq!(rule("fqdn", "ip-10-0-0-1.ec2.internal"), "<host>");
    }

    #[test]
    fn pod_rule_replaces_pod_names_with_hashes() {
        assert_eq!(
            rule("pod", "pod checkout-7d9f8b6c5d-x2k4q restarting"),
            "pod <pod> restarting"
        );
    }

    #[test]
    fn numbered_host_rule_replaces_hosts_like_logs_1() {
        assert_eq!(
            rule("numbered_host", "Disk on logs-1 will fill"),
            "Disk on <host> will fill"
        );
        assert_eq!(rule("numbered_host", "web-03a down"), "<host> down");
    }

    #[test]
    fn hex_rule_replaces_long_ids_and_keeps_short_words() {
        let n = Normalizer::default();
        assert_eq!(
            n.normalize("fingerprint 40a5816a039039f7"),
            "fingerprint <hex>"
        );
        assert_eq!(n.normalize("5xx rate"), "5xx rate");
        assert_eq!(n.normalize("e2e tests"), "e2e tests");
    }

    #[test]
    fn percent_rule_replaces_percentages() {
        assert_eq!(rule("percent", "at 97.5% used"), "at <pct> used");
    }

    #[test]
    fn quantity_rule_replaces_numbers_with_units() {
        assert_eq!(
            rule("quantity", "within 4h, 512 MiB left"),
            "within <qty>, <qty> left"
        );
        assert_eq!(rule("quantity", "p99 250ms"), "p99 <qty>");
    }

    #[test]
    fn number_rule_replaces_bare_numbers() {
        assert_eq!(rule("number", "3 replicas of 5"), "<num> replicas of <num>");
    }

    #[test]
    fn whole_pipeline_gives_two_firings_one_title() {
        let n = Normalizer::default();
        let a = n.normalize("Disk on logs-1 (10.0.0.4) will fill up within 4 hours");
        let b = n.normalize("Disk on logs-7 (10.0.9.12) will fill up within 11 hours");
        assert_eq!(a, b);
        assert_eq!(a, "Disk on <host> (<ip>) will fill up within <qty>");
    }

    #[test]
    fn whitespace_runs_become_one_space() {
        assert_eq!(
            collapse_spaces("  disk\t full \n\n on\u{a0}<host>  "),
            "disk full on <host>"
        );
        assert_eq!(collapse_spaces(" \n "), "");
    }

    #[test]
    fn configured_rules_run_before_built_in_ones() {
        let n = Normalizer::with_rules(vec![NormalizeRule {
            name: "jira_key".into(),
            pattern: r"\b[A-Z]{2,}-\d+\b".into(),
            replace: "<ticket>".into(),
        }])
        .unwrap();
        assert_eq!(n.normalize("see OPS-1234"), "see <ticket>");
        assert_eq!(n.rule_names().next(), Some("jira_key"));
    }

    #[test]
    fn camel_case_words_in_prose_are_split() {
        assert_eq!(
            split_words("PersistentVolume is filling, etcdNoLeader (x.y)"),
            "Persistent Volume is filling, etcd No Leader (x.y)"
        );
    }

    #[test]
    fn metric_names_come_from_promql_without_functions_or_labels() {
        let q = r#"(kube_hpa_status_desired_replicas{job="ksm"} >= kube_hpa_spec_max_replicas) and sum by (namespace, pod) (rate(container_cpu_usage_seconds_total[5m])) > 0"#;
        assert_eq!(
            metric_names(q),
            vec![
                "kube_hpa_status_desired_replicas",
                "kube_hpa_spec_max_replicas",
                "container_cpu_usage_seconds_total"
            ]
        );
    }

    #[test]
    fn identifiers_split_into_words() {
        assert_eq!(
            split_identifier("NodeFilesystemSpaceFillingUp"),
            "Node Filesystem Space Filling Up"
        );
        assert_eq!(split_identifier("KubeAPIDown"), "Kube API Down");
        assert_eq!(
            split_identifier("etcdHighFsyncDurations"),
            "etcd High Fsync Durations"
        );
        assert_eq!(split_identifier("disk_usage_high"), "disk usage high");
    }

    fn ticket(title: &str) -> Ticket {
        crate::ingest::manual::ManualTicket {
            title: title.into(),
            ..Default::default()
        }
        .into_ticket(0)
    }

    #[test]
    fn alertname_comes_from_title_patterns() {
        let cases = [
            (
                "[FIRING:2] KubePodCrashLooping (default)",
                Some("KubePodCrashLooping"),
            ),
            ("ALARM: \"HighCPU-prod\" in US East", Some("HighCPU-prod")),
            (
                "NodeFilesystemAlmostOutOfSpace",
                Some("NodeFilesystemAlmostOutOfSpace"),
            ),
            ("disk_usage_high", Some("disk_usage_high")),
            ("Inodes exhausted on build agent", None),
            ("Database", None),
        ];
        for (title, expected) in cases {
            assert_eq!(
                extract_alertname(&ticket(title)).as_deref(),
                expected,
                "{title}"
            );
        }
    }

    #[test]
    fn alertname_label_beats_title() {
        let mut t = ticket("[FIRING:1] Other");
        t.labels.insert("alertname".into(), "TargetDown".into());
        assert_eq!(extract_alertname(&t).as_deref(), Some("TargetDown"));
    }

    #[test]
    fn signature_ignores_the_instance() {
        let n = Normalizer::default();
        let mut a = ticket("Disk on logs-1 full");
        a.labels.insert("instance".into(), "logs-1".into());
        let mut b = ticket("Disk on logs-2 full");
        b.labels.insert("instance".into(), "logs-2".into());
        let (sa, sb) = (AlarmSignature::of(&a, &n), AlarmSignature::of(&b, &n));
        assert_ne!(sa.instance, sb.instance);
        assert_eq!(sa.key(), sb.key());
        assert_eq!(sa.digest(), sb.digest());
    }

    #[test]
    fn normalizing_runs_every_rule_in_order_on_what_the_last_left() {
        let extra = NormalizeRule {
            name: "ticket_key".into(),
            pattern: r"\bOPS-\d+\b".into(),
            replace: "<ticket>".into(),
        };
        for n in [
            Normalizer::default(),
            Normalizer::with_rules(vec![extra]).unwrap(),
        ] {
            for text in [
                "",
                "HighErrorRate",
                "[FIRING:1] HighErrorRate (checkout critical)",
                "5xx ratio on web-17 is 7.3% over the last 5 minutes",
                "Disk /var/lib/data on db-3.prod.internal:9100 at 93% since 2026-11-23T19:40:30Z",
                "pod api-7d9f8b6c5d-x2k4q restarted, trace 1b4e28ba-2fa1-11d2-883f-0016d3cca427",
                "OPS-42 value=0.93 labels = map[instance:10.0.0.7:9090 job:node] fe80::1",
                "latency 250ms for 3 hours at https://grafana.example.com/d/x?from=now-1h, 0xdeadbeef99",
                "µs and ünïcode: 12 µs on nœud-4",
            ] {
                let mut expected = text.to_string();
                for name in n.rule_names() {
                    expected = n.apply_rule(name, &expected).unwrap();
                }
                assert_eq!(n.normalize(text), collapse_spaces(&expected), "{text}");
            }
        }
    }

    #[test]
    fn the_key_alone_is_the_whole_signature_s_key() {
        let n = Normalizer::default();
        let mut t = ticket("[FIRING:1] Disk on logs-7 at 93% since 2026-11-23T19:40:30Z");
        t.labels.insert("service".into(), "Logs".into());
        t.annotations.insert("namespace".into(), "obs".into());
        t.annotations
            .insert("description".into(), "volume /var/log on 10.0.0.7".into());
        assert_eq!(
            AlarmSignature::key_of(&t, &n),
            AlarmSignature::of(&t, &n).key()
        );
        let bare = ticket("HighErrorRate");
        assert_eq!(
            AlarmSignature::key_of(&bare, &n),
            AlarmSignature::of(&bare, &n).key()
        );
    }

    #[test]
    fn search_text_drops_class_tokens_and_splits_the_name() {
        let n = Normalizer::default();
        let mut t = ticket("[FIRING:1] KubePodCrashLooping");
        t.annotations
            .insert("summary".into(), "Pod web-1 restarted 5 times".into());
        let sig = AlarmSignature::of(&t, &n);
        let words = sig.search_text();
        assert!(words.starts_with("Kube Pod Crash Looping"), "{words}");
        assert!(!words.contains('<'), "{words}");
    }
}
