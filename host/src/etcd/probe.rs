//! `GET` over a fresh HTTP/1 connection: the `/health` and `/readyz`
//! probes of plain-text members, where etcd serves its HTTP handlers over
//! HTTP/1 only (cmux hands all plain-text HTTP/2 to gRPC).
//!
//! On hyper's connection API rather than reqwest's client: a probe uses its
//! connection once (each probe connects afresh, as `etcdctl endpoint health`
//! does, and idle HTTP/1 connections held ~25 KiB each between rounds), so
//! the pool, the connector stack and the task that drives a pooled
//! connection were cost without use, three times a cluster round
//! (bench/HISTORY.md).

use std::pin::pin;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Most a probe's answer may hold: etcd's `/health` and `/readyz?verbose`
/// answers are well under a KiB.
const MAX_ANSWER: usize = 64 * 1024;

/// Why a probe got no answer.
#[derive(Debug, thiserror::Error)]
pub(super) enum ProbeError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("error trying to connect: {}", super::error_chain(&**.0))]
    Connect(BoxError),
    #[error("{}", super::error_chain(&**.0))]
    Exchange(BoxError),
}

/// `GET <path>` of `host:port` (plain text), connect included within `timeout`.
pub(super) async fn get(
    host: &str,
    port: u16,
    path: &str,
    timeout: Duration,
) -> Result<(http::StatusCode, Bytes), ProbeError> {
    let probe = async {
        let tcp = tokio::net::TcpStream::connect((host, port))
            .await
            .map_err(|e| ProbeError::Connect(e.into()))?;
        // Without it the request may wait for the member's delayed ACK.
        tcp.set_nodelay(true).map_err(|e| ProbeError::Connect(e.into()))?;
        exchange(tcp, host, port, path).await.map_err(ProbeError::Exchange)
    };
    tokio::time::timeout(timeout, probe)
        .await
        .unwrap_or(Err(ProbeError::Timeout(timeout)))
}

async fn exchange(
    tcp: tokio::net::TcpStream,
    host: &str,
    port: u16,
    path: &str,
) -> Result<(http::StatusCode, Bytes), BoxError> {
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let request = http::Request::get(path)
        .header(http::header::HOST, authority)
        .body(Empty::<Bytes>::new())?;
    let answer = async {
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_ANSWER).collect().await?;
        Ok::<_, BoxError>((status, body.to_bytes()))
    };
    // The connection is driven here, beside the one exchange on it, rather
    // than by a task of its own; it may finish (the member closed it) before
    // the answer is read out.
    let (mut answer, mut connection) = (pin!(answer), pin!(connection));
    let mut driving = true;
    loop {
        tokio::select! {
            done = &mut answer => return done,
            ended = &mut connection, if driving => {
                ended?;
                driving = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server that answers one request with `answer` (raw HTTP/1), and
    /// hands back what it was sent.
    async fn serve_once(answer: &'static [u8]) -> (u16, tokio::task::JoinHandle<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = vec![0; 4096];
            let n = socket.read(&mut request).await.unwrap();
            // The client may stop reading (a huge answer).
            socket.write_all(answer).await.ok();
            socket.shutdown().await.ok();
            String::from_utf8_lossy(&request[..n]).into_owned()
        });
        (port, server)
    }

    #[tokio::test]
    async fn reads_the_status_and_body_and_names_the_member_as_host() {
        let (port, server) = serve_once(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 32\r\n\r\n{\"health\":\"false\",\"reason\":\"x\"}\n",
        )
        .await;
        let (status, body) = get("127.0.0.1", port, "/health", Duration::from_secs(5)).await.unwrap();
        assert_eq!(status, http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(&body[..], b"{\"health\":\"false\",\"reason\":\"x\"}\n");
        let request = server.await.unwrap();
        assert!(request.starts_with("GET /health HTTP/1.1\r\n"), "{request}");
        assert!(request.contains(&format!("host: 127.0.0.1:{port}\r\n")), "{request}");

        // A body read until the member closes the connection.
        let (port, _server) = serve_once(b"HTTP/1.1 200 OK\r\n\r\n{\"health\":\"true\"}").await;
        let (status, body) = get("127.0.0.1", port, "/health", Duration::from_secs(5)).await.unwrap();
        assert_eq!(
            (status, &body[..]),
            (http::StatusCode::OK, &b"{\"health\":\"true\"}"[..])
        );
    }

    #[tokio::test]
    async fn a_refused_connect_a_silent_member_and_a_huge_answer_are_errors() {
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let refused = get("127.0.0.1", port, "/health", Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(refused, ProbeError::Connect(_)), "{refused}");
        assert!(
            refused.to_string().starts_with("error trying to connect: "),
            "{refused}"
        );

        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = silent.local_addr().unwrap().port();
        let timeout = get("127.0.0.1", port, "/health", Duration::from_millis(200))
            .await
            .unwrap_err();
        assert_eq!(timeout.to_string(), "no answer within 200ms");

        let huge: &'static [u8] = Box::leak(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{}",
                MAX_ANSWER + 1,
                "x".repeat(MAX_ANSWER + 1)
            )
            .into_bytes()
            .into_boxed_slice(),
        );
        let (port, _server) = serve_once(huge).await;
        let refused = get("127.0.0.1", port, "/health", Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(refused, ProbeError::Exchange(_)), "{refused}");
    }
}
