//! The store's behaviour, written once against `dyn Store` and run on every backend
//! (tests/redb.rs, tests/etcd.rs). Each case must be the only writer under its keys while it runs.

use std::sync::Arc;

use bytes::Bytes;
use yard_store::{EventKind, Op, Store, StoreError};

pub fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

pub async fn cas_semantics(s: &dyn Store) {
    let r0 = s.revision().await.unwrap();
    let a = s.write(Op::Create { key: "/a".into(), value: b("1") }).await.unwrap();
    assert_eq!(a.mod_revision, r0 + 1);
    assert_eq!(a.create_revision, a.mod_revision);
    assert!(matches!(s.write(Op::Create { key: "/a".into(), value: b("x") }).await, Err(StoreError::AlreadyExists(_))));
    let a2 = s.write(Op::Update { key: "/a".into(), value: b("2"), expect: Some(a.mod_revision) }).await.unwrap();
    assert_eq!(a2.create_revision, a.create_revision);
    assert!(a2.mod_revision > a.mod_revision);
    // A possibly-stale read (one member, or the embedded store) has the acknowledged write.
    let st = s.get_stale("/a").await.unwrap().unwrap();
    assert_eq!((st.value, st.mod_revision, st.create_revision), (b("2"), a2.mod_revision, a.create_revision));
    assert!(s.get_stale("/never").await.unwrap().is_none());
    match s.write(Op::Update { key: "/a".into(), value: b("3"), expect: Some(a.mod_revision) }).await {
        Err(StoreError::Conflict { current: Some(c), .. }) => assert_eq!(c.value, b("2")),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        s.write(Op::Update { key: "/zz".into(), value: b("3"), expect: None }).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(s.write(Op::Delete { key: "/zz".into(), expect: None }).await, Err(StoreError::NotFound(_))));
    assert!(matches!(
        s.write(Op::Delete { key: "/a".into(), expect: Some(1) }).await,
        Err(StoreError::Conflict { .. })
    ));
    let u = s.write(Op::Update { key: "/a".into(), value: b("4"), expect: None }).await.unwrap();
    assert_eq!(u.create_revision, a.create_revision);
    let gone = s.write(Op::Delete { key: "/a".into(), expect: Some(u.mod_revision) }).await.unwrap();
    assert_eq!(gone.value, b("4"));
    assert!(gone.mod_revision > u.mod_revision);
    assert!(s.get("/a").await.unwrap().is_none());
    assert_eq!(s.revision().await.unwrap(), gone.mod_revision);
}

pub async fn list_pages_and_prefixes(s: &dyn Store) {
    for i in 0..25 {
        s.write(Op::Create { key: format!("/r/ns/{i:03}"), value: b("v") }).await.unwrap();
    }
    s.write(Op::Create { key: "/r/nt/x".into(), value: b("v") }).await.unwrap();
    s.write(Op::Create { key: "/r/ns".into(), value: b("not under /r/ns/") }).await.unwrap();
    let p = s.list("/r/ns/", None, Some(10)).await.unwrap();
    assert_eq!(p.items.len(), 10);
    assert_eq!(p.more.as_deref(), Some("/r/ns/009"));
    assert_eq!(p.remaining, 15, "every key after the page is counted");
    assert_eq!(p.revision, s.revision().await.unwrap());
    let p2 = s.list("/r/ns/", p.more.as_deref(), Some(10)).await.unwrap();
    assert_eq!(p2.items[0].key, "/r/ns/010");
    assert_eq!(p2.remaining, 5);
    let p3 = s.list("/r/ns/", p2.more.as_deref(), Some(10)).await.unwrap();
    assert_eq!(p3.items.len(), 5);
    assert!(p3.more.is_none());
    assert_eq!(p3.remaining, 0);
    let all = s.list("/r/ns/", None, None).await.unwrap();
    assert_eq!(all.items.len(), 25);
    assert!(all.items.windows(2).all(|w| w[0].key < w[1].key));
    assert_eq!(s.count("/r/").await.unwrap(), 27);
    assert_eq!(s.count("/r/ns/").await.unwrap(), 25);
    assert_eq!(s.get("/r/ns/007").await.unwrap().unwrap().value, b("v"));
}

