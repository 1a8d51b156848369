//! A run on an MLflow tracking server, through MLflow's REST API (`/api/2.0/mlflow/…`): the
//! experiment got or created by name, the run created (or, for `--continue`, found again),
//! metrics, params and tags in `runs/log-batch` requests within MLflow's limits, artifacts
//! uploaded through the server's artifact proxy, the status set at the end.
//!
//! Requests go out on a thread of their own, so a slow or absent server never holds a training
//! up. They are retried as MLflow's Python client retries them (408, 429, 500, 502, 503, 504 and
//! failed connections; `MLFLOW_HTTP_REQUEST_MAX_RETRIES`, `MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR`,
//! `MLFLOW_HTTP_REQUEST_BACKOFF_JITTER`, `MLFLOW_HTTP_REQUEST_TIMEOUT`); a server that still does
//! not answer is asked again now and then while the data waits, and gets it all when it
//! answers. What it has not taken when the run ends (after `NC7_MLFLOW_FLUSH_TIMEOUT`) is
//! written to a run in the project's `mlruns/`, tagged with the server's run id.
//!
//! The server is reached as the Python client reaches it: `MLFLOW_TRACKING_TOKEN` (bearer) or
//! `MLFLOW_TRACKING_USERNAME` and `MLFLOW_TRACKING_PASSWORD` (basic), `MLFLOW_TRACKING_INSECURE_TLS`,
//! `MLFLOW_TRACKING_SERVER_CERT_PATH`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::file::FileRun;
use super::{Metric, RunStatus, now_ms, sanitize, truncate};

/// MLflow's limits on one `runs/log-batch` request.
const MAX_METRICS: usize = 1000;
const MAX_PARAMS: usize = 100;
const MAX_TAGS: usize = 100;
const MAX_ENTITIES: usize = 1000;
const MAX_BODY: usize = 1_000_000;

/// Answers that are retried, as the Python client retries them.
const RETRIED: [u16; 6] = [408, 429, 500, 502, 503, 504];

/// How requests to a tracking server are retried, and how long the end of a run waits for a
/// server that does not answer. The default is MLflow's Python client's; [`Policy::from_env`]
/// reads the variables that client reads.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Retries of a request (`MLFLOW_HTTP_REQUEST_MAX_RETRIES`, 7).
    pub retries: u32,
    /// Seconds; the wait before retry `n > 1` is `backoff_factor × 2^(n-1)`, at most 120
    /// (`MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR`, 2).
    pub backoff_factor: f64,
    /// Up to this many seconds added at random to each wait
    /// (`MLFLOW_HTTP_REQUEST_BACKOFF_JITTER`, 1).
    pub jitter: f64,
    /// How long one request may take (`MLFLOW_HTTP_REQUEST_TIMEOUT`, 120 s).
    pub timeout: Duration,
    /// How long the end of a run waits for the server to take what is left before that is
    /// written to the project's `mlruns/` (`NC7_MLFLOW_FLUSH_TIMEOUT`, 60 s).
    pub flush_timeout: Duration,
}

impl Default for Policy {
    /// The Python client's policy.
    fn default() -> Policy {
        Policy {
            retries: 7,
            backoff_factor: 2.0,
            jitter: 1.0,
            timeout: Duration::from_secs(120),
            flush_timeout: Duration::from_secs(60),
        }
    }
}

impl Policy {
    /// The Python client's policy, from the variables it reads (and `NC7_MLFLOW_FLUSH_TIMEOUT`).
    pub fn from_env() -> Policy {
        fn read(name: &str, default: f64) -> f64 {
            match std::env::var(name) {
                Ok(v) => match v.trim().parse::<f64>() {
                    Ok(x) if x.is_finite() && x >= 0.0 => x,
                    _ => {
                        log::warn!("{name}=`{v}` is not a number of 0 or more; {default} is used");
                        default
                    }
                },
                Err(_) => default,
            }
        }
        let d = Policy::default();
        Policy {
            retries: read("MLFLOW_HTTP_REQUEST_MAX_RETRIES", f64::from(d.retries)) as u32,
            backoff_factor: read("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", d.backoff_factor),
            jitter: read("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", d.jitter),
            timeout: Duration::from_secs_f64(
                read("MLFLOW_HTTP_REQUEST_TIMEOUT", d.timeout.as_secs_f64()).max(0.1),
            ),
            flush_timeout: Duration::from_secs_f64(read(
                "NC7_MLFLOW_FLUSH_TIMEOUT",
                d.flush_timeout.as_secs_f64(),
            )),
        }
    }

