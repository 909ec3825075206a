//! The explicit answers, which always win over text: an alarm name a runbook lists (front
//! matter `alarms`, else its H1 or file stem), then a front-matter `match` regex.

use std::collections::HashMap;
use std::sync::Arc;

use super::{MatchReason, Ranked};
use crate::runbooks::Runbook;
use crate::signature::AlarmSignature;

/// Explicit matches are ranked above any text score.
const ALARM_SCORE: f32 = 1000.0;
const RULE_SCORE: f32 = 500.0;

#[derive(Debug)]
pub(super) struct ExplicitRules {
    by_alarm: HashMap<String, Vec<usize>>,
    /// Every `match` rule of the corpus in one automaton: one pass over the ticket finds all
    /// rules that fire, however many runbooks there are.
    set: regex::RegexSet,
    /// For each rule of the set: the runbook and the rule as written.
    owners: Vec<(usize, String)>,
}

impl ExplicitRules {
    pub(super) fn new(runbooks: &[Arc<Runbook>]) -> Self {
        let mut by_alarm: HashMap<String, Vec<usize>> = HashMap::new();
        for (ord, runbook) in runbooks.iter().enumerate() {
            for alarm in &runbook.alarms {
                let list = by_alarm.entry(alarm.to_lowercase()).or_default();
                if !list.contains(&ord) {
                    list.push(ord);
                }
            }
        }
        let mut patterns = Vec::new();
        let mut owners = Vec::new();
        for (ord, runbook) in runbooks.iter().enumerate() {
            for rule in &runbook.match_rules {
                patterns.push(rule.regex.as_str().to_string());
                owners.push((ord, rule.pattern.clone()));
            }
        }
        // Each pattern already compiled on its own when the runbook loaded; the set can only
        // fail on size limits, and then rules are matched one by one instead.
        let set = regex::RegexSet::new(&patterns).unwrap_or_else(|error| {
            tracing::warn!(%error, "match rules too large for one set");
            regex::RegexSet::empty()
        });
        ExplicitRules {
            by_alarm,
            set,
            owners,
        }
    }

    /// Ranks every runbook that names the alarm, then every runbook whose rule fires.
    pub(super) fn answer(
        &self,
        signature: &AlarmSignature,
        runbooks: &[Arc<Runbook>],
        ranked: &mut Ranked<'_>,
    ) {
        if let Some(name) = &signature.alertname
            && let Some(ords) = self.by_alarm.get(&name.to_lowercase())
        {
            for &ord in ords {
                ranked.push(
                    ord,
                    ALARM_SCORE,
                    1.0,
                    MatchReason::Alarm { name: name.clone() },
                );
            }
        }
        let subject = format!(
            "{}\n{}",
            signature.alertname.as_deref().unwrap_or(""),
            signature.text
        );
        let fired: Vec<usize> = if self.set.len() == self.owners.len() {
            self.set.matches(&subject).into_iter().collect()
        } else {
            runbooks
                .iter()
                .flat_map(|r| &r.match_rules)
                .enumerate()
                .filter(|(_, rule)| rule.regex.is_match(&subject))
                .map(|(i, _)| i)
                .collect()
        };
        for i in fired {
            let (ord, pattern) = &self.owners[i];
            ranked.push(
                *ord,
                RULE_SCORE,
                1.0,
                MatchReason::Rule {
                    pattern: pattern.clone(),
                },
            );
        }
    }
}
