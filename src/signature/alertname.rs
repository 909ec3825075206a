//! Where a ticket names its alert: an explicit field, a label or annotation, or a title in
//! one of the shapes alerting systems use (`[FIRING:1] Name`, CloudWatch's `ALARM: "Name"`,
//! a bare rule identifier); and the label keys that name its service and instance.

use super::*;

pub(super) static FIRING_TITLE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^\s*\[(?i:firing|resolved)(?::\s*\d+)?\]\s*([A-Za-z_][A-Za-z0-9_:.-]*)").unwrap()
});
pub(super) static CLOUDWATCH_TITLE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"^\s*(?:ALARM|OK|INSUFFICIENT_DATA):\s*"([^"]+)""#).unwrap());
/// A title that is a single identifier with inner capitals or underscores, the way alert
/// rules are named (`KubePodCrashLooping`, `disk_usage_high`).
pub(super) static IDENTIFIER_TITLE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^\s*([A-Za-z][a-z0-9]+(?:[A-Z][A-Za-z0-9]*)+|[a-z][a-z0-9]*(?:_[a-z0-9]+)+)\s*$")
        .unwrap()
});

pub(super) const NAME_KEYS: &[&str] = &["alertname", "alert_name", "alarm", "alarm_name"];
pub(super) const SERVICE_KEYS: &[&str] = &[
    "service",
    "app",
    "app_kubernetes_io_name",
    "job",
    "component",
];
pub(super) const INSTANCE_KEYS: &[&str] = &["instance", "host", "hostname", "node", "pod"];

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

pub(super) fn first_value(map: &BTreeMap<String, String>, keys: &[&str]) -> Option<String> {
    keys.iter()
        .filter_map(|k| map.get(*k))
        .map(|v| v.trim())
        .find(|v| !v.is_empty())
        .map(str::to_string)
}
