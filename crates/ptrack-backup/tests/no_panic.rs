//! The readers of bytes ptrack did not just write, fed random and damaged input in the normal
//! test run (the cargo-fuzz targets in `fuzz/` go further): repository documents
//! (`envelope::decode` for each kind, then `Catalog::check` and `Manifest::check_shape`),
//! bundles (`BundleReader`), timeline history files (`parse_history`) and `--recovery-target`
//! values. None may panic; damage that a CRC-32C or BLAKE3 digest covers must be an error.
//!
//! Also: a repository written by ptrack 0.1 (format 1) and one marked with a newer format are
//! refused with a message that says which and what to do.
//!
//! The inputs come from a seeded xorshift generator: the same every run unless `PTRACK_SEED`
//! is set (the seed is printed). With `PTRACK_FUZZ_SEEDS=DIR`, `fuzz_seeds` writes the valid
//! inputs built here as seed corpora `DIR/<target>/` for the cargo-fuzz targets (`scripts/fuzz`).

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use ptrack_backup::target::{RecoveryTarget, parse_time, recovery_settings};
use ptrack_format::bundle::{
    BundleReader, BundleWriter, Compression, HEADER_SIZE, MAGIC, PageEntry, VERSION,
};
use ptrack_format::catalog::{BackupInfo, CATALOG_VERSION, Catalog, Mode, Status};
use ptrack_format::envelope::{decode, encode};
use ptrack_format::manifest::{IndexRef, MANIFEST_VERSION, Manifest, Stored};
use ptrack_format::paths::Digest;
use ptrack_format::repo::{InstanceInfo, Repository};
use ptrack_repo::local::LocalFs;
use ptrack_repo::location::Location;
use ptrack_repo::{Key, Storage};
use ptrack_types::Lsn;
use ptrack_wal::archive::parse_history;
use serde_json::{Value, json};

/// The repository marker's format version today (`repo.rs`).
const REPO_VERSION: u32 = 2;
/// The instance document's format version today (`repo.rs`).
const INSTANCE_VERSION: u32 = 1;

/// xorshift64*: small, seeded, good enough to pick bytes.
struct Rng(u64);

impl Rng {
    fn new(what: &str) -> Rng {
        let seed = std::env::var("PTRACK_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0x05ee_d0fb_17e5_u64);
        eprintln!("{what} with PTRACK_SEED={seed}");
        Rng(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    fn pick<'a, T>(&mut self, from: &'a [T]) -> &'a T {
        &from[self.below(from.len())]
    }
}

/// Damages `b` in one of several ways: a bit flipped, a byte changed, cut short, bytes removed,
/// random bytes inserted, a run overwritten with bytes from elsewhere in it.
fn mutate(rng: &mut Rng, b: &mut Vec<u8>) {
    if b.is_empty() {
        let n = 1 + rng.below(8);
        b.extend(rng.bytes(n));
        return;
    }
    let i = rng.below(b.len());
    match rng.below(6) {
        0 => b[i] ^= 1 << rng.below(8),
        1 => b[i] = b[i].wrapping_add(1 + rng.below(255) as u8),
        2 => b.truncate(i),
        3 => {
            let n = 1 + rng.below(16.min(b.len() - i));
            b.drain(i..i + n);
        }
        4 => {
            let n = 1 + rng.below(16);
            let junk = rng.bytes(n);
            b.splice(i..i, junk);
        }
        _ => {
            let n = 1 + rng.below(32.min(b.len() - i));
            let from = rng.below(b.len() - n + 1);
            let run: Vec<u8> = b[from..from + n].to_vec();
            b[i..i + n].copy_from_slice(&run);
        }
    }
}

/// The first index at which `a` and `b` differ (the shorter length when one is a prefix).
fn first_difference(a: &[u8], b: &[u8]) -> usize {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()))
}

fn digest_hex(what: &[u8]) -> String {
    Digest::of(what).to_string()
}

/// A manifest with every kind of entry, a non-UTF-8 path, a tail, WAL, removed and skipped.
fn manifest_json() -> Value {
    json!({
        "backup_id": "0TOUE89",
        "mode": "delta",
        "parent": "0TOUE80",
        "parent_manifest": digest_hex(b"parent manifest"),
        "system_identifier": 7_441_000_000_000_000_001_u64,
        "pg_major": 18,
        "blcksz": 8192,
        "wal_seg_size": 16_777_216,
        "data_checksum_version": 1,
        "compression": "lz4",
        "start_lsn": "0/2000028",
        "stop_lsn": "0/2000138",
        "timeline": 1,
        "from_standby": false,
        "bundles": [{"number": 0, "size": 4096}, {"number": 1, "size": 16}],
        "entries": [
            {"path": "PG_VERSION", "kind": "file", "size": 3, "digest": digest_hex(b"18\n"),
             "stored": {"bundle": 0, "offset": 16, "len": 3}},
            {"path": "backup_label", "kind": "file", "size": 3, "digest": digest_hex(b"18\n"),
             "stored": null},
            {"path": "base", "kind": "dir"},
            {"path": "base/5", "kind": "dir"},
            {"path": "base/5/16384", "kind": "data", "size": 16484, "blocks": 2, "base": false,
             "parts": [{"at": {"bundle": 0, "offset": 19, "len": 64}, "count": 2,
                        "digest": digest_hex(b"index")}],
             "pages": 2, "corrupt": [1],
             "tail": {"len": 100, "digest": digest_hex(b"tail"),
                      "stored": {"bundle": 0, "offset": 83, "len": 100}}},
            {"path": {"hex": "626173652f352f636166e9"}, "kind": "file", "size": 0,
             "digest": digest_hex(b""), "stored": {"bundle": 1, "offset": 16, "len": 0}},
            {"path": "pg_tblspc", "kind": "dir"},
            {"path": "pg_tblspc/16385", "kind": "link", "target": "/srv/ts1"}
        ],
        "wal": [
            {"path": "000000010000000000000002", "kind": "file", "size": 16_777_216,
             "digest": digest_hex(b"wal"), "stored": {"bundle": 1, "offset": 16, "len": 900}},
            {"path": "00000002.history", "kind": "file", "size": 0, "digest": digest_hex(b""),
             "stored": null}
        ],
        "removed": ["base/5/16390"],
        "skipped": [{"path": "pg_wal/x", "reason": "a symbolic link outside pg_tblspc"}]
    })
}

