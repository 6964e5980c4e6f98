use super::*;
use bytes::Bytes;

fn store() -> (tempdir::Dir, RedbStore) {
    let d = tempdir::Dir::new();
    let s = RedbStore::open(&d.path.join("db")).unwrap();
    (d, s)
}

mod tempdir {
    pub struct Dir {
        pub path: std::path::PathBuf,
    }
    impl Dir {
        pub fn new() -> Self {
            use std::sync::atomic::{AtomicU32, Ordering};
            static N: AtomicU32 = AtomicU32::new(0);
            let path = std::env::temp_dir().join(format!("yard-store-test-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
            std::fs::create_dir_all(&path).unwrap();
            Self { path }
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

#[tokio::test]
async fn cas_semantics() {
    let (_d, s) = store();
    let r0 = s.revision().await.unwrap();
    let a = s.write(Op::Create { key: "/a".into(), value: b("1") }).await.unwrap();
    assert_eq!(a.mod_revision, r0 + 1);
    assert_eq!(a.create_revision, a.mod_revision);
    assert!(matches!(s.write(Op::Create { key: "/a".into(), value: b("x") }).await, Err(StoreError::AlreadyExists(_))));
    let a2 = s.write(Op::Update { key: "/a".into(), value: b("2"), expect: Some(a.mod_revision) }).await.unwrap();
    assert_eq!(a2.create_revision, a.create_revision);
    assert!(a2.mod_revision > a.mod_revision);
    match s.write(Op::Update { key: "/a".into(), value: b("3"), expect: Some(a.mod_revision) }).await {
        Err(StoreError::Conflict { current: Some(c), .. }) => assert_eq!(c.value, b("2")),
        other => panic!("{other:?}"),
    }
    assert!(matches!(s.write(Op::Update { key: "/zz".into(), value: b("3"), expect: None }).await, Err(StoreError::NotFound(_))));
    assert!(matches!(s.write(Op::Delete { key: "/a".into(), expect: Some(1) }).await, Err(StoreError::Conflict { .. })));
    let gone = s.write(Op::Delete { key: "/a".into(), expect: Some(a2.mod_revision) }).await.unwrap();
    assert_eq!(gone.value, b("2"));
    assert!(s.get("/a").await.unwrap().is_none());
}

#[tokio::test]
async fn list_pages_and_prefixes() {
    let (_d, s) = store();
    for i in 0..25 {
        s.write(Op::Create { key: format!("/r/ns/{i:03}"), value: b("v") }).await.unwrap();
    }
    s.write(Op::Create { key: "/r/nt/x".into(), value: b("v") }).await.unwrap();
    let p = s.list("/r/ns/", None, Some(10)).await.unwrap();
    assert_eq!(p.items.len(), 10);
    assert_eq!(p.more.as_deref(), Some("/r/ns/009"));
    assert_eq!(p.remaining, 1);
    let p2 = s.list("/r/ns/", p.more.as_deref(), Some(10)).await.unwrap();
    assert_eq!(p2.items[0].key, "/r/ns/010");
    let p3 = s.list("/r/ns/", p2.more.as_deref(), Some(10)).await.unwrap();
    assert_eq!(p3.items.len(), 5);
    assert!(p3.more.is_none());
    assert_eq!(s.count("/r/").await.unwrap(), 26);
}

#[tokio::test]
async fn watch_in_order_and_expired() {
    let (_d, s) = store();
    let start = s.revision().await.unwrap();
    let mut w = s.watch("/w/", start).await.unwrap();
    let mut revs = vec![];
    for i in 0..50 {
        let kv = s.write(Op::Create { key: format!("/w/{i}"), value: b("v") }).await.unwrap();
        revs.push(kv.mod_revision);
        s.write(Op::Create { key: format!("/other/{i}"), value: b("v") }).await.unwrap();
    }
    for r in &revs {
        let ev = w.next().await.unwrap();
        assert_eq!(ev.revision(), *r);
        assert!(ev.kv.key.starts_with("/w/"));
    }
    // Resume from the middle replays history.
    let mut w2 = s.watch("/w/", revs[24]).await.unwrap();
    assert_eq!(w2.next().await.unwrap().revision(), revs[25]);
    s.compact(revs[30]).await.unwrap();
    assert!(matches!(s.watch("/w/", revs[10]).await, Err(StoreError::Expired { .. })));
}

#[tokio::test]
async fn concurrent_writers_get_distinct_revisions() {
    let (_d, s) = store();
    let s = std::sync::Arc::new(s);
    let mut tasks = vec![];
    for i in 0..200 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move { s.write(Op::Create { key: format!("/c/{i}"), value: b("v") }).await.unwrap().mod_revision }));
    }
    let mut revs = vec![];
    for t in tasks {
        revs.push(t.await.unwrap());
    }
    revs.sort();
    revs.dedup();
    assert_eq!(revs.len(), 200);
}

#[tokio::test]
async fn survives_reopen() {
    let d = tempdir::Dir::new();
    let path = d.path.join("db");
    let rev;
    {
        let s = RedbStore::open(&path).unwrap();
        rev = s.write(Op::Create { key: "/p".into(), value: b("durable") }).await.unwrap().mod_revision;
    }
    let s = RedbStore::open(&path).unwrap();
    let kv = s.get("/p").await.unwrap().unwrap();
    assert_eq!(kv.value, b("durable"));
    assert_eq!(kv.mod_revision, rev);
    assert_eq!(s.revision().await.unwrap(), rev);
    // History does not survive a restart: watching from before it is Expired.
    assert!(matches!(s.watch("/", rev - 1).await, Err(StoreError::Expired { .. })));
    assert!(s.watch("/", rev).await.is_ok());
}
