//! The shared store behaviour suite on the etcd v3 backend, against real etcd processes
//! (`/usr/bin/etcd`), plus what only a cluster can show: member failure and several clients.

mod suite;

use std::sync::Arc;
use std::time::Duration;

use suite::b;
use yard_store::local_etcd::LocalEtcd;
use yard_store::{EtcdConfig, EtcdStore, Op, Store, StoreError};

async fn store_on(cluster: &LocalEtcd, prefix: &str) -> Arc<EtcdStore> {
    let cfg = EtcdConfig { endpoints: cluster.endpoints(), prefix: prefix.into(), ..Default::default() };
    Arc::new(EtcdStore::connect(cfg).await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behaviour_suite() {
    let cluster = LocalEtcd::start(1).unwrap();
    // Every case under its own key prefix on one cluster (the revision is shared, so cases run
    // one after the other; compaction last).
    suite::cas_semantics(&*store_on(&cluster, "/case1").await).await;
    suite::list_pages_and_prefixes(&*store_on(&cluster, "/case2").await).await;
    suite::concurrent_writers_get_distinct_revisions(store_on(&cluster, "/case3").await).await;
    suite::txn_all_or_nothing(&*store_on(&cluster, "/case4").await).await;
    suite::concurrent_txns_and_writes(store_on(&cluster, "/case5").await).await;
    suite::list_at_revision(&*store_on(&cluster, "/case7").await).await;
    suite::watch_in_order_and_expired(&*store_on(&cluster, "/case6").await).await;
    // The prefix really is a namespace: case 2's keys are not visible without it.
    let bare = store_on(&cluster, "").await;
    assert_eq!(bare.count("/r/").await.unwrap(), 0);
    assert_eq!(bare.count("/case2/r/").await.unwrap(), 27);
}

#[test]
fn urls() {
    let c = EtcdConfig::from_url("etcd://127.0.0.1:2379,10.0.0.2:2379").unwrap();
    assert_eq!(c.endpoints, ["127.0.0.1:2379", "10.0.0.2:2379"]);
    assert!(c.ca_file.is_none());
    assert!(EtcdConfig::from_url("http://x:1").is_err());
    assert!(EtcdConfig::from_url("etcd://").is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_failure_loses_no_acknowledged_write_and_watches_resume() {
    let mut cluster = LocalEtcd::start(3).unwrap();
    let s = store_on(&cluster, "").await;
    let other = store_on(&cluster, "").await;
    let start = s.revision().await.unwrap();
    let mut w = other.watch("/k/", start).await.unwrap();
    let writer = {
        let s = s.clone();
        tokio::spawn(async move {
            let mut acked = vec![];
            for i in 0..300 {
                if let Ok(kv) = s.write(Op::Create { key: format!("/k/{i:04}"), value: b("v") }).await {
                    acked.push(kv);
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            acked
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Kill whichever member; the other two keep a quorum.
    cluster.kill(0);
    let acked = writer.await.unwrap();
    assert!(acked.len() >= 250, "most writes succeed with one member down: {}", acked.len());
    for kv in &acked {
        let got = other.get(&kv.key).await.unwrap().unwrap_or_else(|| panic!("acknowledged {} lost", kv.key));
        assert_eq!(got.mod_revision, kv.mod_revision);
    }
    // The watch (which may have been on the killed member) delivers every acknowledged write, in order.
    let mut seen = vec![];
    while seen.len() < acked.len() {
        let ev =
            tokio::time::timeout(Duration::from_secs(15), w.next()).await.expect("watch stalled").expect("watch ended");
        seen.push(ev.kv.mod_revision);
    }
    let want: Vec<i64> = acked.iter().map(|k| k.mod_revision).collect();
    assert_eq!(seen, want);
    // Bring it back; a fresh client through all endpoints still sees everything.
    cluster.restart(0).unwrap();
    cluster.wait_healthy(Duration::from_secs(20)).unwrap();
    let again = store_on(&cluster, "").await;
    assert_eq!(again.count("/k/").await.unwrap(), acked.len() as i64);
}

/// Each member's count of handled Txn calls.
fn txns(cluster: &LocalEtcd, running: &[usize]) -> Vec<u64> {
    running.iter().map(|&i| cluster.handled(i, "Txn").unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_go_to_the_leader_and_to_the_next_one_after_it_dies() {
    let mut cluster = LocalEtcd::start(3).unwrap();
    let eps = cluster.endpoints();
    let s = store_on(&cluster, "").await;
    let all = [0, 1, 2];
    let leader = cluster.leader().expect("a leader");
    assert_eq!(s.leader().as_deref(), Some(eps[leader].as_str()), "looked up on connect");
    // Every write lands on the leader: its Txn count rises by 40, the followers' not at all.
    let before = txns(&cluster, &all);
    for i in 0..40 {
        s.write(Op::Create { key: format!("/l/a{i:02}"), value: b("v") }).await.unwrap();
    }
    let after = txns(&cluster, &all);
    let grew: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    let want: Vec<u64> = all.iter().map(|&i| if i == leader { 40 } else { 0 }).collect();
    assert_eq!(grew, want, "Txn calls per member (leader {leader})");

    // The leader dies: writes keep succeeding, and once a new leader is elected they go to it.
    cluster.kill(leader);
    let rest: Vec<usize> = all.iter().copied().filter(|&i| i != leader).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut acked = 40;
    let new = loop {
        assert!(tokio::time::Instant::now() < deadline, "no new leader found; store says {:?}", s.leader());
        // The first may wait out etcd's request timeout (about 6 s here): a follower that has
        // not yet noticed the death forwards it to the dead leader.
        s.write(Op::Create { key: format!("/l/b{acked:04}"), value: b("v") }).await.unwrap();
        acked += 1;
        if let Some(n) = cluster.leader() {
            if s.leader().as_deref() == Some(eps[n].as_str()) {
                break n;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let before = txns(&cluster, &rest);
    for i in 0..20 {
        s.write(Op::Create { key: format!("/l/c{i:02}"), value: b("v") }).await.unwrap();
    }
    let grew: Vec<u64> = txns(&cluster, &rest).iter().zip(&before).map(|(a, b)| a - b).collect();
    let want: Vec<u64> = rest.iter().map(|&i| if i == new { 20 } else { 0 }).collect();
    assert_eq!(grew, want, "Txn calls per live member (new leader {new})");
    assert_eq!(s.count("/l/").await.unwrap(), acked + 20, "every acknowledged write is stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_share_revisions_and_scheduled_compaction_expires_old_watches() {
    let cluster = LocalEtcd::start(1).unwrap();
    let cfg = EtcdConfig {
        endpoints: cluster.endpoints(),
        compaction_interval: Some(Duration::from_millis(300)),
        ..Default::default()
    };
    let a = EtcdStore::connect(cfg).await.unwrap();
    let b_ = store_on(&cluster, "").await;
    let first = a.write(Op::Create { key: "/x/1".into(), value: b("1") }).await.unwrap();
    let second =
        b_.write(Op::Update { key: "/x/1".into(), value: b("2"), expect: Some(first.mod_revision) }).await.unwrap();
    assert!(matches!(
        a.write(Op::Update { key: "/x/1".into(), value: b("3"), expect: Some(first.mod_revision) }).await,
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(a.get("/x/1").await.unwrap().unwrap().mod_revision, second.mod_revision);
    for i in 0..5 {
        a.write(Op::Create { key: format!("/x/n{i}"), value: b("v") }).await.unwrap();
    }
    // Within two ticks the history before `second` is compacted away.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match b_.watch("/x/", first.mod_revision - 1).await {
            Err(StoreError::Expired { requested, oldest }) => {
                assert_eq!(requested, first.mod_revision - 1);
                assert!(oldest > first.mod_revision, "oldest {oldest}");
                break;
            }
            Ok(_) => assert!(tokio::time::Instant::now() < deadline, "scheduled compaction never ran"),
            Err(e) => panic!("{e}"),
        }
        a.write(Op::Update { key: "/x/n0".into(), value: b("tick"), expect: None }).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, written to `dir`.
fn write_certs(dir: &std::path::Path) -> (yard_store::local_etcd::ServerTls, std::path::PathBuf, std::path::PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let leaf = |sans: Vec<String>, usage: ExtendedKeyUsagePurpose, name: &str| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(sans).unwrap();
        p.extended_key_usages = vec![usage];
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        let cert = p.signed_by(&key, &issuer).unwrap();
        let (c, k) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    };
    let (server_cert, server_key) =
        leaf(vec!["127.0.0.1".into(), "localhost".into()], ExtendedKeyUsagePurpose::ServerAuth, "server");
    let (client_cert, client_key) = leaf(vec![], ExtendedKeyUsagePurpose::ClientAuth, "client");
    let ca_path = dir.join("ca.crt");
    std::fs::write(&ca_path, ca_cert.pem()).unwrap();
    (yard_store::local_etcd::ServerTls { ca: ca_path, cert: server_cert, key: server_key }, client_cert, client_key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls() {
    let dir = yard_test_support::TempDir::new("etcd-tls");
    let (tls, client_cert, client_key) = write_certs(dir.path());
    let cluster = LocalEtcd::start_with(1, Some(tls.clone())).unwrap();
    let cfg = EtcdConfig {
        endpoints: cluster.endpoints(),
        ca_file: Some(tls.ca.clone()),
        cert_file: Some(client_cert),
        key_file: Some(client_key),
        ..Default::default()
    };
    let s = EtcdStore::connect(cfg.clone()).await.expect("connect with client certificate");
    // The leader lookup (Maintenance Status) works over TLS too.
    assert_eq!(s.leader(), Some(cluster.endpoints()[0].clone()));
    suite::cas_semantics(&s).await;
    // Without a client certificate the cluster refuses us.
    let anon = EtcdConfig { cert_file: None, key_file: None, ..cfg };
    assert!(tokio::time::timeout(Duration::from_secs(20), EtcdStore::connect(anon))
        .await
        .map(|r| r.is_err())
        .unwrap_or(true));
    drop(cluster);
}