fn manifest() -> Manifest {
    let m: Manifest = serde_json::from_value(manifest_json()).expect("valid manifest");
    m.check_shape().expect("valid shape");
    m
}

fn backup_info(id: &str, parent: Option<&str>) -> BackupInfo {
    BackupInfo {
        id: id.into(),
        mode: if parent.is_some() {
            Mode::Delta
        } else {
            Mode::Full
        },
        parent: parent.map(Into::into),
        status: Status::Ok,
        start_lsn: Lsn(0x200_0028),
        stop_lsn: Some(Lsn(0x200_0138)),
        timeline: Some(ptrack_types::TimeLineId(1)),
        start_time: 1_790_000_000,
        end_time: Some(1_790_000_100),
        data_bytes: 1 << 30,
        stored_bytes: 1 << 20,
        wal_bytes: 16 << 20,
        compression: ptrack_format::stored::Compression::Lz4,
        pg_major: ptrack_types::PgMajorVersion::V18,
        manifest_digest: Some(Digest::of(id.as_bytes())),
        error: None,
        program_version: "0.2.0".into(),
        keep_until: None,
    }
}

fn catalog() -> Catalog {
    let mut err = backup_info("0TOUE99", Some("0TOUE89"));
    err.status = Status::Error;
    err.error = Some("interrupted".into());
    err.manifest_digest = None;
    Catalog {
        backups: vec![
            backup_info("0TOUE80", None),
            backup_info("0TOUE89", Some("0TOUE80")),
            err,
        ],
    }
}

fn instance() -> InstanceInfo {
    InstanceInfo {
        system_identifier: 7_441_000_000_000_000_001,
        pg_major: ptrack_types::PgMajorVersion::V18,
        blcksz: 8192,
        relseg_blocks: 131_072,
        wal_seg_size: ptrack_types::WalSegSize::DEFAULT,
        pgdata: "/srv/pg/data".into(),
    }
}

/// The valid documents: (kind, version, bytes).
fn documents() -> Vec<(&'static str, u32, Vec<u8>)> {
    vec![
        (
            "repository",
            REPO_VERSION,
            encode(
                "repository",
                REPO_VERSION,
                &json!({"created": 1_790_000_000, "program_version": "0.2.0"}),
            ),
        ),
        (
            "instance",
            INSTANCE_VERSION,
            encode("instance", INSTANCE_VERSION, &instance()),
        ),
        (
            "catalog",
            CATALOG_VERSION,
            encode("catalog", CATALOG_VERSION, &catalog()),
        ),
        (
            "manifest",
            MANIFEST_VERSION,
            encode("manifest", MANIFEST_VERSION, &manifest()),
        ),
    ]
}

/// Decodes `doc` as `kind` with its type and runs the checks readers run after decoding;
/// returns what was accepted, as JSON.
fn decode_as(kind: &str, version: u32, doc: &[u8]) -> Option<Value> {
    let v = match kind {
        "repository" => decode::<Value>(doc, kind, version, "t").ok()?,
        "instance" => {
            serde_json::to_value(decode::<InstanceInfo>(doc, kind, version, "t").ok()?).unwrap()
        }
        "catalog" => {
            let c: Catalog = decode(doc, kind, version, "t").ok()?;
            if c.check().is_ok()
                && let Some(last) = c.backups.last()
            {
                let _ = c.chain(&last.id);
            }
            serde_json::to_value(c).unwrap()
        }
        "manifest" => {
            let m: Manifest = decode(doc, kind, version, "t").ok()?;
            let _ = m.check_shape();
            serde_json::to_value(m).unwrap()
        }
        _ => unreachable!("{kind}"),
    };
    Some(v)
}

/// Where a document's body starts and ends (before the final newline).
fn body_range(doc: &[u8]) -> std::ops::Range<usize> {
    doc.iter().position(|&b| b == b'\n').unwrap() + 1..doc.len() - 1
}

