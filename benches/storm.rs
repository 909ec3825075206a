//! Failback storm and ingest benchmarks against a release build of runlink.
//!
//!   cargo bench --bench storm -- [storm] [--n 10000] [--rate 200] [--clients 64]
//!                                [--postgres URL --replicas 3]
//!   cargo bench --bench storm -- ingest [--seconds 10] [--rounds 5] [--clients 32]
//!
//! `storm`: N GitHub webhooks from many concurrent clients, against a GitHub double that
//! allows R comments per second and answers 429 + `Retry-After: 1` beyond that (runlink is
//! configured 20 % above R, so it must be told to slow down). Prints accepted, rejected,
//! lost, duplicates, time to accept the burst, time to drain against the ideal N/R, requests
//! that arrived inside a Retry-After window runlink had already been given, and peak RSS.
//! With `--postgres URL` the store is that (empty) PostgreSQL database and `--replicas K`
//! runlink processes share it, the webhooks spread round robin across them; each replica
//! paces at its share of the rate.
//!
//! `ingest`: durable Alertmanager notifications per second (runlink, delivery worker off, each
//! alert matched, rendered and queued) side by side with an actix-web handler that decodes the
//! same body and stores nothing, the two taking turns in rounds, then ack latency at a steady
//! 1,000 requests per second.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use futures::StreamExt;

const SECRET: &str = "storm-secret";

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn sarg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn repo(relative: &str) -> String {
    format!("{}/{relative}", env!("CARGO_MANIFEST_DIR"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn issue(n: u64) -> String {
    let titles = [
        "Disk on logs-{n} will fill up within 4 hours",
        "[FIRING:1] KubePodCrashLooping",
        "Certificate for api-{n}.example.com expires in 5 days",
        "Replication lag on db-{n} above 30s",
        "Node web-{n} is not ready",
    ];
    let title = titles[n as usize % titles.len()].replace("{n}", &n.to_string());
    serde_json::json!({
        "action": "opened",
        "issue": {"number": n, "title": title, "body": "Opened by the alerting bridge after datacenter failback.", "labels": [{"name": "alert"}]},
        "repository": {"name": "ops", "full_name": "acme/ops", "owner": {"login": "acme"}},
        "sender": {"login": "alertbot", "type": "Bot"}
    })
    .to_string()
}

/// A realistic Alertmanager v4 notification (the shape a real Alertmanager sends), one firing
/// alert, unique per `n`, answered on a GitHub issue.
fn alertmanager_body(n: u64) -> String {
    serde_json::json!({
        "receiver": "runlink", "status": "firing", "version": "4",
        "groupKey": format!("{{}}:{{alertname=\"HighErrorRate\",instance=\"web-{n}\"}}"),
        "truncatedAlerts": 0,
        "groupLabels": {"alertname": "HighErrorRate"},
        "commonLabels": {"alertname": "HighErrorRate", "service": "checkout", "severity": "critical"},
        "commonAnnotations": {"summary": "Error rate above 5%"},
        "externalURL": "http://alertmanager:9093",
        "alerts": [{
            "status": "firing",
            "labels": {"alertname": "HighErrorRate", "instance": format!("10.0.{}.{}:8080", n / 250 % 250, n % 250), "service": "checkout", "severity": "critical"},
            "annotations": {"summary": "Error rate above 5%", "description": format!("5xx ratio on web-{n} is 7.3% over the last 5 minutes"), "github_issue": format!("acme/ops#{n}")},
            "startsAt": "2026-11-23T19:40:30.109910513Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090/graph?g0.expr=sum%28rate%28http_requests_total%7Bcode%3D~%225..%22%7D%5B5m%5D%29%29+%2F+sum%28rate%28http_requests_total%5B5m%5D%29%29+%3E+0.05&g0.tab=1",
            "fingerprint": format!("{n:016x}")
        }]
    })
    .to_string()
}

fn sign(body: &str) -> String {
    format!(
        "sha256={}",
        runlink::ingest::sign_hmac_sha256(SECRET.as_bytes(), body.as_bytes())
    )
}

fn start_runlink(dir: &std::path::Path, port: u16, extra: &str) -> Child {
    let store = format!("sqlite://{}", dir.join("runlink.db").display());
    start_replica(dir, port, extra, &store)
}

fn start_replica(dir: &std::path::Path, port: u16, extra: &str, store: &str) -> Child {
    let config = dir.join(format!("runlink-{port}.toml"));
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[runbooks]\ndir = \"{}\"\n[templates]\ndir = \"{}\"\n[store]\nurl = \"{store}\"\n[sources.github]\nsecret = \"{SECRET}\"\n{extra}",
            repo("index/runbooks"),
            repo("templates"),
        ),
    )
    .unwrap();
    // RUNLINK_BIN runs another build against the same load (to compare two builds).
    let bin = std::env::var("RUNLINK_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_runlink").into());
    Command::new(bin)
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("runlink starts")
}