    /// The wait before retry `n` (from 1), as urllib3's `Retry` computes it: none before the
    /// first retry, then `backoff_factor × 2^(n-1)` seconds, at most 120, plus up to `jitter`
    /// seconds drawn from `random` (in [0, 1)).
    pub(super) fn backoff(&self, n: u32, random: f64) -> Duration {
        let base = if n <= 1 {
            0.0
        } else {
            (self.backoff_factor * 2f64.powi(n as i32 - 1)).min(120.0)
        };
        Duration::from_secs_f64(base + self.jitter * random)
    }

    /// How often a server that stopped answering is asked again.
    fn probe(&self) -> Duration {
        Duration::from_secs_f64((self.backoff_factor * 2.0).clamp(0.2, 30.0))
    }
}

/// Why a request did not go through.
#[derive(Debug)]
enum Failure {
    /// The server answered no, for good (a 4xx but 408 and 429): retrying would not help.
    Refused { code: String, message: String },
    /// No answer, or still an error after every retry.
    Unreachable(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Refused { code, message } => write!(f, "{code}: {message}"),
            Failure::Unreachable(why) => f.write_str(why),
        }
    }
}

/// MLflow's error answer (`{"error_code": …, "message": …}`) as a code and a message.
fn error_of(status: u16, text: &str) -> (String, String) {
    let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let code = v["error_code"]
        .as_str()
        .map_or_else(|| format!("HTTP {status}"), str::to_owned);
    let message = v["message"]
        .as_str()
        .map_or_else(|| truncate(text.trim(), 300), str::to_owned);
    (code, message)
}

/// A request body.
enum Body<'a> {
    None,
    Json(&'a Value),
    Bytes(&'a [u8], &'static str),
}

/// The HTTP side: one agent, the server's address, its credentials, the retry policy.
struct Client {
    agent: ureq::Agent,
    base: String,
    auth: Option<String>,
    policy: Policy,
    abort: Arc<AtomicBool>,
    random: u64,
}