#[test]
fn documents_of_random_bytes_are_refused() {
    let mut rng = Rng::new("documents_of_random_bytes_are_refused");
    let kinds: Vec<(&str, u32)> = documents().into_iter().map(|(k, v, _)| (k, v)).collect();
    for _ in 0..3000 {
        let n = rng.below(300);
        let mut b = rng.bytes(n);
        // Half of them with a plausible start, so that the header fields are reached.
        if rng.below(2) == 0 {
            let (kind, version) = *rng.pick(&kinds);
            let head = format!(
                "PTRACK {kind} {version} {:08x} {} ",
                rng.next() as u32,
                rng.below(400)
            );
            b.splice(0..0, head.bytes().take(rng.below(head.len() + 1)));
            if rng.below(2) == 0 {
                b.insert(head.len().min(b.len()), b'\n');
            }
        }
        for &(kind, version) in &kinds {
            assert!(
                decode_as(kind, version, &b).is_none(),
                "random bytes accepted as {kind}"
            );
        }
    }
}

#[test]
fn damaged_documents_are_refused() {
    let mut rng = Rng::new("damaged_documents_are_refused");
    let mut refused = 0;
    for (kind, version, doc) in documents() {
        let original = decode_as(kind, version, &doc).expect("valid document");
        for other in ["repository", "instance", "catalog", "manifest"] {
            if other != kind {
                assert!(decode::<Value>(&doc, other, version, "t").is_err());
            }
        }
        let body = body_range(&doc);
        for _ in 0..400 {
            let mut d = doc.clone();
            mutate(&mut rng, &mut d);
            let at = first_difference(&doc, &d);
            let got = decode_as(kind, version, &d);
            // The CRC-32C covers the body: any change there, or a cut short of its end, is
            // refused. The header is checked field by field; what it lets through (a leading
            // zero in a number, junk after the body) must read as the same document.
            if body.contains(&at) || d.len() < body.end {
                assert!(got.is_none(), "{kind}: damage at byte {at} accepted");
            }
            if let Some(v) = got {
                assert_eq!(
                    v, original,
                    "{kind}: damage at byte {at} changed the content"
                );
            } else {
                refused += 1;
            }
        }
        // Older and newer versions, whatever the body.
        // Manifest version 2 (before WAL entries' zero_tail) is still read.
        let oldest = if kind == "manifest" { 2 } else { version };
        for v in oldest..version {
            let body = &doc[body.clone()];
            assert!(
                decode::<Value>(
                    &ptrack_format::envelope::frame(kind, v, body),
                    kind,
                    version,
                    "t"
                )
                .is_ok()
            );
        }
        for v in [0, oldest - 1, version + 1, u32::MAX] {
            if v != version {
                let body = &doc[body.clone()];
                let e = decode::<Value>(
                    &ptrack_format::envelope::frame(kind, v, body),
                    kind,
                    version,
                    "t",
                )
                .unwrap_err()
                .to_string();
                let want = if v < version {
                    "older ptrack"
                } else {
                    "newer ptrack"
                };
                assert!(e.contains(want), "{kind} v{v}: {e}");
            }
        }
    }
    assert!(
        refused > 4 * 350,
        "only {refused} of 1600 damaged documents refused"
    );
}

/// Every node of a JSON tree as a JSON pointer.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                pointers(x, format!("{at}/{i}"), out);
            }
        }
        Value::Object(o) => {
            for (k, x) in o {
                pointers(
                    x,
                    format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                    out,
                );
            }
        }
        _ => {}
    }
    out.push(at);
}

/// Values that break fields: wrong types, out of range, hostile paths and digests, deep nesting.
fn hostile(rng: &mut Rng) -> Value {
    let deep = (0..rng.below(300)).fold(json!(0), |v, _| json!([v]));
    let choices = [
        Value::Null,
        json!(true),
        json!(-1),
        json!(0),
        json!(u64::MAX),
        json!(u32::MAX),
        json!(4_294_967_296_u64),
        json!(1e300),
        json!(""),
        json!("../../etc/passwd"),
        json!("/etc/shadow"),
        json!("base//5"),
        json!("a\u{0}b"),
        json!("pg_tblspc/x"),
        json!("0/0"),
        json!("FFFFFFFF/FFFFFFFF"),
        json!("1/2/3"),
        json!("G/0"),
        json!({"hex": "zz"}),
        json!({"hex": "2f6574632f706173737764"}),
        json!({"hex": "2e2e"}),
        json!("a".repeat(5000)),
        json!("0".repeat(64)),
        json!("é".repeat(32)),
        json!([]),
        json!({}),
        json!(["dir"]),
        json!("UNKNOWN"),
        json!("data"),
        json!("link"),
        deep,
    ];
    rng.pick(&choices).clone()
}

/// One structural change to a document tree: replace, remove or duplicate a node.
fn mutate_tree(rng: &mut Rng, v: &mut Value) {
    let mut ps = Vec::new();
    pointers(v, String::new(), &mut ps);
    let p = rng.pick(&ps).clone();
    let how = rng.below(3);
    if how == 0 || p.is_empty() {
        let h = hostile(rng);
        *v.pointer_mut(&p).expect("pointer") = h;
        return;
    }
    let (parent, key) = p.rsplit_once('/').expect("not the root");
    let key = key.replace("~1", "/").replace("~0", "~");
    match v.pointer_mut(parent).expect("parent") {
        Value::Object(o) => {
            o.remove(&key);
        }
        Value::Array(a) => {
            let i: usize = key.parse().expect("index");
            if how == 1 {
                a.remove(i);
            } else {
                let x = a[i].clone();
                a.insert(i, x);
            }
        }
        _ => unreachable!(),
    }
}

