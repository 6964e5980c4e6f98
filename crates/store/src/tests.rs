//! Embedded-backend specifics; the behaviour every backend shares is in tests/suite.

use super::*;
use bytes::Bytes;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

#[tokio::test]
async fn survives_reopen() {
    let d = yard_test_support::TempDir::new("store-test");
    let path = d.0.join("db");
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
    // Nor can a list read at a revision before the restart.
    assert!(matches!(s.list_at("/", None, None, rev - 1).await, Err(StoreError::Expired { .. })));
    assert_eq!(s.list_at("/", None, None, rev).await.unwrap().items.len(), 1);
}
