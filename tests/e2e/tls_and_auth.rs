//! TLS with client-certificate auth (certificates made in the test), a wrong
//! CA, and username/password auth.

use std::time::Duration;

use crate::harness::certs::Pki;
use crate::harness::etcd::{EtcdCluster, Options, Version};
use crate::harness::host::{cluster_manifest, inspection_manifest, Host};
use crate::harness::{plugin_file, wait_until};

const HEALTHY: &str = "inspection_etcd_endpoint_healthy";
/// For tests whose certName directories are made beside etcd's data.
const OUTSIDE: &str = "--allow-cert-dirs-outside-manifests";

async fn tls_clusters_are_verified_against_their_ca(version: Version) {
    let pki = Pki::new("cluster-ca");
    let stranger = Pki::new("some-other-ca");
    let etcd = EtcdCluster::start(Options::new(1).version(version).tls(&pki)).await;
    let good_dir = etcd.dir().join("certs-good");
    let wrong_dir = etcd.dir().join("certs-wrong-ca");
    pki.write_cert_dir(&good_dir, &pki.ca.cert);
    pki.write_cert_dir(&wrong_dir, &stranger.ca.cert);
    let url = etcd.members[0].client_url.clone();
    let manifests = [
        (
            "secure.yaml",
            cluster_manifest(
                "secure",
                &[("importedAddr", &url), ("certName", good_dir.to_str().unwrap())],
            ),
        ),
        (
            "wrongca.yaml",
            cluster_manifest(
                "wrongca",
                &[("importedAddr", &url), ("certName", wrong_dir.to_str().unwrap())],
            ),
        ),
        ("i1.yaml", inspection_manifest("secure", "healthy", 1)),
        ("i2.yaml", inspection_manifest("wrongca", "healthy", 1)),
        // The same wrong CA, but the cluster explicitly opts out of verification.
        (
            "optout.yaml",
            cluster_manifest(
                "optout",
                &[
                    ("importedAddr", &url),
                    ("certName", wrong_dir.to_str().unwrap()),
                    ("etcd-inspector.io/insecure-skip-tls-verify", "true"),
                ],
            ),
        ),
        ("i3.yaml", inspection_manifest("optout", "healthy", 1)),
    ];
    // The certificates live beside etcd's data, outside the manifests.
    let host = Host::start(&[plugin_file("bundled", "healthy")], &manifests, &[OUTSIDE]).await;

    wait_until(
        "secure reads 1 and wrongca reads 0",
        Duration::from_secs(60),
        async || {
            let scrape = host.scrape().await;
            let secure = scrape.get(HEALTHY, &[("clusterName", "secure")]);
            let wrong = scrape.get(HEALTHY, &[("clusterName", "wrongca")]);
            let optout = scrape.get(HEALTHY, &[("clusterName", "optout")]);
            if secure == Some(1.0) && wrong == Some(0.0) && optout == Some(1.0) {
                Ok(())
            } else {
                Err(format!("secure={secure:?} wrongca={wrong:?} optout={optout:?}"))
            }
        },
    )
    .await;
    let log = host.log();
    assert!(
        log.lines()
            .any(|l| l.contains("wrongca") && l.contains("UnknownIssuer")),
        "the log must say the server certificate is not trusted:\n{log}"
    );
    assert!(!log.contains("PRIVATE KEY"), "key material must never be logged");
    assert!(
        log.lines()
            .any(|l| l.contains("optout") && l.contains("server certificates are not verified")),
        "opting out is logged:\n{log}"
    );
    // The opted-out cluster talks gRPC too: MemberList found the member by name.
    let status = host.json("/api/status").await;
    let clusters = status["clusters"].as_array().unwrap();
    let optout = clusters.iter().find(|c| c["cluster"] == "default/optout").unwrap();
    assert!(optout["members"][0].as_str().unwrap().starts_with("m0 "), "{optout}");
    assert_eq!(host.get("/health").await.unwrap(), "ok");
}
on_every_etcd!(tls_clusters_are_verified_against_their_ca);

