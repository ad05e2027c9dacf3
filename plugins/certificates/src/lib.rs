//! `certificates`: when the certificates between clients and etcd expire,
//! before they do. For each member's client endpoint, the chain it presents
//! (one TLS handshake through the host, no request), and the client
//! certificate the host presents to the cluster:
//!
//! - `inspection_etcd_certificate_expiry_seconds{member,kind,subject}`:
//!   seconds until each presented certificate's not-after (negative once
//!   expired); `kind` is `server` (the member's own), `intermediate` or
//!   `ca` (a CA certificate the member sends along).
//! - `inspection_etcd_certificate_info{member,kind,subject,issuer,serial,sans}`:
//!   1 for each presented certificate, naming it (a renewal shows as a new
//!   serial); `sans` lists its DNS names and IP addresses, comma separated.
//! - `inspection_etcd_client_certificate_expiry_seconds{kind,subject}`: the
//!   same for the host's client certificate chain (`kind` `client`, …).
//! - `inspection_etcd_certificate_trusted{member,reason}`: 1 when the host
//!   trusts the chain (the cluster's CA, host name, dates), else 0 with the
//!   reason; absent where the cluster opted out of verification.
//! - `inspection_etcd_certificate_covers_url{member,url}`: 1 when the
//!   member's certificate names the host of each client URL it advertises
//!   (a DNS name, a wildcard of one label, or an IP address), else 0. Like
//!   Go's TLS (which etcd's clients use), the common name does not count.
//!
//! Plain `http://` members have no certificates and no series. Never key
//! material: the host hands plugins names, serials and dates only.

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use etcd_inspector_sdk::{etcd, export_plugin, gauge, log, Certificate, ClusterSnapshot, Plugin, PluginInfo, Sample};

const EXPIRY: &str = "inspection_etcd_certificate_expiry_seconds";
const INFO: &str = "inspection_etcd_certificate_info";
const CLIENT_EXPIRY: &str = "inspection_etcd_client_certificate_expiry_seconds";
const TRUSTED: &str = "inspection_etcd_certificate_trusted";
const COVERS: &str = "inspection_etcd_certificate_covers_url";

struct Certificates;

impl Plugin for Certificates {
    fn describe() -> PluginInfo {
        PluginInfo::new("certificates", env!("CARGO_PKG_VERSION"))
            .metric(gauge(
                EXPIRY,
                "Seconds until the certificate a member presents expires (negative: expired)",
                &["member", "kind", "subject"],
            ))
            .metric(gauge(
                INFO,
                "1 for each certificate a member presents, labelled with its names and serial",
                &["member", "kind", "subject", "issuer", "serial", "sans"],
            ))
            .metric(gauge(
                CLIENT_EXPIRY,
                "Seconds until the client certificate the inspector presents expires (negative: expired)",
                &["kind", "subject"],
            ))
            .metric(gauge(
                TRUSTED,
                "1 when the inspector trusts the member's certificate chain, else 0 with the reason",
                &["member", "reason"],
            ))
            .metric(gauge(
                COVERS,
                "1 when the member's certificate names the host of this advertised client URL, else 0",
                &["member", "url"],
            ))
            .interval_seconds(300)
    }

