//! Member channels: one HTTP/2 connection per member, dialled on first use
//! and again after it closes, TLS by rustls with the cluster's shared
//! configuration.
//!
//! Written here rather than taken from tonic's `Channel`, which puts a
//! request queue and a worker task (tower's `Buffer`) and a reconnecting
//! service in front of the same hyper connection: ~12 KiB per channel and
//! one more task hop per call, for concurrency and load balancing that a
//! channel to exactly one member does not need. Thousands of clusters keep
//! thousands of these open (bench/HISTORY.md).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::{Authority, Scheme};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tonic::body::Body;

/// HTTP/2 pings on open member channels, so a dead member under a watch is
/// noticed between inspections rather than by the next one. 30 s, as
/// kube-apiserver pings its etcd: every open channel pings, and at 10 s the
/// watch channels of 3000 clusters sent 300 pings a second.
const KEEP_ALIVE: Duration = Duration::from_secs(30);

/// A member's gRPC channel for etcd-client, connected on first use.
pub(super) fn grpc_channel(
    endpoint: &str,
    tls: &Arc<rustls::ClientConfig>,
    timeout: Duration,
) -> Result<etcd_client::Channel, etcd_client::Error> {
    let channel = MemberChannel::new(endpoint, tls, timeout)?;
    Ok(etcd_client::Channel::Custom(tower::util::BoxCloneSyncService::new(
        channel,
    )))
}

/// One member's connection, shared by the clones of its client.
#[derive(Clone)]
struct MemberChannel {
    inner: Arc<Inner>,
}

struct Inner {
    scheme: Scheme,
    authority: Authority,
    host: String,
    port: u16,
    /// Set for https members: the cluster's configuration (verified
    /// against its CA, or not at all when the cluster opted out).
    tls: Option<tokio_rustls::TlsConnector>,
    timeout: Duration,
    /// The live connection; a tokio mutex so that calls arriving together
    /// wait for one dial instead of each making its own.
    sender: tokio::sync::Mutex<Option<SendRequest<Body>>>,
}

type BoxError = tower::BoxError;

impl MemberChannel {
    fn new(endpoint: &str, tls: &Arc<rustls::ClientConfig>, timeout: Duration) -> Result<Self, etcd_client::Error> {
        let uri: http::Uri = endpoint.parse().map_err(etcd_client::Error::InvalidUri)?;
        let invalid = |what: &str| etcd_client::Error::InvalidArgs(format!("endpoint {endpoint:?}: {what}"));
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(invalid("expected an http:// or https:// URL")),
        };
        let authority = uri.authority().cloned().ok_or_else(|| invalid("no host"))?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        Ok(MemberChannel {
            inner: Arc::new(Inner {
                scheme: if https { Scheme::HTTPS } else { Scheme::HTTP },
                port: authority.port_u16().unwrap_or(2379),
                authority,
                host,
                tls: https.then(|| tokio_rustls::TlsConnector::from(tls.clone())),
                timeout,
                sender: tokio::sync::Mutex::new(None),
            }),
        })
    }
}

impl Inner {
    /// The open connection, or a new one when there is none or it closed
    /// (the member went away, or missed its keep-alive pings).
    async fn sender(&self) -> Result<SendRequest<Body>, tonic::Status> {
        let mut slot = self.sender.lock().await;
        if let Some(sender) = slot.as_ref().filter(|s| !s.is_closed()) {
            return Ok(sender.clone());
        }
        *slot = None;
        let sender = match tokio::time::timeout(self.timeout, self.dial()).await {
            Ok(Ok(sender)) => sender,
            Ok(Err(e)) => {
                let mut status =
                    tonic::Status::unavailable(format!("error trying to connect: {}", super::error_chain(&*e)));
                // Kept as the source: a TLS failure is told apart by the
                // rustls error in it.
                status.set_source(Arc::from(e));
                return Err(status);
            }
            Err(_) => {
                return Err(tonic::Status::unavailable(format!(
                    "error trying to connect: no connection within {:?}",
                    self.timeout
                )))
            }
        };
        *slot = Some(sender.clone());
        Ok(sender)
    }