impl Client {
    fn new(base: &str, policy: Policy, abort: Arc<AtomicBool>) -> Result<Client, String> {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let mut tls = ureq::tls::TlsConfig::builder();
        if env("MLFLOW_TRACKING_INSECURE_TLS").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            tls = tls.disable_verification(true);
        }
        if let Some(path) = env("MLFLOW_TRACKING_SERVER_CERT_PATH") {
            let pem = std::fs::read(&path)
                .map_err(|e| format!("MLFLOW_TRACKING_SERVER_CERT_PATH {path}: {e}"))?;
            let certs = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect::<Vec<_>>();
            if certs.is_empty() {
                return Err(format!(
                    "MLFLOW_TRACKING_SERVER_CERT_PATH {path} holds no PEM certificate"
                ));
            }
            tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
        }
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(policy.timeout))
            .tls_config(tls.build())
            .user_agent(format!("nc7/{}", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        let auth = if let Some(token) = env("MLFLOW_TRACKING_TOKEN") {
            Some(format!("Bearer {token}"))
        } else {
            match (
                env("MLFLOW_TRACKING_USERNAME"),
                env("MLFLOW_TRACKING_PASSWORD"),
            ) {
                (Some(user), Some(password)) => Some(format!(
                    "Basic {}",
                    base64(format!("{user}:{password}").as_bytes())
                )),
                _ => None,
            }
        };
        Ok(Client {
            agent,
            base: base.to_owned(),
            auth,
            policy,
            abort,
            random: (now_ms() as u64) | 1,
        })
    }

    /// A number in [0, 1) for the jitter (xorshift).
    fn next_random(&mut self) -> f64 {
        self.random ^= self.random << 13;
        self.random ^= self.random >> 7;
        self.random ^= self.random << 17;
        (self.random >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Sleeps `wait`, waking early (and saying so) when the run stops waiting for the server.
    fn sleep(&self, wait: Duration) -> bool {
        let until = Instant::now() + wait;
        while Instant::now() < until {
            if self.abort.load(Ordering::Relaxed) {
                return false;
            }
            std::thread::sleep((until - Instant::now()).min(Duration::from_millis(20)));
        }
        true
    }

    /// Sends a request to `path` (below the server's address), retried up to `retries` times;
    /// the answer's JSON (`null` when it has none).
    fn call(
        &mut self,
        method: &str,
        path: &str,
        body: Body<'_>,
        retries: u32,
    ) -> Result<Value, Failure> {
        let url = format!("{}{path}", self.base);
        let mut attempt = 0;
        loop {
            let why = match self.once(method, &url, &body) {
                Ok((status, text)) if (200..300).contains(&status) => {
                    return Ok(serde_json::from_str(&text).unwrap_or(Value::Null));
                }
                Ok((status, text)) if !RETRIED.contains(&status) => {
                    let (code, message) = error_of(status, &text);
                    return Err(Failure::Refused { code, message });
                }
                Ok((status, text)) => {
                    let (code, message) = error_of(status, &text);
                    format!("{method} {url}: {code}: {message}")
                }
                Err(e) => format!("{method} {url}: {e}"),
            };
            if attempt >= retries || self.abort.load(Ordering::Relaxed) {
                return Err(Failure::Unreachable(why));
            }
            attempt += 1;
            let random = self.next_random();
            let wait = self.policy.backoff(attempt, random);
            log::debug!("MLflow: {why}; retry {attempt} of {retries} in {wait:?}");
            if !self.sleep(wait) {
                return Err(Failure::Unreachable(why));
            }
        }
    }

    /// One request: its status and body.
    fn once(&self, method: &str, url: &str, body: &Body<'_>) -> Result<(u16, String), String> {
        let with_auth = |mut req: ureq::RequestBuilder<ureq::typestate::WithBody>| {
            if let Some(a) = &self.auth {
                req = req.header("Authorization", a);
            }
            req
        };
        let sent = match (method, body) {
            ("GET", _) => {
                let mut req = self.agent.get(url);
                if let Some(a) = &self.auth {
                    req = req.header("Authorization", a);
                }
                req.call()
            }
            ("PUT", Body::Bytes(bytes, kind)) => with_auth(self.agent.put(url))
                .header("Content-Type", *kind)
                .send(*bytes),
            (_, Body::Json(v)) => with_auth(self.agent.post(url))
                .header("Content-Type", "application/json")
                .send(serde_json::to_vec(v).expect("JSON values serialize")),
            _ => with_auth(self.agent.post(url)).send_empty(),
        };
        let mut response = sent.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(16 << 20)
            .lossy_utf8(true)
            .read_to_string()
            .map_err(|e| e.to_string())?;
        Ok((status, text))
    }
}

/// Base64 (standard alphabet, padded), for basic authentication.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `text` for a URL: unreserved characters as they are, the rest percent-encoded.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A metric value in proto3 JSON: a number, or `"NaN"`, `"Infinity"`, `"-Infinity"`.
fn value_json(v: f64) -> Value {
    if v.is_nan() {
        json!("NaN")
    } else if v.is_infinite() {
        json!(if v > 0.0 { "Infinity" } else { "-Infinity" })
    } else {
        json!(v)
    }
}

/// Where a run's artifacts are uploaded (a path on the server), from the run's
/// `artifact_uri`: artifacts go through the server's proxy (`mlflow-artifacts:`); a store the
/// server does not proxy (`s3://`, a path on the server's machine) is refused with what to do.
fn artifact_base(artifact_uri: &str) -> Result<String, String> {
    let Some(rest) = artifact_uri.strip_prefix("mlflow-artifacts:") else {
        return Err(format!(
            "the server keeps this run's artifacts at `{artifact_uri}`, which nc7 does not write to; start `mlflow server` with artifact serving (`--serve-artifacts`, the default) so that artifacts go through it"
        ));
    };
    let path = match rest.strip_prefix("//") {
        Some(authority_and_path) => authority_and_path
            .find('/')
            .map_or("", |i| &authority_and_path[i..]),
        None => rest,
    };
    Ok(format!(
        "/api/2.0/mlflow-artifacts/artifacts/{}",
        path.trim_matches('/')
    ))
}

/// The `Content-Type` of an artifact, by its extension.
fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()) {
        Some(e) if e == "json" => "application/json",
        Some(e) if e == "svg" => "image/svg+xml",
        Some(e) if e == "png" => "image/png",
        Some(e) if matches!(e.as_str(), "txt" | "dot" | "csv" | "yaml") => "text/plain",
        _ => "application/octet-stream",
    }
}