/// Rounds per document kind (each parses a document twice; a manifest takes about a
/// millisecond in a debug build).
const HOSTILE_ROUNDS: usize = 100;

#[test]
fn documents_with_hostile_content_never_panic() {
    let mut rng = Rng::new("documents_with_hostile_content_never_panic");
    let trees: Vec<(&str, u32, Value)> = vec![
        (
            "repository",
            REPO_VERSION,
            json!({"created": 1_790_000_000, "program_version": "0.2.0"}),
        ),
        (
            "instance",
            INSTANCE_VERSION,
            serde_json::to_value(instance()).unwrap(),
        ),
        (
            "catalog",
            CATALOG_VERSION,
            serde_json::to_value(catalog()).unwrap(),
        ),
        ("manifest", MANIFEST_VERSION, manifest_json()),
    ];
    let mut accepted = 0;
    for (kind, version, tree) in &trees {
        for _ in 0..HOSTILE_ROUNDS {
            let mut t = tree.clone();
            for _ in 0..1 + rng.below(3) {
                mutate_tree(&mut rng, &mut t);
            }
            let body = serde_json::to_vec(&t).unwrap();
            accepted += usize::from(
                decode_as(
                    kind,
                    *version,
                    &ptrack_format::envelope::frame(kind, *version, &body),
                )
                .is_some(),
            );
            // And as text damaged below the JSON level, behind a valid header.
            let mut text = serde_json::to_vec_pretty(tree).unwrap();
            mutate(&mut rng, &mut text);
            decode_as(
                kind,
                *version,
                &ptrack_format::envelope::frame(kind, *version, &text),
            );
        }
    }
    // Some changes are harmless (a removed `skipped`, a duplicated backup in a valid place).
    assert!(
        accepted < 4 * HOSTILE_ROUNDS,
        "every hostile document accepted"
    );
    // The shape checks catch what serde cannot.
    let mut m = manifest();
    let mut v: Vec<_> = m.entries.iter().collect();
    v.swap(0, 1);
    m.entries = v.into_iter().collect();
    assert!(m.check_shape().unwrap_err().contains("sorted"));
    let mut m = manifest();
    m.blcksz = 1000;
    assert!(m.check_shape().is_err());
    let mut c = catalog();
    c.backups[0].id = "../x".into();
    assert!(c.check().is_err());
}

/// A page with a header and some content (`pd_lsn`, `pd_lower`/`pd_upper`, tuples).
fn page(rng: &mut Rng, blcksz: usize) -> Vec<u8> {
    let mut p = vec![0u8; blcksz];
    p[0..8].copy_from_slice(&[0, 0, 0, 1, 0x10, 0, 0, 0]);
    p[12..14].copy_from_slice(&28u16.to_le_bytes());
    p[14..16].copy_from_slice(&((blcksz - 400) as u16).to_le_bytes());
    let n = rng.below(blcksz / 2);
    let fill = rng.bytes(n);
    p[blcksz - n..].copy_from_slice(&fill);
    p
}

/// A bundle written by `BundleWriter`, with what it stores.
struct Sample {
    kind: Compression,
    index: IndexRef,
    entries: Vec<PageEntry>,
    pages: Vec<Vec<u8>>,
    blob: (Stored, Vec<u8>),
    file: Vec<u8>,
}

/// A local store in `dir`, its bundles below the key `b`.
fn store(dir: &Path) -> Arc<dyn Storage> {
    Arc::new(LocalFs::new(dir))
}

fn bkey() -> Key {
    Key::new("b").unwrap()
}

fn bundle_path(dir: &Path, n: u32) -> std::path::PathBuf {
    dir.join("b").join(format!("bundle.{n}"))
}

fn sample_bundle(rng: &mut Rng, dir: &Path, kind: Compression) -> Sample {
    let mut w = BundleWriter::create(&*store(dir), &bkey(), 0, kind).unwrap();
    let mut entries = Vec::new();
    let mut pages = Vec::new();
    for b in 0..4 {
        let p = if b == 2 {
            vec![0u8; 8192]
        } else {
            page(rng, 8192)
        };
        entries.push(w.put_page(&p, b).unwrap());
        pages.push(p);
    }
    let blob_data: Vec<u8> = b"PG_VERSION 18\n".repeat(20);
    let blob = w.put_blob(&blob_data).unwrap();
    let index = w.put_index(&entries).unwrap();
    w.finish().unwrap();
    Sample {
        kind,
        index,
        entries,
        pages,
        blob: (blob, blob_data),
        file: std::fs::read(bundle_path(dir, 0)).unwrap(),
    }
}

/// Reads everything `s` stores from the bundle in `dir`; returns which reads succeeded:
/// (index, each page, blob). Pages are read from the index entries when the index reads,
/// else from the entries as written.
fn read_all(dir: &Path, s: &Sample) -> (bool, Vec<bool>, bool) {
    let mut r = BundleReader::new(store(dir), &bkey(), s.kind);
    let idx = r.index(&s.index);
    let index_ok = idx.as_ref().is_ok_and(|e| *e == s.entries);
    let entries = idx.unwrap_or_else(|_| s.entries.clone());
    let mut out = Vec::new();
    let pages = entries
        .iter()
        .zip(&s.pages)
        .map(|(e, want)| r.page(0, e, 8192, &mut out).is_ok() && out == *want)
        .collect();
    let (at, data) = &s.blob;
    let blob = r
        .blob(*at, data.len() as u64, Digest::of(data))
        .is_ok_and(|b| b == *data);
    (index_ok, pages, blob)
}