async fn wait_healthy(client: &reqwest::Client, base: &str) {
    for _ in 0..400 {
        if let Ok(r) = client.get(format!("{base}/healthz")).send().await
            && r.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("runlink did not start");
}

/// CPU time (user + system) a process has used so far, in seconds.
fn cpu_secs(pid: u32) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // The fields after the command name, which is in parentheses.
            let rest = &s[s.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / ticks)
        })
        .unwrap_or(0.0)
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// The GitHub double: a token bucket of `rate` per second; beyond it, 429 + Retry-After: 1.
#[derive(Default)]
struct Double {
    rate: f64,
    tokens: f64,
    refilled: Option<Instant>,
    /// Per issue number, the markers of the comments it got.
    comments: HashMap<String, Vec<String>>,
    throttled: u64,
    /// Retry-After windows runlink was told about: (answered at, until).
    windows: Vec<(Instant, Instant)>,
    /// POSTs that arrived inside a window, more than the in-flight grace after it was given.
    in_window: u64,
    /// Arrival times of all POSTs, for the per-second trace.
    arrivals: Vec<(Instant, bool)>,
}

/// A request already on the wire when the 429 went out cannot have seen it.
const IN_FLIGHT_GRACE: Duration = Duration::from_millis(100);

fn marker_of(body: &str) -> String {
    body.split("<!-- runlink:delivery=")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or("")
        .to_string()
}

async fn double_post(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<Mutex<Double>>,
) -> HttpResponse {
    let now = Instant::now();
    let mut d = state.lock().unwrap();
    if d.windows
        .iter()
        .any(|(given, until)| now > *given + IN_FLIGHT_GRACE && now < *until)
    {
        d.in_window += 1;
    }
    let elapsed = d
        .refilled
        .map(|t| now.duration_since(t).as_secs_f64())
        .unwrap_or(0.0);
    // One second of requests may come at once, as real APIs allow.
    let cap = d.rate.max(1.0);
    d.tokens = (d.tokens + elapsed * d.rate).min(cap);
    d.refilled = Some(now);
    let throttle = d.tokens < 1.0;
    d.arrivals.push((now, throttle));
    if throttle {
        d.throttled += 1;
        d.windows.push((now, now + Duration::from_secs(1)));
        return HttpResponse::TooManyRequests()
            .insert_header(("Retry-After", "1"))
            .finish();
    }
    d.tokens -= 1.0;
    let text: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let marker = marker_of(text["body"].as_str().unwrap_or(""));
    d.comments
        .entry(req.path().to_string())
        .or_default()
        .push(marker);
    HttpResponse::Created().json(serde_json::json!({"id": 1}))
}

async fn double_list(req: HttpRequest, state: web::Data<Mutex<Double>>) -> HttpResponse {
    let d = state.lock().unwrap();
    let bodies: Vec<serde_json::Value> = d
        .comments
        .get(req.path())
        .map(|ms| {
            ms.iter()
                .map(|m| serde_json::json!({"body": format!("<!-- runlink:delivery={m} -->")}))
                .collect()
        })
        .unwrap_or_default();
    HttpResponse::Ok().json(bodies)
}

