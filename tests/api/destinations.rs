//! Each destination against a wiremock standing in for its API: the request it sends (method,
//! path, auth headers, body shape), how it reads the answer (2xx done, 4xx give up, 429 and
//! 5xx retry with the server's `Retry-After`), and the marker check that prevents a second
//! comment after an uncertain attempt.

use std::sync::Arc;
use std::time::Duration;

use runlink::config::Config;
use runlink::deliver::jira_markup::validate_adf;
use runlink::deliver::retry::{RetryPolicy, Verdict};
use runlink::deliver::{Destination, http_client};
use runlink::outbox::OutboxItem;
use runlink::ticket::{ReplyTarget, TicketId};
use runlink::wiring::build_destinations;
use serde_json::{Value, json};
use wiremock::matchers::{any, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const BODY: &str = "## Runbook for this alarm\n\n**[Disk full](https://rb.example/disk)**\n\nFirst steps:\n\n1. Run `df -h`\n\n```sh\ndu -xh / | sort -h\n```\n\nref runlink:delivery=k1\n<!-- runlink:delivery=k1 -->\n";

fn destination(toml: &str, name: &str) -> Arc<dyn Destination> {
    let config = Config::from_toml(toml).expect("config is valid");
    let policy = RetryPolicy {
        base: Duration::from_millis(10),
        cap: Duration::from_millis(100),
        max_attempts: 5,
    };
    let client = http_client(Duration::from_secs(5)).unwrap();
    let (mut destinations, _) = build_destinations(
        &config.destinations,
        &client,
        &policy,
        &runlink::render::MarkerKey::ephemeral(),
    )
    .unwrap();
    destinations.remove(name).expect("destination is enabled")
}

fn item(destination: &str, target: ReplyTarget) -> OutboxItem {
    OutboxItem {
        id: 1,
        delivery_key: "k1".into(),
        ticket: TicketId::parse("src:1").unwrap(),
        destination: destination.into(),
        target,
        body: BODY.into(),
        attempts: 0,
        uncertain: false,
        created_ms: 0,
        lease_until_ms: i64::MAX,
    }
}

/// One request captured by the double.
async fn only_request(server: &MockServer) -> wiremock::Request {
    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1, "{requests:?}");
    requests.into_iter().next().unwrap()
}

fn header(request: &wiremock::Request, name: &str) -> String {
    request
        .headers
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

async fn answering(status: u16, body: Value) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(status).set_body_json(body))
        .mount(&server)
        .await;
    server
}

/// The verdict for each kind of answer, the same for every destination: the policy object
/// is shared, but each destination must hand it the real status and headers.
async fn assert_classification(toml_for: impl Fn(&str) -> String, name: &str, target: ReplyTarget) {
    for (status, retry_after, expect) in [
        (201, None, "done"),
        (202, None, "done"),
        (400, None, "give_up"),
        (404, None, "give_up"),
        (429, Some("7"), "retry"),
        (500, None, "retry"),
        (501, None, "give_up"),
        (503, Some("3"), "retry"),
    ] {
        let server = MockServer::start().await;
        let mut response = ResponseTemplate::new(status).set_body_json(json!({}));
        if let Some(after) = retry_after {
            response = response.insert_header("Retry-After", after);
        }
        Mock::given(any())
            .respond_with(response)
            .mount(&server)
            .await;
        let d = destination(&toml_for(&server.uri()), name);
        let attempt = d.post(&item(name, target.clone())).await;
        let got = match &attempt.verdict {
            Verdict::Done => "done",
            Verdict::Retry { after, .. } => {
                if let Some(secs) = retry_after {
                    assert_eq!(
                        *after,
                        Some(Duration::from_secs(secs.parse().unwrap())),
                        "{name} {status}: Retry-After is honoured"
                    );
                }
                "retry"
            }
            Verdict::GiveUp { .. } => "give_up",
        };
        assert_eq!(got, expect, "{name} answered {status}: {attempt:?}");
        assert_eq!(attempt.status, Some(status));
    }
}

