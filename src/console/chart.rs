//! The overview's chart: tickets per hour, stacked by outcome, as SVG shapes computed here
//! (the template only draws them; the page needs no script).

use serde::Serialize;

/// The outcomes in stacking order, bottom first, with their legend.
pub(super) const OUTCOMES: &[(&str, &str)] = &[
    ("alarm", "alarm name"),
    ("rule", "match rule"),
    ("taught", "taught"),
    ("text", "text"),
    ("none", "not confident"),
];

const HOUR_MS: i64 = 3_600_000;
pub(super) const WIDTH: f64 = 720.0;
pub(super) const HEIGHT: f64 = 160.0;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub(super) struct Segment {
    pub x: f64,
    pub y: f64,
    pub width: f64,
    pub height: f64,
    pub outcome: &'static str,
    /// The hover text: the hour, the outcome, the count.
    pub title: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub(super) struct Chart {
    pub width: f64,
    pub height: f64,
    pub max: u64,
    pub segments: Vec<Segment>,
    /// Hour labels under every sixth bar.
    pub labels: Vec<(f64, String)>,
}

/// `hours` bars ending with the hour of `now_ms`, from (hour start, outcome, count) rows.
pub(super) fn hourly(rows: &[(i64, String, u64)], now_ms: i64, hours: i64) -> Chart {
    let last = (now_ms / HOUR_MS) * HOUR_MS;
    let first = last - (hours - 1) * HOUR_MS;
    let bar = WIDTH / hours as f64;
    let mut counts = vec![[0u64; 5]; hours as usize];
    for (hour, outcome, n) in rows {
        let Some(slot) = OUTCOMES.iter().position(|(o, _)| o == outcome) else {
            continue;
        };
        let i = (hour - first) / HOUR_MS;
        if (0..hours).contains(&i) {
            counts[i as usize][slot] += n;
        }
    }
    let max = counts
        .iter()
        .map(|c| c.iter().sum::<u64>())
        .max()
        .unwrap_or(0)
        .max(1);
    let mut segments = Vec::new();
    let mut labels = Vec::new();
    for (i, stack) in counts.iter().enumerate() {
        let x = i as f64 * bar;
        let start = first + i as i64 * HOUR_MS;
        let hour = chrono::DateTime::from_timestamp_millis(start)
            .map(|t| t.format("%H:00").to_string())
            .unwrap_or_default();
        if i % 6 == 0 {
            labels.push((x, hour.clone()));
        }
        let mut top = HEIGHT;
        for (slot, n) in stack.iter().enumerate() {
            if *n == 0 {
                continue;
            }
            let height = HEIGHT * *n as f64 / max as f64;
            top -= height;
            segments.push(Segment {
                x: x + 1.0,
                y: top,
                width: (bar - 2.0).max(1.0),
                height,
                outcome: OUTCOMES[slot].0,
                title: format!("{hour} UTC: {n} {}", OUTCOMES[slot].1),
            });
        }
    }
    Chart {
        width: WIDTH,
        height: HEIGHT,
        max,
        segments,
        labels,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_stack_by_outcome_and_scale_to_the_busiest_hour() {
        let now = 10 * HOUR_MS + 5;
        let rows = vec![
            (9 * HOUR_MS, "text".to_string(), 3),
            (9 * HOUR_MS, "none".to_string(), 1),
            (10 * HOUR_MS, "alarm".to_string(), 2),
            (-100 * HOUR_MS, "alarm".to_string(), 50),
        ];
        let chart = hourly(&rows, now, 24);
        assert_eq!(chart.max, 4);
        assert_eq!(chart.segments.len(), 3);
        let text = &chart.segments[0];
        assert_eq!((text.outcome, text.height), ("text", HEIGHT * 0.75));
        let none = &chart.segments[1];
        assert_eq!(none.y + none.height, text.y, "stacked on the text segment");
        let alarm = &chart.segments[2];
        assert_eq!((alarm.outcome, alarm.y), ("alarm", HEIGHT / 2.0));
        assert!(alarm.x > text.x);
    }
}