fn start_double(rate: f64) -> (u16, web::Data<Mutex<Double>>) {
    let state = web::Data::new(Mutex::new(Double {
        rate,
        tokens: rate.max(1.0),
        ..Double::default()
    }));
    let port = free_port();
    let shared = state.clone();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            HttpServer::new(move || {
                App::new()
                    .app_data(shared.clone())
                    .route(
                        "/repos/{o}/{r}/issues/{n}/comments",
                        web::post().to(double_post),
                    )
                    .route(
                        "/repos/{o}/{r}/issues/{n}/comments",
                        web::get().to(double_list),
                    )
            })
            .workers(1)
            .disable_signals()
            .bind(("127.0.0.1", port))
            .unwrap()
            .run()
            .await
            .unwrap()
        })
    });
    std::thread::sleep(Duration::from_millis(200));
    (port, state)
}

async fn post_all(
    client: &reqwest::Client,
    bases: &[String],
    n: u64,
    clients: usize,
) -> Vec<(u64, Option<u16>)> {
    futures::stream::iter(0..n)
        .map(|i| {
            let client = client.clone();
            let url = format!("{}/webhooks/github", bases[i as usize % bases.len()]);
            async move {
                let body = issue(i);
                let status = client
                    .post(url)
                    .header("X-GitHub-Event", "issues")
                    .header("X-GitHub-Delivery", format!("storm-{i}"))
                    .header("X-Hub-Signature-256", sign(&body))
                    .body(body)
                    .send()
                    .await
                    .ok()
                    .map(|r| r.status().as_u16());
                (i, status)
            }
        })
        .buffer_unordered(clients)
        .collect()
        .await
}