pub async fn watch_in_order_and_expired(s: &dyn Store) {
    let start = s.revision().await.unwrap();
    let mut w = s.watch("/w/", start).await.unwrap();
    let mut revs = vec![];
    for i in 0..50 {
        let kv = s.write(Op::Create { key: format!("/w/{i}"), value: b("v") }).await.unwrap();
        revs.push(kv.mod_revision);
        s.write(Op::Create { key: format!("/other/{i}"), value: b("v") }).await.unwrap();
    }
    let up = s.write(Op::Update { key: "/w/3".into(), value: b("v2"), expect: None }).await.unwrap();
    let del = s.write(Op::Delete { key: "/w/4".into(), expect: None }).await.unwrap();
    for r in &revs {
        let ev = tokio::time::timeout(std::time::Duration::from_secs(10), w.next()).await.unwrap().unwrap();
        assert_eq!(ev.revision(), *r);
        assert_eq!(ev.kind, EventKind::Put);
        assert!(ev.prev.is_none(), "a create has no previous value");
        assert!(ev.kv.key.starts_with("/w/"));
    }
    let ev = w.next().await.unwrap();
    assert_eq!((ev.kind, ev.revision(), ev.kv.value.clone()), (EventKind::Put, up.mod_revision, b("v2")));
    assert_eq!(ev.prev.unwrap().value, b("v"));
    let ev = w.next().await.unwrap();
    assert_eq!((ev.kind, ev.revision(), ev.kv.key.as_str()), (EventKind::Delete, del.mod_revision, "/w/4"));
    assert_eq!(ev.kv.value, b("v"), "a delete event carries the last value");
    // Resume from the middle replays history.
    let mut w2 = s.watch("/w/", revs[24]).await.unwrap();
    assert_eq!(w2.next().await.unwrap().revision(), revs[25]);
    // list_and_watch: the listing and the watch meet at one revision.
    let (page, mut w3) = s.list_and_watch("/w/").await.unwrap();
    assert_eq!(page.items.len(), 49);
    let after = s.write(Op::Create { key: "/w/new".into(), value: b("v") }).await.unwrap();
    let ev = tokio::time::timeout(std::time::Duration::from_secs(10), w3.next()).await.unwrap().unwrap();
    assert_eq!(ev.revision(), after.mod_revision);
    assert_eq!(page.revision, after.mod_revision - 1);
    // Compaction: resuming from before it is Expired, from after it is fine; live watches go on.
    s.compact(revs[30]).await.unwrap();
    assert!(matches!(s.watch("/w/", revs[10]).await, Err(StoreError::Expired { .. })));
    let mut w4 = s.watch("/w/", revs[30]).await.unwrap();
    assert_eq!(w4.next().await.unwrap().revision(), revs[31]);
    let last = s.write(Op::Create { key: "/w/last".into(), value: b("v") }).await.unwrap();
    let ev = tokio::time::timeout(std::time::Duration::from_secs(10), w3.next()).await.unwrap().unwrap();
    assert_eq!(ev.revision(), last.mod_revision);
}

pub async fn concurrent_writers_get_distinct_revisions(s: Arc<dyn Store>) {
    let mut tasks = vec![];
    for i in 0..200 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.write(Op::Create { key: format!("/c/{i}"), value: b("v") }).await.unwrap().mod_revision
        }));
    }
    let mut revs = vec![];
    for t in tasks {
        revs.push(t.await.unwrap());
    }
    revs.sort();
    revs.dedup();
    assert_eq!(revs.len(), 200);
    // Racing creates of one key: exactly one wins.
    let mut tasks = vec![];
    for _ in 0..20 {
        let s = s.clone();
        tasks.push(tokio::spawn(
            async move { s.write(Op::Create { key: "/c/race".into(), value: b("v") }).await.is_ok() },
        ));
    }
    let mut wins = 0;
    for t in tasks {
        wins += t.await.unwrap() as usize;
    }
    assert_eq!(wins, 1);
}

