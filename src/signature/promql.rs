//! Metric names read from an alert rule's PromQL, the words a runbook about that metric uses.

use super::*;

pub(super) static PROMQL_LABELS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\{[^}]*\}").unwrap());
pub(super) static PROMQL_STRINGS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#""[^"]*"|'[^']*'|`[^`]*`"#).unwrap());
pub(super) static PROMQL_IDENT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[A-Za-z_:][A-Za-z0-9_:]*").unwrap());

/// PromQL functions, aggregations and keywords: identifiers that are not metrics.
pub(super) const PROMQL_WORDS: &[&str] = &[
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
pub(super) static METRIC_NAMES: LazyLock<Memo<Vec<String>>> = LazyLock::new(|| Memo::new(1024));

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