/// The id of the experiment named `name`, created when the server has none.
fn experiment_id(client: &mut Client, name: &str, retries: u32) -> Result<String, String> {
    let get = format!(
        "/api/2.0/mlflow/experiments/get-by-name?experiment_name={}",
        encode(name)
    );
    for _ in 0..2 {
        match client.call("GET", &get, Body::None, retries) {
            Ok(v) => {
                let e = &v["experiment"];
                if e["lifecycle_stage"] == "deleted" {
                    return Err(format!(
                        "the experiment `{name}` is deleted on the server; restore it (`mlflow experiments restore`) or delete it for good (`mlflow gc`)"
                    ));
                }
                return e["experiment_id"]
                    .as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("the server's answer names no experiment: {v}"));
            }
            Err(Failure::Refused { code, .. }) if code == "RESOURCE_DOES_NOT_EXIST" => {
                let created = client.call(
                    "POST",
                    "/api/2.0/mlflow/experiments/create",
                    Body::Json(&json!({"name": name})),
                    retries,
                );
                match created {
                    Ok(v) => {
                        return v["experiment_id"]
                            .as_str()
                            .map(str::to_owned)
                            .ok_or_else(|| {
                                format!("the server's answer names no experiment: {v}")
                            });
                    }
                    // Another process created it meanwhile: get it again.
                    Err(Failure::Refused { code, .. }) if code == "RESOURCE_ALREADY_EXISTS" => {}
                    Err(e) => return Err(format!("creating the experiment `{name}`: {e}")),
                }
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Err(format!(
        "the experiment `{name}` is neither found nor created"
    ))
}

/// What the run's thread is asked to send.
#[derive(Debug)]
enum Op {
    Metric(Metric),
    Param(String, String),
    Tag(String, String),
    Artifact(String, Vec<u8>),
    End(RunStatus, u128),
}

/// A run on a tracking server; what it logs is sent by its own thread.
#[derive(Debug)]
pub(super) struct ServerRun {
    pub(super) id: String,
    pub(super) experiment: String,
    sender: Mutex<Option<mpsc::Sender<Op>>>,
    worker: Mutex<Option<JoinHandle<()>>>,
    abort: Arc<AtomicBool>,
    flush_timeout: Duration,
    /// Params sent already (MLflow params do not change).
    params: Mutex<BTreeSet<String>>,
    /// Keys MLflow would refuse, and the names they were logged under.
    renamed: Mutex<BTreeMap<String, String>>,
}

impl ServerRun {
    /// Creates the run on the server at `url` (or finds the run `resume` names again). The
    /// server gets a few quick tries: a run does not wait minutes for a server that is down,
    /// it is tracked locally instead (the caller's part).
    pub(super) fn start(
        url: &str,
        policy: Policy,
        project: &Path,
        experiment_name: &str,
        run_name: &str,
        resume: Option<(&str, &str, u64)>,
    ) -> Result<ServerRun, String> {
        let abort = Arc::new(AtomicBool::new(false));
        let mut client = Client::new(url, policy.clone(), abort.clone())?;
        let quick = policy.retries.min(2);
        let experiment = experiment_id(&mut client, experiment_name, quick)?;
        let found = match resume {
            Some((id, exp, _)) if exp == experiment => {
                let got = client.call(
                    "GET",
                    &format!("/api/2.0/mlflow/runs/get?run_id={}", encode(id)),
                    Body::None,
                    quick,
                );
                match got {
                    Ok(v) if v["run"]["info"]["lifecycle_stage"] != "deleted" => {
                        client
                            .call(
                                "POST",
                                "/api/2.0/mlflow/runs/update",
                                Body::Json(&json!({"run_id": id, "status": "RUNNING"})),
                                quick,
                            )
                            .map_err(|e| format!("continuing run {id}: {e}"))?;
                        log::info!("MLflow: continuing run {id} on {url}");
                        Some(v)
                    }
                    Ok(_) | Err(Failure::Refused { .. }) => None,
                    Err(e) => return Err(e.to_string()),
                }
            }
            _ => None,
        };
        let user = std::env::var("USER").unwrap_or_else(|_| "nc7".into());
        let run = match found {
            Some(v) => v,
            None => client
                .call(
                    "POST",
                    "/api/2.0/mlflow/runs/create",
                    Body::Json(&json!({
                        "experiment_id": experiment,
                        "user_id": user,
                        "run_name": run_name,
                        "start_time": now_ms() as u64,
                        "tags": [
                            {"key": "mlflow.runName", "value": run_name},
                            {"key": "mlflow.user", "value": user},
                            {"key": "mlflow.source.type", "value": "LOCAL"},
                            {"key": "mlflow.source.name", "value": "nc7"},
                        ],
                    })),
                    quick,
                )
                .map_err(|e| format!("creating the run: {e}"))?,
        };
        let info = &run["run"]["info"];
        let id = info["run_id"]
            .as_str()
            .ok_or_else(|| format!("the server's answer names no run: {run}"))?
            .to_owned();
        let artifacts = artifact_base(info["artifact_uri"].as_str().unwrap_or_default());
        let (sender, receiver) = mpsc::channel();
        let worker = Worker {
            client,
            uri: url.to_owned(),
            run_id: id.clone(),
            artifacts,
            warned_artifacts: false,
            pending: VecDeque::new(),
            params: BTreeMap::new(),
            tags: BTreeMap::new(),
            down: None,
            was_down: Duration::ZERO,
            next_probe: Instant::now(),
            refused: 0,
            spill: Spill {
                root: project.join("mlruns"),
                experiment: experiment_name.to_owned(),
                run_name: run_name.to_owned(),
            },
        };
        let handle = std::thread::Builder::new()
            .name("nc7-mlflow".into())
            .spawn(move || worker.run(receiver))
            .map_err(|e| format!("no thread for the server's requests: {e}"))?;
        Ok(ServerRun {
            id,
            experiment,
            sender: Mutex::new(Some(sender)),
            worker: Mutex::new(Some(handle)),
            abort,
            flush_timeout: policy.flush_timeout,
            params: Mutex::new(BTreeSet::new()),
            renamed: Mutex::new(BTreeMap::new()),
        })
    }

    fn send(&self, op: Op) {
        if let Some(s) = self
            .sender
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            // The thread only ends after the run's end: nothing is lost here.
            let _ = s.send(op);
        }
    }

    /// `key` as MLflow takes it; a changed name is recorded in the tag `nc7.renamed_keys`.
    fn name(&self, key: &str) -> String {
        let clean = sanitize(key);
        if clean != key {
            let mut renamed = self.renamed.lock().unwrap_or_else(|p| p.into_inner());
            if renamed.insert(key.to_owned(), clean.clone()).is_none() {
                let text = serde_json::to_string(&*renamed).expect("strings serialize");
                self.send(Op::Tag("nc7.renamed_keys".into(), text));
            }
        }
        clean
    }

    pub(super) fn set_tag(&self, key: &str, value: &str) {
        self.send(Op::Tag(sanitize(key), truncate(value, 8000)));
    }

    pub(super) fn log_params(&self, params: &BTreeMap<String, String>) {
        for (key, value) in params {
            let key = self.name(&truncate(key, 250));
            if self
                .params
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key.clone())
            {
                self.send(Op::Param(key, truncate(value, 6000)));
            }
        }
    }

    pub(super) fn log_metrics(&self, metrics: Vec<Metric>) {
        for mut m in metrics {
            m.key = self.name(&m.key);
            self.send(Op::Metric(m));
        }
    }

    pub(super) fn log_artifact(&self, bytes: Vec<u8>, name: &str) {
        self.send(Op::Artifact(name.to_owned(), bytes));
    }

    pub(super) fn end(&self, status: RunStatus) {
        self.send(Op::End(status, now_ms()));
        self.finish();
    }

    /// Lets the thread send what is left, for at most the flush timeout; then it stops
    /// waiting for the server and writes the rest to the project's `mlruns/`.
    fn finish(&self) {
        drop(self.sender.lock().unwrap_or_else(|p| p.into_inner()).take());
        let Some(handle) = self.worker.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return;
        };
        let until = Instant::now() + self.flush_timeout;
        while !handle.is_finished() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        if !handle.is_finished() {
            log::warn!(
                "MLflow: the tracking server has not taken this run's data within {:?} (NC7_MLFLOW_FLUSH_TIMEOUT); the rest is written locally",
                self.flush_timeout
            );
            self.abort.store(true, Ordering::Relaxed);
        }
        let _ = handle.join();
    }
}

