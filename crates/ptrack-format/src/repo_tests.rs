//! Tests of the repository, its instances, keys and lock.

use super::*;

#[test]
fn init_open_and_lock() {
    let d = tempfile::tempdir().unwrap();
    let root = Location::Dir(d.path().join("repo"));
    let r = Repository::init(&root).unwrap();
    assert!(Repository::init(&root).is_err());
    assert!(Repository::open(&Location::Dir(d.path().into())).is_err());
    let r2 = Repository::open(&root).unwrap();
    assert!(r2.instances().unwrap().is_empty());
    let inst = r.add_instance(sample_instance(7, "/x")).unwrap();
    assert_eq!(r.instances().unwrap(), vec![7]);
    let l = inst.lock("test").unwrap();
    let e = inst.lock("test again").unwrap_err().to_string();
    assert!(e.contains("another ptrack process"), "{e}");
    drop(l);
    inst.lock("after release").unwrap();
    assert!(r.only_instance(Some(8)).is_err());
    assert_eq!(r.only_instance(None).unwrap().info.system_identifier, 7);
}

fn pass(s: &str) -> KeySource {
    KeySource::Passphrase {
        var: "TEST_PASSPHRASE".into(),
        secret: zeroize_bytes(s),
    }
}

fn zeroize_bytes(s: &str) -> ptrack_repo::keyring::Secret {
    ptrack_repo::keyring::Secret::new(s.as_bytes().to_vec())
}

const CHEAP: KdfParams = KdfParams {
    m_cost: 8,
    t_cost: 1,
    p_cost: 1,
};

fn info(sysid: u64) -> InstanceInfo {
    sample_instance(sysid, "/distinctive/pgdata/path")
}

#[test]
fn encrypted_repository_needs_its_key() {
    let mem = ptrack_repo::memory::MemStore::new();
    let store: Arc<dyn Storage> = Arc::new(mem.clone());
    let r = Repository::init_encrypted_on(Arc::clone(&store), &pass("right"), CHEAP).unwrap();
    assert!(r.is_encrypted());
    r.add_instance(info(7)).unwrap();
    // Only the marker and the keyring are plaintext.
    for k in mem.list(None).unwrap() {
        let raw = mem.get(&k).unwrap();
        let plain = raw.windows(9).any(|w| w == b"/distinct") || raw.starts_with(b"PTRACK ");
        assert_eq!(
            plain,
            k.as_str() == REPO_FILE,
            "{k} is plaintext only if it is the marker"
        );
    }
    let e = Repository::open_on(Arc::clone(&store))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("is encrypted") && e.contains(ptrack_repo::keyring::PASSPHRASE_ENV),
        "{e}"
    );
    let e = Repository::open_on_with(Arc::clone(&store), Some(&pass("wrong")))
        .unwrap_err()
        .to_string();
    let ring = Keyring::load(&mem).unwrap();
    let id = hex(&ring.slots()[0].key_id);
    assert!(e.contains(&id) && !e.contains("wrong"), "{e}");
    let r = Repository::open_on_with(Arc::clone(&store), Some(&pass("right"))).unwrap();
    assert_eq!(r.instances().unwrap(), vec![7]);
    assert_eq!(r.only_instance(None).unwrap().info, info(7));
    // A plain repository refuses a key.
    let plain: Arc<dyn Storage> = Arc::new(ptrack_repo::memory::MemStore::new());
    Repository::init_on(Arc::clone(&plain)).unwrap();
    let e = Repository::open_on_with(plain, Some(&pass("right")))
        .unwrap_err()
        .to_string();
    assert!(e.contains("not encrypted"), "{e}");
    // Rotation through the repository.
    let new_id = r.add_key(&pass("next"), CHEAP).unwrap();
    let r2 = Repository::open_on_with(Arc::clone(&store), Some(&pass("next"))).unwrap();
    assert!(r2.remove_key(&new_id).is_err(), "the key in use");
    let left = r2.remove_key(&id).unwrap();
    assert_eq!(left.keys.len(), 1);
    assert!(Repository::open_on_with(Arc::clone(&store), Some(&pass("right"))).is_err());
    let r3 = Repository::open_on_with(store, Some(&pass("next"))).unwrap();
    assert_eq!(r3.only_instance(None).unwrap().info, info(7));
    assert!(r3.remove_key(&new_id).is_err(), "the last key");
}

#[test]
fn the_same_key_twice_and_two_key_commands_at_once_are_refused() {
    let store: Arc<dyn Storage> = Arc::new(ptrack_repo::memory::MemStore::new());
    let r = Repository::init_encrypted_on(Arc::clone(&store), &pass("right"), CHEAP).unwrap();
    let e = r.add_key(&pass("right"), CHEAP).unwrap_err().to_string();
    assert!(e.contains("already key"), "{e}");
    let held = r.keys_lock("test").unwrap();
    let e = r.add_key(&pass("other"), CHEAP).unwrap_err().to_string();
    assert!(e.contains("another key command"), "{e}");
    drop(held);
    r.add_key(&pass("other"), CHEAP).unwrap();
}

#[test]
fn a_running_record_put_back_over_a_committed_backup_never_deletes_it() {
    // An older record state (RUNNING) restored by hand over the OK one: the next lock
    // marks it ERROR, but its manifest exists, so its objects stay.
    let mem = ptrack_repo::memory::MemStore::new();
    let store: Arc<dyn Storage> = Arc::new(mem.clone());
    let r = Repository::init_on(Arc::clone(&store)).unwrap();
    let inst = r.add_instance(info(7)).unwrap();
    let lock = inst.lock("test").unwrap();
    for (id, committed) in [("0000001", true), ("0000002", false)] {
        let b = crate::catalog::sample_info(id, Status::Running);
        inst.save_record(&b, &lock).unwrap();
        let dir = inst.backup_key(id).unwrap();
        store.put(&dir.join("bundle.0").unwrap(), b"pages").unwrap();
        if committed {
            store.put(&dir.join("manifest").unwrap(), b"m").unwrap();
        }
    }
    drop(lock);
    let _lock = inst.lock("again").unwrap();
    let cat = inst.catalog().unwrap();
    for (id, kept) in [("0000001", true), ("0000002", false)] {
        let b = cat.get(id).unwrap();
        assert_eq!(b.status, Status::Error, "{id}");
        let bundle = inst.backup_key(id).unwrap().join("bundle.0").unwrap();
        assert_eq!(mem.get(&bundle).is_ok(), kept, "{id}: {:?}", b.error);
    }
}
