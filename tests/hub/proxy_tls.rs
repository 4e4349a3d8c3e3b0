//! The reverse-proxy example `deploy/nginx/scorehub.conf`, run for real
//! (issue 15, item 4): Debian's `nginx`, as a non-root process with a
//! temporary prefix, terminates TLS with a certificate of a test CA on a free
//! loopback port in front of the real binary; a fan connects over `wss://`
//! and a scorekeeper posts over `https://`, both trusting only that CA.
//!
//! The example is used as committed: the test rewrites only its upstream
//! `server` line, its `listen` lines and its certificate paths (and fails
//! when one of them is no longer there, so the two stay in step). The test
//! **fails** when `nginx` is missing (`scripts/test` installs it).

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use scorehub::auth::Scope;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::common::{BinaryHub, Fan, FanState, WAIT, eventually, new_game, score};

/// The example, as committed.
const EXAMPLE: &str = include_str!("../../deploy/nginx/scorehub.conf");

/// The name the test certificate is for (and the client asks for).
const HOST: &str = "localhost";

/// How long nginx may take to open its port.
const NGINX_START: Duration = Duration::from_secs(10);

/// Debian's `nobody`/`nogroup`: nginx runs as them when the test runs as root.
const NOBODY: u32 = 65534;

const G: &str = "nba:2026-11-22-lal-bos";

/// A free loopback port (released again: nginx binds it next; a lost race
/// shows as nginx failing to start, and [`Nginx::start`] tries again).
fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0 for a free port")
}

