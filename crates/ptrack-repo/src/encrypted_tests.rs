//! Tests of [`crate::encrypted::Encrypted`] and [`crate::keyring`] on the in-memory store: round
//! trips at chunk edges, ranged reads, every kind of damage caught as
//! [`StorageError::Damaged`] naming the key, wrong keys named by id, rotation.

use std::io::Write;
use std::sync::Arc;

use crate::encrypted::Encrypted;
use crate::keyring::{KdfParams, KeyError, KeySource, Keyring};
use crate::memory::MemStore;
use crate::sealed::{self, CHUNK, DataKey, HEADER, TAG};
use crate::{Key, Storage, StorageError};

fn k(s: &str) -> Key {
    Key::new(s).unwrap_or_else(|e| unreachable!("{e}"))
}

/// Argon2 at its cheapest: these tests are about the format, not the stretch.
const CHEAP: KdfParams = KdfParams {
    m_cost: 8,
    t_cost: 1,
    p_cost: 1,
};

fn pass(s: &str) -> KeySource {
    KeySource::Passphrase {
        var: "TEST_PASSPHRASE".into(),
        secret: zeroize::Zeroizing::new(s.as_bytes().to_vec()),
    }
}

fn data(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn store() -> (MemStore, Encrypted) {
    let mem = MemStore::new();
    let enc = Encrypted::new(Arc::new(mem.clone()), DataKey::from_bytes(&[7u8; 32]));
    (mem, enc)
}

fn assert_damaged<T: std::fmt::Debug>(r: crate::Result<T>, key: &str, what: &str) {
    match r {
        Err(StorageError::Damaged { key: got, why }) => {
            assert_eq!(got, key, "{what}: {why}");
        }
        other => panic!("{what}: expected Damaged naming {key}, got {other:?}"),
    }
}

const SIZES: [usize; 7] = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, (3 << 20) + 17];

#[test]
fn objects_round_trip_at_every_chunk_edge() {
    let (mem, s) = store();
    for (i, &n) in SIZES.iter().enumerate() {
        let d = data(n, i as u32 + 1);
        let put = k(&format!("p/{i}"));
        s.put(&put, &d).expect("put");
        assert_eq!(s.get(&put).expect("get"), d, "put/get {n}");
        assert_eq!(s.size(&put).expect("size"), n as u64);
        assert_eq!(
            mem.size(&put).expect("raw size"),
            sealed::sealed_size(n as u64)
        );
        // The same bytes through the streaming writer, in odd pieces.
        let w = k(&format!("w/{i}"));
        let mut wr = s.writer(&w).expect("writer");
        for piece in d.chunks(CHUNK / 3 + 1) {
            wr.write_all(piece).expect("write");
        }
        wr.finish().expect("finish");
        assert_eq!(s.get(&w).expect("get"), d, "writer {n}");
        assert_eq!(s.open(&w).expect("open").len(), n as u64);
        // Sealed: the plaintext is nowhere in the stored bytes.
        if n >= 64 {
            let raw = mem.get(&w).expect("raw");
            assert!(!raw.windows(32).any(|win| win == &d[..32]), "size {n}");
        }
    }
}