fn covers(offset: u64, len: u64, changed: (usize, usize)) -> bool {
    let (a, b) = (changed.0 as u64, changed.1 as u64);
    a < offset + len && b > offset
}

#[test]
fn damaged_bundles_are_caught_by_their_digests_and_crcs() {
    let mut rng = Rng::new("damaged_bundles_are_caught_by_their_digests_and_crcs");
    let dir = tempfile::tempdir().unwrap();
    for kind in [Compression::None, Compression::Lz4, Compression::Zstd] {
        let s = sample_bundle(&mut rng, dir.path(), kind);
        assert_eq!(read_all(dir.path(), &s), (true, vec![true; 4], true));
        let path = bundle_path(dir.path(), 0);
        for _ in 0..100 {
            let mut f = s.file.clone();
            // Byte changes in place (mutations that shift bytes move every record).
            let n = 1 + rng.below(4);
            let at = rng.below(f.len() - n);
            for x in &mut f[at..at + n] {
                *x ^= 1 + rng.below(255) as u8;
            }
            std::fs::write(&path, &f).unwrap();
            let (index, pages, blob) = read_all(dir.path(), &s);
            let changed = (at, at + n);
            let header = at < HEADER_SIZE as usize;
            let idx = s.index.at;
            assert_eq!(
                index,
                !header && !covers(idx.offset, idx.len, changed),
                "{kind:?}: index after damage at {at}"
            );
            for (e, ok) in s.entries.iter().zip(pages) {
                // A zero page stores nothing (it is rebuilt from its flags); the others are
                // read from the bundle and checked against their CRC-32C.
                let damaged = e.len > 0 && (header || covers(e.offset, e.len.into(), changed));
                assert_eq!(
                    ok, !damaged,
                    "{kind:?}: block {} after damage at {at}",
                    e.block
                );
            }
            let (b, _) = s.blob;
            assert_eq!(
                blob,
                !header && !covers(b.offset, b.len, changed),
                "{kind:?}: blob after damage at {at}"
            );
        }
        // Truncated bundles: whatever lies past the end is an error.
        for _ in 0..40 {
            let cut = rng.below(s.file.len());
            std::fs::write(&path, &s.file[..cut]).unwrap();
            let (index, _, blob) = read_all(dir.path(), &s);
            let end = |st: Stored| st.offset + st.len;
            assert_eq!(index, cut as u64 >= end(s.index.at) && cut >= 16);
            assert_eq!(blob, cut as u64 >= end(s.blob.0) && cut >= 16);
        }
        // Read with the wrong compression: refused by the header.
        std::fs::write(&path, &s.file).unwrap();
        let other = if kind == Compression::Zstd {
            Compression::Lz4
        } else {
            Compression::Zstd
        };
        let mut r = BundleReader::new(store(dir.path()), &bkey(), other);
        assert!(
            r.index(&s.index)
                .unwrap_err()
                .to_string()
                .contains("bad header")
        );
    }
}

#[test]
fn bundle_reader_never_panics_on_random_bundles_and_references() {
    let mut rng = Rng::new("bundle_reader_never_panics_on_random_bundles_and_references");
    let dir = tempfile::tempdir().unwrap();
    let path = bundle_path(dir.path(), 0);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let wild = |rng: &mut Rng, flen: u64| -> u64 {
        match rng.below(4) {
            0 => rng.next(),
            1 => u64::MAX - rng.below(64) as u64,
            _ => rng.next() % (flen + 64),
        }
    };
    for round in 0..200 {
        let kind = *rng.pick(&[Compression::None, Compression::Lz4, Compression::Zstd]);
        let mut f = Vec::new();
        if round % 3 != 0 {
            f.extend_from_slice(MAGIC);
            f.extend_from_slice(&VERSION.to_le_bytes());
            f.extend_from_slice(&(rng.below(4) as u32).to_le_bytes());
        }
        let n = rng.below(20_000);
        f.extend(rng.bytes(n));
        std::fs::write(&path, &f).unwrap();
        let flen = f.len() as u64;
        let mut r = BundleReader::new(store(dir.path()), &bkey(), kind);
        let bundle = if rng.below(8) == 0 {
            rng.next() as u32
        } else {
            0
        };
        for _ in 0..5 {
            let at = Stored {
                bundle,
                offset: wild(&mut rng, flen),
                len: wild(&mut rng, flen),
            };
            let count = rng.next() as u32 >> rng.below(32);
            let digest = Digest(rng.bytes(32).try_into().unwrap());
            assert!(r.index(&IndexRef { at, count, digest }).is_err());
            let e = PageEntry {
                block: rng.next() as u32,
                flags: rng.next() as u16,
                checksum: 0,
                lsn: 0,
                offset: wild(&mut rng, flen),
                len: rng.next() as u32 >> rng.below(32),
                crc: rng.next() as u32,
            };
            let mut out = Vec::new();
            let blcksz = 1024 << rng.below(6);
            let _ = r.page(bundle, &e, blcksz, &mut out);
            // Sizes stay bounded here: a stored file's size comes from its manifest.
            let size = rng.below(1 << 20) as u64;
            let _ = r.blob(at, size, digest);
        }
    }
}