/// On TLS members the health probes ride the member channels (etcd hands
/// HTTP/2 requests without a gRPC content type to its HTTP handlers), and
/// a channel dialled again after an idle close resumes its TLS session,
/// though the three members share one host name. With `healthy` alone,
/// one full handshake per member means every probe used a channel: over
/// HTTP/1 only MemberList's member would have one.
async fn tls_probes_ride_the_member_channels_and_sessions_resume(version: Version) {
    let pki = Pki::new("resume-ca");
    let etcd = EtcdCluster::start(Options::new(3).version(version).tls(&pki)).await;
    let certs = etcd.dir().join("certs");
    pki.write_cert_dir(&certs, &pki.ca.cert);
    let manifests = [
        (
            "c.yaml",
            cluster_manifest(
                "secure",
                &[
                    ("importedAddr", &etcd.endpoints()),
                    ("certName", certs.to_str().unwrap()),
                ],
            ),
        ),
        ("i.yaml", inspection_manifest("secure", "healthy", 3)),
    ];
    let host = Host::start(
        &[plugin_file("bundled", "healthy")],
        &manifests,
        &[OUTSIDE, "--etcd-idle-timeout", "1"],
    )
    .await;
    let handshakes = |scrape: &crate::harness::metrics::Scrape, kind: &str| {
        scrape
            .get("etcd_inspector_tls_handshakes_total", &[("kind", kind)])
            .unwrap_or(0.0)
    };
    let healthy = |scrape: &crate::harness::metrics::Scrape| {
        scrape
            .all(HEALTHY, &[("clusterName", "secure")])
            .iter()
            .map(|(_, v)| *v)
            .collect::<Vec<_>>()
    };
    let scrape = wait_until(
        "3 members healthy and every channel dialled again at least once",
        Duration::from_secs(60),
        async || {
            let scrape = host.scrape().await;
            let (full, resumed) = (handshakes(&scrape, "full"), handshakes(&scrape, "resumed"));
            if healthy(&scrape) == [1.0; 3] && resumed >= 3.0 {
                Ok(scrape)
            } else {
                Err(format!(
                    "healthy {:?}, handshakes full {full} resumed {resumed}",
                    healthy(&scrape)
                ))
            }
        },
    )
    .await;
    assert_eq!(
        handshakes(&scrape, "full"),
        3.0,
        "one full handshake per member, then resumed ones:\n{}",
        host.log()
    );
    assert_eq!(scrape.get("inspection_failed_num", &[]), None, "{}", host.log());

    // An alarm makes every member unhealthy; where /readyz exists (3.5+)
    // it is read over the channel too and names the failing check.
    crate::healthy::raise_corrupt(&etcd).await;
    wait_until("every member unhealthy", Duration::from_secs(30), async || {
        let now = healthy(&host.scrape().await);
        if now == [0.0; 3] {
            Ok(())
        } else {
            Err(format!("{now:?}"))
        }
    })
    .await;
    crate::healthy::assert_the_failing_check_is_logged(&host, version).await;
}
on_every_etcd!(tls_probes_ride_the_member_channels_and_sessions_resume);

async fn username_and_password_are_used_and_a_wrong_password_is_reported(version: Version) {
    let etcd = EtcdCluster::start(Options::new(1).version(version)).await;
    let ep = etcd.members[0].client_url.clone();
    etcd.enable_auth("s3cret-root");
    let creds = |dir: &str, password: &str| etcd.user_dir(dir, password).to_str().unwrap().to_string();
    let (good, bad) = (creds("auth-good", "s3cret-root"), creds("auth-bad", "not-the-password"));
    let manifests = [
        (
            "a.yaml",
            cluster_manifest("authed", &[("importedAddr", &ep), ("certName", &good)]),
        ),
        (
            "b.yaml",
            cluster_manifest("badpass", &[("importedAddr", &ep), ("certName", &bad)]),
        ),
        ("i1.yaml", inspection_manifest("authed", "healthy", 1)),
        ("i2.yaml", inspection_manifest("badpass", "healthy", 1)),
    ];
    let host = Host::start(&[plugin_file("bundled", "healthy")], &manifests, &[OUTSIDE]).await;

    wait_until(
        "authed discovers its member by name",
        Duration::from_secs(60),
        async || {
            let status = host.json("/api/status").await;
            let clusters = status["clusters"].as_array().cloned().unwrap_or_default();
            let authed = clusters
                .iter()
                .find(|c| c["cluster"] == "default/authed")
                .cloned()
                .unwrap_or_default();
            let has_member = authed["members"]
                .as_array()
                .is_some_and(|m| m.iter().any(|m| m.as_str().unwrap().starts_with("m0 ")));
            let failed_logged = host
                .log()
                .lines()
                .any(|l| l.contains("badpass") && l.contains("authentication failed"));
            if has_member && failed_logged {
                Ok(())
            } else {
                Err(format!("authed={authed} failed_logged={failed_logged}"))
            }
        },
    )
    .await;
    let log = host.log();
    assert!(
        !log.contains("s3cret-root") && !log.contains("not-the-password"),
        "passwords must never be logged:\n{log}"
    );
    let status = host.get("/").await.unwrap() + &host.get("/api/status").await.unwrap();
    assert!(
        !status.contains("s3cret-root"),
        "passwords must never reach the status page"
    );
}
on_every_etcd!(username_and_password_are_used_and_a_wrong_password_is_reported);

