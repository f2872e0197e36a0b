//! The [`Storage`] contract, checked on every backend: the same sequence of operations must
//! give the same results on the local filesystem and in memory (and, later, on S3).

use std::io::Write;

use crate::local::LocalFs;
use crate::memory::MemStore;
use crate::{Key, Storage, StorageError};

fn k(s: &str) -> Key {
    Key::new(s).unwrap_or_else(|e| unreachable!("{e}"))
}

fn contract(s: &dyn Storage) {
    let a = k("inst/backups/B1/manifest");
    assert!(matches!(s.get(&a), Err(StorageError::NotFound { .. })));
    assert!(matches!(s.size(&a), Err(StorageError::NotFound { .. })));
    s.put(&a, b"first").expect("put");
    assert_eq!(s.get(&a).expect("get"), b"first");
    s.put(&a, b"second version").expect("replace");
    assert_eq!(s.get(&a).expect("get"), b"second version");
    assert_eq!(s.size(&a).expect("size"), 14);
    assert_eq!(s.get_range(&a, 7, 7).expect("range"), b"version");
    assert!(
        s.get_range(&a, 10, 5).is_err(),
        "a range past the end is an error"
    );

    // put_if_absent: written once, then left alone (or refused where it is not atomic).
    let lock = k("inst/lock");
    if s.capabilities().conditional_put {
        assert!(s.put_if_absent(&lock, b"owner 1").expect("first"));
        assert!(!s.put_if_absent(&lock, b"owner 2").expect("second"));
    } else {
        assert!(matches!(
            s.put_if_absent(&lock, b"owner 1"),
            Err(StorageError::Unsupported { .. })
        ));
        s.put(&lock, b"owner 1").expect("put");
    }
    assert_eq!(s.get(&lock).expect("get"), b"owner 1");

    // A reader: the size at open, any range, nothing past the end.
    let r = s.open(&a).expect("open");
    assert_eq!(r.len(), 14);
    let mut buf = [0u8; 6];
    r.read_at(&mut buf, 0).expect("read");
    assert_eq!(&buf, b"second");
    assert!(r.read_at(&mut buf, 10).is_err(), "past the end");
    assert!(matches!(
        s.open(&k("inst/none")),
        Err(StorageError::NotFound { .. })
    ));

    // A writer is invisible until finished, and dropped unfinished it leaves nothing.
    let b = k("inst/backups/B1/bundle.0");
    let mut w = s.writer(&b).expect("writer");
    w.write_all(&[7u8; 100_000]).expect("write");
    assert!(matches!(s.get(&b), Err(StorageError::NotFound { .. })));
    assert!(!s.list(None).expect("list").contains(&b));
    w.finish().expect("finish");
    assert_eq!(s.size(&b).expect("size"), 100_000);
    let dropped = k("inst/backups/B2/bundle.0");
    let mut w = s.writer(&dropped).expect("writer");
    w.write_all(b"never finished").expect("write");
    drop(w);
    assert!(matches!(
        s.get(&dropped),
        Err(StorageError::NotFound { .. })
    ));

    // Listing: sorted, by whole components, no temporary leftovers.
    s.put(&k("inst/backupsX"), b"x").expect("put");
    assert_eq!(
        s.list(Some(&k("inst/backups"))).expect("list"),
        vec![b.clone(), a.clone()]
    );
    assert_eq!(
        s.list(None).expect("list"),
        vec![b.clone(), a.clone(), k("inst/backupsX"), lock.clone()]
    );
    assert_eq!(
        s.list(Some(&k("nothing"))).expect("list"),
        Vec::<Key>::new()
    );
    // One level down only, objects and "directories" alike.
    assert_eq!(
        s.children(None).expect("children"),
        vec!["inst".to_string()]
    );
    assert_eq!(
        s.children(Some(&k("inst"))).expect("children"),
        vec!["backups", "backupsX", "lock"]
    );
    assert!(
        s.children(Some(&k("nothing")))
            .expect("children")
            .is_empty()
    );

    // A writer of several upload parts (8 MiB each on S3), written in odd pieces, reads back.
    let big = k("inst/backups/B3/bundle.0");
    let data: Vec<u8> = (0..(19 << 20) + 12_345)
        .map(|i: u32| (i % 251) as u8)
        .collect();
    let mut w = s.writer(&big).expect("writer");
    for piece in data.chunks(1_000_003) {
        w.write_all(piece).expect("write");
    }
    w.finish().expect("finish");
    let r = s.open(&big).expect("open");
    assert_eq!(r.len(), data.len() as u64);
    let mut back = vec![0u8; data.len()];
    for (i, c) in back.chunks_mut(3 << 20).enumerate() {
        r.read_at(c, (i * (3 << 20)) as u64).expect("read");
    }
    assert!(back == data, "a multipart object reads back byte for byte");
    // Any order, odd sizes across chunk boundaries, small reads far apart.
    let piece = (1 << 20) + 7;
    for start in (0..data.len()).step_by(piece).rev() {
        let n = piece.min(data.len() - start);
        let mut b = vec![0u8; n];
        r.read_at(&mut b, start as u64).expect("read");
        assert!(b == data[start..start + n], "piece at {start}");
    }
    for start in [data.len() - 9000, 17, (8 << 20) - 3, 5 << 20] {
        let mut b = vec![0u8; 8192];
        r.read_at(&mut b, start as u64).expect("read");
        assert!(b == data[start..start + 8192], "page at {start}");
    }
    s.delete_prefix(&k("inst/backups/B3"))
        .expect("delete prefix");
    assert!(
        s.list(Some(&k("inst/backups/B3")))
            .expect("list")
            .is_empty()
    );

    // The lock excludes a second holder until dropped.
    let name = k("inst/instance-lock");
    let held = s.lock(&name, "first").expect("free");
    held.check().expect("held");
    assert!(matches!(
        s.lock(&name, "second"),
        Err(crate::LockError::Held { .. })
    ));
    drop(held);
    drop(s.lock(&name, "second").expect("free again"));

    s.delete(&a).expect("delete");
    s.delete(&a)
        .expect("deleting an absent object is not an error");
    assert!(matches!(s.get(&a), Err(StorageError::NotFound { .. })));
}