#[test]
fn history_files_and_recovery_targets_never_panic() {
    let mut rng = Rng::new("history_files_and_recovery_targets_never_panic");
    let alphabet: Vec<char> = "0123456789abcdefABCDEF/:.-+ \t\n#TZzUGMtimelsnxdae\u{e9}\u{1f600}\0"
        .chars()
        .collect();
    let valid_history =
        "1\t0/3000158\tno recovery target specified\n\n# comment\n2\t0/5000000\tx\n";
    assert_eq!(parse_history(valid_history).map(|h| h.len()), Some(2));
    let targets = [
        "immediate",
        "lsn:0/1",
        "lsn:16/B374D848",
        "time:2026-12-01 10:00:30+02",
        "time:2026-12-01T10:00:00.123456 UTC",
        "time:2026-12-01 10:00:00-0530",
        "time:2000-03-01 00:00:00 +05:30",
        "xid:1234",
        "name:before upgrade",
    ];
    for t in targets {
        assert!(RecoveryTarget::from_str(t).is_ok(), "{t}");
    }
    let backup = backup_info("0TOUE89", None);
    let check = |s: &str| {
        if let Some(h) = parse_history(s) {
            assert!(h.windows(2).all(|w| w[0].tli.0 < w[1].tli.0));
        }
        if let Ok(t) = RecoveryTarget::from_str(s) {
            let _ = t.before_consistency(&backup);
            assert!(recovery_settings(Some(&t), None, "X").contains("recovery_target"));
        }
        if let Some(t) = parse_time(s) {
            let (lo, hi) = t.bounds();
            assert!(lo <= hi);
        }
        for k in ["lsn:", "time:", "xid:", "name:"] {
            let _ = RecoveryTarget::from_str(&format!("{k}{s}"));
        }
    };
    for _ in 0..4000 {
        let n = rng.below(40);
        let s: String = (0..n).map(|_| *rng.pick(&alphabet)).collect();
        check(&s);
        // Damaged valid inputs, mostly still text.
        let base = if rng.below(2) == 0 {
            valid_history.to_string()
        } else {
            rng.pick(&targets).to_string()
        };
        let mut b = base.into_bytes();
        mutate(&mut rng, &mut b);
        check(&String::from_utf8_lossy(&b));
    }
    // Zones with characters that are not ASCII (string slicing by byte index).
    for z in [
        "+a\u{e9}1",
        "-\u{e9}\u{e9}",
        "+1\u{e9}1",
        "+\u{e9}:11",
        "+12:\u{e9}",
    ] {
        let s = format!("time:2026-12-01 10:00 {z}");
        assert!(RecoveryTarget::from_str(&s).is_err(), "{s}");
        assert!(parse_time(&s[5..]).is_none());
    }
}

// ---------------------------------------------------------------------------------------------
// Repositories of other formats.

const SYSID: u64 = 7_441_000_000_000_000_001;

/// A repository as ptrack 0.1 wrote it (format 1): marker v1, instance v1, catalog v1 whose
/// records carry `manifest_crc`, and one full backup whose manifest v1 identifies files by
/// CRC-32C (`git show 53cb4b7:crates/ptrack-backup/src/{repo,catalog,manifest}.rs`).
fn write_format_1_repository(root: &Path) -> Vec<u8> {
    let inst = root.join(SYSID.to_string());
    let backup = inst.join("0TOUE89");
    std::fs::create_dir_all(&backup).unwrap();
    std::fs::write(
        root.join("ptrack-repo"),
        encode(
            "repository",
            1,
            &json!({"created": 1_790_000_000, "program_version": "0.1.0"}),
        ),
    )
    .unwrap();
    std::fs::write(
        inst.join("instance"),
        encode(
            "instance",
            1,
            &json!({"system_identifier": SYSID, "pg_major": 18, "blcksz": 8192,
                    "relseg_blocks": 131_072, "wal_seg_size": 16_777_216,
                    "pgdata": "/srv/pg/data"}),
        ),
    )
    .unwrap();
    std::fs::write(inst.join("lock"), b"").unwrap();
    let mut w = BundleWriter::create(
        &LocalFs::new(root),
        &Key::new(&format!("{SYSID}/0TOUE89")).unwrap(),
        0,
        Compression::Lz4,
    )
    .unwrap();
    let version = w.put_blob(b"18\n").unwrap();
    w.finish().unwrap();
    let manifest = encode(
        "manifest",
        1,
        &json!({
            "backup_id": "0TOUE89", "parent": null, "system_identifier": SYSID,
            "pg_major": 18, "blcksz": 8192, "wal_seg_size": 16_777_216,
            "data_checksums": true, "compression": "lz4",
            "start_lsn": "0/2000028", "stop_lsn": "0/2000138", "timeline": 1,
            "bundles": [{"number": 0, "size": 19}],
            "entries": [
                {"path": "PG_VERSION", "kind": "file", "size": 3,
                 "crc": crc32c::crc32c(b"18\n"), "stored": version},
                {"path": "global", "kind": "dir"}
            ],
            "wal": [], "removed": []
        }),
    );
    std::fs::write(backup.join("manifest"), &manifest).unwrap();
    std::fs::write(
        inst.join("catalog"),
        encode(
            "catalog",
            1,
            &json!({"backups": [{
                "id": "0TOUE89", "mode": "full", "parent": null, "status": "OK",
                "start_lsn": "0/2000028", "stop_lsn": "0/2000138", "timeline": 1,
                "start_time": 1_790_000_000, "end_time": 1_790_000_100,
                "data_bytes": 40_000_000, "stored_bytes": 19, "wal_bytes": 16_777_216,
                "compression": "lz4", "pg_major": 18,
                "manifest_crc": crc32c::crc32c(&manifest), "error": null,
                "program_version": "0.1.0"}]}),
        ),
    )
    .unwrap();
    manifest
}

