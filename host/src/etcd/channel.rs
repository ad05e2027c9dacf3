//! Member channels: one HTTP/2 connection per member, dialled on first use
//! and again after it closes, TLS by rustls with the cluster's
//! configuration (and the member's own session store, for resumption).
//! They carry gRPC and, on TLS members, the HTTP probes (`get`).
//!
//! Written here rather than taken from tonic's `Channel`, which puts a
//! request queue and a worker task (tower's `Buffer`) and a reconnecting
//! service in front of the connection: ~12 KiB per channel and one more
//! task hop per call, for concurrency and load balancing that a channel to
//! exactly one member does not need. Thousands of clusters keep thousands
//! of these open (bench/HISTORY.md).
//!
//! On h2 itself rather than hyper's client connection: hyper waits for
//! flow-control capacity before it sends a body, and a stream whose
//! HEADERS are not yet out has none, so every unary call left in two
//! writes (HEADERS, then DATA from a task spawned for the body) and spawned
//! one more task to hand the response over. Here a request's ready message
//! is queued with its HEADERS, both leave in the connection's next write,
//! and the caller awaits the response itself (bench J: writes per cluster
//! round in bench/HISTORY.md).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http_body::{Body as _, Frame};
use tonic::body::Body;

/// HTTP/2 pings on open member channels, so a dead member under a watch is
/// noticed between inspections rather than by the next one. 30 s, as
/// kube-apiserver pings its etcd: every open channel pings, and at 10 s the
/// watch channels of 3000 clusters sent 300 pings a second.
const KEEP_ALIVE: Duration = Duration::from_secs(30);

/// Receive windows, as hyper's client sets them: a large range answer or a
/// burst of watch events arrives without waiting for WINDOW_UPDATEs.
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;
const MAX_HEADER_LIST: u32 = 16 * 1024;

/// Most a plain HTTP answer over a member channel may hold: etcd's
/// `/health` and `/readyz?verbose` answers are well under a KiB.
const MAX_PLAIN_ANSWER: usize = 64 * 1024;

/// TLS handshakes of this process's member channels: full ones (the
/// certificate signatures, ~0.6 ms of CPU each with RSA 2048 keys) and
/// resumed ones. Read by the metrics.
static FULL_HANDSHAKES: AtomicU64 = AtomicU64::new(0);
static RESUMED_HANDSHAKES: AtomicU64 = AtomicU64::new(0);

/// (full, resumed) TLS handshakes made by member channels so far.
pub fn tls_handshakes() -> (u64, u64) {
    (
        FULL_HANDSHAKES.load(Ordering::Relaxed),
        RESUMED_HANDSHAKES.load(Ordering::Relaxed),
    )
}

/// One member's connection, shared by the clones of its client.
#[derive(Clone)]
pub(super) struct MemberChannel {
    inner: Arc<Inner>,
}

/// A plain (non-gRPC) HTTP answer read over a member channel.
#[derive(Debug)]
pub(super) struct PlainAnswer {
    pub status: http::StatusCode,
    /// What the member's gRPC server answers where it has no HTTP handlers
    /// on this listener: the probe must go over HTTP/1 instead.
    pub grpc: bool,
    pub body: Bytes,
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
    connection: tokio::sync::Mutex<Option<Connection>>,
}

/// A handle on one open HTTP/2 connection.
#[derive(Clone, Debug)]
struct Connection {
    requests: h2::client::SendRequest<Bytes>,
    /// Set when the connection's task ends (closed by the member, a failed
    /// keep-alive, an I/O error): the next call dials again.
    closed: Arc<AtomicBool>,
}

type BoxError = tower::BoxError;

/// A member's client URL taken apart. Its gRPC channel and its plain-text
/// probes both go by it, so both reach the same listener.
pub(super) struct Endpoint {
    pub https: bool,
    pub authority: Authority,
    /// An IPv6 address without its brackets.
    pub host: String,
    /// etcd's client port, 2379, when the URL names none.
    pub port: u16,
}

impl Endpoint {
    pub(super) fn parse(endpoint: &str) -> Result<Endpoint, etcd_client::Error> {
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
        Ok(Endpoint {
            https,
            port: authority.port_u16().unwrap_or(2379),
            authority,
            host,
        })
    }
}

