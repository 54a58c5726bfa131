//! A listener with a generated certificate, served and called as the node and its link do.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use nonstop_tls::{ConnectionLimits, ListenerTls, ServerPin, TlsConfig, serve};

fn app() -> axum::Router {
    axum::Router::new()
        .route(
            "/echo",
            axum::routing::post(|body: String| async move { body }),
        )
        .route(
            "/who",
            axum::routing::get(
                |axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<
                    std::net::SocketAddr,
                >| async move { peer.ip().to_string() },
            ),
        )
}

fn pinned_client(pin: &ServerPin) -> reqwest::Client {
    nonstop_tls::http_client(Some(pin)).unwrap()
}

struct Served {
    addr: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
}

fn start(tls: Option<ListenerTls>, limits: ConnectionLimits) -> Served {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        serve(listener, app(), tls.as_ref(), &limits, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    Served { addr, stop }
}

#[tokio::test]
async fn a_generated_certificate_serves_https_to_a_client_that_pinned_it_and_no_other() {
    let dir = tempfile::tempdir().unwrap();
    let listen = "127.0.0.1:0".parse().unwrap();
    let tls = ListenerTls::prepare(&TlsConfig::default(), listen, dir.path())
        .unwrap()
        .unwrap();
    assert!(tls.generated);
    let key_mode = std::fs::metadata(dir.path().join("tls/key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        key_mode & 0o777,
        0o600,
        "the private key is its owner's only"
    );
    // The next start keeps the same certificate: clients' pins stay good.
    let again = ListenerTls::prepare(&TlsConfig::default(), listen, dir.path())
        .unwrap()
        .unwrap();
    assert!(!again.generated);
    assert_eq!(again.fingerprint, tls.fingerprint);

    let served = start(Some(tls.clone()), ConnectionLimits::default());
    let url = format!("https://127.0.0.1:{}/who", served.addr.port());
    let pin = ServerPin::fingerprint(&tls.fingerprint).unwrap();
    let answer = pinned_client(&pin).get(&url).send().await.unwrap();
    assert_eq!(
        answer.text().await.unwrap(),
        "127.0.0.1",
        "the handler sees the client"
    );

    // The same certificate given as a CA works too, for the names it was made for.
    let ca = ServerPin::ca_file(&tls.cert_path).unwrap();
    let by_name = format!("https://localhost:{}/who", served.addr.port());
    assert!(pinned_client(&ca).get(&by_name).send().await.is_ok());

    // Another certificate's fingerprint: refused, and the error says why.
    let other = ServerPin::fingerprint(&format!("sha256:{}", "ab".repeat(32))).unwrap();
    let refused = pinned_client(&other).get(&url).send().await.unwrap_err();
    let chain = format!("{refused:?}");
    assert!(chain.contains("not the pinned"), "{chain}");

    // A client that trusts no certificate (no pin) gets nothing from it either.
    let unpinned = nonstop_tls::http_client(None)
        .unwrap()
        .get(&url)
        .send()
        .await;
    assert!(unpinned.is_err(), "{unpinned:?}");
    // A client without TLS gets no answer from the HTTPS port.
    let plain = reqwest::get(format!("http://{}/who", served.addr)).await;
    assert!(plain.is_err(), "plain HTTP was answered: {plain:?}");
    let _ = served.stop.send(());
}

#[tokio::test]
async fn plain_http_is_refused_off_loopback_and_a_half_configured_certificate_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let e = ListenerTls::prepare(
        &TlsConfig::off(),
        "0.0.0.0:8080".parse().unwrap(),
        dir.path(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("only on a loopback address"), "{e}");
    assert!(
        ListenerTls::prepare(
            &TlsConfig::off(),
            "127.0.0.1:8080".parse().unwrap(),
            dir.path()
        )
        .unwrap()
        .is_none()
    );
    let half = TlsConfig {
        cert: Some(dir.path().join("cert.pem")),
        ..TlsConfig::default()
    };
    let e = ListenerTls::prepare(&half, "127.0.0.1:0".parse().unwrap(), dir.path()).unwrap_err();
    assert!(e.to_string().contains("tls.cert"), "{e}");
    let e = ServerPin::fingerprint("sha256:1234").unwrap_err();
    assert!(e.to_string().contains("64 hex digits"), "{e}");
}

#[tokio::test]
async fn a_client_that_sends_nothing_or_half_a_request_is_cut_off() {
    let limits = ConnectionLimits {
        header_secs: 1,
        body_secs: 1,
        ..ConnectionLimits::default()
    };
    let served = start(None, limits);
    let addr = served.addr;
    let outcome = tokio::task::spawn_blocking(move || {
        let mut results = Vec::new();
        for opening in [
            "",
            "GET /who HTTP/1.1\r\nHost: x\r\n",
            "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nhalf",
        ] {
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            s.write_all(opening.as_bytes()).unwrap();
            let mut buf = Vec::new();
            // The server closes the connection (EOF, perhaps after a 408) well before our 20 s.
            let read = s.read_to_end(&mut buf);
            results.push((
                read.is_ok(),
                format!("{opening:?}: {}", String::from_utf8_lossy(&buf)),
            ));
        }
        results
    })
    .await
    .unwrap();
    for (closed, text) in outcome {
        assert!(closed, "the connection was held open: {text:?}");
        assert!(!text.contains("200 OK"), "{text}");
    }
    let _ = served.stop.send(());
}

/// A burst of connections arriving while the listener is not accepting (its process busy for a
/// moment) waits in the kernel until it accepts them: with the standard library's backlog of 128
/// the 129th onwards were dropped, and under twice a node's capacity their requests failed.
#[test]
fn a_burst_of_connections_waits_for_a_listener_that_is_busy_for_a_moment() {
    let listener = nonstop_tls::listen("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let burst = 600;
    let clients: Vec<TcpStream> = (0..burst)
        .map(|n| {
            TcpStream::connect_timeout(&addr, Duration::from_millis(500)).unwrap_or_else(|e| {
                panic!(
                    "connection {n} of {burst} was not taken while the listener was busy: {e} \
                     (the backlog is min({}, net.core.somaxconn))",
                    nonstop_tls::LISTEN_BACKLOG
                )
            })
        })
        .collect();
    // Each is accepted once the listener gets to it.
    listener.set_nonblocking(true).unwrap();
    let accepted = std::iter::from_fn(|| listener.accept().ok()).count();
    assert_eq!(accepted, burst);
    drop(clients);
}
