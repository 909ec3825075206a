//! The cap on comments per reply target. One Alertmanager notification of 500 alerts that
//! all name one issue must not become 500 comments on it: a target gets at most
//! `outbox.max_per_reply_target` comments within `outbox.reply_target_window_secs`, and the
//! last one allowed lists the alerts that came after it (folded into it by the store).
//! An alert that arrives once that last comment is out is recorded in the audit log only.
//! Every alert keeps its own audit trail either way.

use std::time::Duration;

use crate::config::OutboxConfig;
use crate::outbox::{FoldedLine, OutboxItem, Store, StoreError, now_ms};

/// What a claimed item does in this round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// Posted as a comment of its own.
    Post,
    /// The target's last comment: takes in the target's other pending alerts, then posts.
    Last,
    /// The target's last comment, too young: given back so more alerts can gather.
    Gather,
    /// Taken in by the target's last comment of this round: nothing to do here.
    TakenIn,
    /// Over the cap with the last comment already out: recorded, not posted.
    Over,
}

/// The role of each claimed item, in claim order. Items of one target are counted in order,
/// starting from what the store says the target already had.
pub(super) async fn plan(
    store: &dyn Store,
    items: &[OutboxItem],
    config: &OutboxConfig,
) -> Result<Vec<Role>, StoreError> {
    let cap = config.max_per_reply_target;
    if cap == 0 {
        return Ok(vec![Role::Post; items.len()]);
    }
    let since = now_ms() - config.reply_target_window.as_millis() as i64;
    let mut roles = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let earlier: Vec<Role> = items[..i]
            .iter()
            .zip(&roles)
            .filter(|(other, _)| other.target == item.target)
            .map(|(_, role)| *role)
            .collect();
        // A last comment of this round takes in every later alert of its target; one that
        // is still gathering is given back with them.
        if earlier.contains(&Role::Gather) {
            roles.push(Role::Gather);
            continue;
        }
        if earlier.contains(&Role::Last) {
            roles.push(Role::TakenIn);
            continue;
        }
        let load = store.target_load(item, since).await?;
        // The store counts sends that have started; this round's earlier posts have not yet.
        let before = load.comments + earlier.iter().filter(|r| **r == Role::Post).count() as u32;
        let role = if load.holds_folds || before + 1 == cap {
            let age = Duration::from_millis((now_ms() - item.created_ms).max(0) as u64);
            if load.holds_folds || item.attempts > 0 || age >= config.fold_wait {
                Role::Last
            } else {
                Role::Gather
            }
        } else if before + 1 < cap {
            Role::Post
        } else {
            Role::Over
        };
        roles.push(role);
    }
    Ok(roles)
}

/// Why an item over the cap was not posted, for its row and its audit event.
pub(super) fn over_reason(config: &OutboxConfig) -> String {
    format!(
        "its reply target had its {} comments of the last {} s; recorded here only",
        config.max_per_reply_target,
        config.reply_target_window.as_secs()
    )
}

/// The last comment with the alerts folded into it listed before its final line (where the
/// marker is), within `max` characters: lines that do not fit are counted, not cut.
pub(super) fn compose(
    body: &str,
    folded: &[FoldedLine],
    max: usize,
    config: &OutboxConfig,
) -> String {
    if folded.is_empty() {
        return body.to_string();
    }
    let (head, last) = match body.trim_end().rsplit_once('\n') {
        Some((head, last)) => (head.trim_end(), last),
        None => (body.trim_end(), ""),
    };
    let until = chrono::Utc::now()
        + chrono::Duration::from_std(config.reply_target_window).unwrap_or_default();
    let intro = format!(
        "\n\nAlso firing on this target: {} more alert(s), listed here because runlink posts \
         at most {} comments per target every {} s.\n",
        folded.len(),
        config.max_per_reply_target,
        config.reply_target_window.as_secs()
    );
    let outro = format!(
        "Alerts after this one until {} are recorded in runlink's audit log only.\n\n",
        until.format("%H:%M UTC")
    );
    let fixed =
        head.chars().count() + intro.chars().count() + outro.chars().count() + last.chars().count();
    // Room for the "and N more" line, whatever N is.
    let mut room = max.saturating_sub(fixed + 64);
    let mut listed = String::new();
    let mut shown = 0;
    for line in folded {
        let summary = if line.summary.is_empty() {
            &line.ticket
        } else {
            &line.summary
        };
        let entry = format!("- {summary}\n");
        let len = entry.chars().count();
        if len > room {
            break;
        }
        room -= len;
        listed.push_str(&entry);
        shown += 1;
    }
    if shown < folded.len() {
        listed.push_str(&format!(
            "- …and {} more (`runlink audit` lists every one)\n",
            folded.len() - shown
        ));
    }
    format!("{head}{intro}{listed}{outro}{last}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> OutboxConfig {
        crate::config::Config::from_toml("").unwrap().outbox
    }

    fn line(n: usize) -> FoldedLine {
        FoldedLine {
            ticket: format!("alertmanager:{n}"),
            summary: format!("Disk {n} full → [Disk runbook](https://r/disk)"),
        }
    }

    #[test]
    fn folded_alerts_are_listed_before_the_marker_line() {
        let body = "Runbook: [Disk](https://r/disk)\n\n<!-- runlink:delivery=k -->";
        let out = compose(body, &[line(1), line(2)], 65_536, &config());
        assert!(out.starts_with("Runbook: [Disk](https://r/disk)\n\nAlso firing"));
        assert!(out.contains("2 more alert(s)"), "{out}");
        assert!(out.contains("- Disk 1 full → [Disk runbook](https://r/disk)\n- Disk 2"));
        assert!(out.ends_with("\n<!-- runlink:delivery=k -->"), "{out}");
        assert_eq!(compose(body, &[], 65_536, &config()), body);
    }

    #[test]
    fn a_long_list_is_counted_not_cut_and_fits_the_limit() {
        let body = "Runbook: [Disk](https://r/disk)\n\n<!-- runlink:delivery=k -->";
        let folded: Vec<_> = (0..500).map(line).collect();
        let out = compose(body, &folded, 4_000, &config());
        assert!(out.chars().count() <= 4_000, "{}", out.chars().count());
        assert!(
            out.contains("more (`runlink audit` lists every one)"),
            "{out}"
        );
        assert!(out.contains("Runbook: [Disk](https://r/disk)"));
        assert!(out.ends_with("<!-- runlink:delivery=k -->"));
        let shown = out.matches("- Disk ").count();
        assert!(shown > 10 && shown < 500, "{shown}");
        assert!(out.contains(&format!("…and {} more", 500 - shown)), "{out}");
    }
}