#[test]
fn ranged_reads_at_chunk_edges_decrypt_what_they_cover() {
    let (_, s) = store();
    let n = 5 * CHUNK + 123;
    let d = data(n, 9);
    let key = k("r/bundle.0");
    s.put(&key, &d).expect("put");
    let r = s.open(&key).expect("open");
    let c = CHUNK;
    for (start, len) in [
        (0, 1),
        (c - 1, 1),
        (c - 1, 2),
        (c, c),
        (c + 1, c),
        (2 * c - 5, 3 * c + 10),
        (n - 1, 1),
        (n - 200, 200),
        (0, n),
        (17, 0),
    ] {
        let mut b = vec![0u8; len];
        r.read_at(&mut b, start as u64).expect("read");
        assert!(b == d[start..start + len], "read {len} at {start}");
        assert_eq!(
            s.get_range(&key, start as u64, len).expect("range"),
            d[start..start + len]
        );
    }
    // Reads in a pseudo-random order reuse the kept chunk correctly.
    let mut x = 12_345u64;
    for _ in 0..200 {
        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let start = (x >> 33) as usize % n;
        let len = ((x >> 13) as usize % (2 * c)).min(n - start);
        let mut b = vec![0u8; len];
        r.read_at(&mut b, start as u64).expect("read");
        assert!(b == d[start..start + len], "read {len} at {start}");
    }
    let mut b = [0u8; 2];
    assert!(r.read_at(&mut b, (n - 1) as u64).is_err(), "past the end");
    assert!(s.get_range(&key, n as u64, 1).is_err());
}

#[test]
fn any_flipped_byte_is_damage_naming_the_key() {
    let (mem, s) = store();
    let n = 2 * CHUNK + 100;
    let d = data(n, 3);
    let key = k("f/bundle.1");
    s.put(&key, &d).expect("put");
    let raw = mem.get(&key).expect("raw");
    let c1 = HEADER + CHUNK + TAG;
    // Header fields, first and last bytes of each chunk and of each tag.
    let spots = [
        0,
        7,
        8,
        15,
        16,
        31,
        HEADER,
        HEADER + CHUNK - 1,
        HEADER + CHUNK,
        c1 - 1,
        c1,
        c1 + CHUNK + TAG - 1,
        raw.len() - TAG - 1,
        raw.len() - 1,
    ];
    for at in spots {
        let mut t = raw.clone();
        t[at] ^= 0x01;
        mem.put(&key, &t).expect("tamper");
        assert_damaged(s.get(&key), "f/bundle.1", &format!("get, flip at {at}"));
        let whole = s.open(&key).and_then(|r| {
            let mut b = vec![0u8; n];
            r.read_at(&mut b, 0).map(|()| b)
        });
        assert_damaged(whole, "f/bundle.1", &format!("read, flip at {at}"));
    }
    // A ranged read of a damaged chunk fails; one of an intact chunk does not.
    let mut t = raw.clone();
    t[c1 + 10] ^= 0x80;
    mem.put(&key, &t).expect("tamper");
    let r = s.open(&key).expect("open");
    let mut b = [0u8; 10];
    r.read_at(&mut b, 5).expect("chunk 0 is intact");
    assert_eq!(&b, &d[5..15]);
    assert_damaged(r.read_at(&mut b, CHUNK as u64 + 5), "f/bundle.1", "chunk 1");
}

