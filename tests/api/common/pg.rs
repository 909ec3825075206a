//! PostgreSQL for tests: each test gets its own fresh database on the server named by
//! `RUNLINK_TEST_POSTGRES_URL`, so tests run in parallel without seeing each other's rows.

/// The admin URL, or `None` (the test skips) when PostgreSQL is not available here. With
/// `RUNLINK_REQUIRE_EXTERNAL=1` (CI), a missing server is a failure instead.
pub fn admin_url() -> Option<String> {
    match std::env::var("RUNLINK_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("RUNLINK_REQUIRE_EXTERNAL").is_err(),
                "RUNLINK_REQUIRE_EXTERNAL is set but RUNLINK_TEST_POSTGRES_URL is not"
            );
            eprintln!("PostgreSQL part skipped: RUNLINK_TEST_POSTGRES_URL is not set");
            None
        }
    }
}

/// Creates an empty database and returns its URL.
pub async fn fresh_database(admin: &str) -> String {
    let (client, connection) = tokio_postgres::connect(admin, tokio_postgres::NoTls)
        .await
        .expect("the test PostgreSQL answers");
    tokio::spawn(connection);
    let name = format!("runlink_test_{}", uuid::Uuid::new_v4().simple());
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("can create a test database");
    let mut url = url::Url::parse(admin).expect("admin URL parses");
    url.set_path(&format!("/{name}"));
    url.to_string()
}
