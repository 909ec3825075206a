//! The semantic signal: a sentence-embedding model (all-MiniLM-L6-v2, a 6-layer BERT) run in
//! process, so a ticket that says the same thing as a runbook in other words ("pods restarting
//! repeatedly" for a crash-loop runbook) still finds it. Runbooks are embedded when the index
//! is built (`vectors`, cached on disk by `cache`); a ticket when it is matched. The model is
//! optional: without it matching is lexical only, and `/readyz` and `eval` say so.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use sha2::{Digest, Sha256};
use tokenizers::{PaddingParams, Tokenizer, TruncationParams};

mod cache;
mod vectors;

pub use vectors::{SemanticIndex, embedding_text};

#[derive(Debug, thiserror::Error)]
pub enum SemanticError {
    #[error("embedding model in {dir}: cannot read {file}: {source}")]
    Read {
        dir: String,
        file: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("embedding model in {dir}: {file} is not a model config: {source}")]
    Config {
        dir: String,
        file: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("embedding model: tokenizer: {0}")]
    Tokenizer(String),
    #[error("embedding model: {0}")]
    Model(#[from] candle_core::Error),
}

/// Tokens of a text the model reads at most (its training length; past it the text is cut).
const MAX_TOKENS: usize = 256;

/// The model and its tokenizer, loaded once and shared by every index built after.
pub struct Embedder {
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
    /// SHA-256 of the weights: what cached runbook vectors are keyed by.
    digest: String,
    dir: PathBuf,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder")
            .field("dir", &self.dir)
            .field("digest", &self.digest)
            .finish_non_exhaustive()
    }
}

impl Embedder {
    /// `Ok(None)` when `dir` holds no model (it is optional); an error when it holds a
    /// broken one.
    pub fn load_if_present(dir: &Path) -> Result<Option<Embedder>, SemanticError> {
        if !dir.join("model.safetensors").is_file() {
            return Ok(None);
        }
        Embedder::load(dir).map(Some)
    }

    pub fn load(dir: &Path) -> Result<Embedder, SemanticError> {
        let read = |file: &'static str| {
            std::fs::read(dir.join(file)).map_err(|source| SemanticError::Read {
                dir: dir.display().to_string(),
                file,
                source,
            })
        };
        let config: Config = serde_json::from_slice(&read("config.json")?).map_err(|source| {
            SemanticError::Config {
                dir: dir.display().to_string(),
                file: "config.json",
                source,
            }
        })?;
        let mut tokenizer = Tokenizer::from_bytes(read("tokenizer.json")?)
            .map_err(|e| SemanticError::Tokenizer(e.to_string()))?;
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..Default::default()
            }))
            .map_err(|e| SemanticError::Tokenizer(e.to_string()))?;
        tokenizer.with_padding(Some(PaddingParams::default()));
        let weights = dir.join("model.safetensors");
        let digest = file_digest(&weights).map_err(|source| SemanticError::Read {
            dir: dir.display().to_string(),
            file: "model.safetensors",
            source,
        })?;
        let device = Device::Cpu;
        // Mapped, not read: the tensors are copied out of the mapping, which goes when the
        // loader does, so the weights are in memory once (a read would hold them twice
        // more while loading, ~180 MB above the server's steady size).
        // SAFETY: the mapping is read while `BertModel::load` runs. scripts/fetch-model.sh
        // replaces a model by renaming a new directory into place, never by rewriting the
        // file under a running process.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, &device)? };
        let model = BertModel::load(vb, &config)?;
        Ok(Embedder {
            model,
            tokenizer,
            device,
            digest,
            dir: dir.to_path_buf(),
        })
    }

    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Unit-length embeddings of `texts` (mean of the token vectors, as the model was
    /// trained), one per text. Blocking: tens of milliseconds per text.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, SemanticError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| SemanticError::Tokenizer(e.to_string()))?;
        let rows = encodings.len();
        let len = encodings.first().map_or(0, |e| e.get_ids().len());
        let mut ids = Vec::with_capacity(rows * len);
        let mut mask = Vec::with_capacity(rows * len);
        for e in &encodings {
            ids.extend_from_slice(e.get_ids());
            mask.extend_from_slice(e.get_attention_mask());
        }
        let ids = Tensor::from_vec(ids, (rows, len), &self.device)?;
        let mask = Tensor::from_vec(mask, (rows, len), &self.device)?;
        let types = ids.zeros_like()?;
        let hidden = self.model.forward(&ids, &types, Some(&mask))?;
        // Padding must not count in the mean.
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
        let counts = mask.sum(1)?.clamp(1e-9, f64::MAX)?;
        let mean = summed.broadcast_div(&counts)?;
        let norms = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
        Ok(mean.broadcast_div(&norms)?.to_vec2::<f32>()?)
    }

    /// One text's embedding.
    pub fn embed_one(&self, text: &str) -> Result<Vec<f32>, SemanticError> {
        Ok(self.embed(&[text])?.pop().unwrap_or_default())
    }
}