/// JWT auth tokens expire (here after 2 s): the host renews them and
/// retries, so counts and HashKV keep working long after the first token
/// is gone, and no round fails or loses series.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_auth_tokens_are_renewed() {
    let keys = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let (private, public) = (keys.path().join("jwt.key"), keys.path().join("jwt.pub"));
    std::fs::write(&private, key.serialize_pem()).unwrap();
    std::fs::write(&public, key.public_key_pem()).unwrap();
    let jwt = format!(
        "jwt,pub-key={},priv-key={},sign-method=ES256,ttl=2s",
        public.display(),
        private.display()
    );
    let etcd = EtcdCluster::start(Options::new(1).args(&["--auth-token", &jwt])).await;
    let ep = etcd.members[0].client_url.clone();
    etcd.enable_auth("ttl-pass");
    let creds = etcd.user_dir("creds", "ttl-pass");
    let manifests = [
        (
            "c.yaml",
            cluster_manifest("ttl", &[("importedAddr", &ep), ("certName", creds.to_str().unwrap())]),
        ),
        ("i.yaml", inspection_manifest("ttl", "consistency", 1)),
    ];
    let host = Host::start(&[plugin_file("bundled", "consistency")], &manifests, &[OUTSIDE]).await;
    // Rounds a second apart, until well past three token lifetimes.
    let ok_rounds = |s: &crate::harness::metrics::Scrape| {
        s.get(
            "etcd_inspector_plugin_invocations_total",
            &[("plugin", "consistency"), ("outcome", "ok")],
        )
        .unwrap_or(0.0)
    };
    let started = std::time::Instant::now();
    wait_until(
        "consistency rounds past the token TTL",
        Duration::from_secs(60),
        async || {
            let scrape = host.scrape().await;
            let rounds = ok_rounds(&scrape);
            if rounds >= 6.0 && started.elapsed() > Duration::from_secs(7) {
                Ok(())
            } else {
                Err(format!("{rounds} ok rounds after {:?}", started.elapsed()))
            }
        },
    )
    .await;
    let scrape = host.scrape().await;
    assert_eq!(scrape.get("inspection_failed_num", &[]), None, "{}", host.log());
    assert!(
        scrape
            .get("inspection_etcd_member_key_total", &[("clusterName", "ttl")])
            .is_some(),
        "the count is still there"
    );
    assert!(
        scrape
            .get("inspection_etcd_member_hashkv", &[("clusterName", "ttl")])
            .is_some(),
        "HashKV is still answered"
    );
}

/// certName stays inside the manifest directory: a directory there works;
/// `..`, an absolute path and a link out are refused with the reason, so
/// one manifest cannot point a cluster at another's credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cert_dirs_are_confined_to_the_manifest_directory() {
    let etcd = EtcdCluster::start(Options::new(1)).await;
    let ep = etcd.members[0].client_url.clone();
    etcd.enable_auth("inside-pass");
    let elsewhere = etcd.user_dir("elsewhere", "inside-pass");
    let cluster = |name: &str, cert_name: &str| {
        (
            format!("{name}.yaml"),
            cluster_manifest(
                name,
                &[
                    ("importedAddr", &ep),
                    ("certName", cert_name),
                    ("featureGates", "healthy=true"),
                ],
            ),
        )
    };
    let absolute = elsewhere.to_str().unwrap().to_string();
    let clusters = [
        cluster("inside", "creds"),
        cluster("dotdot", "../../elsewhere"),
        cluster("absolute", &absolute),
        cluster("link", "link"),
    ];
    let mut manifests: Vec<(&str, String)> = clusters.iter().map(|(f, y)| (f.as_str(), y.clone())).collect();
    manifests.push(("creds/username", "root".into()));
    manifests.push(("creds/password", "inside-pass".into()));
    let host = Host::start(
        &[plugin_file("bundled", "healthy")],
        &manifests,
        &["--rescan-interval", "1"],
    )
    .await;
    std::os::unix::fs::symlink(&elsewhere, host.manifest_dir().join("link")).unwrap();
    let dir = host.manifest_dir();
    let refused = |name: &str, path: &str| {
        format!(
            "cluster default/{name}: metadata.annotations.certName: {}: outside {}; {}",
            dir.join(path).display(),
            dir.display(),
            etcd_inspector::etcd::CONFINEMENT_HINT
        )
    };
    let expected = [
        refused("absolute", &absolute),
        refused("dotdot", "../../elsewhere"),
        refused("link", "link"),
    ];
    wait_until(
        "inside works, the others are refused",
        Duration::from_secs(60),
        async || {
            let status = host.json("/api/status").await;
            let errors: Vec<String> = status["configErrors"]
                .as_array()
                .map(|e| e.iter().map(|e| e.as_str().unwrap().to_string()).collect())
                .unwrap_or_default();
            let inside = host.scrape().await.get(HEALTHY, &[("clusterName", "inside")]);
            let members = status["clusters"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["cluster"] == "default/inside").cloned())
                .map(|c| c["members"].clone());
            let authenticated = members.is_some_and(|m| m[0].as_str().is_some_and(|m| m.starts_with("m0 ")));
            if expected.iter().all(|e| errors.contains(e)) && inside == Some(1.0) && authenticated {
                Ok(())
            } else {
                Err(format!("errors={errors:?} inside={inside:?}"))
            }
        },
    )
    .await;
    assert!(!host.log().contains("inside-pass"));
}

