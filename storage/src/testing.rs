//! Test support for this and other crates: the conformance suite every backend must pass, and a throwaway sled.
//!
//! Helpers panic with context instead of returning errors: they only ever run inside tests.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use crate::{Backend, Op, SledBackend, StorageError};

/// Everything the suite writes lives below this key, so it can share a backend with other data and cleans up after
/// itself.
const ROOT: &str = "conformance-suite/";

/// A [`SledBackend`] in a temporary directory that is removed after the backend is dropped (fields drop in order).
#[derive(Debug)]
pub struct TempSled {
    pub backend: SledBackend,
    pub dir: tempfile::TempDir,
}

impl TempSled {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("creating temporary directory");
        let backend = SledBackend::open(dir.path()).expect("opening sled in temporary directory");
        Self { backend, dir }
    }
}

impl Default for TempSled {
    fn default() -> Self {
        Self::new()
    }
}

/// The conformance suite every backend must pass: get/put/delete/overwrite, missing key -> None, list semantics
/// (nested folders, prefix that is not a folder boundary, empty, keys with unicode), batch atomic visibility, in-order
/// batches (order of ops and of what readers see), batch
/// with put+delete of the same key in order, large values (1 MiB), empty value, concurrent writers from many tasks,
/// etc.
///
/// Only keys under `conformance-suite/` are touched, and they are all deleted at the end, so the suite can run
/// repeatedly against the same backend. Concurrency is exercised by futures polled together on the calling task
/// (the signature lends us the backend, so nothing can be `tokio::spawn`ed); a backend that offloads work to other
/// threads, like sled, still sees truly parallel operations.
pub async fn exercise_backend(backend: &dyn Backend) {
    assert!(!backend.kind().is_empty(), "kind() must name the backend");
    delete_tree(backend, ROOT).await;
    invalid_keys(backend).await;
    crud(backend).await;
    values(backend).await;
    listing(backend).await;
    batches(backend).await;
    batch_atomic_visibility(backend).await;
    batches_in_order(backend).await;
    concurrent_writers(backend).await;
    delete_tree(backend, ROOT).await;
    assert_eq!(list(backend, ROOT).await, Vec::<String>::new(), "cleanup left keys behind");
    assert!(
        !list(backend, "").await.iter().any(|c| c == ROOT),
        "an emptied folder must disappear from its parent's listing"
    );
    backend.flush().await.expect("flush");
}

fn key(path: &str) -> String {
    format!("{ROOT}{path}")
}

async fn put(backend: &dyn Backend, key: &str, value: &[u8]) {
    backend.put(key, value.to_vec()).await.unwrap_or_else(|e| panic!("put {key:?}: {e}"));
}

async fn get(backend: &dyn Backend, key: &str) -> Option<Vec<u8>> {
    backend.get(key).await.unwrap_or_else(|e| panic!("get {key:?}: {e}"))
}

async fn delete(backend: &dyn Backend, key: &str) {
    backend.delete(key).await.unwrap_or_else(|e| panic!("delete {key:?}: {e}"));
}

async fn batch(backend: &dyn Backend, ops: Vec<Op>) {
    backend.batch(ops).await.unwrap_or_else(|e| panic!("batch: {e}"));
}

/// Lists and checks the invariants every listing has: sorted, no duplicates, no empty names.
async fn list(backend: &dyn Backend, prefix: &str) -> Vec<String> {
    let children = backend.list(prefix).await.unwrap_or_else(|e| panic!("list {prefix:?}: {e}"));
    assert!(children.windows(2).all(|w| w[0] < w[1]), "list {prefix:?} not sorted and unique: {children:?}");
    assert!(!children.iter().any(String::is_empty), "list {prefix:?} has an empty name: {children:?}");
    children
}

fn put_op(key: &str, value: &[u8]) -> Op {
    Op::Put { key: key.to_owned(), value: value.to_vec() }
}

fn delete_op(key: &str) -> Op {
    Op::Delete { key: key.to_owned() }
}

fn delete_tree<'a>(backend: &'a dyn Backend, prefix: &'a str) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
    Box::pin(async move {
        for child in list(backend, prefix).await {
            let path = format!("{prefix}{child}");
            if child.ends_with('/') {
                delete_tree(backend, &path).await;
            }
            // A key may also end in '/', in which case it is listed as a folder but is a key in its own right.
            delete(backend, &path).await;
        }
    })
}

fn assert_invalid<T: std::fmt::Debug>(what: &str, result: Result<T, StorageError>) {
    assert!(matches!(result, Err(StorageError::InvalidKey(_))), "{what}: expected InvalidKey, got {result:?}");
}