fn assert_refused_as_format_1(e: impl std::fmt::Display, file: &str) {
    let e = e.to_string();
    for want in [file, "format version 1", "older ptrack", "ptrack init"] {
        assert!(e.contains(want), "message lacks {want:?}: {e}");
    }
}

#[test]
fn a_format_1_repository_is_refused_with_what_to_do() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("repo");
    let manifest = write_format_1_repository(&root);
    let before = std::fs::read(root.join("ptrack-repo")).unwrap();

    // Every command opens the repository first.
    let e = Repository::open(&Location::Dir(root.clone())).unwrap_err();
    assert_refused_as_format_1(&e, "ptrack-repo");
    assert!(e.to_string().contains("0.1"), "{e}");
    assert!(Repository::init(&Location::Dir(root.clone())).is_err());
    assert_eq!(std::fs::read(root.join("ptrack-repo")).unwrap(), before);

    // Each document on its own, as if the marker had been rewritten by hand.
    std::fs::write(
        root.join("ptrack-repo"),
        encode(
            "repository",
            REPO_VERSION,
            &json!({"created": 1_790_000_000, "program_version": "0.1.0"}),
        ),
    )
    .unwrap();
    let repo = Repository::open(&Location::Dir(root.clone())).unwrap();
    assert_eq!(repo.instances().unwrap(), vec![SYSID]);
    // The instance document did not change between the formats: read or refused clearly.
    match repo.instance(SYSID) {
        Ok(i) => assert_eq!(i.unwrap().info.pgdata, "/srv/pg/data"),
        Err(e) => assert_refused_as_format_1(e, "instance"),
    }
    let inst = repo.only_instance(None).unwrap();
    assert_refused_as_format_1(inst.catalog().unwrap_err(), "catalog");
    assert_refused_as_format_1(inst.lock("test").unwrap_err(), "catalog");
    let path = inst
        .backup_key("0TOUE89")
        .unwrap()
        .join("manifest")
        .unwrap();
    assert_refused_as_format_1(
        ptrack_format::envelope::read::<Manifest>(
            inst.store(),
            &path,
            "manifest",
            MANIFEST_VERSION,
        )
        .unwrap_err(),
        "manifest",
    );
    // Through the checked reader, with a catalog record that vouches for the file.
    let mut b = backup_info("0TOUE89", None);
    b.manifest_digest = Some(Digest::of(&manifest));
    assert_refused_as_format_1(
        ptrack_backup::chain::read_manifest(&inst, &b).unwrap_err(),
        "manifest",
    );
}

#[test]
fn a_repository_of_a_newer_format_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("repo");
    Repository::init(&Location::Dir(root.clone())).unwrap();
    let marker = root.join("ptrack-repo");
    std::fs::write(
        &marker,
        encode(
            "repository",
            4,
            &json!({"created": 1_890_000_000, "program_version": "0.9.0", "more": [1]}),
        ),
    )
    .unwrap();
    let e = Repository::open(&Location::Dir(root.clone()))
        .unwrap_err()
        .to_string();
    // Format 3 is an encrypted repository's marker; 4 is newer than this ptrack.
    for want in ["ptrack-repo", "format version 4", "newer ptrack"] {
        assert!(e.contains(want), "message lacks {want:?}: {e}");
    }
    assert!(!e.contains("older"), "{e}");
    // Documents of a newer format behind a current marker too.
    for (kind, version) in [("catalog", CATALOG_VERSION), ("manifest", MANIFEST_VERSION)] {
        let doc = encode(kind, version + 1, &json!({"backups": []}));
        let e = decode::<Value>(&doc, kind, version, kind)
            .unwrap_err()
            .to_string();
        assert!(e.contains("newer ptrack"), "{e}");
    }
}

// ---------------------------------------------------------------------------------------------
// Seed corpora for the cargo-fuzz targets.