fn jira_toml(url: &str) -> String {
    format!(
        "[destinations.jira]\napi_url = \"{url}\"\nemail = \"bot@example.com\"\ntoken = \"jira-token\"\ninternal = true\n"
    )
}

#[tokio::test]
async fn jira_cloud_gets_an_adf_comment_with_basic_auth_and_properties() {
    let server = answering(201, json!({"id": "10001"})).await;
    let d = destination(&jira_toml(&server.uri()), "jira");
    let key = ReplyTarget::JiraIssue {
        key: "OPS-7".into(),
    };
    let attempt = d.post(&item("jira", key)).await;
    assert_eq!(attempt.verdict, Verdict::Done);
    let request = only_request(&server).await;
    assert_eq!(request.method.as_str(), "POST");
    assert_eq!(request.url.path(), "/rest/api/3/issue/OPS-7/comment");
    // base64("bot@example.com:jira-token")
    assert_eq!(
        header(&request, "authorization"),
        "Basic Ym90QGV4YW1wbGUuY29tOmppcmEtdG9rZW4="
    );
    let body: Value = serde_json::from_slice(&request.body).unwrap();
    validate_adf(&body["body"]).expect("the comment is a valid ADF document");
    let doc = body["body"]["content"].as_array().unwrap();
    assert_eq!(doc[0]["type"], "heading");
    let link = doc
        .iter()
        .flat_map(|n| n["content"].as_array().cloned().unwrap_or_default())
        .find(|t| t["text"] == "Disk full")
        .expect("the runbook title is a text node");
    assert!(
        link["marks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["type"] == "link" && m["attrs"]["href"] == "https://rb.example/disk"),
        "{link}"
    );
    assert!(doc.iter().any(|n| n["type"] == "orderedList"));
    assert!(
        doc.iter()
            .any(|n| n["type"] == "codeBlock" && n["attrs"]["language"] == "sh")
    );
    let properties = body["properties"].as_array().unwrap();
    assert!(properties.contains(&json!({"key": "runlink", "value": {"delivery": "k1"}})));
    assert!(properties.contains(&json!({"key": "sd.public.comment", "value": {"internal": true}})));
}

#[tokio::test]
async fn jira_server_gets_wiki_markup_with_a_bearer_token() {
    let server = answering(201, json!({"id": "10001"})).await;
    let toml = format!(
        "[destinations.jira]\napi_url = \"{}/jira\"\nbearer_token = \"pat\"\napi_version = 2\n",
        server.uri()
    );
    let d = destination(&toml, "jira");
    let attempt = d
        .post(&item(
            "jira",
            ReplyTarget::JiraIssue {
                key: "OPS-7".into(),
            },
        ))
        .await;
    assert_eq!(attempt.verdict, Verdict::Done);
    let request = only_request(&server).await;
    assert_eq!(request.url.path(), "/jira/rest/api/2/issue/OPS-7/comment");
    assert_eq!(header(&request, "authorization"), "Bearer pat");
    let body: Value = serde_json::from_slice(&request.body).unwrap();
    let wiki = body["body"].as_str().expect("v2 bodies are strings");
    assert!(
        wiki.contains("*[Disk full|https://rb.example/disk]*"),
        "{wiki}"
    );
    assert!(wiki.contains("{code:sh}"), "{wiki}");
}

#[tokio::test]
async fn jira_marker_check_reads_comment_properties() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "startAt": 0, "maxResults": 100, "total": 2,
            "comments": [
                {"id": "1", "properties": []},
                {"id": "2", "properties": [{"key": "runlink", "value": {"delivery": "k1"}}]}
            ]
        })))
        .mount(&server)
        .await;
    let d = destination(&jira_toml(&server.uri()), "jira");
    let target = ReplyTarget::JiraIssue {
        key: "OPS-7".into(),
    };
    assert_eq!(
        d.has_marker(&item("jira", target.clone()), "runlink:delivery=k1")
            .await,
        Some(true)
    );
    let mut other = item("jira", target);
    other.delivery_key = "k2".into();
    assert_eq!(
        d.has_marker(&other, "runlink:delivery=k2").await,
        Some(false)
    );
    let request = &server.received_requests().await.unwrap()[0];
    assert!(request.url.query().unwrap().contains("expand=properties"));
}