/// `text` with the one line that is `from` (trimmed) replaced by `to`.
fn replace_line(text: &str, from: &str, to: &str) -> String {
    let hits = text.lines().filter(|l| l.trim() == from).count();
    assert_eq!(
        hits, 1,
        "deploy/nginx/scorehub.conf must have the line `{from}` exactly once (the test rewrites it); found {hits}"
    );
    text.lines()
        .map(|l| if l.trim() == from { to } else { l })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The example with the test's upstream, ports and certificates.
fn render_example(hub: SocketAddr, https: u16, http: u16, certs: &Path) -> String {
    let conf = replace_line(EXAMPLE, "server 127.0.0.1:8080;", &format!("server {hub};"));
    let conf = replace_line(
        &conf,
        "listen 443 ssl http2;",
        &format!("listen 127.0.0.1:{https} ssl http2;"),
    );
    let conf = replace_line(&conf, "listen 80;", &format!("listen 127.0.0.1:{http};"));
    let conf = replace_line(
        &conf,
        "ssl_certificate     /etc/ssl/scorehub/fullchain.pem;",
        &format!("ssl_certificate {};", certs.join("server.pem").display()),
    );
    replace_line(
        &conf,
        "ssl_certificate_key /etc/ssl/scorehub/privkey.pem;",
        &format!(
            "ssl_certificate_key {};",
            certs.join("server.key").display()
        ),
    )
}

/// `nginx` in the foreground with the rendered example, its prefix, logs,
/// pid file and temp paths in a temporary directory; stopped on drop.
struct Nginx {
    child: Child,
    dir: PathBuf,
    /// The TLS port.
    https: u16,
    /// The plain-HTTP port (the redirect).
    http: u16,
    _temp: tempfile::TempDir,
}

impl Nginx {
    /// Starts nginx in front of `hub` with the certificates in `certs`;
    /// waits until it accepts connections on its TLS port.
    fn start(hub: SocketAddr, certs: &Path) -> Nginx {
        if let Err(e) = Command::new("nginx")
            .arg("-v")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
        {
            panic!(
                "cannot run nginx ({e}): this test needs it; install it \
                 (Debian: apt-get install nginx-light, as scripts/test does) and put it on PATH"
            );
        }
        let mut last_log = String::new();
        for _ in 0..3 {
            match Nginx::try_start(hub, certs) {
                Ok(nginx) => return nginx,
                // Another process took a port between free_port and nginx.
                Err(log) if log.contains("Address already in use") => last_log = log,
                Err(log) => panic!("nginx did not start; its error log:\n{log}"),
            }
        }
        panic!("nginx found its ports taken three times; its last error log:\n{last_log}")
    }

    fn try_start(hub: SocketAddr, certs: &Path) -> Result<Nginx, String> {
        let temp = tempfile::tempdir().expect("creating nginx's temp dir");
        let dir = temp.path().to_path_buf();
        let (https, http) = (free_port(), free_port());
        // The server's certificate and key, copied into nginx's own directory
        // (which it may own, below).
        let tls = dir.join("tls");
        std::fs::create_dir(&tls).expect("creating nginx's tls dir");
        for file in ["server.pem", "server.key"] {
            std::fs::copy(certs.join(file), tls.join(file))
                .unwrap_or_else(|e| panic!("copying {file}: {e}"));
        }
        std::fs::write(
            dir.join("scorehub.conf"),
            render_example(hub, https, http, &tls),
        )
        .expect("writing scorehub.conf");
        let d = dir.display();
        // The main file a distribution's nginx.conf would be: the example goes
        // in the `http` block, as in /etc/nginx/conf.d/. Everything nginx
        // writes stays in `dir`, so it needs no root and no /var.
        let main = format!(
            "daemon off;\n\
             worker_processes 1;\n\
             pid {d}/nginx.pid;\n\
             error_log {d}/error.log info;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n\
             \x20   access_log {d}/access.log;\n\
             \x20   client_body_temp_path {d}/client_body;\n\
             \x20   proxy_temp_path {d}/proxy;\n\
             \x20   fastcgi_temp_path {d}/fastcgi;\n\
             \x20   uwsgi_temp_path {d}/uwsgi;\n\
             \x20   scgi_temp_path {d}/scgi;\n\
             \x20   include {d}/scorehub.conf;\n\
             }}\n"
        );
        std::fs::write(dir.join("nginx.conf"), main).expect("writing nginx.conf");

        let mut cmd = if rustix::process::geteuid().is_root() {
            // Never as root: as nobody, owning its directory.
            chown_tree(&dir);
            let mut cmd = Command::new("setpriv");
            cmd.arg(format!("--reuid={NOBODY}"))
                .arg(format!("--regid={NOBODY}"))
                .arg("--clear-groups")
                .arg("--")
                .arg("nginx");
            cmd
        } else {
            Command::new("nginx")
        };
        cmd.arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-e")
            .arg(dir.join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot start nginx ({e}); as root it runs under util-linux's setpriv")
        });
        let mut nginx = Nginx {
            child,
            dir,
            https,
            http,
            _temp: temp,
        };
        let deadline = Instant::now() + NGINX_START;
        loop {
            if let Some(status) = nginx.child.try_wait().expect("try_wait on nginx") {
                return Err(format!("(exited: {status})\n{}", nginx.error_log()));
            }
            if std::net::TcpStream::connect(("127.0.0.1", https)).is_ok() {
                let status = std::fs::read_to_string(format!("/proc/{}/status", nginx.child.id()))
                    .expect("reading nginx's /proc status");
                let uid = status.lines().find(|l| l.starts_with("Uid:"));
                assert!(
                    uid.is_some_and(|l| l.split_whitespace().skip(1).all(|id| id != "0")),
                    "nginx must not run as root: {uid:?}"
                );
                return Ok(nginx);
            }
            if Instant::now() > deadline {
                panic!(
                    "nginx did not open 127.0.0.1:{https} within {NGINX_START:?}; its error log:\n{}",
                    nginx.error_log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its worker and exits; SIGKILL if it hangs.
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- nginx's error log ---\n{}", self.error_log());
        }
    }
}

/// Gives `path` and everything under it to [`NOBODY`].
fn chown_tree(path: &Path) {
    std::os::unix::fs::chown(path, Some(NOBODY), Some(NOBODY))
        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    if path.is_dir() {
        for entry in std::fs::read_dir(path).expect("reading a temp dir") {
            chown_tree(&entry.expect("a directory entry").path());
        }
    }
}

/// A TLS client trusting only the CA in `ca_pem`, speaking HTTP/1.1.
fn tls_connector(ca_pem: &Path) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_pem).expect("reading the test CA") {
        roots
            .add(cert.expect("a PEM certificate"))
            .expect("adding the test CA");
    }
    // The crate's one provider (ring, see Cargo.toml), as the hub's own TLS uses.
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsConnector::from(Arc::new(config))
}

/// A TLS connection to `localhost:port`, the certificate checked.
async fn tls(connector: &TlsConnector, port: u16) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap_or_else(|e| panic!("connecting to nginx on 127.0.0.1:{port}: {e}"));
    let name = ServerName::try_from(HOST).expect("localhost is a DNS name");
    connector
        .connect(name, tcp)
        .await
        .unwrap_or_else(|e| panic!("TLS handshake with nginx on port {port}: {e}"))
}