    fn inspect(snapshot: ClusterSnapshot) -> Result<Vec<Sample>, String> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|_| "the clock is before 1970".to_string())?
            .as_secs() as i64;
        let mut samples = Vec::new();
        let client = etcd::client_certificates();
        for (i, cert) in client.iter().enumerate() {
            let kind = if i == 0 { "client" } else { chain_kind(cert) };
            samples.push(
                Sample::new(CLIENT_EXPIRY, (cert.not_after - now) as f64)
                    .label("kind", kind)
                    .label("subject", cert.subject.clone()),
            );
        }
        let mut answered = 0;
        let mut failures = Vec::new();
        for member in &snapshot.members {
            if !member.endpoint.starts_with("https://") {
                continue;
            }
            let label = snapshot.member_label(member);
            let presented = match etcd::server_certificates(&member.endpoint) {
                Ok(p) => p,
                Err(e) => {
                    log::warn(&format!("member {label}: {}", e.message()));
                    failures.push(label);
                    continue;
                }
            };
            answered += 1;
            for (i, cert) in presented.chain.iter().enumerate() {
                let kind = if i == 0 { "server" } else { chain_kind(cert) };
                samples.push(
                    Sample::new(EXPIRY, (cert.not_after - now) as f64)
                        .label("member", label.clone())
                        .label("kind", kind)
                        .label("subject", cert.subject.clone()),
                );
                let sans: Vec<&str> = cert
                    .dns_names
                    .iter()
                    .chain(&cert.ip_addresses)
                    .map(String::as_str)
                    .collect();
                samples.push(
                    Sample::new(INFO, 1.0)
                        .label("member", label.clone())
                        .label("kind", kind)
                        .label("subject", cert.subject.clone())
                        .label("issuer", cert.issuer.clone())
                        .label("serial", cert.serial.clone())
                        .label("sans", sans.join(",")),
                );
            }
            let trusted = presented.verify_error.is_none();
            if let Some(why) = &presented.verify_error {
                log::warn(&format!("member {label}: certificate not trusted: {why}"));
            }
            samples.push(
                Sample::new(TRUSTED, if trusted { 1.0 } else { 0.0 })
                    .label("member", label.clone())
                    .label("reason", presented.verify_error.clone().unwrap_or_default()),
            );
            if let Some(leaf) = presented.chain.first() {
                for url in &member.client_urls {
                    let covered = url_host(url).is_some_and(|host| covers(leaf, &host));
                    samples.push(
                        Sample::new(COVERS, if covered { 1.0 } else { 0.0 })
                            .label("member", label.clone())
                            .label("url", url.clone()),
                    );
                }
            }
        }
        if answered == 0 && !failures.is_empty() {
            return Err(format!("no member completed a TLS handshake ({})", failures.join(", ")));
        }
        Ok(samples)
    }
}

fn chain_kind(cert: &Certificate) -> &'static str {
    if cert.is_ca {
        "ca"
    } else {
        "intermediate"
    }
}

/// The host of `https://host:port/…`, without brackets around IPv6.
fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    if let Some(v6) = authority.strip_prefix('[') {
        return Some(v6.split(']').next()?.to_string());
    }
    Some(authority.rsplit_once(':').map_or(authority, |(h, _)| h).to_string())
}

/// Whether `cert`'s subject alternative names cover `host`, as a TLS client
/// checks it: IP addresses for an IP, DNS names (case-insensitive, `*.` for
/// exactly one leftmost label) for a name.
fn covers(cert: &Certificate, host: &str) -> bool {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return cert.ip_addresses.iter().any(|a| a.parse::<IpAddr>().ok() == Some(ip));
    }
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    cert.dns_names.iter().any(|name| {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        match name.strip_prefix("*.") {
            Some(suffix) => host
                .split_once('.')
                .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
            None => name == host,
        }
    })
}

export_plugin!(Certificates);

#[cfg(test)]
mod tests {
    use super::*;
    use etcd_inspector_sdk::testing::{certificate, FakeCluster, FakeMember};

    fn now() -> i64 {
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
    }