impl MemberChannel {
    pub(super) fn new(
        endpoint: &str,
        tls: &Arc<rustls::ClientConfig>,
        timeout: Duration,
    ) -> Result<Self, etcd_client::Error> {
        let Endpoint {
            https,
            authority,
            host,
            port,
        } = Endpoint::parse(endpoint)?;
        Ok(MemberChannel {
            inner: Arc::new(Inner {
                scheme: if https { Scheme::HTTPS } else { Scheme::HTTP },
                port,
                authority,
                host,
                tls: https.then(|| tokio_rustls::TlsConnector::from(tls.clone())),
                timeout,
                connection: tokio::sync::Mutex::new(None),
            }),
        })
    }

    /// The channel as etcd-client's transport.
    pub(super) fn grpc(&self) -> etcd_client::Channel {
        etcd_client::Channel::Custom(tower::util::BoxCloneSyncService::new(self.clone()))
    }

    /// `GET path` as a plain HTTP/2 request on the member's connection.
    /// On a TLS listener etcd hands HTTP/2 requests without a gRPC content
    /// type to its HTTP handlers (`/health`, `/readyz`; embed/serve.go's
    /// `grpcHandlerFunc`), so a probe costs no connection of its own. On a
    /// plain-text listener cmux gives all HTTP/2 to gRPC: not for those.
    pub(super) async fn get(&self, path: &str) -> Result<PlainAnswer, tonic::Status> {
        let inner = &self.inner;
        let connection = inner.connection().await?;
        let uri = http::Uri::builder()
            .scheme(inner.scheme.clone())
            .authority(inner.authority.clone())
            .path_and_query(path)
            .build()
            .map_err(|e| tonic::Status::invalid_argument(format!("{path}: {e}")))?;
        let request = http::Request::get(uri)
            .body(())
            .map_err(|e| tonic::Status::invalid_argument(format!("{path}: {e}")))?;
        let exchange = async move {
            let mut requests = connection.requests.ready().await.map_err(status_of)?;
            let (response, _) = requests.send_request(request, true).map_err(status_of)?;
            let (head, mut recv) = response.await.map_err(status_of)?.into_parts();
            let grpc = head
                .headers
                .get(http::header::CONTENT_TYPE)
                .is_some_and(|t| t.as_bytes().starts_with(b"application/grpc"));
            let mut body = bytes::BytesMut::new();
            while let Some(data) = recv.data().await {
                let data = data.map_err(status_of)?;
                let _ = recv.flow_control().release_capacity(data.len());
                if body.len() + data.len() > MAX_PLAIN_ANSWER {
                    return Err(tonic::Status::resource_exhausted(format!(
                        "{path}: answer larger than {MAX_PLAIN_ANSWER} bytes"
                    )));
                }
                body.extend_from_slice(&data);
            }
            Ok(PlainAnswer {
                status: head.status,
                grpc,
                body: body.freeze(),
            })
        };
        match tokio::time::timeout(inner.timeout, exchange).await {
            Ok(answer) => answer,
            Err(_) => Err(tonic::Status::deadline_exceeded(format!(
                "no answer within {:?}",
                inner.timeout
            ))),
        }
    }
}

impl Inner {
    /// The open connection, or a new one when there is none or it closed
    /// (the member went away, or missed its keep-alive pings).
    async fn connection(&self) -> Result<Connection, tonic::Status> {
        let mut slot = self.connection.lock().await;
        if let Some(open) = slot.as_ref().filter(|c| !c.closed.load(Ordering::Acquire)) {
            return Ok(open.clone());
        }
        *slot = None;
        let open = match tokio::time::timeout(self.timeout, self.dial()).await {
            Ok(Ok(open)) => open,
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
        *slot = Some(open.clone());
        Ok(open)
    }

    async fn dial(&self) -> Result<Connection, BoxError> {
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port)).await?;
        // With Nagle's algorithm on, a small request waited for the
        // server's delayed ACK, 40 ms a call (bench I).
        tcp.set_nodelay(true)?;
        match &self.tls {
            Some(connector) => {
                let name = rustls::pki_types::ServerName::try_from(self.host.clone())?;
                let stream = connector.connect(name, tcp).await?;
                let resumed = stream.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
                let count = if resumed { &RESUMED_HANDSHAKES } else { &FULL_HANDSHAKES };
                count.fetch_add(1, Ordering::Relaxed);
                handshake(stream, self.timeout).await
            }
            None => handshake(tcp, self.timeout).await,
        }
    }

    async fn call(&self, request: http::Request<Body>) -> Result<http::Response<Body>, BoxError> {
        let connection = self.connection().await?;
        let (mut head, body) = request.into_parts();
        // tonic's clients send a path: the member is the origin.
        let mut parts = head.uri.clone().into_parts();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        head.uri = http::Uri::from_parts(parts)?;
        let exchange = async move {
            let mut requests = connection.requests.ready().await.map_err(status_of)?;
            let end = body.is_end_stream();
            let (response, stream) = requests
                .send_request(http::Request::from_parts(head, ()), end)
                .map_err(status_of)?;
            if !end {
                send_body(body, stream).await;
            }
            let response = response.await.map_err(status_of)?;
            Ok::<_, tonic::Status>(response.map(|recv| Body::new(ResponseBody { recv, data_done: false })))
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(response) => Ok(response?),
            Err(_) => Err(Box::new(tonic::Status::deadline_exceeded(format!(
                "no answer within {:?}",
                self.timeout
            )))),
        }
    }
}