async fn storm(args: &[String]) {
    let n = arg(args, "--n", 10_000);
    let rate = arg(args, "--rate", 200) as f64;
    let clients = arg(args, "--clients", 64) as usize;
    let postgres = sarg(args, "--postgres");
    let replicas = if postgres.is_some() {
        arg(args, "--replicas", 3).max(1)
    } else {
        1
    };
    let (double_port, double) = start_double(rate);
    let dir = tempfile::tempdir().unwrap();
    // Pacing is per replica: each takes its share of what the destination allows.
    let extra = format!(
        "[outbox]\npoll_interval_ms = 100\nbackoff_base_ms = 200\nbackoff_cap_ms = 5000\nmax_attempts = 50\n[destinations.github]\napi_url = \"http://127.0.0.1:{double_port}\"\ntoken = \"t\"\nrate_per_sec = {}\nburst = {}\nconcurrency = 8\n",
        rate * 1.2 / replicas as f64,
        (rate / 10.0 / replicas as f64).max(1.0) as u64
    );
    let client = runlink::deliver::http_client(Duration::from_secs(30)).unwrap();
    let mut servers = Vec::new();
    let mut bases = Vec::new();
    for _ in 0..replicas {
        let port = free_port();
        servers.push(match &postgres {
            Some(url) => start_replica(dir.path(), port, &extra, url),
            None => start_runlink(dir.path(), port, &extra),
        });
        bases.push(format!("http://127.0.0.1:{port}"));
    }
    for base in &bases {
        wait_healthy(&client, base).await;
    }

    println!(
        "storm: {n} webhooks from {clients} clients to {replicas} replica(s) on {}; destination allows {rate}/s",
        if postgres.is_some() {
            "PostgreSQL"
        } else {
            "SQLite"
        }
    );
    let started = Instant::now();
    let results = post_all(&client, &bases, n, clients).await;
    let accept_time = started.elapsed();
    let accepted: Vec<u64> = results
        .iter()
        .filter(|(_, s)| *s == Some(202))
        .map(|(i, _)| *i)
        .collect();
    let rejected = results.len() - accepted.len();

    let ideal = accepted.len() as f64 / rate;
    let deadline = started + Duration::from_secs_f64(ideal * 4.0 + 120.0);
    loop {
        let delivered = double.lock().unwrap().comments.len();
        if delivered >= accepted.len() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let drain_time = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss = servers
        .iter()
        .map(|s| peak_rss_kib(s.id()))
        .max()
        .unwrap_or(0);
    for server in &mut servers {
        let _ = server.kill();
        let _ = server.wait();
    }

    let d = double.lock().unwrap();
    let lost = accepted
        .iter()
        .filter(|i| {
            !d.comments
                .contains_key(&format!("/repos/acme/ops/issues/{i}/comments"))
        })
        .count();
    let duplicates: usize = d.comments.values().map(|v| v.len().saturating_sub(1)).sum();
    println!("accepted                      {}", accepted.len());
    println!("rejected                      {rejected}");
    println!("lost                          {lost}");
    println!("duplicates                    {duplicates}");
    println!(
        "time to accept the burst      {:.2} s ({:.0} webhooks/s)",
        accept_time.as_secs_f64(),
        n as f64 / accept_time.as_secs_f64()
    );
    println!(
        "time to drain                 {:.1} s (ideal N/R {:.1} s, ratio {:.2})",
        drain_time.as_secs_f64(),
        ideal,
        drain_time.as_secs_f64() / ideal.max(1e-9)
    );
    println!("429s answered by the double   {}", d.throttled);
    println!("requests in Retry-After window {}", d.in_window);
    println!(
        "peak RSS                      {:.1} MiB{}",
        rss as f64 / 1024.0,
        if replicas > 1 {
            " (largest replica)"
        } else {
            ""
        }
    );
    if std::env::var("STORM_TRACE").is_ok() {
        let mut per_sec: std::collections::BTreeMap<u64, (u32, u32)> = Default::default();
        for (at, throttled) in &d.arrivals {
            let e = per_sec
                .entry(at.duration_since(started).as_secs())
                .or_default();
            if *throttled { e.1 += 1 } else { e.0 += 1 }
        }
        for (sec, (ok, throttled)) in per_sec {
            println!("  second {sec:>4}: {ok} created, {throttled} throttled");
        }
        for (at, throttled) in d.arrivals.iter().take(60) {
            println!(
                "  {:>8.1} ms {}",
                at.duration_since(started).as_secs_f64() * 1e3,
                if *throttled { "429" } else { "201" }
            );
        }
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct NoopAlert {
    status: String,
    labels: HashMap<String, String>,
    annotations: HashMap<String, String>,
    starts_at: String,
    #[serde(rename = "generatorURL")]
    generator_url: String,
    fingerprint: String,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct NoopNotification {
    version: String,
    group_key: String,
    alerts: Vec<NoopAlert>,
}

/// The baseline: decodes the same body, stores nothing.
async fn noop(body: web::Bytes) -> HttpResponse {
    match serde_json::from_slice::<NoopNotification>(&body) {
        Ok(_) => HttpResponse::Accepted().finish(),
        Err(_) => HttpResponse::BadRequest().finish(),
    }
}

async fn throughput(
    client: &reqwest::Client,
    url: &str,
    seconds: f64,
    clients: usize,
    offset: u64,
) -> (f64, u64) {
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(seconds);
    let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for c in 0..clients as u64 {
        let client = client.clone();
        let url = url.to_string();
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while Instant::now() < until {
                let n = offset + c * 10_000_000 + i;
                let ok = client
                    .post(&url)
                    .header("Content-Type", "application/json")
                    .bearer_auth(SECRET)
                    .body(alertmanager_body(n))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if ok {
                    done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                i += 1;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let done = done.load(std::sync::atomic::Ordering::Relaxed);
    (done as f64 / started.elapsed().as_secs_f64(), done)
}

/// The ingest log's totals from one read of `/metrics`: writes, records, fsync seconds
/// (zeros when the server does not report them).
async fn log_totals(client: &reqwest::Client, base: &str) -> [f64; 3] {
    let text = metrics_text(client, base).await.unwrap_or_default();
    [
        "runlink_ingest_log_writes_total",
        "runlink_ingest_log_records_total",
        "runlink_ingest_log_fsync_seconds_sum",
    ]
    .map(|name| metric_value(&text, name).unwrap_or(0.0))
}

/// A gauge's value from runlink's `/metrics`.
async fn gauge(client: &reqwest::Client, base: &str, name: &str) -> Option<f64> {
    metric_value(&metrics_text(client, base).await?, name)
}

async fn metrics_text(client: &reqwest::Client, base: &str) -> Option<String> {
    client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()
}

fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

async fn ingest(args: &[String]) {
    let seconds = arg(args, "--seconds", 10);
    let clients = arg(args, "--clients", 32) as usize;
    let noop_port = free_port();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            HttpServer::new(|| App::new().route("/webhooks/alertmanager", web::post().to(noop)))
                .disable_signals()
                .bind(("127.0.0.1", noop_port))
                .unwrap()
                .run()
                .await
                .unwrap()
        })
    });
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server = start_runlink(
        dir.path(),
        port,
        &format!(
            "[outbox]\nworker = false\nhigh_water = 100000000\n[sources.alertmanager]\ntoken = \"{SECRET}\"\n[destinations.github]\napi_url = \"http://127.0.0.1:9\"\n"
        ),
    );
    let client = runlink::deliver::http_client(Duration::from_secs(30)).unwrap();
    let base = format!("http://127.0.0.1:{port}");
    wait_healthy(&client, &base).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The machine's speed drifts by a quarter from one minute to the next (other tenants of
    // the host, the disk's cache): the two handlers take turns in short rounds, so each ratio
    // compares neighbours in time, and the median ratio is the figure to quote.
    let rounds = arg(args, "--rounds", 5).max(1);
    let slice = (seconds as f64 / rounds as f64).max(1.0);
    println!(
        "ingest: Alertmanager v4 notifications, {clients} clients, {rounds} rounds of {slice:.1} s per handler"
    );
    println!("round  no-op webhooks/s  durable webhooks/s  ratio  tables caught up after");
    let (mut ratios, mut noop_total, mut durable_total) = (Vec::new(), 0.0, 0.0);
    let (mut sustained_total, mut catch_up_max) = (0.0, 0.0_f64);
    // runlink's own CPU time per webhook: steadier than a rate on a machine whose speed
    // drifts, and what a change to the ingest path moves.
    let (mut cpu_ack, mut cpu_all, mut webhooks) = (0.0, 0.0, 0u64);
    // The ingest log's writes, records and fsync seconds during the floods.
    let mut log = [0.0; 3];
    for round in 0..rounds {
        let (baseline, _) = throughput(
            &client,
            &format!("http://127.0.0.1:{noop_port}/webhooks/alertmanager"),
            slice,
            clients,
            0,
        )
        .await;
        let cpu_before = cpu_secs(server.id());
        let log_before = log_totals(&client, &base).await;
        let (durable, acknowledged) = throughput(
            &client,
            &format!("{base}/webhooks/alertmanager"),
            slice,
            clients,
            (round + 1) * 10_000_000_000,
        )
        .await;
        let cpu_acknowledging = cpu_secs(server.id()) - cpu_before;
        let log_after = log_totals(&client, &base).await;
        for (total, (after, before)) in log.iter_mut().zip(log_after.iter().zip(log_before)) {
            *total += after - before;
        }
        // Acknowledged means durable in the ingest log; the tables catch up behind it, and
        // the next round starts only once they have, so the work runlink deferred does not
        // run on the no-op handler's time.
        let flood_end = Instant::now();
        while gauge(&client, &base, "runlink_ingest_backlog")
            .await
            .is_some_and(|b| b > 0.0)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let catch_up = flood_end.elapsed().as_secs_f64();
        // The applier's last steps and the WAL checkpoint behind it (every 500 ms) come after
        // the backlog reads zero: the next round starts once runlink has been idle for 600 ms,
        // so none of its work lands on the no-op handler's time.
        let quiet_by = Instant::now() + Duration::from_secs(10);
        loop {
            let before = cpu_secs(server.id());
            tokio::time::sleep(Duration::from_millis(600)).await;
            if cpu_secs(server.id()) - before < 0.02 || Instant::now() > quiet_by {
                break;
            }
        }
        cpu_ack += cpu_acknowledging;
        cpu_all += cpu_secs(server.id()) - cpu_before;
        webhooks += acknowledged;
        let ratio = durable / baseline.max(1e-9);
        println!(
            "{:>5}  {baseline:>16.0}  {durable:>18.0}  {ratio:.2}  {catch_up:>6.2} s",
            round + 1
        );
        ratios.push(ratio);
        noop_total += baseline;
        durable_total += durable;
        sustained_total += durable * slice / (slice + catch_up);
        catch_up_max = catch_up_max.max(catch_up);
    }
    ratios.sort_by(|a, b| a.total_cmp(b));
    let (baseline, durable) = (noop_total / rounds as f64, durable_total / rounds as f64);
    println!("no-op actix handler           {baseline:.0} webhooks/s (mean of the rounds)");
    println!("runlink, durable              {durable:.0} webhooks/s (mean of the rounds)");
    println!(
        "ratio                         median {:.2} (rounds {:.2} to {:.2})",
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1]
    );
    println!(
        "tables caught up              at most {catch_up_max:.2} s after a round; acknowledged and applied: {:.0} webhooks/s (mean of the rounds, ratio {:.2})",
        sustained_total / rounds as f64,
        sustained_total / noop_total
    );
    let per = |cpu: f64| cpu * 1e6 / webhooks.max(1) as f64;
    println!(
        "runlink CPU per webhook        {:.0} µs while acknowledging, {:.0} µs with applying",
        per(cpu_ack),
        per(cpu_all)
    );

    let [writes, records, fsync] = log;
    println!(
        "ingest log while acknowledging {:.1} records per write, fsync mean {:.3} ms ({writes:.0} writes)",
        records / writes.max(1.0),
        fsync * 1e3 / writes.max(1.0)
    );

    // Ack latency at a steady 1,000 requests per second (open loop).
    let mut ticker = tokio::time::interval(Duration::from_millis(1));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    let started = Instant::now();
    let mut i = 0u64;
    while started.elapsed() < Duration::from_secs(seconds) {
        ticker.tick().await;
        let client = client.clone();
        let url = format!("{base}/webhooks/alertmanager");
        let latencies = latencies.clone();
        let n = 2_000_000_000 + i;
        i += 1;
        tasks.push(tokio::spawn(async move {
            let body = alertmanager_body(n);
            let t = Instant::now();
            let sent = t.duration_since(started).as_secs_f64();
            let ok = client
                .post(url)
                .header("Content-Type", "application/json")
                .bearer_auth(SECRET)
                .body(body)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                latencies
                    .lock()
                    .unwrap()
                    .push((t.elapsed().as_secs_f64() * 1e3, sent));
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let timed = latencies.lock().unwrap().clone();
    let mut l: Vec<f64> = timed.iter().map(|(ms, _)| *ms).collect();
    l.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| {
        l.get(((l.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    println!(
        "ack latency at 1000/s          p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} requests)",
        pct(0.5),
        pct(0.99),
        pct(1.0),
        l.len()
    );
    // When the slow answers were asked for: a tail that gathers in one second of the run
    // has one cause at that moment (the applier's batch, a checkpoint, a disk stall).
    let mut slow = vec![0u32; seconds as usize + 1];
    for (ms, sent) in &timed {
        if *ms > 10.0 {
            slow[(*sent as usize).min(seconds as usize)] += 1;
        }
    }
    println!(
        "answers over 10 ms by second   {}",
        slow.iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    );
    // The disk's stalls, which a mean fsync hides and a p99 above shows.
    let text = metrics_text(&client, &base).await.unwrap_or_default();
    let fsyncs = |le: &str| {
        metric_value(
            &text,
            &format!("runlink_ingest_log_fsync_seconds_bucket{{le=\"{le}\"}}"),
        )
        .unwrap_or(0.0)
    };
    let all = fsyncs("+Inf");
    println!(
        "ingest log fsyncs, whole run   {all:.0}, of which over 5 ms {:.0}, over 25 ms {:.0}, over 250 ms {:.0}",
        all - fsyncs("0.005"),
        all - fsyncs("0.025"),
        all - fsyncs("0.25")
    );
    let _ = server.kill();
    let _ = server.wait();
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if args.iter().any(|a| a == "ingest") {
        runtime.block_on(ingest(&args));
    } else {
        runtime.block_on(storm(&args));
    }
}