impl Drop for ServerRun {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Where what a server did not take goes.
struct Spill {
    root: PathBuf,
    experiment: String,
    run_name: String,
}

/// The thread that sends a run's data.
struct Worker {
    client: Client,
    uri: String,
    run_id: String,
    /// Where artifacts are uploaded, or why they cannot be.
    artifacts: Result<String, String>,
    warned_artifacts: bool,
    /// What is not sent yet, oldest first.
    pending: VecDeque<Op>,
    /// Every param and tag of the run, for a local copy when the server stops answering.
    params: BTreeMap<String, String>,
    tags: BTreeMap<String, String>,
    /// Since when the server has not answered, and why.
    down: Option<(Instant, String)>,
    /// How long the server did not answer, in all.
    was_down: Duration,
    next_probe: Instant,
    /// Items the server refused (logged as warnings, left out).
    refused: usize,
    spill: Spill,
}

/// The kinds of requests, by what is first in line.
enum Next {
    Batch,
    Artifact,
    End,
}

impl Worker {
    fn run(mut self, receiver: mpsc::Receiver<Op>) {
        let mut ending = false;
        while !ending {
            // Wait for work: blocked while there is nothing to send; while the server does
            // not answer, waking to ask it again.
            let first = if self.pending.is_empty() {
                receiver.recv().ok()
            } else if self.down.is_some() {
                let wait = self.next_probe.saturating_duration_since(Instant::now());
                match receiver.recv_timeout(wait) {
                    Ok(op) => Some(op),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        ending = true;
                        None
                    }
                }
            } else {
                None
            };
            if first.is_none() && self.pending.is_empty() {
                ending = true; // The run is gone.
            }
            for op in first
                .into_iter()
                .chain(std::iter::from_fn(|| receiver.try_recv().ok()))
            {
                self.keep(op);
            }
            if self.down.is_some() && Instant::now() < self.next_probe && !ending {
                continue;
            }
            // A server that stopped answering is asked once; one that answers gets the full
            // retry policy.
            let retries = if self.down.is_some() && !ending {
                0
            } else {
                self.client.policy.retries
            };
            self.flush(retries);
        }
        if !self.pending.is_empty() {
            self.write_locally();
        } else if self.was_down > Duration::ZERO {
            log::info!(
                "MLflow: {} did not answer for {:.1} s during the run; everything was sent when it answered again",
                self.uri,
                self.was_down.as_secs_f64()
            );
        }
        if self.refused > 0 {
            log::warn!(
                "MLflow: the server refused {} of this run's items (see the warnings above)",
                self.refused
            );
        }
    }

