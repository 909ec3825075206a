use super::*;

#[test]
fn defaults_are_the_embedded_setup() {
    let config = Config::from_toml("").unwrap();
    assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(
        config.store,
        StoreUrl::Sqlite(PathBuf::from("data/runlink.db"))
    );
    assert_eq!(
        config.destinations.github.unwrap().common.api_url.as_str(),
        "https://api.github.com/"
    );
    assert!(config.sources.github_secret.is_none());
    assert!(config.destinations.jira.is_none());
    assert!(config.routes.is_empty());
}

#[test]
fn bad_listen_address_names_the_key() {
    let err = Config::from_toml("[server]\nlisten = \"nowhere\"").unwrap_err();
    assert!(err.to_string().contains("server.listen"), "{err}");
}

#[test]
fn bad_base_url_names_the_key() {
    let err = Config::from_toml("[runbooks]\nbase_url = \"not a url\"").unwrap_err();
    assert!(err.to_string().contains("runbooks.base_url"), "{err}");
}

#[test]
fn unknown_store_scheme_names_the_key() {
    let err = Config::from_toml("[store]\nurl = \"mysql://x\"").unwrap_err();
    assert!(err.to_string().contains("store.url"), "{err}");
}

#[test]
fn bad_normalization_regex_names_the_key() {
    let err = Config::from_toml(
        "[[matcher.normalize]]\nname = \"broken\"\npattern = \"(\"\nreplace = \"x\"",
    )
    .unwrap_err();
    assert!(err.to_string().contains("matcher.normalize"), "{err}");
}

#[test]
fn the_example_config_is_valid_and_matches_the_defaults() {
    let example = Config::from_toml(include_str!("../../runlink.example.toml")).unwrap();
    let defaults = Config::from_toml("").unwrap();
    assert_eq!(format!("{example:?}"), format!("{defaults:?}"));
}

#[test]
fn pacing_keys_are_read_per_destination() {
    let config =
        Config::from_toml("[destinations.github]\nrate_per_sec = 5.5\nburst = 3\nconcurrency = 7")
            .unwrap();
    let pacing = config.destinations.github.unwrap().common.pacing;
    assert_eq!(
        (pacing.rate_per_sec, pacing.burst, pacing.concurrency),
        (5.5, 3, 7)
    );
    let err = Config::from_toml("[destinations.github]\nrate_per_sec = 0").unwrap_err();
    assert!(err.to_string().contains("destinations.github"), "{err}");
}

#[test]
fn secrets_do_not_print() {
    let config = Config::from_toml("[destinations.github]\ntoken = \"ghp_supersecret\"").unwrap();
    assert!(!format!("{config:?}").contains("supersecret"));
}

#[test]
fn every_destination_is_enabled_by_its_api_url_and_checked() {
    let config = Config::from_toml(
        r#"
[destinations.jira]
api_url = "https://acme.atlassian.net"
email = "bot@acme.com"
token = "t"
[destinations.pagerduty]
api_url = "https://api.pagerduty.com"
token = "t"
from = "bot@acme.com"
[destinations.opsgenie]
api_url = "https://api.opsgenie.com"
api_key = "k"
[destinations.servicenow]
api_url = "https://acme.service-now.com"
token = "t"
[destinations.generic.chat]
api_url = "https://chat.internal/api"
[[routes]]
source = "alertmanager"
destination = "jira"
annotation = "ticket"
"#,
    )
    .unwrap();
    assert_eq!(
        config.destinations.names(),
        [
            "github",
            "jira",
            "pagerduty",
            "opsgenie",
            "servicenow",
            "generic.chat"
        ]
    );
    assert_eq!(config.routes.len(), 1);

    let err = Config::from_toml("[destinations.pagerduty]\napi_url = \"https://x\"\ntoken = \"t\"")
        .unwrap_err();
    assert!(
        err.to_string().contains("destinations.pagerduty.from"),
        "{err}"
    );
    let err = Config::from_toml("[destinations.jira]\napi_url = \"https://x\"").unwrap_err();
    assert!(err.to_string().contains("destinations.jira"), "{err}");
    let err = Config::from_toml("[[routes]]\ndestination = \"jira\"\nannotation = \"ticket\"")
        .unwrap_err();
    assert!(err.to_string().contains("routes.destination"), "{err}");
    let err =
        Config::from_toml("[sources.generic.x]\ntitle = \"title\"\nid = \"/id\"").unwrap_err();
    assert!(
        err.to_string().contains("sources.generic.<name>.title"),
        "{err}"
    );
}

#[test]
fn unauthenticated_sources_are_listed_for_the_warning() {
    let config = Config::from_toml(
        "[sources.github]\nsecret = \"s\"\n[sources.pagerduty]\nsecrets = [\"a\"]\n[sources.opsgenie]\nheader = \"X-T\"\n[sources.generic.t]\ntitle = \"/t\"\nid = \"/i\"",
    )
    .unwrap();
    let open = config.sources.unauthenticated();
    assert_eq!(open, vec!["opsgenie".to_string(), "generic.t".to_string()]);
    // A source the settings never mention is not warned about at start-up.
    assert!(!open.contains(&"jira".to_string()));
}

#[test]
fn postgres_urls_are_accepted_and_print_without_their_password() {
    let config =
        Config::from_toml("[store]\nurl = \"postgres://runlink:hunter2@db:5432/runlink\"").unwrap();
    assert!(matches!(config.store, StoreUrl::Postgres(_)));
    let printed = format!("{config:?}");
    assert!(!printed.contains("hunter2"), "{printed}");
    assert!(printed.contains("db:5432"), "{printed}");
}

#[test]
fn a_reply_destination_that_is_not_configured_stops_start_up() {
    let err = Config::from_toml(
        "[sources.generic.helpdesk]\ntitle = \"/t\"\nid = \"/i\"\nreply_destination = \"generic.desk\"\nreply_id = \"/i\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("sources.generic.<name>.reply_destination"),
        "{err}"
    );
    assert!(err.contains("`generic.desk` is not configured"), "{err}");
    let ok = Config::from_toml(
        "[sources.generic.helpdesk]\ntitle = \"/t\"\nid = \"/i\"\nreply_destination = \"generic.desk\"\nreply_id = \"/i\"\n[destinations.generic.desk]\napi_url = \"https://desk.example\"\npath = \"/x\"\n",
    );
    assert!(ok.is_ok(), "{:?}", ok.err());
}

#[test]
fn an_unknown_key_in_a_file_stops_start_up_naming_it() {
    let err = Config::from_toml("[sources.github]\nsecrte = \"s\"\n")
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "unknown configuration key `sources.github.secrte` (did you mean `sources.github.secret`?)"
    );
}
