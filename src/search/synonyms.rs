//! A token filter that folds synonyms into one term, after stemming. Tickets and runbooks are
//! written by different people: one says "inconsistent", the other "mismatch"; one says
//! "cert", the other "certificate". Folding both sides to one term at index and query time
//! lets them meet, without query expansion and with one posting list per concept.

use std::collections::HashMap;
use std::sync::Arc;

use tantivy::tokenizer::{Token, TokenFilter, TokenStream, Tokenizer};

/// Stemmed term -> the stemmed canonical term of its group.
#[derive(Clone, Debug, Default)]
pub(super) struct SynonymFilter {
    map: Arc<HashMap<String, String>>,
}

impl SynonymFilter {
    pub(super) fn new(map: HashMap<String, String>) -> Self {
        SynonymFilter { map: Arc::new(map) }
    }
}

impl TokenFilter for SynonymFilter {
    type Tokenizer<T: Tokenizer> = SynonymTokenizer<T>;

    fn transform<T: Tokenizer>(self, tokenizer: T) -> SynonymTokenizer<T> {
        SynonymTokenizer {
            tokenizer,
            map: self.map,
        }
    }
}

#[derive(Clone)]
pub(super) struct SynonymTokenizer<T> {
    tokenizer: T,
    map: Arc<HashMap<String, String>>,
}

impl<T: Tokenizer> Tokenizer for SynonymTokenizer<T> {
    type TokenStream<'a> = SynonymTokenStream<'a, T::TokenStream<'a>>;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> Self::TokenStream<'a> {
        SynonymTokenStream {
            tail: self.tokenizer.token_stream(text),
            map: &self.map,
        }
    }
}

pub(super) struct SynonymTokenStream<'a, T> {
    tail: T,
    map: &'a HashMap<String, String>,
}

impl<T: TokenStream> TokenStream for SynonymTokenStream<'_, T> {
    fn advance(&mut self) -> bool {
        if !self.tail.advance() {
            return false;
        }
        if let Some(canonical) = self.map.get(&self.tail.token().text) {
            self.tail.token_mut().text.clone_from(canonical);
        }
        true
    }

    fn token(&self) -> &Token {
        self.tail.token()
    }

    fn token_mut(&mut self) -> &mut Token {
        self.tail.token_mut()
    }
}

/// Built-in groups of words that mean the same in alerts and runbooks; the first word of a
/// group is its canonical form. Configurable (`matcher.synonyms`), these are the defaults.
pub(super) const DEFAULT_GROUPS: &[&[&str]] = &[
    &[
        "config",
        "configuration",
        "configurations",
        "configured",
        "configs",
    ],
    &["certificate", "cert", "certs", "certificates"],
    &[
        "inconsistent",
        "mismatch",
        "mismatched",
        "differ",
        "different",
        "diverge",
        "divergent",
    ],
    &[
        "down",
        "unreachable",
        "unavailable",
        "disappeared",
        "absent",
        "missing",
        "gone",
    ],
    &[
        "error", "errors", "failure", "failures", "fail", "failed", "failing", "erroring", "bad",
        "invalid", "broken",
    ],
    &[
        "restart",
        "restarts",
        "restarting",
        "crashloop",
        "crashlooping",
        "backoff",
    ],
    &["inode", "inodes", "files"],
    &["memory", "mem", "ram"],
    &["cpu", "processor"],
    &["latency", "slow", "duration", "durations"],
    &["kubernetes", "k8s", "kube"],
    &["apiserver", "api"],
    &["exhausted", "full", "exhaustion"],
    &[
        "expire",
        "expires",
        "expiring",
        "expiry",
        "expiration",
        "expired",
    ],
    &["replica", "replicas", "replication"],
    &["throttle", "throttled", "throttling"],
    &["hpa", "horizontalpodautoscaler", "autoscaler"],
    &["pvc", "persistentvolumeclaim"],
    &["daemonset", "ds"],
    &["statefulset", "sts"],
    &["max", "maximum", "maxed"],
];
