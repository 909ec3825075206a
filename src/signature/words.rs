//! Word splitting shared by the signature, the search and lint: identifiers and CamelCase
//! into the words prose uses.

use super::*;

pub(super) static WORD: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[A-Za-z][A-Za-z0-9]*").unwrap());

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