/// One HTTPS request through nginx: the status and the body.
async fn https(
    connector: &TlsConnector,
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> (u16, String) {
    let stream = tls(connector, port).await;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("an HTTP/1.1 connection over TLS");
    let conn = tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", format!("{HOST}:{port}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let bytes = match body {
        Some(v) => {
            req = req.header("content-type", "application/json");
            Bytes::from(serde_json::to_vec(v).expect("JSON encodes"))
        }
        None => Bytes::new(),
    };
    let resp = sender
        .send_request(req.body(Full::new(bytes)).expect("a valid request"))
        .await
        .unwrap_or_else(|e| panic!("{method} {path} through nginx: {e}"));
    let status = resp.status().as_u16();
    let text = resp
        .into_body()
        .collect()
        .await
        .expect("reading the response body")
        .to_bytes();
    drop(sender);
    conn.abort();
    (status, String::from_utf8_lossy(&text).into_owned())
}

/// A fan over `wss://` through nginx, subscribed to `game` in the query, and
/// the scorekeeper over `https://` through it: snapshot, then the diff; the
/// client's address reaches the hub in `X-Forwarded-For`; plain HTTP is
/// redirected; `/metrics` stays off the edge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_over_wss_through_nginx_gets_the_snapshot_and_the_diff() {
    let temp = tempfile::tempdir().expect("temp dir");
    let certs = temp.path().join("certs");
    let data = temp.path().join("hub");
    std::fs::create_dir_all(&certs).expect("creating the certs dir");
    std::fs::create_dir_all(&data).expect("creating the hub's dir");
    scorehub::testing::tls::write_certificates(&certs);

    let hub = BinaryHub::spawn(
        &data,
        &[
            // nginx connects from 127.0.0.1: trusted, as the example's header says.
            ("SCOREHUB_HTTP__TRUSTED_PROXIES", "127.0.0.1"),
            (
                "SCOREHUB_LOG__LEVEL",
                "scorehub=debug,tower_http=debug,info",
            ),
        ],
    );
    let hub_addr: SocketAddr = hub
        .base
        .trim_start_matches("http://")
        .parse()
        .expect("the hub's address");
    let nginx = Nginx::start(hub_addr, &certs);
    let connector = tls_connector(&certs.join("ca.pem"));
    let token = hub.token(&["nba:*"], Scope::Scorekeeper);
    let bearer = format!("Bearer {token}");

    // The scorekeeper creates the game over https.
    let (status, body) = https(
        &connector,
        nginx.https,
        "PUT",
        &format!("/v1/games/{G}"),
        &[("authorization", &bearer)],
        Some(&new_game("Lakers", "Celtics")),
    )
    .await;
    assert_eq!(status, 201, "PUT through nginx: {body}");

    // The fan, over wss:// (the upgrade through nginx), gets the snapshot.
    let url = format!("wss://{HOST}:{}/v1/ws?games={G}", nginx.https);
    let (ws, response) =
        tokio_tungstenite::client_async(url.as_str(), tls(&connector, nginx.https).await)
            .await
            .unwrap_or_else(|e| panic!("WebSocket handshake through nginx ({url}): {e}"));
    assert_eq!(response.status().as_u16(), 101);
    let mut fan = Fan::from_ws(ws);
    let mut state = FanState::default();
    let f = fan.next_frame(WAIT).await;
    assert_eq!((f.t.as_str(), f.g.as_deref(), f.q), ("s", Some(G), Some(0)));
    state.apply(&f);
    assert_eq!(
        state.state(G).expect("a snapshot")["home"]["name"],
        "Lakers"
    );

    // An event posted over https, by a client that says it is 203.0.113.9:
    // nginx appends its peer (127.0.0.1, trusted) and the hub takes the
    // address left of it.
    let (status, body) = https(
        &connector,
        nginx.https,
        "POST",
        &format!("/v1/games/{G}/events"),
        &[
            ("authorization", &bearer),
            ("x-forwarded-for", "203.0.113.9"),
        ],
        Some(&score("e1", "home", 3)),
    )
    .await;
    assert_eq!(status, 200, "POST through nginx: {body}");
    let reply: Value = serde_json::from_str(&body).expect("a JSON reply");
    assert_eq!(reply, json!({"game": G, "seq": 1, "duplicate": false}));

    // The diff reaches the fan through the proxy.
    let f = fan.next_frame(WAIT).await;
    assert_eq!((f.t.as_str(), f.g.as_deref(), f.q), ("d", Some(G), Some(1)));
    state.apply(&f);
    let game = state.state(G).expect("the fan holds the game").clone();
    assert_eq!(game["home"]["score"], 3, "{game}");
    let (status, body) = https(
        &connector,
        nginx.https,
        "GET",
        &format!("/v1/games/{G}"),
        &[],
        None,
    )
    .await;
    assert_eq!(status, 200, "GET through nginx: {body}");
    let mut read = serde_json::from_str::<Value>(&body).expect("state JSON");
    assert_eq!(read["watching"], 1, "the fan through nginx watches: {read}");
    crate::common::without_watching(&mut read);
    assert_eq!(read, game, "the fan's state is the hub's");
    eventually(
        "the hub's request log names the forwarded client",
        WAIT,
        || async { hub.stderr().contains("client=203.0.113.9") },
    )
    .await;

    // The edge: /metrics is not proxied, plain HTTP only redirects.
    let (status, _) = https(&connector, nginx.https, "GET", "/metrics", &[], None).await;
    assert_eq!(status, 404, "/metrics stays off the public edge");
    let redirect = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("an HTTP client")
        .get(format!("http://127.0.0.1:{}/v1/games/{G}", nginx.http))
        .send()
        .await
        .expect("plain HTTP to nginx");
    assert_eq!(redirect.status().as_u16(), 301);
    let location = redirect
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        location.starts_with("https://") && location.ends_with(&format!("/v1/games/{G}")),
        "redirected to {location:?}"
    );

    fan.close().await;
    drop(nginx);
}

