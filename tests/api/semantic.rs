//! The embedding model in the running server: `/readyz` says whether it takes part, a
//! ticket worded unlike any runbook is still answered by meaning, and `/v1/match` says why.
//! Without the model the server starts all the same, on words alone.

use std::time::Duration;

use crate::common::*;

fn model_dir() -> Option<std::path::PathBuf> {
    let dir = repo_path("models/all-MiniLM-L6-v2");
    if dir.join("model.safetensors").is_file() {
        return Some(dir);
    }
    assert!(
        std::env::var_os("RUNLINK_REQUIRE_EXTERNAL").is_none(),
        "the embedding model is required here: run scripts/fetch-model.sh"
    );
    eprintln!("skipped: no embedding model (scripts/fetch-model.sh fetches it)");
    None
}

fn semantic_config(dir: &std::path::Path, model: &std::path::Path) -> runlink::config::Config {
    test_config(
        dir,
        "http://127.0.0.1:9",
        &format!(
            "[matcher]\nsemantic_weight = 0.5\nmodel_dir = \"{}\"\nembedding_cache_dir = \"{}\"\n",
            model.display(),
            dir.join("cache").display()
        ),
    )
}

async fn preview(app: &TestApp, title: &str) -> serde_json::Value {
    app.preview(&serde_json::json!({ "title": title }))
        .await
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_model_answers_by_meaning_and_says_so() {
    let Some(model) = model_dir() else { return };
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(semantic_config(dir.path(), &model)).await;
    let ready: serde_json::Value = app.readyz().await.json().await.unwrap();
    assert_eq!(ready["semantic"], "on", "{ready}");
    // The runbook vectors were kept for the next start.
    let cached = std::fs::read_dir(dir.path().join("cache")).unwrap().count();
    assert_eq!(cached, 1);

    let v = preview(
        &app,
        "checkout-api pods restarting repeatedly in namespace shop",
    )
    .await;
    let first = &v["matches"][0];
    assert_eq!(first["runbook"], "kubernetes/pod-crash-looping.md", "{v}");
    let why = first["why"].as_str().unwrap();
    assert!(why.contains("meaning similarity"), "{why}");
    app.stop().await;
}

#[tokio::test]
async fn without_the_model_the_server_starts_on_words_alone() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("no-model");
    std::fs::create_dir_all(&empty).unwrap();
    let app = TestApp::spawn(semantic_config(dir.path(), &empty)).await;
    let ready: serde_json::Value = app.readyz().await.json().await.unwrap();
    assert_eq!(ready["semantic"], "off", "{ready}");
    let v = preview(&app, "Disk on logs-1 will fill up within 4 hours").await;
    assert_eq!(v["matches"][0]["runbook"], "host/disk-full.md", "{v}");
    assert!(!v["matches"][0]["why"].as_str().unwrap().contains("meaning"));
    app.drained(Duration::from_secs(5)).await;
    app.stop().await;
}
