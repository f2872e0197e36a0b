//! Fuzz target: `envelope::decode` and the streamed reader `envelope::stream::read` of any bytes, for every document kind and its type, never
//! panics; a document that decodes passes or fails its shape check (`Catalog::check`,
//! `Manifest::check_shape`) without panicking and encodes back to a document that decodes; a
//! retention policy and a catalog that pass go through the retention planner, whose plan keeps
//! every kept backup's parents and has one verdict per backup.
//!
//! The first byte picks the input's use: odd, the bytes are a whole document (header line and
//! body); even, they are a body put behind a valid header of the kind the byte names, so that
//! the CRC check does not stop the fuzzer before the JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ptrack_format::catalog::{CATALOG_VERSION, Catalog, Status};
use ptrack_format::envelope::{decode, encode, stream};
use ptrack_format::manifest::{MANIFEST_VERSION, Manifest};
use ptrack_format::paths::Digest;
use ptrack_format::policy::{POLICY_VERSION, RetentionPolicy};
use ptrack_format::repo::InstanceInfo;

const KINDS: [(&str, u32); 5] = [
    ("repository", 2),
    ("instance", 1),
    ("catalog", CATALOG_VERSION),
    ("manifest", MANIFEST_VERSION),
    ("retention-policy", POLICY_VERSION),
];

/// The planner on a checked catalog: one verdict per backup, every kept backup's parents kept.
fn plan(c: &Catalog, p: &RetentionPolicy) {
    for now in [0, 1_800_000_000, i64::MAX] {
        let plan = ptrack_backup::retention::plan(c, p, now);
        assert_eq!(plan.verdicts.len(), c.backups.len());
        for b in &c.backups {
            if plan.verdict(&b.id).is_some_and(|v| v.keep)
                && let Some(parent) = b.parent.as_deref()
                && c.get(parent).is_some_and(|p| p.status != Status::Deleting)
            {
                assert!(plan.verdict(parent).is_some_and(|v| v.keep), "{plan:?}");
            }
        }
    }
}

fn all_kinds(doc: &[u8]) {
    streamed_manifest(doc);
    let _ = decode::<serde_json::Value>(doc, "repository", 2, "fuzz");
    if let Ok(i) = decode::<InstanceInfo>(doc, "instance", 1, "fuzz") {
        let back: InstanceInfo = decode(&encode("instance", 1, &i), "instance", 1, "x").unwrap();
        assert_eq!(back, i);
    }
    if let Ok(c) = decode::<Catalog>(doc, "catalog", CATALOG_VERSION, "fuzz") {
        let ok = c.check().is_ok();
        if ok && let Some(last) = c.backups.last() {
            let _ = c.chain(&last.id);
            let _ = c.latest_ok();
            let _ = c.descendants(&c.backups[0].id);
            let p = RetentionPolicy {
                redundancy: Some(u32::from(doc.len() as u8 % 4)),
                window_days: Some(u32::MAX),
                wal_depth: Some(1),
            };
            plan(&c, &p);
            plan(&c, &RetentionPolicy::default());
        }
        let back: Catalog = decode(
            &encode("catalog", CATALOG_VERSION, &c),
            "catalog",
            CATALOG_VERSION,
            "x",
        )
        .unwrap();
        assert_eq!(back, c);
    }
    if let Ok(p) = decode::<RetentionPolicy>(doc, "retention-policy", POLICY_VERSION, "fuzz") {
        let back: RetentionPolicy = decode(
            &encode("retention-policy", POLICY_VERSION, &p),
            "retention-policy",
            POLICY_VERSION,
            "x",
        )
        .unwrap();
        assert_eq!(back, p);
        let _ = p.to_string();
        let _ = p.overridden_by(&p);
    }
    if let Ok(m) = decode::<Manifest>(doc, "manifest", MANIFEST_VERSION, "fuzz") {
        let _ = m.check_shape();
        let back: Manifest = decode(
            &encode("manifest", MANIFEST_VERSION, &m),
            "manifest",
            MANIFEST_VERSION,
            "x",
        )
        .unwrap();
        assert_eq!(back, m);
    }
}

/// The streamed reader (`envelope::stream::read`, how manifests are read) on the same bytes as a
/// file: it never panics, hashes the whole file, and decodes exactly what `decode` decodes.
fn streamed_manifest(doc: &[u8]) {
    let mem = ptrack_repo::memory::MemStore::new();
    let key = ptrack_repo::Key::new("manifest").unwrap();
    ptrack_repo::Storage::put(&mem, &key, doc).unwrap();
    let s = stream::read::<Manifest>(&mem, &key, "manifest", MANIFEST_VERSION).unwrap();
    assert_eq!(s.digest, Digest::of(doc));
    let d = decode::<Manifest>(doc, "manifest", MANIFEST_VERSION, "fuzz");
    match (s.value, d) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(_), Err(_)) => {}
        (a, b) => panic!("stream {} and decode {} disagree", a.is_ok(), b.is_ok()),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        all_kinds(data);
        return;
    };
    if sel & 1 == 1 {
        all_kinds(rest);
    } else {
        let (kind, version) = KINDS[usize::from(sel >> 1) % KINDS.len()];
        // Sometimes an older or newer version, which must be refused whatever the body.
        let version = match sel >> 4 {
            0 => version.saturating_sub(1),
            1 => version + 1,
            _ => version,
        };
        all_kinds(&ptrack_format::envelope::frame(kind, version, rest));
    }
});
