//! The one place the tantivy schema is defined, with its field handles and the analyzer every
//! text field uses (so query terms are analyzed exactly like indexed ones).

use std::collections::HashMap;

use tantivy::schema::{
    FAST, Field, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::tokenizer::{
    Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, StopWordFilter, TextAnalyzer,
    TextAnalyzerBuilder, Tokenizer,
};

use super::synonyms::SynonymFilter;

pub(super) const ANALYZER: &str = "runlink";

#[derive(Debug, Clone, Copy)]
pub(super) struct Fields {
    pub id: Field,
    pub ord: Field,
    /// Alarm names split into words (`Node Filesystem Space Filling Up`).
    pub name: Field,
    pub title: Field,
    pub meaning: Field,
    pub headings: Field,
    pub body: Field,
}

impl Fields {
    /// The searchable text fields with their default boosts: a word in the alarm's own name
    /// says far more about the runbook than the same word somewhere in its body.
    ///
    /// Headings are indexed (they are in the body text too) but not queried separately:
    /// runbooks share the same few headings, so the field separated nothing in evaluation.
    pub(super) fn weighted(&self) -> [(Field, f32); 4] {
        [
            (self.name, 4.0),
            (self.title, 2.5),
            (self.meaning, 2.5),
            (self.body, 0.6),
        ]
    }
}

pub(super) fn build() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let text = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(ANALYZER)
            .set_index_option(IndexRecordOption::WithFreqsAndPositions),
    );
    let fields = Fields {
        id: builder.add_text_field("id", STRING | STORED),
        ord: builder.add_u64_field("ord", FAST),
        name: builder.add_text_field("name", text.clone()),
        title: builder.add_text_field("title", text.clone()),
        meaning: builder.add_text_field("meaning", text.clone()),
        headings: builder.add_text_field("headings", text.clone()),
        body: builder.add_text_field("body", text),
    };
    (builder.build(), fields)
}

/// Lucene's English list plus common function words that carry nothing in an alert, minus
/// "no", "not", "down", "up" and "out": "not ready", "no leader", "filling up", "out of space"
/// are conditions.
const STOP_WORDS: &[&str] = &[
    "a", "about", "after", "all", "also", "an", "and", "any", "are", "as", "at", "be", "been",
    "before", "being", "between", "both", "but", "by", "can", "could", "did", "do", "does", "each",
    "for", "from", "had", "has", "have", "having", "he", "her", "here", "his", "how", "i", "if",
    "in", "into", "is", "it", "its", "itself", "may", "might", "more", "most", "must", "of", "on",
    "one", "only", "or", "other", "our", "over", "own", "same", "she", "should", "so", "some",
    "such", "than", "that", "the", "their", "them", "then", "there", "these", "they", "this",
    "those", "through", "to", "too", "under", "until", "very", "was", "we", "were", "what", "when",
    "where", "which", "while", "who", "why", "will", "with", "within", "would", "you", "your",
];

/// Tokenize, drop very long tokens, lowercase, drop stop words, stem: the chain shared by
/// the index analyzer and the stemming of the synonym table itself.
fn stemming() -> TextAnalyzerBuilder<impl Tokenizer> {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser)
        .filter(StopWordFilter::remove(
            STOP_WORDS.iter().map(|w| w.to_string()),
        ))
        .filter(Stemmer::new(Language::English))
}

/// Stems every word of every group and maps it to its group's first stem.
pub(super) fn synonym_map(groups: &[Vec<String>]) -> HashMap<String, String> {
    let mut base = stemming().build();
    let mut map = HashMap::new();
    for group in groups {
        let stems: Vec<String> = group
            .iter()
            .filter_map(|w| tokens_raw(&mut base, w).into_iter().next())
            .collect();
        if let Some((canonical, rest)) = stems.split_first() {
            for stem in rest {
                if stem != canonical {
                    map.insert(stem.clone(), canonical.clone());
                }
            }
        }
    }
    map
}

pub(super) fn default_synonyms() -> Vec<Vec<String>> {
    super::synonyms::DEFAULT_GROUPS
        .iter()
        .map(|g| g.iter().map(|w| w.to_string()).collect())
        .collect()
}

pub(super) fn analyzer(synonyms: &[Vec<String>]) -> TextAnalyzer {
    stemming()
        .filter(SynonymFilter::new(synonym_map(synonyms)))
        .build()
}

fn tokens_raw(analyzer: &mut TextAnalyzer, text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut stream = analyzer.token_stream(text);
    while stream.advance() {
        out.push(stream.token().text.clone());
    }
    out
}

/// The analyzed tokens of `text`, in order, duplicates kept. Applies the same preparation
/// as indexing (see `prepare`).
pub(super) fn tokens(analyzer: &mut TextAnalyzer, text: &str) -> Vec<String> {
    tokens_raw(analyzer, &prepare(text))
}

/// Text preparation shared by indexing and querying: CamelCase identifiers become words.
pub(super) fn prepare(text: &str) -> String {
    crate::signature::split_words(text)
}
