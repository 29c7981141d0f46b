//! Connection bounds: past `max_connections` a client is refused at once
//! with 53300; sockets that never finish their startup are closed after
//! `startup_timeout_ms` instead of holding slots; idle sessions end after
//! `idle_session_timeout_ms` with 57P05.

use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio_postgres::NoTls;

use crate::harness::{assert_answers, sqlstate, Server};

#[tokio::test]
async fn past_max_connections_a_client_is_refused_at_once_with_53300() {
    let server = Server::start_with_config("[limits]\nmax_connections = 2\n");
    let first = server.client().await;
    let second = server.client().await;
    let started = Instant::now();
    let err = match tokio_postgres::connect(&server.conninfo(), NoTls).await {
        Ok(_) => panic!("a third connection was accepted"),
        Err(e) => e,
    };
    assert_eq!(sqlstate(&err), "53300", "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // psql sees the same, with PostgreSQL's words.
    let (_, stderr, ok) = server.psql("SELECT 1");
    assert!(!ok);
    assert!(stderr.contains("too many clients"), "{stderr}");
    drop(second);
    // The slot frees when the connection task ends.
    let mut third = None;
    for _ in 0..100 {
        if let Ok((client, conn)) = tokio_postgres::connect(&server.conninfo(), NoTls).await {
            tokio::spawn(conn);
            third = Some(client);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let third = third.expect("a slot was freed");
    for client in [&first, &third] {
        assert_answers(client).await;
    }
}

#[tokio::test]
async fn silent_sockets_are_closed_after_the_startup_timeout() {
    let server =
        Server::start_with_config("[limits]\nmax_connections = 4\nstartup_timeout_ms = 300\n");
    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(
            tokio::net::TcpStream::connect(server.pg_addr)
                .await
                .unwrap(),
        );
    }
    // Every slot is held by a socket that sends nothing; they are closed
    // after the timeout, and a real client gets in.
    for socket in &mut silent {
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "a silent socket was not closed");
    }
    let client = server.client().await;
    assert_answers(&client).await;
}

#[tokio::test]
async fn idle_sessions_end_with_57p05_when_configured() {
    let server = Server::start_with_config("[limits]\nidle_session_timeout_ms = 300\n");
    let (client, connection) = tokio_postgres::connect(&server.conninfo(), NoTls)
        .await
        .unwrap();
    let connection = tokio::spawn(connection);
    // Statements in quick succession keep the session alive.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        client.simple_query("SELECT 1").await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let ended = connection.await.unwrap().unwrap_err();
    assert_eq!(sqlstate(&ended), "57P05", "{ended:?}");
    assert!(client.is_closed());
}

/// HTTP is bounded the same way: a connection past the cap is answered 503
/// with Retry-After, and a client that never finishes its headers is cut
/// off, freeing its slot.
#[tokio::test]
async fn http_connections_are_capped_and_slow_headers_cut_off() {
    use tokio::io::AsyncWriteExt;
    let server = Server::start_with_config(
        "[limits]\nhttp_max_connections = 2\nhttp_header_timeout_ms = 500\n",
    );
    let mut slow = Vec::new();
    for _ in 0..2 {
        let mut socket = tokio::net::TcpStream::connect(server.http_addr)
            .await
            .unwrap();
        socket
            .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        slow.push(socket);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let url = format!("http://{}/health", server.http_addr);
    let response = reqwest::get(&url).await.unwrap();
    assert_eq!(response.status().as_u16(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    // The half-sent requests time out and their slots free.
    for socket in &mut slow {
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "a slow client was not cut off");
    }
    let response = reqwest::get(&url).await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
}