pub async fn txn_all_or_nothing(s: &dyn Store) {
    let a = s.write(Op::Create { key: "/t/a".into(), value: b("1") }).await.unwrap();
    let mut w = s.watch("/t/", a.mod_revision).await.unwrap();
    let r = s
        .txn(vec![Op::Create { key: "/t/b".into(), value: b("b") }, Op::Create { key: "/t/b".into(), value: b("x") }])
        .await;
    assert!(matches!(r, Err(StoreError::Backend(_))), "duplicate key refused: {r:?}");
    // A failing CAS anywhere leaves every key untouched and returns the first failure.
    let r = s
        .txn(vec![
            Op::Create { key: "/t/b".into(), value: b("b") },
            Op::Update { key: "/t/a".into(), value: b("2"), expect: Some(a.mod_revision + 100) },
            Op::Delete { key: "/t/nope".into(), expect: None },
        ])
        .await;
    match r {
        Err(StoreError::Conflict { key, current: Some(c) }) => {
            assert_eq!(key, "/t/a");
            assert_eq!(c.value, b("1"));
        }
        other => panic!("{other:?}"),
    }
    let r = s
        .txn(vec![Op::Create { key: "/t/b".into(), value: b("b") }, Op::Create { key: "/t/a".into(), value: b("x") }])
        .await;
    assert!(matches!(r, Err(StoreError::AlreadyExists(k)) if k == "/t/a"));
    assert!(s.get("/t/b").await.unwrap().is_none());
    assert_eq!(s.revision().await.unwrap(), a.mod_revision);
    // All succeed: one new revision shared by every op, events in op order.
    let out = s
        .txn(vec![
            Op::Create { key: "/t/b".into(), value: b("b") },
            Op::Update { key: "/t/a".into(), value: b("2"), expect: Some(a.mod_revision) },
            Op::Create { key: "/t/c".into(), value: b("c") },
        ])
        .await
        .unwrap();
    assert_eq!(out.len(), 3);
    let rev = out[0].mod_revision;
    assert_eq!(rev, a.mod_revision + 1);
    assert!(out.iter().all(|k| k.mod_revision == rev));
    assert_eq!(out[1].create_revision, a.create_revision);
    assert_eq!(out[1].value, b("2"));
    assert_eq!(s.revision().await.unwrap(), rev);
    let mut keys = vec![];
    for _ in 0..3 {
        let ev = tokio::time::timeout(std::time::Duration::from_secs(10), w.next()).await.unwrap().unwrap();
        assert_eq!(ev.revision(), rev);
        keys.push(ev.kv.key);
    }
    assert_eq!(keys, ["/t/b", "/t/a", "/t/c"]);
    let del = s
        .txn(vec![
            Op::Delete { key: "/t/b".into(), expect: Some(rev) },
            Op::Delete { key: "/t/c".into(), expect: None },
        ])
        .await
        .unwrap();
    assert_eq!(del[0].value, b("b"));
    assert_eq!(del[1].mod_revision, rev + 1);
    assert!(s.get("/t/c").await.unwrap().is_none());
    assert!(s.txn(vec![]).await.unwrap().is_empty());
    assert_eq!(s.revision().await.unwrap(), rev + 1);
    let ev = w.next().await.unwrap();
    assert_eq!((ev.kind, ev.kv.key.as_str()), (EventKind::Delete, "/t/b"));
}