    #[test]
    fn each_presented_certificate_and_the_client_one_count_down_to_expiry() {
        let now = now();
        let mut ca = certificate("etcd-ca", now - 100, now + 86_400 * 365, &[], &[]);
        ca.is_ca = true;
        let leaf = certificate("etcd-0", now - 100, now + 3_600, &[], &["10.0.0.1"]);
        let s = FakeCluster::new("prod")
            .member(FakeMember::new(1, "m0").certificates(vec![leaf, ca], None))
            .client_certificates(vec![certificate("inspector", now - 100, now - 50, &[], &[])])
            .inspect::<Certificates>()
            .unwrap();
        let server = s
            .value(
                EXPIRY,
                &[("member", "m0"), ("kind", "server"), ("subject", "CN=etcd-0")],
            )
            .unwrap();
        assert!((3_595.0..=3_600.0).contains(&server), "{server}");
        assert!(s
            .value(EXPIRY, &[("member", "m0"), ("kind", "ca"), ("subject", "CN=etcd-ca")])
            .is_some());
        let client = s
            .value(CLIENT_EXPIRY, &[("kind", "client"), ("subject", "CN=inspector")])
            .unwrap();
        assert!(client < 0.0, "expired 50 s ago: {client}");
        assert_eq!(s.value(TRUSTED, &[("member", "m0"), ("reason", "")]), Some(1.0));
        assert_eq!(
            s.value(
                INFO,
                &[
                    ("member", "m0"),
                    ("kind", "server"),
                    ("subject", "CN=etcd-0"),
                    ("issuer", "CN=test-ca"),
                    ("serial", "01"),
                    ("sans", "10.0.0.1")
                ]
            ),
            Some(1.0)
        );
        assert_eq!(
            s.value(COVERS, &[("member", "m0"), ("url", "https://10.0.0.1:2379")]),
            Some(1.0)
        );
    }

    #[test]
    fn a_certificate_that_does_not_name_the_advertised_url_is_reported() {
        let now = now();
        let leaf = certificate("etcd-0", now, now + 3_600, &["etcd-0.example"], &["10.9.9.9"]);
        let s = FakeCluster::new("prod")
            .member(FakeMember::new(1, "m0").certificates(
                vec![leaf],
                Some("certificate not valid for the host name the inspector connects to"),
            ))
            .inspect::<Certificates>()
            .unwrap();
        assert_eq!(
            s.value(COVERS, &[("member", "m0"), ("url", "https://10.0.0.1:2379")]),
            Some(0.0)
        );
        assert_eq!(
            s.value(
                TRUSTED,
                &[
                    ("member", "m0"),
                    (
                        "reason",
                        "certificate not valid for the host name the inspector connects to"
                    )
                ]
            ),
            Some(0.0)
        );
    }

    #[test]
    fn names_match_as_a_tls_client_matches_them() {
        let cert = certificate(
            "x",
            0,
            1,
            &["etcd-0.Example.com", "*.peers.example.com"],
            &["::1", "10.0.0.1"],
        );
        assert!(covers(&cert, "etcd-0.example.com"));
        assert!(covers(&cert, "a.peers.example.com"));
        assert!(!covers(&cert, "a.b.peers.example.com"), "a wildcard is one label");
        assert!(!covers(&cert, "peers.example.com"));
        assert!(covers(&cert, "10.0.0.1"));
        assert!(covers(&cert, "0:0::1"));
        assert!(!covers(&cert, "10.0.0.2"));
        assert_eq!(url_host("https://[::1]:2379").as_deref(), Some("::1"));
        assert_eq!(url_host("https://etcd-0:2379/x").as_deref(), Some("etcd-0"));
        assert_eq!(url_host("https://etcd-0").as_deref(), Some("etcd-0"));
        assert_eq!(url_host("nonsense"), None);
    }

    #[test]
    fn a_silent_member_fails_the_round_only_when_no_other_answered() {
        let s = FakeCluster::new("prod")
            .member(FakeMember::new(1, "m0"))
            .member(FakeMember::new(2, "m1").unreachable())
            .inspect::<Certificates>()
            .unwrap();
        assert_eq!(s.count(TRUSTED), 1);
        let err = FakeCluster::new("prod")
            .member(FakeMember::new(1, "m0").unreachable())
            .inspect::<Certificates>()
            .unwrap_err();
        assert!(err.starts_with("no member completed a TLS handshake"), "{err}");
    }
}