#[tokio::test]
async fn jira_classifies_answers() {
    assert_classification(
        jira_toml,
        "jira",
        ReplyTarget::JiraIssue {
            key: "OPS-7".into(),
        },
    )
    .await;
}

fn pagerduty_toml(url: &str) -> String {
    format!(
        "[destinations.pagerduty]\napi_url = \"{url}\"\ntoken = \"pd-token\"\nfrom = \"oncall@example.com\"\n"
    )
}

#[tokio::test]
async fn pagerduty_gets_a_note_with_token_and_from_headers() {
    let server = answering(201, json!({"note": {"id": "PWL7QXS"}})).await;
    let d = destination(&pagerduty_toml(&server.uri()), "pagerduty");
    let target = ReplyTarget::PagerdutyIncident { id: "Q2WG5".into() };
    assert_eq!(
        d.post(&item("pagerduty", target)).await.verdict,
        Verdict::Done
    );
    let request = only_request(&server).await;
    assert_eq!(request.method.as_str(), "POST");
    assert_eq!(request.url.path(), "/incidents/Q2WG5/notes");
    assert_eq!(header(&request, "authorization"), "Token token=pd-token");
    assert_eq!(header(&request, "from"), "oncall@example.com");
    assert!(header(&request, "accept").contains("application/vnd.pagerduty+json"));
    let body: Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(body["note"]["content"], BODY);
}

#[tokio::test]
async fn pagerduty_marker_check_reads_notes() {
    let server = answering(
        200,
        json!({"notes": [{"id": "N1", "content": "x\nref runlink:delivery=k1"}]}),
    )
    .await;
    let d = destination(&pagerduty_toml(&server.uri()), "pagerduty");
    let target = ReplyTarget::PagerdutyIncident { id: "Q2WG5".into() };
    let it = item("pagerduty", target);
    assert_eq!(d.has_marker(&it, "runlink:delivery=k1").await, Some(true));
    assert_eq!(d.has_marker(&it, "runlink:delivery=k9").await, Some(false));
}

#[tokio::test]
async fn pagerduty_classifies_answers() {
    assert_classification(
        pagerduty_toml,
        "pagerduty",
        ReplyTarget::PagerdutyIncident { id: "Q2WG5".into() },
    )
    .await;
}

fn opsgenie_toml(url: &str) -> String {
    format!("[destinations.opsgenie]\napi_url = \"{url}\"\napi_key = \"genie\"\n")
}

#[tokio::test]
async fn opsgenie_gets_a_note_and_202_counts_as_done() {
    let server = answering(
        202,
        json!({"result": "Request will be processed", "took": 0.1, "requestId": "r1"}),
    )
    .await;
    let d = destination(&opsgenie_toml(&server.uri()), "opsgenie");
    let target = ReplyTarget::OpsgenieAlert { id: "a-1".into() };
    let attempt = d.post(&item("opsgenie", target.clone())).await;
    assert_eq!(attempt.verdict, Verdict::Done);
    assert_eq!(attempt.status, Some(202));
    let request = only_request(&server).await;
    assert_eq!(request.method.as_str(), "POST");
    assert_eq!(request.url.path(), "/v2/alerts/a-1/notes");
    assert_eq!(request.url.query(), Some("identifierType=id"));
    assert_eq!(header(&request, "authorization"), "GenieKey genie");
    let body: Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(body["note"], BODY);
    assert_eq!(body["user"], "runlink");
}

#[tokio::test]
async fn opsgenie_classifies_answers() {
    assert_classification(
        opsgenie_toml,
        "opsgenie",
        ReplyTarget::OpsgenieAlert { id: "a-1".into() },
    )
    .await;
}

fn servicenow_toml(url: &str) -> String {
    format!(
        "[destinations.servicenow]\napi_url = \"{url}\"\nusername = \"runlink\"\npassword = \"pw\"\n"
    )
}