async fn invalid_keys(backend: &dyn Backend) {
    let nul = key("nul\0key");
    assert_invalid("get empty", backend.get("").await);
    assert_invalid("put empty", backend.put("", b"v".to_vec()).await);
    assert_invalid("delete empty", backend.delete("").await);
    assert_invalid("get NUL", backend.get(&nul).await);
    assert_invalid("put NUL", backend.put(&nul, b"v".to_vec()).await);
    assert_invalid("delete NUL", backend.delete(&nul).await);
    assert_invalid("list NUL", backend.list("a\0/").await);

    // One bad key rejects the whole batch before anything is applied.
    let ok = key("invalid/ok");
    assert_invalid("batch with empty key", backend.batch(vec![put_op(&ok, b"v"), put_op("", b"v")]).await);
    assert_invalid("batch with NUL delete", backend.batch(vec![put_op(&ok, b"v"), delete_op(&nul)]).await);
    assert_eq!(get(backend, &ok).await, None, "a rejected batch must not apply any op");
}

async fn crud(backend: &dyn Backend) {
    let k = key("crud/k");
    assert_eq!(get(backend, &k).await, None);
    delete(backend, &k).await;

    put(backend, &k, b"one").await;
    assert_eq!(get(backend, &k).await.as_deref(), Some(&b"one"[..]));
    put(backend, &k, b"two").await;
    assert_eq!(get(backend, &k).await.as_deref(), Some(&b"two"[..]), "overwrite");
    delete(backend, &k).await;
    assert_eq!(get(backend, &k).await, None, "after delete");
    delete(backend, &k).await;

    // A folder is not a key.
    let child = key("crud/dir/child");
    put(backend, &child, b"c").await;
    assert_eq!(get(backend, &key("crud/dir")).await, None);
    assert_eq!(get(backend, &key("crud/dir/")).await, None);
    assert_eq!(list(backend, &key("crud/")).await, ["dir/"]);
    delete(backend, &child).await;
    assert_eq!(list(backend, &key("crud/")).await, Vec::<String>::new(), "emptied folder must vanish");
}

async fn values(backend: &dyn Backend) {
    let empty = key("values/empty");
    put(backend, &empty, b"").await;
    assert_eq!(get(backend, &empty).await, Some(Vec::new()), "an empty value is not a missing key");

    let binary = key("values/binary");
    let all_bytes: Vec<u8> = (0..=255u8).collect();
    put(backend, &binary, &all_bytes).await;
    assert_eq!(get(backend, &binary).await, Some(all_bytes));

    let large = key("values/large");
    let first: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    let second: Vec<u8> = (0..1024 * 1024 + 1).map(|i| (i % 13) as u8).collect();
    put(backend, &large, &first).await;
    assert!(get(backend, &large).await == Some(first), "1 MiB value round trip");
    put(backend, &large, &second).await;
    assert!(get(backend, &large).await == Some(second), "1 MiB value overwrite");

    let unicode = key("values/ключ/日本語 🔑");
    put(backend, &unicode, "значение".as_bytes()).await;
    assert_eq!(get(backend, &unicode).await.as_deref(), Some("значение".as_bytes()));
}

async fn listing(backend: &dyn Backend) {
    let r = key("list/");
    let keys = [
        "a",
        "b",
        "b/c",
        "b/d/e",
        "b/d/f",
        "b.x",
        "b0",
        "c/",
        "z/deep/er/still",
        "ключ",
        "日本/語",
        "emoji 🔑",
        "sp ace/x",
    ];
    for k in keys {
        put(backend, &format!("{r}{k}"), k.as_bytes()).await;
    }
    let l = |p: &str| format!("{r}{p}");
    assert_eq!(
        list(backend, &r).await,
        ["a", "b", "b.x", "b/", "b0", "c/", "emoji 🔑", "sp ace/", "z/", "ключ", "日本/"]
    );
    assert_eq!(list(backend, &l("b/")).await, ["c", "d/"]);
    assert_eq!(list(backend, &l("b/d/")).await, ["e", "f"]);
    assert_eq!(list(backend, &l("z/")).await, ["deep/"]);
    assert_eq!(list(backend, &l("z/deep/er/")).await, ["still"]);
    assert_eq!(list(backend, &l("日本/")).await, ["語"]);
    // The key "c/" is the prefix itself, not a child of it.
    assert_eq!(list(backend, &l("c/")).await, Vec::<String>::new());
    assert_eq!(list(backend, &l("missing/")).await, Vec::<String>::new());

    // A prefix that is not a folder boundary is a raw key prefix.
    assert_eq!(list(backend, &l("b")).await, [".x", "/", "0"]);
    assert_eq!(list(backend, &l("z/de")).await, ["ep/"]);
    assert_eq!(list(backend, &l("ключ")).await, Vec::<String>::new());

    let root = list(backend, "").await;
    assert_eq!(root.iter().filter(|c| *c == ROOT).count(), 1, "root listing {root:?}");
    assert!(list(backend, ROOT).await.iter().any(|c| c == "list/"));
}

