//! Networks as users meet them (issue 10, points 3 and 4), all on loopback: a base URL's
//! password never shown; a TLS endpoint signed by a CA made at test time, trusted through
//! `--ca-cert` or the system's trust store (`SSL_CERT_FILE`), reached directly or through a
//! local CONNECT proxy (`HTTPS_PROXY`, `NO_PROXY`); an untrusted certificate or an unreachable
//! endpoint stops the run within seconds, while an outage after the first answer is retried.
//!
//! The TLS endpoint is a small TLS-terminating forwarder in front of the plain simulator, so the
//! simulator's counters still tell what reached the API.

mod common;

use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::Value;
use tokio::io::{copy_bidirectional, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::task::AbortHandle;

/// The password every redaction test puts in the base URL.
const PASSWORD: &str = "S3cretPass";
/// A run that takes longer is killed: far beyond what a fast stop needs, far below the
/// minutes that the retry schedule (8 retries, up to 60 s apart) takes per row.
const DEADLINE: Duration = Duration::from_secs(60);
/// What "stops within seconds" means here: a hang detector, not a timing claim.
const FAST: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// Point 3: a base URL's user-info is never shown.

#[test]
fn a_password_in_the_base_url_is_shown_nowhere_at_any_verbosity() {
    let s = Scenario::new().input(
        "{\"id\":\"a\",\"prompt\":\"hello\"}\n\
         {\"id\":\"b\",\"prompt\":\"refused #sim:status=400\"}\n\
         {\"id\":\"c\",\"prompt\":\"flaky #sim:fail=1\"}\n",
    );
    let base = with_password(&s.sim().base_url);
    let r = run_net(net_run(&s, &base).args(["-vv", "--backoff-base", "10ms"]));
    assert_eq!(r.code, 3, "one row is an error record: {}", r.stderr);
    let records = read_jsonl(&s.output);
    assert_eq!(records.len(), 3);
    assert_no_password(&r, &s.output);
    assert!(
        r.stderr.contains("sending to http://[redacted]@127.0.0.1:"),
        "the endpoint is still logged, redacted: {}",
        r.stderr
    );
}

#[test]
fn a_password_in_the_base_url_is_shown_nowhere_when_unreachable() {
    let port = closed_port();
    let s = Scenario::without_sim().input("{\"prompt\":\"hello\"}\n");
    let base = format!("http://alice:{PASSWORD}@127.0.0.1:{port}/v1");
    let r = run_net(net_run(&s, &base).arg("-vv"));
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_no_password(&r, &s.output);
    assert!(
        r.stderr
            .contains(&format!("http://[redacted]@127.0.0.1:{port}/v1")),
        "{}",
        r.stderr
    );
}

#[test]
fn a_password_in_the_base_url_is_not_printed_in_the_resume_command() {
    let s = Scenario::new().input("{\"prompt\":\"hello\"}\n");
    let base = with_password(&s.sim().base_url);
    // A cap below the first row's worst case: the run stops at once and prints the command
    // that continues it, base URL included.
    let r = run_net(net_run(&s, &base).args(["--max-cost", "0.0000001", "-q"]));
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert_no_password(&r, &s.output);
    assert!(
        r.stderr
            .contains("--base-url 'http://[redacted]@127.0.0.1:")
            && r.stderr.contains("PROMPTBATCH_BASE_URL"),
        "the command is printed redacted, with how to put the password back: {}",
        r.stderr
    );
}

// ---------------------------------------------------------------------------------------------
// Point 4: certificates.

#[test]
fn a_tls_endpoint_signed_by_a_ca_cert_runs_every_row() {
    let s = Scenario::new().rows(6);
    let net = Net::start(s.sim());
    let ca = s.work.write("ca.pem", &net.ca_pem);
    let r = run_net(
        net_run(&s, &net.tls_base_url())
            .args(["-c", "3", "-q", "--ca-cert"])
            .arg(&ca),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_all_ok(&s.output, 6);
    assert_eq!(s.sim().requests(), 6);
}

#[test]
fn an_untrusted_certificate_stops_at_once_naming_the_host_and_ca_cert() {
    let s = Scenario::new().rows(40);
    let net = Net::start(s.sim());
    // Default retry settings: before the fix, each row was retried 8 times with backoff.
    let r = run_net(net_run(&s, &net.tls_base_url()).arg("-q"));
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.elapsed < FAST, "took {:?}", r.elapsed);
    assert_eq!(records_in(&s.output), 0, "no error records");
    assert_eq!(s.sim().requests(), 0);
    let host = format!("localhost:{}", net.tls_addr.port());
    for needle in [
        host.as_str(),
        "not trusted",
        "UnknownIssuer",
        "--ca-cert FILE",
    ] {
        assert!(r.stderr.contains(needle), "{needle:?} in: {}", r.stderr);
    }
}

#[test]
fn the_operating_system_trust_store_is_used() {
    let s = Scenario::new().rows(3);
    let net = Net::start(s.sim());
    // rustls-native-certs reads the system store from SSL_CERT_FILE when it is set: the test
    // CA stands for a company CA installed on the machine. No --ca-cert.
    let ca = s.work.write("system-bundle.pem", &net.ca_pem);
    let r = run_net(
        net_run(&s, &net.tls_base_url())
            .env("SSL_CERT_FILE", &ca)
            .arg("-q"),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_all_ok(&s.output, 3);
}

#[test]
fn a_missing_ca_cert_file_is_a_clear_error() {
    let s = Scenario::new().rows(1);
    let missing = s.work.path("company-ca.pem");
    let r = run_net(
        net_run(&s, &s.sim().base_url)
            .args(["-q", "--ca-cert"])
            .arg(&missing),
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr
            .contains(&format!("--ca-cert {}: cannot read", missing.display())),
        "{}",
        r.stderr
    );
    assert_eq!(s.sim().requests(), 0);
}

#[test]
fn a_ca_cert_file_that_is_not_pem_is_a_clear_error() {
    let s = Scenario::new().rows(1);
    let net = Net::start(s.sim());
    let der = s.work.path("ca.der");
    std::fs::write(&der, pem_body_as_der(&net.ca_pem)).unwrap();
    let r = run_net(
        net_run(&s, &net.tls_base_url())
            .args(["-q", "--ca-cert"])
            .arg(&der),
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    for needle in [
        "ca.der",
        "no certificate found",
        "PEM",
        "openssl x509 -inform der",
    ] {
        assert!(r.stderr.contains(needle), "{needle:?} in: {}", r.stderr);
    }
    assert_eq!(s.sim().requests(), 0);
}

// ---------------------------------------------------------------------------------------------
// Point 4: proxies.

#[test]
fn https_proxy_carries_the_run_through_connect() {
    let s = Scenario::new().rows(6);
    let net = Net::start(s.sim());
    let proxy = ConnectProxy::start(&net.runtime);
    let ca = s.work.write("ca.pem", &net.ca_pem);
    let r = run_net(
        net_run(&s, &net.tls_base_url())
            .env("HTTPS_PROXY", format!("http://{}", proxy.addr))
            .args(["-c", "2", "-q", "-v", "--ca-cert"])
            .arg(&ca),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_all_ok(&s.output, 6);
    let logged = format!("through the proxy http://{}", proxy.addr);
    assert!(r.stderr.contains(&logged), "{logged:?} in: {}", r.stderr);
    let connects = proxy.connects();
    assert!(!connects.is_empty(), "the proxy saw no CONNECT");
    let target = format!("localhost:{}", net.tls_addr.port());
    assert!(
        connects.iter().all(|c| *c == target),
        "CONNECT {target} expected, saw {connects:?}"
    );
}

#[test]
fn no_proxy_bypasses_the_proxy() {
    let s = Scenario::new().rows(3);
    let net = Net::start(s.sim());
    let proxy = ConnectProxy::start(&net.runtime);
    let ca = s.work.write("ca.pem", &net.ca_pem);
    let r = run_net(
        net_run(&s, &net.tls_base_url())
            .env("HTTPS_PROXY", format!("http://{}", proxy.addr))
            .env("NO_PROXY", "example.com,localhost")
            .args(["-q", "--ca-cert"])
            .arg(&ca),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_all_ok(&s.output, 3);
    assert_eq!(proxy.connects(), Vec::<String>::new());
}

#[test]
fn an_unreachable_proxy_stops_within_seconds_naming_it() {
    let s = Scenario::new().rows(20);
    let net = Net::start(s.sim());
    let port = closed_port();
    let ca = s.work.write("ca.pem", &net.ca_pem);
    let r = run_net(
        net_run(&s, &net.tls_base_url())
            .env(
                "HTTPS_PROXY",
                format!("http://alice:{PASSWORD}@127.0.0.1:{port}"),
            )
            .args(["-q", "--ca-cert"])
            .arg(&ca),
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.elapsed < FAST, "took {:?}", r.elapsed);
    assert_eq!(records_in(&s.output), 0, "no error records");
    // The proxy is named without its user-info (reqwest keeps that apart, for authorization).
    let named = format!("through the proxy http://127.0.0.1:{port} ");
    assert!(r.stderr.contains(&named), "{named:?} in: {}", r.stderr);
    assert_no_password(&r, &s.output);
    assert_eq!(s.sim().requests(), 0);
}

// ---------------------------------------------------------------------------------------------
// Point 4: unreachable before the first answer, outage after it.

#[test]
fn an_unreachable_endpoint_stops_within_seconds_without_error_records() {
    let port = closed_port();
    let s = Scenario::without_sim().rows(40);
    let r = run_net(net_run(&s, &format!("http://127.0.0.1:{port}/v1")).arg("-q"));
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.elapsed < FAST, "took {:?}", r.elapsed);
    assert_eq!(records_in(&s.output), 0, "no error records");
    let address = format!("cannot reach http://127.0.0.1:{port}/v1/chat/completions");
    assert!(r.stderr.contains(&address), "{}", r.stderr);
    assert!(r.stderr.contains("--base-url"), "{}", r.stderr);
}

#[test]
fn an_outage_after_the_first_answer_is_retried_until_the_endpoint_is_back() {
    // Row 2 is still at the simulator (sleeping) when the outage starts, so its attempt fails
    // mid-request, and its retries meet a closed port (connection refused) until it reopens.
    let s = Scenario::new().input(
        "{\"id\":\"1\",\"prompt\":\"first\"}\n\
         {\"id\":\"2\",\"prompt\":\"second #sim:sleep=1500ms\"}\n\
         {\"id\":\"3\",\"prompt\":\"third\"}\n\
         {\"id\":\"4\",\"prompt\":\"fourth\"}\n",
    );
    let runtime = runtime();
    let mut front = Forwarder::start(&runtime, sim_addr(s.sim()));
    let base = format!("http://127.0.0.1:{}/v1", front.port);
    let child = Spawned::start(
        net_run(&s, &base)
            .args(["-c", "1", "-q"])
            .args(["--backoff-base", "100ms", "--backoff-max", "300ms"])
            .args(["--max-retries", "50"]),
    );
    wait_until("row 2 at the simulator", FAST, || s.sim().requests() >= 2);
    front.stop();
    // The outage itself, not a synchronisation: the port stays closed 1.5 s, long enough for
    // row 2's retries (100–300 ms apart) to meet refused connections. There is no event to
    // wait for instead: a refused connection reaches nothing the test owns.
    std::thread::sleep(Duration::from_millis(1500));
    front.restart();
    let r = child.wait();
    assert_eq!(r.code, 0, "{}", r.stderr);
    let records = assert_all_ok(&s.output, 4);
    let second = records.iter().find(|r| r["id"] == "2").unwrap();
    let attempts = second["attempts"].as_u64().unwrap();
    assert!(
        attempts >= 3,
        "row 2 went through the cut and at least one refused connection: {attempts} attempts"
    );
    assert!(!r.stderr.contains("cannot reach"), "{}", r.stderr);
}

// ---------------------------------------------------------------------------------------------
// Helpers.

/// `promptbatch run INPUT -o OUTPUT --base-url BASE_URL` of the scenario, with no proxy or
/// trust-store settings from the environment of the test run; not started.
fn net_run(s: &Scenario, base_url: &str) -> Command {
    let mut cmd = s.command(base_url);
    for name in [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
        "NO_PROXY",
        "no_proxy",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
    ] {
        cmd.env_remove(name);
    }
    cmd
}

/// A running binary whose output is collected; killed once it passes [`DEADLINE`].
struct Spawned {
    child: std::process::Child,
    stdout: std::thread::JoinHandle<String>,
    stderr: std::thread::JoinHandle<String>,
    started: Instant,
}

impl Spawned {
    fn start(cmd: &mut Command) -> Self {
        let started = Instant::now();
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let drain = |mut pipe: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut text = Vec::new();
                let _ = pipe.read_to_end(&mut text);
                String::from_utf8_lossy(&text).into_owned()
            })
        };
        let stdout = drain(Box::new(child.stdout.take().unwrap()));
        let stderr = drain(Box::new(child.stderr.take().unwrap()));
        Spawned {
            child,
            stdout,
            stderr,
            started,
        }
    }

    fn wait(mut self) -> RunResult {
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break Some(status);
            }
            if self.started.elapsed() > DEADLINE {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let elapsed = self.started.elapsed();
        let mut stderr = self.stderr.join().unwrap();
        if status.is_none() {
            stderr.push_str(&format!("\n[killed by the test after {DEADLINE:?}]"));
        }
        RunResult {
            code: status.and_then(|s| s.code()).unwrap_or(-1),
            stdout: self.stdout.join().unwrap(),
            stderr,
            elapsed,
        }
    }
}

/// Runs the binary to its end (or [`DEADLINE`]).
fn run_net(cmd: &mut Command) -> RunResult {
    Spawned::start(cmd).wait()
}

fn with_password(base_url: &str) -> String {
    base_url.replace("http://", &format!("http://alice:{PASSWORD}@"))
}

fn assert_no_password(r: &RunResult, output: &Path) {
    let written = std::fs::read_to_string(output).unwrap_or_default();
    for (what, text) in [
        ("stdout", &r.stdout),
        ("stderr", &r.stderr),
        ("output", &written),
    ] {
        assert!(
            !text.contains(PASSWORD),
            "the password leaked into {what}: {text}"
        );
        assert!(
            !text.contains("alice"),
            "the user name leaked into {what}: {text}"
        );
    }
}

/// Records in an output that may not exist.
fn records_in(output: &Path) -> usize {
    if output.exists() {
        read_jsonl(output).len()
    } else {
        0
    }
}

fn assert_all_ok(output: &Path, rows: usize) -> Vec<Value> {
    let records = read_jsonl(output);
    assert_eq!(records.len(), rows);
    for record in &records {
        assert_eq!(record["status"], "ok", "{record}");
    }
    records
}

/// A loopback port with nothing listening on it (connection refused).
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn sim_addr(sim: &Sim) -> SocketAddr {
    let authority = sim
        .base_url
        .trim_start_matches("http://")
        .trim_end_matches("/v1");
    authority.parse().unwrap()
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A simulator behind TLS: a CA made now, a certificate for `localhost` / 127.0.0.1 signed
/// by it, and a TLS-terminating forwarder to the plain simulator.
struct Net {
    runtime: Runtime,
    tls_addr: SocketAddr,
    ca_pem: String,
}

impl Net {
    fn start(sim: &Sim) -> Self {
        let runtime = runtime();
        let (ca_pem, config) = test_pki();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let tls_addr = listener.local_addr().unwrap();
        let upstream = sim_addr(sim);
        runtime.spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    if let Ok(mut plain) = TcpStream::connect(upstream).await {
                        let _ = copy_bidirectional(&mut tls, &mut plain).await;
                    }
                });
            }
        });
        Net {
            runtime,
            tls_addr,
            ca_pem,
        }
    }

    fn tls_base_url(&self) -> String {
        format!("https://localhost:{}/v1", self.tls_addr.port())
    }
}