    async fn dial(&self) -> Result<SendRequest<Body>, BoxError> {
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port)).await?;
        // With Nagle's algorithm on, a small request waited for the
        // server's delayed ACK, 40 ms a call (bench I).
        tcp.set_nodelay(true)?;
        match &self.tls {
            Some(connector) => {
                let name = rustls::pki_types::ServerName::try_from(self.host.clone())?;
                let stream = connector.connect(name, tcp).await?;
                handshake(stream, self.timeout).await
            }
            None => handshake(tcp, self.timeout).await,
        }
    }

    async fn call(&self, mut request: http::Request<Body>) -> Result<http::Response<Body>, BoxError> {
        let mut sender = self.sender().await?;
        // tonic's clients send a path: the member is the origin.
        let mut parts = request.uri().clone().into_parts();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        *request.uri_mut() = http::Uri::from_parts(parts)?;
        match tokio::time::timeout(self.timeout, sender.send_request(request)).await {
            Ok(response) => Ok(response?.map(Body::new)),
            Err(_) => Err(Box::new(tonic::Status::deadline_exceeded(format!(
                "no answer within {:?}",
                self.timeout
            )))),
        }
    }
}

/// HTTP/2 over an established stream; the connection is driven by its own
/// task, which ends when the member closes it or every handle is dropped.
async fn handshake<S>(stream: S, timeout: Duration) -> Result<SendRequest<Body>, BoxError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(KEEP_ALIVE)
        .keep_alive_while_idle(true)
        .keep_alive_timeout(timeout)
        .handshake(TokioIo::new(stream))
        .await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "member connection closed");
        }
    });
    Ok(sender)
}

impl tower::Service<http::Request<Body>> for MemberChannel {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Readiness is the connection's, found out (and dialled) per call.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let inner = self.inner.clone();
        Box::pin(async move { inner.call(request).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cluster's TLS configuration as the host builds it (plain members
    /// never use it).
    fn tls() -> Arc<rustls::ClientConfig> {
        Arc::new(crate::etcd::tls::rustls_config(&crate::etcd::Credentials::default()).unwrap())
    }

    /// Calls that arrive together on a channel not yet connected share one
    /// dial, and a later call reuses the connection.
    #[tokio::test]
    async fn calls_arriving_together_share_one_dial() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let peers = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = peers.clone();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, peer)) = listener.accept().await {
                seen.lock().unwrap().push(peer);
                held.push(socket);
            }
        });
        let channel = MemberChannel::new(&format!("http://{address}"), &tls(), Duration::from_secs(2)).unwrap();
        let senders = futures::future::join_all((0..10).map(|_| channel.inner.sender())).await;
        assert!(
            senders.iter().all(Result::is_ok),
            "{:?}",
            senders.iter().find(|s| s.is_err())
        );
        channel.inner.sender().await.unwrap();
        // Connections are accepted in the order they were made: once a
        // marker connection made last is accepted, every dial has been.
        let marker = tokio::net::TcpStream::connect(address).await.unwrap();
        let marker = marker.local_addr().unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !peers.lock().unwrap().contains(&marker) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the marker connection was never accepted"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(peers.lock().unwrap().len() - 1, 1, "dials made");
    }

    /// A member that refuses connections is Unavailable, with the cause.
    #[tokio::test]
    async fn a_refused_dial_is_unavailable_with_its_cause() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let channel = MemberChannel::new(&format!("http://127.0.0.1:{port}"), &tls(), Duration::from_secs(2)).unwrap();
        let status = channel.inner.sender().await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(status.message().starts_with("error trying to connect: "), "{status:?}");
        assert!(std::error::Error::source(&status).is_some());
        let bad = MemberChannel::new("ftp://127.0.0.1:2379", &tls(), Duration::from_secs(2)).err();
        assert!(bad.is_some_and(|e| e.to_string().contains("expected an http:// or https:// URL")));
    }
}