async fn batches(backend: &dyn Backend) {
    let b = |p: &str| key(&format!("batch/{p}"));
    put(backend, &b("old"), b"o").await;
    batch(backend, vec![put_op(&b("a"), b"1"), put_op(&b("b"), b"2"), delete_op(&b("old")), put_op(&b("c"), b"3")])
        .await;
    assert_eq!(get(backend, &b("a")).await.as_deref(), Some(&b"1"[..]));
    assert_eq!(get(backend, &b("b")).await.as_deref(), Some(&b"2"[..]));
    assert_eq!(get(backend, &b("c")).await.as_deref(), Some(&b"3"[..]));
    assert_eq!(get(backend, &b("old")).await, None);

    // Ops on the same key apply in order.
    batch(backend, vec![put_op(&b("x"), b"1"), delete_op(&b("x"))]).await;
    assert_eq!(get(backend, &b("x")).await, None, "put then delete");
    batch(backend, vec![delete_op(&b("y")), put_op(&b("y"), b"2")]).await;
    assert_eq!(get(backend, &b("y")).await.as_deref(), Some(&b"2"[..]), "delete then put");
    batch(backend, vec![put_op(&b("z"), b"1"), put_op(&b("z"), b"2")]).await;
    assert_eq!(get(backend, &b("z")).await.as_deref(), Some(&b"2"[..]), "put then put");
    batch(backend, vec![put_op(&b("w"), b"1"), delete_op(&b("w")), put_op(&b("w"), b"3")]).await;
    assert_eq!(get(backend, &b("w")).await.as_deref(), Some(&b"3"[..]), "put, delete, put");

    batch(backend, Vec::new()).await;

    let big: Vec<u8> = vec![0xA5; 1024 * 1024];
    let mut ops: Vec<Op> = (0..200).map(|i| put_op(&b(&format!("many/{i:03}")), b"v")).collect();
    ops.push(put_op(&b("many-big"), &big));
    batch(backend, ops).await;
    assert_eq!(list(backend, &b("many/")).await.len(), 200);
    assert!(get(backend, &b("many-big")).await == Some(big));
    assert_eq!(list(backend, &b("")).await, ["a", "b", "c", "many-big", "many/", "w", "y", "z"]);
}

fn decode(value: Option<Vec<u8>>) -> u64 {
    let value = value.expect("counter key missing");
    std::str::from_utf8(&value)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("counter value {value:?} is not a number"))
}

type Task<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Polls all tasks on the current task until every one has finished (a tiny `join_all`, to need no extra crate).
async fn join_all(tasks: Vec<Task<'_>>) {
    let mut tasks: Vec<Option<Task<'_>>> = tasks.into_iter().map(Some).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for slot in &mut tasks {
            if let Some(task) = slot {
                if task.as_mut().poll(cx).is_ready() {
                    *slot = None;
                } else {
                    pending = true;
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
}

/// Readers racing a stream of batches must see each batch entirely or not at all. Both counters only grow and are
/// always written together, so reading one and then the other must never find the second behind the first.
async fn batch_atomic_visibility(backend: &dyn Backend) {
    const ROUNDS: u64 = 60;
    const READS: usize = 120;
    const FILLER: usize = 400;
    let x = key("atomic/x");
    let y = key("atomic/y");
    let set_dir = key("atomic/set/");
    // The batch toggles the two ends of a folder whose middle is static, so a listing that is not isolated from
    // batches has a whole scan's worth of time to catch one end without the other.
    let ends = [format!("{set_dir}a"), format!("{set_dir}z")];
    let mut setup = vec![put_op(&x, b"0"), put_op(&y, b"0")];
    setup.extend((0..FILLER).map(|i| put_op(&format!("{set_dir}m{i:03}"), b"filler")));
    batch(backend, setup).await;

    let writer: Task<'_> = Box::pin({
        let (x, y, ends) = (&x, &y, &ends);
        async move {
            for i in 1..=ROUNDS {
                let n = i.to_string();
                let mut ops = vec![put_op(x, n.as_bytes()), put_op(y, n.as_bytes())];
                if i % 2 == 1 {
                    ops.extend(ends.iter().map(|k| put_op(k, b"end")));
                } else {
                    ops.extend(ends.iter().map(|k| delete_op(k)));
                }
                batch(backend, ops).await;
                tokio::task::yield_now().await;
            }
        }
    });
    let reader = |first: String, second: String| -> Task<'_> {
        Box::pin(async move {
            for _ in 0..READS {
                let a = decode(get(backend, &first).await);
                let b = decode(get(backend, &second).await);
                assert!(b >= a, "saw {first} = {a} and then {second} = {b}: a batch was half applied");
                tokio::task::yield_now().await;
            }
        })
    };
    let lister: Task<'_> = Box::pin({
        let set_dir = &set_dir;
        async move {
            for _ in 0..READS {
                let children = list(backend, set_dir).await;
                let has = |name: &str| children.iter().any(|c| c == name);
                assert_eq!(has("a"), has("z"), "a listing saw half of a batch");
                assert_eq!(children.len(), FILLER + if has("a") { 2 } else { 0 });
                tokio::task::yield_now().await;
            }
        }
    });
    join_all(vec![writer, reader(x.clone(), y.clone()), reader(y.clone(), x.clone()), lister]).await;

    assert_eq!(decode(get(backend, &x).await), ROUNDS);
    assert_eq!(decode(get(backend, &y).await), ROUNDS);
}