    fn keep(&mut self, op: Op) {
        match &op {
            Op::Param(k, v) => {
                self.params.insert(k.clone(), v.clone());
            }
            Op::Tag(k, v) => {
                self.tags.insert(k.clone(), v.clone());
            }
            _ => {}
        }
        self.pending.push_back(op);
    }

    /// Sends what is pending, in order, until done or the server does not answer.
    fn flush(&mut self, retries: u32) {
        while let Some(front) = self.pending.front() {
            let next = match front {
                Op::Metric(_) | Op::Param(..) | Op::Tag(..) => Next::Batch,
                Op::Artifact(..) => Next::Artifact,
                Op::End(..) => Next::End,
            };
            let (count, what, result) = match next {
                Next::Batch => {
                    let (count, body) = self.batch();
                    let result = self.client.call(
                        "POST",
                        "/api/2.0/mlflow/runs/log-batch",
                        Body::Json(&body),
                        retries,
                    );
                    (
                        count,
                        format!("{count} metric points, params and tags"),
                        result,
                    )
                }
                Next::Artifact => {
                    let Some(Op::Artifact(name, bytes)) = self.pending.front() else {
                        unreachable!("the front is an artifact");
                    };
                    let result = match &self.artifacts {
                        Ok(base) => {
                            let parts: Vec<String> = name.split('/').map(encode).collect();
                            let path = format!("{base}/{}", parts.join("/"));
                            let kind = content_type(name);
                            self.client
                                .call("PUT", &path, Body::Bytes(bytes, kind), retries)
                        }
                        Err(why) => {
                            if !self.warned_artifacts {
                                log::warn!("MLflow: artifacts are left out: {why}");
                                self.warned_artifacts = true;
                            }
                            Ok(Value::Null)
                        }
                    };
                    (1, format!("the artifact {name}"), result)
                }
                Next::End => {
                    let Some(Op::End(status, end_time)) = self.pending.front() else {
                        unreachable!("the front is the end");
                    };
                    let body = json!({
                        "run_id": self.run_id,
                        "status": status.name(),
                        "end_time": *end_time as u64,
                    });
                    let result = self.client.call(
                        "POST",
                        "/api/2.0/mlflow/runs/update",
                        Body::Json(&body),
                        retries,
                    );
                    (1, "the run's status".to_owned(), result)
                }
            };
            match result {
                Ok(_) => {
                    self.pending.drain(..count);
                    if let Some((since, _)) = self.down.take() {
                        self.was_down += since.elapsed();
                        log::info!(
                            "MLflow: {} answers again; the data kept meanwhile is being sent",
                            self.uri
                        );
                    }
                }
                Err(Failure::Refused { code, message }) => {
                    log::warn!("MLflow: the server refused {what}: {code}: {message}; left out");
                    self.refused += count;
                    self.pending.drain(..count);
                }
                Err(Failure::Unreachable(why)) => {
                    if self.down.is_none() {
                        log::warn!(
                            "MLflow: the tracking server does not answer ({why}); the run goes on, and its data is kept to be sent when the server answers"
                        );
                        self.down = Some((Instant::now(), why));
                    }
                    self.next_probe = Instant::now() + self.client.policy.probe();
                    return;
                }
            }
        }
    }

