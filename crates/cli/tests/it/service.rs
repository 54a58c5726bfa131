//! The node as a long-running service under a supervisor that holds its listening socket
//! (systemd's socket activation, `deploy/systemd/`): the `nonstop` binary takes the socket it is
//! handed as fd 3 (`LISTEN_FDS`), stops on SIGTERM after the requests in flight, and a restart
//! on the same socket refuses no connection.

use std::io::{BufRead, BufReader};
use std::os::fd::OwnedFd;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use command_fds::{CommandFdExt, FdMapping};

/// Starts `nonstop node` on `listener` as systemd would: the socket as fd 3, `LISTEN_FDS=1`.
/// Returns once it says it is serving.
fn spawn_on(listener: &std::net::TcpListener, data: &std::path::Path) -> (Child, Vec<String>) {
    spawn_program_on(
        listener,
        &["node", "--no-seed", "--no-tls", "--data-dir"],
        data,
    )
}

/// Starts `nonstop <args> <data>` on `listener` as systemd would.
fn spawn_program_on(
    listener: &std::net::TcpListener,
    args: &[&str],
    data: &std::path::Path,
) -> (Child, Vec<String>) {
    let fd = OwnedFd::from(listener.try_clone().unwrap());
    let mut child = Command::new(env!("CARGO_BIN_EXE_nonstop"))
        .args(args)
        .arg(data)
        .env("LISTEN_FDS", "1")
        // No LISTEN_PID: the pid check is skipped (listenfd's rule), as the test cannot know the
        // child's pid before it starts.
        .env_remove("LISTEN_PID")
        .env_remove("DATABASE_URL")
        .fd_mappings(vec![FdMapping {
            parent_fd: fd,
            child_fd: 3,
        }])
        .unwrap()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = Vec::new();
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    for line in out.by_ref() {
        let line = line.unwrap();
        let serving = line.contains("listening on");
        lines.push(line);
        if serving {
            break;
        }
    }
    // Keep draining its output so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in out {});
    (child, lines)
}

fn terminate(child: &Child) {
    // The shell's own `kill`: there on every machine.
    let status = Command::new("sh")
        .args(["-c", &format!("kill -TERM {}", child.id())])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_on_the_socket_it_was_handed_refuses_no_connection() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    // The supervisor's socket: it stays open here whatever the node processes do.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/health", listener.local_addr().unwrap());
    let (mut first, said) = spawn_on(&listener, &data);
    assert!(
        said.iter()
            .any(|l| l.starts_with("serving on the socket handed over")),
        "{said:?}"
    );

    // A client that opens a new connection for every request, as many as it can.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let traffic = {
        let (stop, ok, failed, url) = (stop.clone(), ok.clone(), failed.clone(), url.clone());
        tokio::spawn(async move {
            let mut errors = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match client.get(&url).send().await {
                    Ok(r) if r.status().is_success() => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        errors.push(r.status().to_string());
                    }
                    Err(e) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        errors.push(format!("{e:?}"));
                    }
                }
            }
            errors
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = ok.load(Ordering::Relaxed);
    assert!(before > 0, "the first node answers");

    // SIGTERM: the first process stops accepting, finishes what it has, and exits cleanly.
    terminate(&first);
    let started = Instant::now();
    let status = tokio::task::spawn_blocking(move || first.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "a SIGTERM stop is a clean exit: {status}");
    assert!(started.elapsed() < Duration::from_secs(30));
    // The next process on the same socket; meanwhile connections wait in its queue.
    let at_restart = ok.load(Ordering::Relaxed);
    let (mut second, _) = spawn_on(&listener, &data);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let errors = traffic.await.unwrap();
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(failed, 0, "{errors:?}");
    assert!(
        ok > at_restart,
        "the second node answers on the same socket"
    );
    terminate(&second);
    assert!(second.wait().unwrap().success());
}

#[test]
fn the_update_server_serves_on_the_socket_it_was_handed_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let args = ["server", "--no-tls", "--data-dir"];
    let (mut server, said) = spawn_program_on(&listener, &args, &dir.path().join("server"));
    assert!(
        said.iter()
            .any(|l| l.starts_with("serving on the socket handed over")),
        "{said:?}"
    );
    let addr = listener.local_addr().unwrap();
    let health = move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        answer
    };
    assert!(health().starts_with("HTTP/1.1 200"));
    terminate(&server);
    assert!(
        server.wait().unwrap().success(),
        "a SIGTERM stop is a clean exit"
    );
    // A request made while no server runs waits in the socket's queue for the next one.
    let waiting = std::thread::spawn(health);
    std::thread::sleep(Duration::from_millis(300));
    let (mut again, _) = spawn_program_on(&listener, &args, &dir.path().join("server"));
    assert!(waiting.join().unwrap().starts_with("HTTP/1.1 200"));
    terminate(&again);
    assert!(again.wait().unwrap().success());
}