/// Writes the valid inputs built here to `$PTRACK_FUZZ_SEEDS/<target>/` (fuzz/fuzz_targets/*.rs
/// say how each target reads its input); without the variable it only checks that they are
/// valid.
#[test]
fn fuzz_seeds() {
    let mut rng = Rng::new("fuzz_seeds");
    let mut seeds: Vec<(&str, Vec<u8>)> = Vec::new();
    // envelope: odd first byte = a whole document; even = kind index << 1, then the body.
    for (i, (kind, version, doc)) in documents().into_iter().enumerate() {
        assert!(decode_as(kind, version, &doc).is_some());
        seeds.push(("envelope", [&[1u8][..], &doc].concat()));
        let body = &doc[body_range(&doc)];
        seeds.push(("envelope", [&[0x30 | (i as u8) << 1][..], body].concat()));
    }
    // manifest: the JSON body.
    seeds.push(("manifest", serde_json::to_vec_pretty(&manifest()).unwrap()));
    seeds.push(("manifest", serde_json::to_vec(&manifest_json()).unwrap()));
    // bundle: 32 control bytes placing the index, a page and the stored file, then the bundle
    // file (the layout is in fuzz/fuzz_targets/bundle.rs).
    let dir = tempfile::tempdir().unwrap();
    for (code, kind) in [Compression::None, Compression::Lz4, Compression::Zstd]
        .into_iter()
        .enumerate()
    {
        let s = sample_bundle(&mut rng, dir.path(), kind);
        let mut c = [0u8; 32];
        c[0] = code as u8;
        c[1..5].copy_from_slice(&(s.index.at.offset as u32).to_le_bytes());
        c[5] = s.index.count as u8;
        // Its flags, and a page size of 8192 (byte 6 modulo 3 is 0; bit 3 is no flag).
        let flags = s.entries[0].flags as u8;
        c[6] = flags + 8 * (flags % 3);
        c[7..11].copy_from_slice(&(s.entries[0].offset as u32).to_le_bytes());
        c[11..13].copy_from_slice(&(s.entries[0].len as u16).to_le_bytes());
        c[14..18].copy_from_slice(&(s.blob.0.offset as u32).to_le_bytes());
        c[18..22].copy_from_slice(&(s.blob.0.len as u32).to_le_bytes());
        c[22] = u8::from(kind != Compression::None);
        c[23..27].copy_from_slice(&(s.blob.1.len() as u32).to_le_bytes());
        c[27..31].copy_from_slice(&s.entries[0].crc.to_le_bytes());
        seeds.push(("bundle", [&c[..], &s.file].concat()));
    }
    // changeset: the bytes after the magic, without the CRC (the target adds both).
    let mut cs = Vec::new();
    cs.extend_from_slice(&1u32.to_le_bytes()); // version
    cs.extend_from_slice(&1u32.to_le_bytes()); // flags
    for v in [SYSID, 0x200_0028, 0x300_0000] {
        cs.extend_from_slice(&v.to_le_bytes());
    }
    for v in [1u32, 1, 1] {
        cs.extend_from_slice(&v.to_le_bytes()); // forks, resets, unsafe
    }
    for v in [1663u32, 16400] {
        cs.extend_from_slice(&v.to_le_bytes());
    }
    cs.extend_from_slice(&[2, 130, 0x11, 0]);
    cs.extend_from_slice(&0x200_0100u64.to_le_bytes());
    for v in [1663u32, 5, 16384] {
        cs.extend_from_slice(&v.to_le_bytes());
    }
    cs.extend_from_slice(&[0, 1, 0, 0]); // main fork, has a limit
    cs.extend_from_slice(&10u32.to_le_bytes());
    // A roaring bitmap (portable format, no run containers) of blocks 1, 7 and 9.
    let mut bm = Vec::new();
    for v in [12346u32, 1] {
        bm.extend_from_slice(&v.to_le_bytes());
    }
    bm.extend_from_slice(&[0, 0, 2, 0]); // key 0, cardinality 3
    bm.extend_from_slice(&16u32.to_le_bytes()); // offset of the container
    for v in [1u16, 7, 9] {
        bm.extend_from_slice(&v.to_le_bytes());
    }
    cs.extend_from_slice(&(bm.len() as u32).to_le_bytes());
    cs.extend_from_slice(&bm);
    seeds.push(("changeset", cs));
    // map_image: 4 slots, image of the right size with the CRC added and the identity taken
    // from the header; then the header words and slots.
    let mut map = vec![3u8, 0xe0];
    for w in [
        u64::from_le_bytes(*b"PTRKMAP\0"),
        2,
        SYSID,
        0x100_0000,
        0x200_0000,
        1,
        4,
        18,
        1,
    ] {
        map.extend_from_slice(&w.to_le_bytes());
    }
    map.resize(2 + 16 * 8, 0);
    for s in [0u64, 0x150_0000, 0, 0x1f0_0000] {
        map.extend_from_slice(&s.to_le_bytes());
    }
    seeds.push(("map_image", map));
    // history and recovery_target: text.
    seeds.push((
        "history",
        b"1\t0/3000158\tno recovery target specified\n\n# comment\n2\t16/B374D848\tbefore 2026-12-01\n"
            .to_vec(),
    ));
    for t in [
        "immediate",
        "lsn:16/B374D848",
        "time:2026-12-01 10:00:30.25+02:00",
        "xid:1234",
        "name:before upgrade",
    ] {
        seeds.push(("recovery_target", t.as_bytes().to_vec()));
    }
    let Some(out) = std::env::var_os("PTRACK_FUZZ_SEEDS") else {
        return;
    };
    for (i, (target, bytes)) in seeds.iter().enumerate() {
        let d = Path::new(&out).join(target);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(format!("seed-{i:02}")), bytes).unwrap();
    }
}