    /// The longest run of metrics, params and tags at the front that one `log-batch` takes,
    /// and its body.
    fn batch(&self) -> (usize, Value) {
        let (mut metrics, mut params, mut tags) = (Vec::new(), Vec::new(), Vec::new());
        let mut size = 100;
        let mut count = 0;
        for op in &self.pending {
            let (entry, list, max) = match op {
                Op::Metric(m) => (
                    json!({"key": m.key, "value": value_json(m.value),
                           "timestamp": m.timestamp as u64, "step": m.step}),
                    &mut metrics,
                    MAX_METRICS,
                ),
                Op::Param(k, v) => (json!({"key": k, "value": v}), &mut params, MAX_PARAMS),
                Op::Tag(k, v) => (json!({"key": k, "value": v}), &mut tags, MAX_TAGS),
                _ => break,
            };
            let len = entry.to_string().len() + 1;
            if list.len() == max || count == MAX_ENTITIES || (count > 0 && size + len > MAX_BODY) {
                break;
            }
            size += len;
            list.push(entry);
            count += 1;
        }
        (
            count,
            json!({"run_id": self.run_id, "metrics": metrics, "params": params, "tags": tags}),
        )
    }

    /// Writes what the server has not taken to a run in the project's `mlruns/`, with every
    /// param and tag, tagged with the server's run id.
    fn write_locally(&mut self) {
        let why = self
            .down
            .as_ref()
            .map_or_else(|| "the run ended first".to_owned(), |(_, w)| w.clone());
        let run = match FileRun::start(
            &self.spill.root,
            &self.spill.experiment,
            &self.spill.run_name,
            None,
        ) {
            Ok(run) => run,
            Err(e) => {
                log::warn!(
                    "MLflow: {} items the server did not take are lost: {e}",
                    self.pending.len()
                );
                return;
            }
        };
        for (k, v) in &self.tags {
            run.set_tag(k, v);
        }
        run.set_tag("nc7.remote_run_id", &self.run_id);
        run.set_tag("nc7.remote_tracking_uri", &self.uri);
        run.log_params(&self.params);
        let mut metrics = Vec::new();
        let (mut artifacts, mut status) = (0, None);
        for op in self.pending.drain(..) {
            match op {
                Op::Metric(m) => metrics.push(m),
                Op::Artifact(name, bytes) => {
                    run.log_artifact(&bytes, &name);
                    artifacts += 1;
                }
                Op::End(s, _) => status = Some(s),
                Op::Param(..) | Op::Tag(..) => {}
            }
        }
        run.log_metrics(&metrics);
        run.end(status.unwrap_or(RunStatus::Killed));
        log::warn!(
            "MLflow: {} did not take {} metric points, {artifacts} artifacts{} ({why}); they are in {} (run {}, tagged nc7.remote_run_id={})",
            self.uri,
            metrics.len(),
            if status.is_some() {
                " and the run's end"
            } else {
                ""
            },
            run.dir().display(),
            run.id,
            self.run_id
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_as_the_python_clients_do() {
        let p = Policy::default();
        let waits: Vec<f64> = (1..=8).map(|n| p.backoff(n, 0.0).as_secs_f64()).collect();
        assert_eq!(waits, [0.0, 4.0, 8.0, 16.0, 32.0, 64.0, 120.0, 120.0]);
        assert_eq!(p.backoff(2, 0.5).as_secs_f64(), 4.5);
    }

    #[test]
    fn requests_are_spelled_as_mlflow_reads_them() {
        assert_eq!(base64(b"user:pa ss"), "dXNlcjpwYSBzcw==");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(encode("my project/α"), "my%20project%2F%CE%B1");
        assert_eq!(value_json(f64::NAN), json!("NaN"));
        assert_eq!(value_json(f64::NEG_INFINITY), json!("-Infinity"));
        assert_eq!(value_json(0.5), json!(0.5));
        assert_eq!(
            artifact_base("mlflow-artifacts:/1/abc/artifacts").unwrap(),
            "/api/2.0/mlflow-artifacts/artifacts/1/abc/artifacts"
        );
        assert_eq!(
            artifact_base("mlflow-artifacts://h:5000/1/abc/artifacts").unwrap(),
            "/api/2.0/mlflow-artifacts/artifacts/1/abc/artifacts"
        );
        let err = artifact_base("s3://bucket/1/abc/artifacts").unwrap_err();
        assert!(err.contains("--serve-artifacts"), "{err}");
        assert_eq!(content_type("plots/loss.svg"), "image/svg+xml");
        assert_eq!(
            error_of(
                400,
                r#"{"error_code": "INVALID_PARAMETER_VALUE", "message": "no"}"#
            ),
            ("INVALID_PARAMETER_VALUE".into(), "no".into())
        );
        assert_eq!(
            error_of(502, "Bad Gateway"),
            ("HTTP 502".into(), "Bad Gateway".into())
        );
    }
}