#[test]
fn truncation_swaps_and_copies_are_damage() {
    let (mem, s) = store();
    let n = 3 * CHUNK;
    let d = data(n, 4);
    let key = k("t/bundle.0");
    s.put(&key, &d).expect("put");
    let raw = mem.get(&key).expect("raw");
    let full = CHUNK + TAG;
    // Cut at each chunk boundary (the shorter object's last chunk is not marked last) and
    // inside chunks and tags.
    for cut in [
        HEADER + full,
        HEADER + 2 * full,
        HEADER + full + 1,
        HEADER + 2 * full - 3,
        raw.len() - 1,
        HEADER + 5,
        HEADER,
        10,
    ] {
        mem.put(&key, &raw[..cut]).expect("cut");
        assert_damaged(s.get(&key), "t/bundle.0", &format!("cut at {cut}"));
        let read = s.open(&key).and_then(|r| {
            let mut b = vec![0u8; r.len() as usize];
            r.read_at(&mut b, 0).map(|()| b)
        });
        assert_damaged(read, "t/bundle.0", &format!("read, cut at {cut}"));
    }
    // Chunks 0 and 1 swapped.
    let mut sw = raw[..HEADER].to_vec();
    sw.extend_from_slice(&raw[HEADER + full..HEADER + 2 * full]);
    sw.extend_from_slice(&raw[HEADER..HEADER + full]);
    sw.extend_from_slice(&raw[HEADER + 2 * full..]);
    assert_eq!(sw.len(), raw.len());
    mem.put(&key, &sw).expect("swap");
    assert_damaged(s.get(&key), "t/bundle.0", "swapped chunks");
    // The intact object copied under another key.
    mem.put(&key, &raw).expect("restore");
    mem.put(&k("t/bundle.9"), &raw).expect("copy");
    assert_eq!(s.get(&key).expect("intact"), d);
    assert_damaged(s.get(&k("t/bundle.9")), "t/bundle.9", "copied");
    // Sealed with another data key (another repository's object).
    let other = Encrypted::new(Arc::new(mem.clone()), DataKey::from_bytes(&[8u8; 32]));
    assert_damaged(other.get(&key), "t/bundle.0", "another data key");
    // A plain object where a sealed one belongs.
    mem.put(&k("t/plain"), &[b'x'; 100]).expect("plain");
    assert_damaged(s.get(&k("t/plain")), "t/plain", "plain");
    mem.put(&k("t/tiny"), &[0u8; 40]).expect("tiny");
    assert_damaged(s.size(&k("t/tiny")), "t/tiny", "size of a short object");
}

#[test]
fn damage_is_permanent_not_retried() {
    let mem = MemStore::new();
    let retrying = crate::retry::Retrying::new(Arc::new(mem.clone()));
    let log = retrying.failures();
    let s = Encrypted::new(Arc::new(retrying), DataKey::from_bytes(&[1u8; 32]));
    let key = k("x/catalog");
    s.put(&key, b"catalog body").expect("put");
    let mut raw = mem.get(&key).expect("raw");
    raw[HEADER] ^= 1;
    mem.put(&key, &raw).expect("tamper");
    let ops = mem.ops();
    let e = s.get(&key).expect_err("damaged");
    assert!(!e.is_transient());
    assert_eq!(mem.ops(), ops + 1, "read once, not retried");
    assert!(
        log.lock().expect("log").is_none(),
        "damage is not a failure of the store"
    );
    // A transient failure below is still retried.
    mem.put(&key, b"").expect("reset");
    s.put(&key, b"again").expect("put");
    mem.fail_op(mem.ops(), true);
    assert_eq!(s.get(&key).expect("retried"), b"again");
}

#[test]
fn keyring_unlocks_with_its_key_only_and_rotates() {
    let mem = MemStore::new();
    let (ring, unlocked) = Keyring::create(&pass("old secret"), CHEAP, 1).expect("create");
    ring.save(&mem).expect("save");
    let loaded = Keyring::load(&mem).expect("load");
    assert_eq!(loaded, ring);
    let again = loaded.unlock(&pass("old secret")).expect("unlock");
    assert_eq!(again.slot, unlocked.slot);
    assert_eq!(again.data_key().id(), ring.data_key_id());
    // A wrong key: the ids it has with the slot's salt and the keyring's ids are named.
    let e = loaded.unlock(&pass("guess")).expect_err("wrong");
    let msg = e.to_string();
    let held = sealed::hex(&unlocked.slot);
    assert!(matches!(e, KeyError::WrongKey { .. }), "{msg}");
    assert!(msg.contains(&held), "{msg}");
    assert!(!msg.contains("guess"), "never the key: {msg}");
    // Rotation: add a key, open with it, remove the old one, the old one is refused.
    let mut ring = loaded;
    let new_id = ring
        .add(&again, &pass("new secret"), CHEAP, 2)
        .expect("add");
    ring.save(&mem).expect("save");
    let by_new = Keyring::load(&mem)
        .expect("load")
        .unlock(&pass("new secret"))
        .expect("new key");
    assert_eq!(by_new.slot, new_id);
    assert_eq!(
        by_new.data_key().id(),
        ring.data_key_id(),
        "the same data key"
    );
    let e = ring
        .remove(&held, unlocked.slot)
        .expect_err("the key in use");
    assert!(e.to_string().contains("given to this command"), "{e}");
    ring.remove(&held, by_new.slot).expect("remove old");
    ring.save(&mem).expect("save");
    let ring = Keyring::load(&mem).expect("load");
    assert_eq!(ring.slots().len(), 1);
    assert!(matches!(
        ring.unlock(&pass("old secret")),
        Err(KeyError::WrongKey { .. })
    ));
    let mut last = ring.clone();
    let e = last
        .remove(&sealed::hex(&new_id), [0; 8])
        .expect_err("last");
    assert!(e.to_string().contains("only key"), "{e}");
    assert!(
        last.remove("0011223344556677", [0; 8]).is_err(),
        "unknown id"
    );
    // Data sealed under the first key's unlock reads with the new key's.
    let s1 = Encrypted::new(Arc::new(mem.clone()), unlocked.data_key());
    s1.put(&k("d/x"), b"payload").expect("put");
    let s2 = Encrypted::new(
        Arc::new(mem.clone()),
        ring.unlock(&pass("new secret")).expect("unlock").data_key(),
    );
    assert_eq!(s2.get(&k("d/x")).expect("get"), b"payload");
}