/// In-order batches apply every op, in order, and a reader racing them never sees a later op without an
/// earlier one: `first` is always written before `second`, so reading `second` and then `first` must never
/// find `first` behind. (Atomicity is not asked: a reader may see `first` ahead.)
async fn batches_in_order(backend: &dyn Backend) {
    const ROUNDS: u64 = 60;
    const READS: usize = 120;
    let b = |p: &str| key(&format!("in-order/{p}"));
    let (first, second, stale) = (b("first"), b("second"), b("stale"));
    let in_order = |ops: Vec<Op>| async move {
        backend.batch_in_order(ops).await.unwrap_or_else(|e| panic!("batch_in_order: {e}"));
    };
    in_order(vec![put_op(&first, b"0"), put_op(&second, b"0"), put_op(&stale, b"s")]).await;
    in_order(vec![put_op(&b("x"), b"1"), delete_op(&b("x")), put_op(&b("x"), b"3"), delete_op(&stale)]).await;
    assert_eq!(get(backend, &b("x")).await.as_deref(), Some(&b"3"[..]), "ops on one key apply in order");
    assert_eq!(get(backend, &stale).await, None, "a delete in an in-order batch applies");
    in_order(Vec::new()).await;
    assert_invalid(
        "in-order batch with empty key",
        backend.batch_in_order(vec![put_op(&b("y"), b"v"), put_op("", b"v")]).await,
    );
    assert_eq!(get(backend, &b("y")).await, None, "a rejected in-order batch must not apply any op");

    let writer: Task<'_> = Box::pin({
        let (first, second) = (&first, &second);
        async move {
            for i in 1..=ROUNDS {
                let n = i.to_string();
                in_order(vec![put_op(first, n.as_bytes()), put_op(second, n.as_bytes())]).await;
                tokio::task::yield_now().await;
            }
        }
    });
    let reader: Task<'_> = Box::pin({
        let (first, second) = (&first, &second);
        async move {
            for _ in 0..READS {
                let later = decode(get(backend, second).await);
                let earlier = decode(get(backend, first).await);
                assert!(earlier >= later, "saw second = {later} and then first = {earlier}: ops applied out of order");
                tokio::task::yield_now().await;
            }
        }
    });
    join_all(vec![writer, reader]).await;
    assert_eq!(decode(get(backend, &first).await), ROUNDS);
    assert_eq!(decode(get(backend, &second).await), ROUNDS);
}

async fn concurrent_writers(backend: &dyn Backend) {
    const WRITERS: usize = 16;
    const KEYS: usize = 16;
    let dir = key("concurrent/");
    let shared = key("concurrent/shared");
    let slot = |w: usize, i: usize| format!("{dir}w{w:02}/k{i:02}");

    let tasks: Vec<Task<'_>> = (0..WRITERS)
        .map(|w| -> Task<'_> {
            let (shared, slot) = (&shared, &slot);
            Box::pin(async move {
                for i in 0..KEYS {
                    let value = format!("w{w}-{i}");
                    put(backend, &slot(w, i), value.as_bytes()).await;
                    put(backend, shared, value.as_bytes()).await;
                    if i % 4 == 3 {
                        delete(backend, &slot(w, i)).await;
                    }
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    join_all(tasks).await;

    for w in 0..WRITERS {
        for i in 0..KEYS {
            let expected = (i % 4 != 3).then(|| format!("w{w}-{i}").into_bytes());
            assert_eq!(get(backend, &slot(w, i)).await, expected, "writer {w} key {i}");
        }
        assert_eq!(list(backend, &format!("{dir}w{w:02}/")).await.len(), KEYS - KEYS / 4);
    }
    let last = get(backend, &shared).await.expect("shared key missing");
    let last = String::from_utf8(last).expect("shared value is UTF-8");
    assert!(last.ends_with(&format!("-{}", KEYS - 1)), "shared key holds {last}, not some writer's last value");

    let mut expected: Vec<String> = (0..WRITERS).map(|w| format!("w{w:02}/")).collect();
    expected.insert(0, "shared".to_owned());
    assert_eq!(list(backend, &dir).await, expected);
}
