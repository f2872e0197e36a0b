//! Fuzz target: a manifest body (JSON) of any bytes: `Manifest` deserialisation (with its
//! `RelPath` and `Digest` fields) never panics, the shape check never panics, a parsed manifest
//! serialises back to itself, and every path it accepted is one `RelPath::from_bytes` accepts.
//! The same bytes are also tried as a `RelPath` (raw and as JSON) and a `Digest`, and as a
//! `ManifestHead` (entries skipped), which must agree with the whole manifest.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ptrack_backup::chain::ManifestHead;
use ptrack_format::manifest::{EntryKind, Manifest};
use ptrack_format::paths::{Digest, RelPath, from_hex};

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = RelPath::from_bytes(data) {
        assert_eq!(p.as_bytes(), data);
        let _ = p.to_string();
        let _ = p.components().count();
        let back: RelPath = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back, p);
    }
    let _ = serde_json::from_slice::<RelPath>(data);
    let _ = serde_json::from_slice::<Digest>(data);
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = from_hex(s);
    }
    // Ancestors are read without their entries (chain::load_chain_head).
    let head = serde_json::from_slice::<ManifestHead>(data);
    let Ok(m) = serde_json::from_slice::<Manifest>(data) else {
        return;
    };
    let head = head.expect("a manifest that parses whole parses without its entries");
    assert_eq!(
        (&head.parent, &head.parent_manifest, head.start_lsn),
        (&m.parent, &m.parent_manifest, m.start_lsn)
    );
    let shape = m.check_shape();
    for e in m
        .entries
        .iter()
        .chain(m.wal.iter().map(|w| w.entry.clone()))
    {
        assert!(RelPath::from_bytes(e.path.as_bytes()).is_ok());
        if shape.is_ok() {
            assert!(m.entry(&e.path).is_some() || m.wal.iter().any(|w| w.entry == e));
        }
        if let EntryKind::Data { parts, .. } = &e.kind {
            let _ = parts.iter().map(|p| u64::from(p.count)).sum::<u64>();
        }
    }
    let text = serde_json::to_vec(&m).unwrap();
    let back: Manifest = serde_json::from_slice(&text).unwrap();
    assert_eq!(back, m);
    assert_eq!(back.check_shape().is_ok(), shape.is_ok());
});