pub async fn concurrent_txns_and_writes(s: Arc<dyn Store>) {
    let start = s.revision().await.unwrap();
    let mut tasks = vec![];
    for i in 0..100 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            if i % 2 == 0 {
                s.txn(vec![
                    Op::Create { key: format!("/g/{i}/x"), value: b("v") },
                    Op::Create { key: format!("/g/{i}/y"), value: b("v") },
                ])
                .await
                .unwrap()
            } else {
                vec![s.write(Op::Create { key: format!("/g/{i}/x"), value: b("v") }).await.unwrap()]
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(s.count("/g/").await.unwrap(), 150);
    assert_eq!(s.revision().await.unwrap(), start + 100);
}

/// Reads at a past revision: the keys as they were then, paged, with exact remaining counts;
/// a revision not reached yet or compacted away is refused with a typed error.
pub async fn list_at_revision(s: &dyn Store) {
    let mut first = std::collections::BTreeMap::new();
    for k in ["a", "b", "c", "d", "e"] {
        let kv = s.write(Op::Create { key: format!("/s/{k}"), value: b(&format!("{k}1")) }).await.unwrap();
        first.insert(kv.key.clone(), kv);
    }
    // Noise under another prefix and a key that only shares the prefix's spelling.
    s.write(Op::Create { key: "/sx/a".into(), value: b("x") }).await.unwrap();
    let r1 = s.revision().await.unwrap();
    s.write(Op::Update { key: "/s/b".into(), value: b("b2"), expect: None }).await.unwrap();
    s.write(Op::Update { key: "/s/b".into(), value: b("b3"), expect: None }).await.unwrap();
    s.write(Op::Delete { key: "/s/c".into(), expect: None }).await.unwrap();
    s.write(Op::Create { key: "/s/bb".into(), value: b("new") }).await.unwrap();
    s.txn(vec![
        Op::Create { key: "/s/f".into(), value: b("new") },
        Op::Delete { key: "/s/a".into(), expect: None },
        Op::Create { key: "/s/c".into(), value: b("again") },
    ])
    .await
    .unwrap();
    s.write(Op::Create { key: "/sx/b".into(), value: b("x") }).await.unwrap();
    let now = s.revision().await.unwrap();

    let then = s.list_at("/s/", None, None, r1).await.unwrap();
    assert_eq!(then.revision, r1);
    assert_eq!(then.items, first.values().cloned().collect::<Vec<_>>(), "every key exactly as it was at {r1}");
    assert!(then.more.is_none());
    // Paged at r1: the walk sees r1's keys only, with exact counts of what follows.
    let p1 = s.list_at("/s/", None, Some(2), r1).await.unwrap();
    let keys = |p: &yard_store::ListPage| p.items.iter().map(|k| k.key.clone()).collect::<Vec<_>>();
    assert_eq!(keys(&p1), ["/s/a", "/s/b"]);
    assert_eq!((p1.more.as_deref(), p1.remaining), (Some("/s/b"), 3));
    assert_eq!(p1.items[1].value, b("b1"));
    let p2 = s.list_at("/s/", p1.more.as_deref(), Some(2), r1).await.unwrap();
    assert_eq!(keys(&p2), ["/s/c", "/s/d"]);
    assert_eq!(p2.items[0].value, b("c1"), "the deleted and re-created key as it was");
    assert_eq!((p2.more.as_deref(), p2.remaining), (Some("/s/d"), 1));
    let p3 = s.list_at("/s/", p2.more.as_deref(), Some(2), r1).await.unwrap();
    assert_eq!(keys(&p3), ["/s/e"]);
    assert_eq!((p3.more.as_deref(), p3.remaining), (None, 0));
    // A page cut exactly at the end has nothing more.
    let p4 = s.list_at("/s/", p2.more.as_deref(), Some(1), r1).await.unwrap();
    assert_eq!((keys(&p4), p4.more, p4.remaining), (vec!["/s/e".to_string()], None, 0));
    // In between: after the two updates of b, before c's delete.
    let mid = s.list_at("/s/", None, None, r1 + 1).await.unwrap();
    assert_eq!(mid.items.iter().map(|k| k.value.clone()).collect::<Vec<_>>(), ["a1", "b2", "c1", "d1", "e1"].map(b));
    // At the current revision: what `list` returns.
    let cur = s.list_at("/s/", None, Some(3), now).await.unwrap();
    let live = s.list("/s/", None, Some(3)).await.unwrap();
    assert_eq!((cur.items.clone(), cur.more.clone(), cur.remaining), (live.items, live.more, live.remaining));
    assert_eq!(keys(&cur), ["/s/b", "/s/bb", "/s/c"]);
    assert_eq!(cur.remaining, 3);
    assert_eq!(cur.items[0].value, b("b3"));
    // Not reached yet.
    match s.list_at("/s/", None, None, now + 1000).await {
        Err(StoreError::FutureRevision { requested, current }) => assert_eq!((requested, current), (now + 1000, now)),
        other => panic!("{other:?}"),
    }
    // Compacted away: a typed Expired naming the revision asked for; later revisions still read.
    s.compact(r1 + 2).await.unwrap();
    match s.list_at("/s/", None, Some(2), r1).await {
        Err(StoreError::Expired { requested, oldest }) => {
            assert_eq!(requested, r1);
            assert!(oldest >= r1 + 2, "oldest {oldest}");
        }
        other => panic!("{other:?}"),
    }
    let after = s.list_at("/s/", None, None, r1 + 2).await.unwrap();
    assert_eq!(after.items.iter().map(|k| k.value.clone()).collect::<Vec<_>>(), ["a1", "b3", "c1", "d1", "e1"].map(b));
}
