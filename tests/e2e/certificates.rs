//! certificates.wasm on a real TLS member whose certificates (server and
//! the inspector's client one) were made at test time to expire within
//! minutes: both count down, the member advertises a URL its certificate
//! does not name, and a cluster checked against another CA says why it does
//! not trust the chain while still reading its dates.

use std::time::Duration;

use crate::harness::certs::{Leaves, Pki};
use crate::harness::etcd::{EtcdCluster, Options, Version};
use crate::harness::host::{cluster_manifest, inspection_manifest, Host};
use crate::harness::{plugin_file, wait_until};

const EXPIRY: &str = "inspection_etcd_certificate_expiry_seconds";
const CLIENT_EXPIRY: &str = "inspection_etcd_client_certificate_expiry_seconds";
const TRUSTED: &str = "inspection_etcd_certificate_trusted";
const COVERS: &str = "inspection_etcd_certificate_covers_url";

async fn certificates_that_expire_in_minutes_count_down_and_a_wrong_name_is_reported(version: Version) {
    let pki = Pki::with(
        "cluster-ca",
        Leaves {
            valid_for: Some(Duration::from_secs(600)),
            ..Leaves::default()
        },
    );
    let stranger = Pki::new("some-other-ca");
    // The member advertises a name its certificate does not carry; the
    // inspector reaches it through extClientURL, at an address it does.
    let advertised = "https://etcd-0.example.invalid:2379";
    let etcd = EtcdCluster::start(
        Options::new(1)
            .version(version)
            .tls(&pki)
            .args(&["--advertise-client-urls", advertised]),
    )
    .await;
    let url = etcd.members[0].client_url.clone();
    let rewrite = format!("etcd-0.example.invalid:2379->{}", url.trim_start_matches("https://"));
    let good = etcd.dir().join("certs-good");
    let wrong = etcd.dir().join("certs-wrong-ca");
    pki.write_cert_dir(&good, &pki.ca.cert);
    pki.write_cert_dir(&wrong, &stranger.ca.cert);
    let manifests = [
        (
            "secure.yaml",
            cluster_manifest(
                "secure",
                &[
                    ("importedAddr", &url),
                    ("certName", good.to_str().unwrap()),
                    ("extClientURL", &rewrite),
                ],
            ),
        ),
        (
            "wrongca.yaml",
            cluster_manifest(
                "wrongca",
                &[("importedAddr", &url), ("certName", wrong.to_str().unwrap())],
            ),
        ),
        ("i1.yaml", inspection_manifest("secure", "certificates", 1)),
        ("i2.yaml", inspection_manifest("wrongca", "certificates", 1)),
    ];
    let host = Host::start(
        &[plugin_file("bundled", "certificates")],
        &manifests,
        &["--allow-cert-dirs-outside-manifests"],
    )
    .await;

    let in_ten_minutes = |v: Option<f64>| v.is_some_and(|s| s > 0.0 && s <= 600.0);
    let scrape = wait_until(
        "the secure cluster's certificates",
        Duration::from_secs(60),
        async || {
            let s = host.scrape().await;
            let server = s.get(
                EXPIRY,
                &[
                    ("clusterName", "secure"),
                    ("member", "m0"),
                    ("kind", "server"),
                    ("subject", "CN=etcd-server"),
                ],
            );
            let client = s.get(
                CLIENT_EXPIRY,
                &[
                    ("clusterName", "secure"),
                    ("kind", "client"),
                    ("subject", "CN=etcd-inspector"),
                ],
            );
            (in_ten_minutes(server) && in_ten_minutes(client))
                .then_some(s.clone())
                .ok_or(format!(
                    "server {server:?}, client {client:?}; {:?}",
                    s.all(EXPIRY, &[])
                ))
        },
    )
    .await;
    assert_eq!(
        scrape.get(TRUSTED, &[("clusterName", "secure"), ("member", "m0"), ("reason", "")]),
        Some(1.0),
        "the inspector's own connection is verified"
    );
    let info = scrape.all(
        "inspection_etcd_certificate_info",
        &[("clusterName", "secure"), ("kind", "server")],
    );
    assert_eq!(info.len(), 1, "{info:?}");
    assert_eq!(
        (info[0].0["issuer"].as_str(), info[0].0["sans"].as_str()),
        ("CN=cluster-ca", "localhost,127.0.0.1")
    );
    assert_eq!(
        scrape.get(
            COVERS,
            &[("clusterName", "secure"), ("member", "m0"), ("url", advertised)]
        ),
        Some(0.0),
        "the certificate names 127.0.0.1 and localhost, not the advertised name"
    );

    let scrape = wait_until("the wrong-CA cluster's verdict", Duration::from_secs(60), async || {
        let s = host.scrape().await;
        let verdict = s.all(TRUSTED, &[("clusterName", "wrongca")]);
        match verdict.as_slice() {
            [(labels, 0.0)] if !labels["reason"].is_empty() => Ok(s.clone()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let verdict = &scrape.all(TRUSTED, &[("clusterName", "wrongca")])[0].0;
    assert_eq!(verdict["reason"], "unknown issuer: not signed by the cluster's CA");
    // Not trusted, still read: the member's certificate and its date.
    let dates = scrape.all(EXPIRY, &[("clusterName", "wrongca"), ("kind", "server")]);
    assert!(in_ten_minutes(dates.first().map(|(_, v)| *v)), "{dates:?}");
    assert!(!host.log().contains("PRIVATE KEY"), "key material must never be logged");
    let metrics = host.get("/metrics").await.unwrap();
    assert!(!metrics.contains("BEGIN"), "no PEM on /metrics");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_read_and_checked_on_3_6() {
    certificates_that_expire_in_minutes_count_down_and_a_wrong_name_is_reported(Version::V3_6).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_read_and_checked_on_3_4() {
    certificates_that_expire_in_minutes_count_down_and_a_wrong_name_is_reported(Version::V3_4).await
}