/// Reads `body` until its text holds `needle`; panics after [`WAIT`]. The
/// text so far.
async fn read_until(body: &mut hyper::body::Incoming, text: &mut String, needle: &str) {
    let read = async {
        while !text.contains(needle) {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        text.push_str(&String::from_utf8_lossy(&data));
                    }
                }
                other => panic!("the stream ended before {needle:?}: {other:?} after {text:?}"),
            }
        }
    };
    if tokio::time::timeout(WAIT, read).await.is_err() {
        panic!("no {needle:?} through nginx within {WAIT:?}; got {text:?}");
    }
}

/// An SSE fan (the fallback where WebSocket is blocked) through the same
/// example: nginx passes each event on at once (the hub's
/// `X-Accel-Buffering: no`), so the diff of an event posted over https
/// arrives while the stream stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sse_fan_through_nginx_gets_each_event_unbuffered() {
    let temp = tempfile::tempdir().expect("temp dir");
    let certs = temp.path().join("certs");
    let data = temp.path().join("hub");
    std::fs::create_dir_all(&certs).expect("creating the certs dir");
    std::fs::create_dir_all(&data).expect("creating the hub's dir");
    scorehub::testing::tls::write_certificates(&certs);
    let hub = BinaryHub::spawn(&data, &[("SCOREHUB_HTTP__TRUSTED_PROXIES", "127.0.0.1")]);
    let hub_addr: SocketAddr = hub
        .base
        .trim_start_matches("http://")
        .parse()
        .expect("the hub's address");
    let nginx = Nginx::start(hub_addr, &certs);
    let connector = tls_connector(&certs.join("ca.pem"));
    let bearer = format!("Bearer {}", hub.token(&["nba:*"], Scope::Scorekeeper));
    let (status, body) = https(
        &connector,
        nginx.https,
        "PUT",
        &format!("/v1/games/{G}"),
        &[("authorization", &bearer)],
        Some(&new_game("Lakers", "Celtics")),
    )
    .await;
    assert_eq!(status, 201, "PUT through nginx: {body}");

    let stream = tls(&connector, nginx.https).await;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("an HTTP/1.1 connection over TLS");
    let conn = tokio::spawn(conn);
    let req = Request::get(format!("/v1/sse?games={G}"))
        .header("host", format!("{HOST}:{}", nginx.https))
        .header("accept", "text/event-stream")
        .body(Full::new(Bytes::new()))
        .expect("a valid request");
    let resp = tokio::time::timeout(WAIT, sender.send_request(req))
        .await
        .expect("the stream's head through nginx")
        .expect("a response");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    let mut text = String::new();
    read_until(&mut body, &mut text, &format!("id: {G}:0\n")).await;
    assert!(text.contains(r#""t":"s""#), "{text}");

    let (status, reply) = https(
        &connector,
        nginx.https,
        "POST",
        &format!("/v1/games/{G}/events"),
        &[("authorization", &bearer)],
        Some(&score("e1", "home", 3)),
    )
    .await;
    assert_eq!(status, 200, "POST through nginx: {reply}");
    read_until(&mut body, &mut text, &format!("id: {G}:1\n")).await;
    let diff = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str::<Value>(d).expect("data is JSON"))
        .find(|v| v["t"] == "d")
        .expect("a diff event");
    assert_eq!(
        (diff["q"].as_u64(), &diff["d"]["home"]["score"]),
        (Some(1), &json!(3))
    );
    drop(sender);
    conn.abort();
    drop(nginx);
}
