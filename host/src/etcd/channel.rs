//! Member channels: one plain tonic channel per member, TLS by rustls with
//! the cluster's shared configuration.

use std::sync::Arc;
use std::time::Duration;

/// HTTP/2 pings on open member channels, so a dead member under a watch is
/// noticed between inspections rather than by the next one. 30 s, as
/// kube-apiserver pings its etcd: every open channel pings, and at 10 s the
/// watch channels of 3000 clusters sent 300 pings a second.
const KEEP_ALIVE: Duration = Duration::from_secs(30);

/// One member's gRPC channel, connected on first use. A plain tonic
/// channel: `Client::connect` would wrap every endpoint in a load balancer
/// (a discovery queue, a ready cache and a worker task, about 23 KiB a
/// member), and each of our clients talks to exactly one member.
pub(super) fn grpc_channel(
    endpoint: &str,
    tls: &Arc<rustls::ClientConfig>,
    timeout: Duration,
) -> Result<tonic::transport::Channel, etcd_client::Error> {
    if endpoint.starts_with("https://") {
        return tls_channel(endpoint, tls.clone(), timeout);
    }
    let channel = tonic::transport::Endpoint::from_shared(endpoint.to_string())?;
    Ok(with_timeouts(channel, timeout).connect_lazy())
}

/// The timeouts and keep-alive every member channel uses.
fn with_timeouts(endpoint: tonic::transport::Endpoint, timeout: Duration) -> tonic::transport::Endpoint {
    endpoint
        .connect_timeout(timeout)
        .timeout(timeout)
        .keep_alive_while_idle(true)
        .http2_keep_alive_interval(KEEP_ALIVE)
        .keep_alive_timeout(timeout)
}

/// A gRPC channel to an https endpoint, TLS done by rustls with the
/// cluster's configuration (verified against its CA, or not at all when the
/// cluster opted out: tonic's own TLS cannot do the latter) and handed to
/// tonic as a plain connection. One configuration serves all of a
/// cluster's members, where tonic would build one per channel, each with
/// its own session cache.
fn tls_channel(
    endpoint: &str,
    config: Arc<rustls::ClientConfig>,
    timeout: Duration,
) -> Result<tonic::transport::Channel, etcd_client::Error> {
    let connector = tokio_rustls::TlsConnector::from(config);
    let connect = tower::service_fn(move |uri: http::Uri| {
        let connector = connector.clone();
        async move {
            let host = uri
                .host()
                .unwrap_or_default()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri.port_u16().unwrap_or(2379);
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            // As tonic does for its own connections: with Nagle's algorithm
            // on, a small request waited for the server's delayed ACK, 40 ms
            // a call (bench I: LeaseTimeToLive took 44 ms over TLS, 2 ms
            // over plain http).
            tcp.set_nodelay(true)?;
            let name = rustls::pki_types::ServerName::try_from(host)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
            let stream = connector.connect(name, tcp).await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
        }
    });
    let plain = endpoint.replacen("https://", "http://", 1);
    Ok(with_timeouts(tonic::transport::Endpoint::from_shared(plain)?, timeout).connect_with_connector_lazy(connect))
}