/// HTTP/2 over an established stream; the connection is driven by its own
/// task, which ends when the member closes it, a keep-alive ping goes
/// unanswered, or every handle and stream is dropped.
async fn handshake<S>(stream: S, timeout: Duration) -> Result<Connection, BoxError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (requests, mut connection) = h2::client::Builder::new()
        .enable_push(false)
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        // A member's response headers are small; this bounds what a broken one makes us hold.
        .max_header_list_size(MAX_HEADER_LIST)
        .handshake::<_, Bytes>(stream)
        .await?;
    let pings = connection.ping_pong();
    let closed = Arc::new(AtomicBool::new(false));
    let ended = closed.clone();
    tokio::spawn(async move {
        let outcome = match pings {
            Some(pings) => tokio::select! {
                done = &mut connection => done.map_err(|e| e.to_string()),
                dead = keep_alive(pings, timeout) => Err(dead),
            },
            None => connection.await.map_err(|e| e.to_string()),
        };
        // Dropping the connection fails the calls still on it.
        ended.store(true, Ordering::Release);
        if let Err(error) = outcome {
            tracing::debug!(%error, "member connection closed");
        }
    });
    Ok(Connection { requests, closed })
}

/// Pings every [`KEEP_ALIVE`], idle or not; returns why the member is
/// taken for dead.
async fn keep_alive(mut pings: h2::PingPong, timeout: Duration) -> String {
    loop {
        tokio::time::sleep(KEEP_ALIVE).await;
        match tokio::time::timeout(timeout, pings.ping(h2::Ping::opaque())).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return format!("keep-alive ping failed: {e}"),
            Err(_) => return format!("no keep-alive answer within {timeout:?}"),
        }
    }
}

/// Queues the request's body. A unary request's one message is ready at
/// once and goes out with its HEADERS; a streaming body (a watch's
/// requests) is sent by a task of its own as its messages come.
///
/// h2 buffers data beyond the peer's flow-control window rather than
/// refusing it; etcd's requests are small, so nothing waits for capacity.
async fn send_body(body: Body, stream: h2::SendStream<Bytes>) {
    let mut pipe = Box::pin(pipe_body(body, stream));
    if futures::poll!(pipe.as_mut()).is_pending() {
        tokio::spawn(pipe);
    }
}

async fn pipe_body(mut body: Body, mut stream: h2::SendStream<Bytes>) {
    enum Next {
        Frame(Option<Result<Frame<Bytes>, tonic::Status>>),
        Reset,
    }
    loop {
        let next = tokio::select! {
            frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)) => Next::Frame(frame),
            // The member reset the stream or the connection ended: nobody
            // reads the rest.
            _ = std::future::poll_fn(|cx| stream.poll_reset(cx)) => Next::Reset,
        };
        match next {
            Next::Reset => return,
            Next::Frame(None) => {
                let _ = stream.send_data(Bytes::new(), true);
                return;
            }
            Next::Frame(Some(Err(_))) => {
                stream.send_reset(h2::Reason::CANCEL);
                return;
            }
            Next::Frame(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => {
                    let end = body.is_end_stream();
                    if stream.send_data(data, end).is_err() || end {
                        return;
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        let _ = stream.send_trailers(trailers);
                        return;
                    }
                }
            },
        }
    }
}