/// A CA certificate (PEM) and a server configuration whose certificate it signed.
fn test_pki() -> (String, rustls::ServerConfig) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "promptbatch test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server_cert = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".into()])
        .unwrap()
        .signed_by(&server_key, &ca)
        .unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![server_cert.der().clone()], key)
        .unwrap();
    (ca.pem(), config)
}

/// The DER bytes inside a PEM certificate (a `.der` file as a user might have one).
fn pem_body_as_der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

/// A minimal HTTP CONNECT proxy: reads `CONNECT host:port`, records it, answers 200 and splices.
struct ConnectProxy {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
}

impl ConnectProxy {
    fn start(runtime: &Runtime) -> Self {
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        runtime.spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    let _ = tunnel(client, log).await;
                });
            }
        });
        ConnectProxy { addr, seen }
    }

    fn connects(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

async fn tunnel(mut client: TcpStream, log: Arc<Mutex<Vec<String>>>) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if client.read(&mut byte).await? == 0 || head.len() > 8192 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    let mut words = head.split_whitespace();
    let (Some("CONNECT"), Some(target)) = (words.next(), words.next()) else {
        client
            .write_all(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n")
            .await?;
        return Ok(());
    };
    log.lock().unwrap().push(target.to_string());
    let mut upstream = TcpStream::connect(target).await?;
    client
        .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        .await?;
    copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}

/// A plain TCP forwarder to `target` that can be taken down (listener closed, connections cut)
/// and brought back on the same port: a network outage in the middle of a run.
struct Forwarder {
    handle: tokio::runtime::Handle,
    target: SocketAddr,
    port: u16,
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
}

impl Forwarder {
    fn start(runtime: &Runtime, target: SocketAddr) -> Self {
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let mut forwarder = Forwarder {
            handle: runtime.handle().clone(),
            target,
            port: listener.local_addr().unwrap().port(),
            tasks: Arc::default(),
        };
        forwarder.serve(listener);
        forwarder
    }

    fn serve(&mut self, listener: TcpListener) {
        let target = self.target;
        let tasks = self.tasks.clone();
        let accept = self.handle.spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let connection = tokio::spawn(async move {
                    if let Ok(mut upstream) = TcpStream::connect(target).await {
                        let _ = copy_bidirectional(&mut client, &mut upstream).await;
                    }
                });
                tasks.lock().unwrap().push(connection.abort_handle());
            }
        });
        self.tasks.lock().unwrap().push(accept.abort_handle());
    }

    /// Closes the port and cuts every connection, and returns once they are: an aborted task
    /// drops its sockets (the listener, a connection's two ends) on the runtime's next turn, and
    /// is finished only after. Repeated until no task is left, for a connection the accept loop
    /// took just before it was aborted.
    fn stop(&mut self) {
        loop {
            let tasks: Vec<AbortHandle> = self.tasks.lock().unwrap().drain(..).collect();
            if tasks.is_empty() {
                break;
            }
            for task in &tasks {
                task.abort();
            }
            wait_until("the forwarder's tasks to end", HANG, || {
                tasks.iter().all(AbortHandle::is_finished)
            });
        }
    }

    /// Listens on the same port again.
    fn restart(&mut self) {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let listener = self.handle.block_on(TcpListener::bind(addr)).unwrap();
        self.serve(listener);
    }
}