/// What building a matcher needs for the semantic signal: the model (loaded once), where
/// runbook vectors are cached, and the signal's weight.
#[derive(Debug, Clone)]
pub struct SemanticSetup {
    pub embedder: std::sync::Arc<Embedder>,
    pub cache_dir: Option<PathBuf>,
    pub weight: f32,
}

impl SemanticSetup {
    /// The setup `config` asks for: `None` when the weight is 0 or the model is not there
    /// (said once, here), an error when the model is there and broken.
    pub fn from_config(
        config: &crate::config::MatcherConfig,
    ) -> Result<Option<SemanticSetup>, SemanticError> {
        if config.semantic_weight <= 0.0 {
            return Ok(None);
        }
        let Some(embedder) = Embedder::load_if_present(&config.model_dir)? else {
            tracing::warn!(
                model_dir = %config.model_dir.display(),
                "no embedding model: matching on words alone (semantic: off); scripts/fetch-model.sh fetches it"
            );
            return Ok(None);
        };
        tracing::info!(model_dir = %config.model_dir.display(), digest = &embedder.digest()[..12], "embedding model loaded (semantic: on)");
        Ok(Some(SemanticSetup {
            embedder: std::sync::Arc::new(embedder),
            cache_dir: config.embedding_cache_dir.clone(),
            weight: config.semantic_weight,
        }))
    }

    /// The semantic side of a matcher over `runbooks`, the corpus in `corpus_dir`; `None`
    /// (logged) when embedding them fails: matching then stays lexical rather than failing
    /// the build.
    pub fn index(
        &self,
        runbooks: &[std::sync::Arc<crate::runbooks::Runbook>],
        corpus_dir: &Path,
    ) -> Option<crate::matcher::Semantic> {
        let started = std::time::Instant::now();
        let dir = std::path::absolute(corpus_dir).unwrap_or_else(|_| corpus_dir.to_path_buf());
        let scope = hex::encode(&Sha256::digest(dir.as_os_str().as_encoded_bytes())[..4]);
        match SemanticIndex::build(
            self.embedder.clone(),
            runbooks,
            self.cache_dir.as_deref(),
            &scope,
        ) {
            Ok(index) => {
                tracing::info!(
                    runbooks = runbooks.len(),
                    embedded = index.embedded,
                    ms = started.elapsed().as_millis() as u64,
                    "runbook embeddings ready"
                );
                Some(crate::matcher::Semantic {
                    index: std::sync::Arc::new(index),
                    weight: self.weight,
                })
            }
            Err(error) => {
                tracing::error!(%error, "cannot embed the runbooks: matching on words alone");
                None
            }
        }
    }
}

/// SHA-256 of a file, read a block at a time.
fn file_digest(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut block = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut block)?;
        if n == 0 {
            break;
        }
        hasher.update(&block[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Cosine similarity of two unit vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The model for tests in other modules (`None`, said, where it is not fetched).
#[cfg(test)]
pub(crate) fn test_model() -> Option<Embedder> {
    tests::model()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The model, when `scripts/fetch-model.sh` has put it where the default config looks.
    pub(crate) fn model() -> Option<Embedder> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/all-MiniLM-L6-v2");
        let loaded = Embedder::load_if_present(&dir).expect("a model that is there loads");
        if loaded.is_none() {
            assert!(
                std::env::var_os("RUNLINK_REQUIRE_EXTERNAL").is_none(),
                "the embedding model is required here: run scripts/fetch-model.sh"
            );
            eprintln!("skipped: no embedding model (scripts/fetch-model.sh fetches it)");
        }
        loaded
    }

    #[test]
    fn no_model_is_not_an_error_and_a_broken_one_is() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Embedder::load_if_present(dir.path()).unwrap().is_none());
        std::fs::write(dir.path().join("model.safetensors"), b"not weights").unwrap();
        let error = Embedder::load_if_present(dir.path()).unwrap_err();
        assert!(error.to_string().contains("config.json"), "{error}");
    }

    #[test]
    fn a_paraphrase_is_nearer_than_an_unrelated_text_and_padding_changes_nothing() {
        let Some(model) = model() else { return };
        let texts = [
            "pods restarting repeatedly in namespace shop",
            "Pod is crash looping: a container keeps restarting",
            "TLS certificate will expire soon",
        ];
        let v = model.embed(&texts).unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v[0].len(), 384);
        let norm: f32 = v[0].iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "{norm}");
        assert!(
            cosine(&v[0], &v[1]) > cosine(&v[0], &v[2]) + 0.1,
            "{} vs {}",
            cosine(&v[0], &v[1]),
            cosine(&v[0], &v[2])
        );
        // In a batch the short text is padded to the long one's length; alone it is not.
        let alone = model.embed_one(texts[0]).unwrap();
        assert!(cosine(&alone, &v[0]) > 0.9999, "{}", cosine(&alone, &v[0]));
    }
}