/// A response body for tonic: DATA frames, then the trailers that carry
/// the gRPC status. Received bytes are released to the flow-control window
/// as they are handed over.
struct ResponseBody {
    recv: h2::RecvStream,
    data_done: bool,
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        if !self.data_done {
            match ready!(self.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(status_of(e)))),
                None => self.data_done = true,
            }
        }
        Poll::Ready(match ready!(self.recv.poll_trailers(cx)) {
            Ok(Some(trailers)) => Some(Ok(Frame::trailers(trailers))),
            Ok(None) => None,
            Err(e) => Some(Err(status_of(e))),
        })
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }
}

/// An HTTP/2 failure as a gRPC status, by the gRPC spec's table
/// (PROTOCOL-HTTP2.md, "Errors"): a lost connection is Unavailable, so the
/// caller may try another member.
fn status_of(error: h2::Error) -> tonic::Status {
    use h2::Reason;
    let message = format!("HTTP/2: {error}");
    let mut status = match error.reason() {
        _ if error.is_io() || error.is_go_away() => tonic::Status::unavailable(message),
        Some(Reason::REFUSED_STREAM) => tonic::Status::unavailable(message),
        Some(Reason::CANCEL) => tonic::Status::cancelled(message),
        Some(Reason::ENHANCE_YOUR_CALM) => tonic::Status::resource_exhausted(message),
        Some(Reason::INADEQUATE_SECURITY) => tonic::Status::permission_denied(message),
        Some(_) => tonic::Status::internal(message),
        None => tonic::Status::unavailable(message),
    };
    status.set_source(Arc::new(error));
    status
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
        let senders = futures::future::join_all((0..10).map(|_| channel.inner.connection())).await;
        assert!(
            senders.iter().all(Result::is_ok),
            "{:?}",
            senders.iter().find(|s| s.is_err())
        );
        channel.inner.connection().await.unwrap();
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

    /// Stream resets become the statuses the gRPC spec gives their reasons
    /// (a lost connection, Unavailable, has no public constructor in h2:
    /// the e2e tests stop members under calls).
    #[test]
    fn http2_failures_map_to_grpc_statuses() {
        use h2::Reason;
        let code = |e: h2::Error| status_of(e).code();
        assert_eq!(code(Reason::REFUSED_STREAM.into()), tonic::Code::Unavailable);
        assert_eq!(code(Reason::CANCEL.into()), tonic::Code::Cancelled);
        assert_eq!(code(Reason::ENHANCE_YOUR_CALM.into()), tonic::Code::ResourceExhausted);
        assert_eq!(code(Reason::PROTOCOL_ERROR.into()), tonic::Code::Internal);
        let status = status_of(Reason::CANCEL.into());
        assert!(status.message().starts_with("HTTP/2: "), "{status:?}");
        assert!(
            std::error::Error::source(&status).is_some(),
            "the h2 error stays the source"
        );
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
        let status = channel.inner.connection().await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(status.message().starts_with("error trying to connect: "), "{status:?}");
        assert!(std::error::Error::source(&status).is_some());
        let bad = MemberChannel::new("ftp://127.0.0.1:2379", &tls(), Duration::from_secs(2)).err();
        assert!(bad.is_some_and(|e| e.to_string().contains("expected an http:// or https:// URL")));
    }

    /// The probe and the channel share this: before, a URL without a port
    /// was probed on 80 while its gRPC went to 2379.
    #[test]
    fn an_endpoint_without_a_port_is_etcds_client_port_whatever_its_scheme() {
        let parts = |url: &str| {
            let e = Endpoint::parse(url).unwrap();
            (e.https, e.host, e.port)
        };
        assert_eq!(parts("http://etcd-0"), (false, "etcd-0".into(), 2379));
        assert_eq!(parts("https://etcd-0/"), (true, "etcd-0".into(), 2379));
        assert_eq!(parts("http://[::1]:32379"), (false, "::1".into(), 32379));
        let error = Endpoint::parse("etcd-0:2379").err().unwrap().to_string();
        assert!(
            error.contains("\"etcd-0:2379\": expected an http:// or https:// URL"),
            "{error}"
        );
    }
}