/// Member channels unused for `--etcd-idle-timeout` are closed between
/// rounds and dialled again (TLS included) by the next one, which
/// succeeds; a cluster with username/password auth keeps its channel, as
/// a new one would cost an Authenticate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_member_channels_are_closed_between_rounds_except_with_password_auth() {
    let pki = Pki::new("idle-ca");
    let secure = EtcdCluster::start(Options::new(1).tls(&pki)).await;
    let certs = secure.dir().join("certs");
    pki.write_cert_dir(&certs, &pki.ca.cert);
    let authed = EtcdCluster::start(Options::new(1)).await;
    authed.enable_auth("idle-pass");
    let creds = authed.user_dir("creds", "idle-pass");
    let manifests = [
        (
            "s.yaml",
            cluster_manifest(
                "secure",
                &[
                    ("importedAddr", &secure.members[0].client_url),
                    ("certName", certs.to_str().unwrap()),
                ],
            ),
        ),
        (
            "a.yaml",
            cluster_manifest(
                "authed",
                &[
                    ("importedAddr", &authed.members[0].client_url),
                    ("certName", creds.to_str().unwrap()),
                ],
            ),
        ),
        ("i1.yaml", inspection_manifest("secure", "consistency", 3)),
        ("i2.yaml", inspection_manifest("authed", "consistency", 3)),
    ];
    let host = Host::start(
        &[plugin_file("bundled", "consistency")],
        &manifests,
        &[OUTSIDE, "--etcd-idle-timeout", "1"],
    )
    .await;
    let view = async |name: &str| {
        let status = host.json("/api/status").await;
        let clusters = status["clusters"].as_array().cloned().unwrap_or_default();
        let cluster = clusters
            .into_iter()
            .find(|c| c["cluster"] == format!("default/{name}"))
            .unwrap_or_default();
        let round = &cluster["features"]["consistency"];
        let last_ok = round["last_ok_unix_ms"].as_u64();
        let failures = round["consecutive_failures"].as_u64();
        (cluster["member_channels"].as_u64(), last_ok, failures)
    };
    // The authenticated cluster's channel, once open, is never closed.
    let check_authed = async || {
        let (channels, last_ok, _) = view("authed").await;
        if last_ok.is_some() {
            assert_eq!(channels, Some(1), "the password cluster's channel stays open");
        }
        last_ok.is_some()
    };
    let closed_after = wait_until(
        "secure's channel closed after an ok round",
        Duration::from_secs(60),
        async || match view("secure").await {
            (Some(0), Some(ok), Some(0)) if check_authed().await => Ok(ok),
            other => Err(format!("secure (channels, last ok, failures) = {other:?}")),
        },
    )
    .await;
    // The next rounds dial again, over TLS, and succeed.
    wait_until(
        "two more ok rounds on secure, each after a reconnect",
        Duration::from_secs(30),
        async || {
            check_authed().await;
            match view("secure").await {
                (_, Some(ok), Some(0)) if ok > closed_after + 4000 => Ok(()),
                other => Err(format!("secure (channels, last ok, failures) = {other:?}")),
            }
        },
    )
    .await;
    let scrape = host.scrape().await;
    assert_eq!(scrape.get("inspection_failed_num", &[]), None, "{}", host.log());
    assert!(
        scrape
            .get("inspection_etcd_member_hashkv", &[("clusterName", "secure")])
            .is_some(),
        "HashKV answered over the reopened channel"
    );
    let open = scrape.get("etcd_inspector_member_channels", &[]);
    assert!(
        open.is_some_and(|n| n >= 1.0),
        "the gauge counts the kept channel: {open:?}"
    );
}