#[test]
fn hostile_keyrings_are_refused_without_panics_or_huge_allocations() {
    let (ring, _) = Keyring::create(&pass("p"), CHEAP, 1).expect("create");
    let good = String::from_utf8(ring.to_bytes()).expect("text");
    assert!(Keyring::parse(good.as_bytes()).is_ok());
    let m = format!("\"m_cost\": {}", CHEAP.m_cost);
    for bad in [
        good.replace(&m, "\"m_cost\": 4294967295"),
        good.replace(&m, "\"m_cost\": 2097152"),
        good.replace("\"t_cost\": 1", "\"t_cost\": 100000"),
        good.replace("\"p_cost\": 1", "\"p_cost\": 0"),
        good.replace("\"format\": 1", "\"format\": 2"),
        good.replace("argon2id", "scrypt"),
        good.replace("\"created\"", "\"extra\": 1, \"created\""),
        good[..good.len() / 2].to_string(),
        String::new(),
        "[]".into(),
    ] {
        let e = Keyring::parse(bad.as_bytes()).expect_err("refused");
        assert!(matches!(e, KeyError::BadKeyring { .. }), "{e}");
    }
    // Every single-byte change and every cut parses or is refused; none panics.
    let b = good.as_bytes();
    for i in 0..b.len() {
        let mut t = b.to_vec();
        t[i] = t[i].wrapping_add(1);
        let _ = Keyring::parse(&t);
        let _ = Keyring::parse(&b[..i]);
    }
}

#[test]
fn key_files_must_be_private() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().expect("tempdir");
    let f = d.path().join("key");
    std::fs::write(&f, b"file secret\n").expect("write");
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let src = KeySource::File(f.clone());
    let e = src.secret().expect_err("group-readable");
    assert!(
        matches!(e, KeyError::KeyFileMode { mode: 0o640, .. }),
        "{e}"
    );
    assert!(e.to_string().contains(&f.display().to_string()), "{e}");
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    assert_eq!(&src.secret().expect("0600")[..], b"file secret");
    // The same text as a passphrase is the same key (one trailing newline dropped).
    let (ring, u) = Keyring::create(&src, CHEAP, 1).expect("create");
    assert_eq!(
        ring.unlock(&pass("file secret")).expect("same").slot,
        u.slot
    );
    std::fs::write(&f, b"\n").expect("write");
    assert!(matches!(src.secret(), Err(KeyError::Empty { .. })));
    let missing = KeySource::File(d.path().join("none"));
    assert!(matches!(missing.secret(), Err(KeyError::KeyFile { .. })));
}
