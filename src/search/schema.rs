//! The one place the tantivy schema is defined, with its field handles and the analyzer every
//! text field uses (so query terms are analyzed exactly like indexed ones).

use tantivy::schema::{
    Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::tokenizer::{
    Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, StopWordFilter, TextAnalyzer,
};

pub const ANALYZER: &str = "runlink";

#[derive(Debug, Clone, Copy)]
pub struct Fields {
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
    pub fn weighted(&self) -> [(Field, f32); 5] {
        [
            (self.name, 4.0),
            (self.title, 2.5),
            (self.meaning, 1.5),
            (self.headings, 1.0),
            (self.body, 0.6),
        ]
    }
}

pub fn build() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let text = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(ANALYZER)
            .set_index_option(IndexRecordOption::WithFreqsAndPositions),
    );
    let fields = Fields {
        id: builder.add_text_field("id", STRING | STORED),
        ord: builder.add_u64_field("ord", INDEXED | STORED),
        name: builder.add_text_field("name", text.clone()),
        title: builder.add_text_field("title", text.clone()),
        meaning: builder.add_text_field("meaning", text.clone()),
        headings: builder.add_text_field("headings", text.clone()),
        body: builder.add_text_field("body", text),
    };
    (builder.build(), fields)
}

/// Lucene's English list minus "no" and "not": "not ready" and "no leader" are conditions.
const STOP_WORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it",
    "of", "on", "or", "such", "that", "the", "their", "then", "there", "these", "they", "this",
    "to", "was", "will", "with",
];

pub fn analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser)
        .filter(StopWordFilter::remove(
            STOP_WORDS.iter().map(|w| w.to_string()),
        ))
        .filter(Stemmer::new(Language::English))
        .build()
}

/// The analyzed tokens of `text`, in order, duplicates kept.
pub fn tokens(analyzer: &mut TextAnalyzer, text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut stream = analyzer.token_stream(text);
    while stream.advance() {
        out.push(stream.token().text.clone());
    }
    out
}