#[test]
fn local_filesystem_honours_the_contract() {
    let d = tempfile::tempdir().expect("tempdir");
    contract(&LocalFs::new(d.path()));
}

#[test]
fn memory_honours_the_contract() {
    contract(&MemStore::new());
    contract(&MemStore::new().without_conditional_put());
}

/// A single-node Garage: the same contract over S3, below a prefix and at the bucket's root,
/// and the capability probe finds what Garage 2.5 does with `If-None-Match: *` (ignores it).
#[test]
fn garage_honours_the_contract() {
    let Some(bin) = ptrack_testkit::require_garage() else {
        return;
    };
    let g = ptrack_testkit::Garage::start(&bin, 1);
    let settings = g.settings();
    for prefix in ["some/prefix", ""] {
        let addr = crate::s3::S3Address {
            bucket: g.bucket.clone(),
            prefix: prefix.into(),
        };
        let s = crate::s3::S3Store::with_settings(addr, &settings).expect("client");
        contract(&s);
        for key in s.list(None).expect("list") {
            s.delete(&key).expect("clean");
        }
        // Sealed objects over multipart uploads and ranged GETs.
        let s: std::sync::Arc<dyn Storage> = std::sync::Arc::new(s);
        let enc = crate::encrypted::Encrypted::new(
            std::sync::Arc::clone(&s),
            crate::sealed::DataKey::from_bytes(&[9u8; 32]),
        );
        contract(&enc);
        for key in s.list(None).expect("list") {
            s.delete(&key).expect("clean");
        }
    }
    let addr = crate::s3::S3Address {
        bucket: g.bucket.clone(),
        prefix: "probe".into(),
    };
    let s = crate::s3::S3Store::with_settings(addr, &settings).expect("client");
    assert!(
        !s.probe_conditional_put(&k("cond")).expect("probe"),
        "Garage 2.5 is known to ignore If-None-Match: * on PutObject"
    );
    // Wrong credentials: a clear error naming the key, the secret never shown.
    let bad: Vec<(&str, String)> = settings
        .iter()
        .map(|(n, v)| match *n {
            "aws_secret_access_key" => (*n, "wrong-secret-0123456789".to_string()),
            _ => (*n, v.clone()),
        })
        .collect();
    let s = crate::s3::S3Store::with_settings(
        crate::s3::S3Address {
            bucket: g.bucket.clone(),
            prefix: String::new(),
        },
        &bad,
    )
    .expect("client");
    let e = s.get(&k("x/manifest")).expect_err("refused").to_string();
    assert!(e.contains("x/manifest"), "{e}");
    assert!(!e.contains("wrong-secret") && !e.contains(&g.secret), "{e}");
}