#[tokio::test]
async fn servicenow_gets_a_work_note_by_patch_with_basic_auth() {
    let server = answering(200, json!({"result": {"sys_id": "abc"}})).await;
    let d = destination(&servicenow_toml(&server.uri()), "servicenow");
    let target = ReplyTarget::ServicenowRecord {
        table: "incident".into(),
        sys_id: "abc".into(),
    };
    assert_eq!(
        d.post(&item("servicenow", target.clone())).await.verdict,
        Verdict::Done
    );
    let request = only_request(&server).await;
    assert_eq!(request.method.as_str(), "PATCH");
    assert_eq!(request.url.path(), "/api/now/table/incident/abc");
    assert_eq!(header(&request, "authorization"), "Basic cnVubGluazpwdw==");
    let body: Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(body, json!({"work_notes": BODY}));
}

#[tokio::test]
async fn servicenow_marker_check_queries_the_journal() {
    let server = answering(200, json!({"result": [{"sys_id": "j1"}]})).await;
    let d = destination(&servicenow_toml(&server.uri()), "servicenow");
    let target = ReplyTarget::ServicenowRecord {
        table: "incident".into(),
        sys_id: "abc".into(),
    };
    assert_eq!(
        d.has_marker(&item("servicenow", target), "runlink:delivery=k1")
            .await,
        Some(true)
    );
    let request = only_request(&server).await;
    assert_eq!(request.url.path(), "/api/now/table/sys_journal_field");
    let query: Vec<(String, String)> = request.url.query_pairs().into_owned().collect();
    assert!(query.contains(&(
        "sysparm_query".into(),
        "element_id=abc^element=work_notes^valueLIKErunlink:delivery=k1".into()
    )));
}

#[tokio::test]
async fn servicenow_classifies_answers() {
    assert_classification(
        servicenow_toml,
        "servicenow",
        ReplyTarget::ServicenowRecord {
            table: "incident".into(),
            sys_id: "abc".into(),
        },
    )
    .await;
}

fn generic_toml(url: &str) -> String {
    format!(
        r#"[destinations.generic.chat]
api_url = "{url}/api"
method = "PUT"
path = "/rooms/{{{{ target.id|urlencode }}}}/messages/{{{{ delivery_key }}}}"
body = '{{"text": {{{{ comment|tojson }}}}, "ticket": {{{{ ticket|tojson }}}}}}'
headers = {{ "X-Api-Key" = "chat-key" }}
"#
    )
}

#[tokio::test]
async fn generic_http_sends_the_configured_request() {
    let server = answering(200, json!({"ok": true})).await;
    let d = destination(&generic_toml(&server.uri()), "generic.chat");
    let target = ReplyTarget::Generic {
        name: "chat".into(),
        id: "ops alerts".into(),
    };
    assert_eq!(
        d.post(&item("generic.chat", target.clone())).await.verdict,
        Verdict::Done
    );
    let request = only_request(&server).await;
    assert_eq!(request.method.as_str(), "PUT");
    assert_eq!(request.url.path(), "/api/rooms/ops%20alerts/messages/k1");
    assert_eq!(header(&request, "x-api-key"), "chat-key");
    assert_eq!(header(&request, "content-type"), "application/json");
    let body: Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(body, json!({"text": BODY, "ticket": "src:1"}));
    // Nothing to list comments with: by default an uncertain attempt is posted again...
    assert_eq!(
        d.has_marker(&item("generic.chat", target.clone()), "runlink:delivery=k1")
            .await,
        Some(false)
    );
    // ...or, held, retried as uncertain until an operator looks at the dead letter.
    let held = destination(
        &format!("{}on_uncertain = \"hold\"\n", generic_toml(&server.uri())),
        "generic.chat",
    );
    assert_eq!(
        held.has_marker(&item("generic.chat", target), "runlink:delivery=k1")
            .await,
        None
    );
}

