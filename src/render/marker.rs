//! The marker every comment carries: `runlink:delivery=<key>.<tag>`, where the tag is an
//! HMAC of the delivery key under a secret only runlink holds. The key alone is enough to
//! find a comment again (the marker check after an uncertain post); the tag is what makes
//! text runlink's own, so a ticket that quotes a marker (or a user who types one to switch
//! enrichment off) is not taken for runlink's writing.

use std::sync::Arc;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

pub(crate) const MARKER_PREFIX: &str = "runlink:delivery=";

/// Hex digits of the tag: 64 bits, far beyond guessing for anyone without the secret.
const TAG_HEX: usize = 16;

#[derive(Clone)]
pub struct MarkerKey(Arc<[u8]>);

impl std::fmt::Debug for MarkerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MarkerKey(..)")
    }
}

impl MarkerKey {
    pub fn new(secret: &[u8]) -> Self {
        MarkerKey(secret.into())
    }

    /// A key for this process only: for tools whose comments are never posted.
    pub fn ephemeral() -> Self {
        MarkerKey::new(&rand::random::<[u8; 32]>())
    }

    fn tag(&self, delivery_key: &str) -> String {
        let mut mac =
            <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0).expect("HMAC takes any key");
        mac.update(delivery_key.as_bytes());
        let mut tag = hex::encode(mac.finalize().into_bytes());
        tag.truncate(TAG_HEX);
        tag
    }

    /// What follows the prefix: the key and its tag.
    pub(crate) fn signed(&self, delivery_key: &str) -> String {
        format!("{delivery_key}.{}", self.tag(delivery_key))
    }

    /// The marker as plain text (a reference line in a note).
    pub fn token(&self, delivery_key: &str) -> String {
        format!("{MARKER_PREFIX}{}", self.signed(delivery_key))
    }

    /// The marker hidden in an HTML comment (Markdown destinations).
    pub fn html(&self, delivery_key: &str) -> String {
        format!("<!-- {} -->", self.token(delivery_key))
    }

    /// Whether `text` holds a marker this key wrote. One that merely looks like it (no tag,
    /// a wrong tag) does not count.
    pub fn is_own(&self, text: &str) -> bool {
        text.match_indices(MARKER_PREFIX).any(|(at, _)| {
            let rest = &text[at + MARKER_PREFIX.len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_'))
                .unwrap_or(rest.len());
            let Some((key, tag)) = rest[..end].rsplit_once('.') else {
                return false;
            };
            tag.len() == TAG_HEX
                && crate::ingest::constant_time_eq(tag.as_bytes(), self.tag(key).as_bytes())
        })
    }
}

/// What the marker check searches a destination's comments for: the key without its tag,
/// so comments written before markers had tags are found too.
pub(crate) fn lookup_token(delivery_key: &str) -> String {
    format!("{MARKER_PREFIX}{delivery_key}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_marker_written_with_the_key_is_own() {
        let key = MarkerKey::new(b"server secret");
        let written = format!("Runbook: ...\n\n{}", key.html("k123"));
        assert!(key.is_own(&written));
        assert!(written.contains(&lookup_token("k123")));
        // Typed by a user: no tag, a made-up tag, a tag copied onto another key.
        assert!(!key.is_own("<!-- runlink:delivery=deadbeef -->"));
        assert!(!key.is_own("runlink:delivery=deadbeef.0123456789abcdef"));
        let copied = key.token("k123").replace("k123", "k124");
        assert!(!key.is_own(&copied));
        // Another server's secret.
        assert!(!MarkerKey::new(b"other secret").is_own(&written));
        // A genuine marker after a fake one in the same text.
        assert!(key.is_own(&format!("runlink:delivery=x {}", key.token("k9"))));
    }
}