/// The local backend never follows a link to an object, and creates private files.
#[test]
fn local_refuses_links_and_writes_private_files() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().expect("tempdir");
    let s = LocalFs::new(d.path());
    let secret = d.path().join("secret");
    std::fs::write(&secret, b"TOPSECRET").expect("write");
    std::os::unix::fs::symlink(&secret, d.path().join("catalog")).expect("symlink");
    let err = s.get(&k("catalog")).expect_err("a link is refused");
    assert!(err.to_string().contains("symbolic link"), "{err}");
    assert!(!err.to_string().contains("TOPSECRET"));
    // A directory on the way that is a link is refused too.
    let elsewhere = d.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).expect("mkdir");
    std::fs::write(elsewhere.join("manifest"), b"TOPSECRET").expect("write");
    std::os::unix::fs::symlink(&elsewhere, d.path().join("linked")).expect("symlink");
    let err = s
        .get(&k("linked/manifest"))
        .expect_err("a linked directory is refused");
    assert!(err.to_string().contains("symbolic link"), "{err}");
    assert!(s.open(&k("linked/manifest")).is_err());
    // Listed, not passed over: a reader of what the listing names gets the refusal.
    let listed = s.list(None).expect("list");
    assert!(
        listed.contains(&k("catalog")) && listed.contains(&k("linked")),
        "{listed:?}"
    );
    s.put(&k("a/b/c"), b"x").expect("put");
    let mode = |p: &std::path::Path| {
        std::fs::metadata(p)
            .map(|m| m.permissions().mode() & 0o777)
            .ok()
    };
    assert_eq!(mode(&d.path().join("a/b/c")), Some(0o600));
    assert_eq!(mode(&d.path().join("a/b")), Some(0o700));
}

/// Every operation of a sequence failing in turn: the error names the key and says whether a
/// retry may help, and the failed operation changed nothing.
#[test]
fn injected_failures_name_the_key_and_change_nothing() {
    let run = |s: &MemStore| -> crate::Result<()> {
        s.put(&k("x/catalog"), b"v1")?;
        let mut w = s.writer(&k("x/bundle.0"))?;
        w.write_all(b"pages")
            .map_err(|e| StorageError::io(&k("x/bundle.0"), "write", e))?;
        w.finish()?;
        s.get_range(&k("x/bundle.0"), 1, 3)?;
        s.put(&k("x/catalog"), b"v2")?;
        s.delete(&k("x/old"))?;
        Ok(())
    };
    let clean = MemStore::new();
    run(&clean).expect("no failure");
    let total = clean.ops();
    assert_eq!(total, 6, "put, create, finish, get range, put, delete");
    for n in 0..total {
        for transient in [true, false] {
            let s = MemStore::new();
            s.fail_op(n, transient);
            let err = run(&s).expect_err("the injected failure surfaces");
            assert_eq!(err.is_transient(), transient, "op {n}: {err}");
            assert!(
                err.to_string().contains("x/"),
                "op {n}: the key is named: {err}"
            );
            // What was done before the failure is there; the failed step is not.
            let catalog = s.get(&k("x/catalog")).ok();
            match n {
                0 => assert_eq!(catalog, None),
                1..=4 => assert_eq!(catalog.as_deref(), Some(&b"v1"[..]), "op {n}"),
                _ => assert_eq!(catalog.as_deref(), Some(&b"v2"[..])),
            }
            let bundle = s.get(&k("x/bundle.0")).ok();
            assert_eq!(
                bundle.is_some(),
                n > 2,
                "op {n}: the bundle is visible only once finished"
            );
        }
    }
}

/// A store that ignores conditional writes says so instead of pretending.
#[test]
fn stores_without_conditional_put_refuse_it() {
    let s = MemStore::new().without_conditional_put();
    assert!(!s.capabilities().conditional_put);
    assert!(matches!(
        s.put_if_absent(&k("lock"), b"me"),
        Err(StorageError::Unsupported { .. })
    ));
    assert!(s.get(&k("lock")).is_err());
}

/// The same contract through [`crate::encrypted::Encrypted`]: sizes, ranges and listings of
/// plaintext, whatever the sealed objects' sizes.
#[test]
fn encrypted_stores_honour_the_contract() {
    use std::sync::Arc;
    let dek = || crate::sealed::DataKey::from_bytes(&[42u8; 32]);
    contract(&crate::encrypted::Encrypted::new(
        Arc::new(MemStore::new()),
        dek(),
    ));
    contract(&crate::encrypted::Encrypted::new(
        Arc::new(MemStore::new().without_conditional_put()),
        dek(),
    ));
    let d = tempfile::tempdir().expect("tempdir");
    contract(&crate::encrypted::Encrypted::new(
        Arc::new(LocalFs::new(d.path())),
        dek(),
    ));
}
