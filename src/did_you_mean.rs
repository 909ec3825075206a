//! "Did you mean": the known word closest to a misspelled one, for front-matter keys in lint
//! and configuration keys at start-up.

/// Edit distance between two words (insertions, deletions, substitutions).
pub(crate) fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// The candidate closest to `word`, if it is close enough to be a typo of it (two edits, or
/// a third of the word for long ones).
pub(crate) fn closest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = 2.max(word.chars().count() / 3);
    candidates
        .into_iter()
        .map(|c| (levenshtein(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min()
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typo_finds_its_word_and_a_stranger_finds_none() {
        assert_eq!(levenshtein("secrte", "secret"), 2);
        assert_eq!(closest("secrte", ["secret", "token"]), Some("secret"));
        assert_eq!(closest("alrms", ["alarms", "match"]), Some("alarms"));
        assert_eq!(closest("zzzzzz", ["secret", "token"]), None);
    }
}