/// With a lookup, the marker check reads the tracker's comments like any other destination.
#[tokio::test]
async fn a_generic_lookup_runs_the_marker_check() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/rooms/ops/messages"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "data": {"messages": [{"text": "hello"}, {"text": "x <!-- runlink:delivery=k1 -->"}]}
        })))
        .mount(&server)
        .await;
    let toml = format!(
        "{}lookup_path = \"/rooms/{{{{ target.id|urlencode }}}}/messages\"\nlookup_pointer = \"/data/messages\"\n",
        generic_toml(&server.uri())
    );
    let d = destination(&toml, "generic.chat");
    let target = ReplyTarget::Generic {
        name: "chat".into(),
        id: "ops".into(),
    };
    let it = item("generic.chat", target);
    assert_eq!(d.has_marker(&it, "runlink:delivery=k1").await, Some(true));
    assert_eq!(d.has_marker(&it, "runlink:delivery=k2").await, Some(false));
    let request = server.received_requests().await.unwrap().remove(0);
    assert_eq!(header(&request, "x-api-key"), "chat-key");
    let bad = format!("{}lookup_path = \"/x\"\n", generic_toml(&server.uri()));
    let error = Config::from_toml(&bad).unwrap_err().to_string();
    assert!(error.contains("lookup_pointer"), "{error}");
}

/// A reply id from a ticket cannot steer the request, with the configured key, to another
/// endpoint: `urlencode` makes it one segment, and a path that does not encode it is refused.
#[tokio::test]
async fn a_target_id_cannot_leave_its_path_segment() {
    let server = answering(200, json!({"ok": true})).await;
    let d = destination(&generic_toml(&server.uri()), "generic.chat");
    let hostile = ReplyTarget::Generic {
        name: "chat".into(),
        id: "../admin/users/1/delete?".into(),
    };
    assert_eq!(
        d.post(&item("generic.chat", hostile.clone())).await.verdict,
        Verdict::Done
    );
    let request = only_request(&server).await;
    assert_eq!(
        request.url.path(),
        "/api/rooms/..%2Fadmin%2Fusers%2F1%2Fdelete%3F/messages/k1"
    );
    assert_eq!(request.url.query(), None);

    let unencoded = generic_toml(&server.uri()).replace("target.id|urlencode", "target.id");
    let d = destination(&unencoded, "generic.chat");
    for id in ["../admin/users/1/delete?", "..", "a/b", "a#b"] {
        let target = ReplyTarget::Generic {
            name: "chat".into(),
            id: id.into(),
        };
        let attempt = d.post(&item("generic.chat", target)).await;
        assert!(
            matches!(&attempt.verdict, Verdict::GiveUp { reason } if reason.contains("one path segment")),
            "{id}: {attempt:?}"
        );
    }
    // `..` stays `..` when encoded, and climbs: refused with the filter too.
    let d = destination(&generic_toml(&server.uri()), "generic.chat");
    let dots = ReplyTarget::Generic {
        name: "chat".into(),
        id: "..".into(),
    };
    let attempt = d.post(&item("generic.chat", dots)).await;
    assert!(
        matches!(attempt.verdict, Verdict::GiveUp { .. }),
        "{attempt:?}"
    );
    // Only the first, encoded request went out.
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn generic_http_classifies_answers() {
    assert_classification(
        generic_toml,
        "generic.chat",
        ReplyTarget::Generic {
            name: "chat".into(),
            id: "room".into(),
        },
    )
    .await;
}

#[tokio::test]
async fn github_classifies_answers() {
    assert_classification(
        |url| format!("[destinations.github]\napi_url = \"{url}\"\ntoken = \"t\"\n"),
        "github",
        ReplyTarget::GithubIssue {
            owner: "acme".into(),
            repo: "ops".into(),
            number: 3,
        },
    )
    .await;
}

#[tokio::test]
async fn a_destination_refuses_a_target_of_another_kind() {
    let server = answering(201, json!({})).await;
    let d = destination(&pagerduty_toml(&server.uri()), "pagerduty");
    let attempt = d
        .post(&item(
            "pagerduty",
            ReplyTarget::JiraIssue {
                key: "OPS-1".into(),
            },
        ))
        .await;
    assert!(matches!(attempt.verdict, Verdict::GiveUp { .. }));
    assert!(server.received_requests().await.unwrap().is_empty());
}
