//! Fuzz target: reading an instance's catalog from record objects (`records::Records::load`)
//! never panics, whatever the objects' names and bytes. The input is split at `\n\n` into
//! objects; each starts with a name line (a record name, `index` or `catalog`, or anything).
//! Half of the time a body is put behind a valid header so that the CRC check lets the JSON
//! through. When the catalog loads, it passes or fails `Catalog::check` without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ptrack_format::records::Records;
use ptrack_repo::memory::MemStore;
use ptrack_repo::{Key, Storage};

fuzz_target!(|data: &[u8]| {
    let store = MemStore::new();
    let dir = Key::new("7").unwrap();
    let text = String::from_utf8_lossy(data);
    for (i, obj) in text.split("\n\n").enumerate().take(16) {
        let (name, body) = obj.split_once('\n').unwrap_or((obj, ""));
        let key = match name {
            "index" | "catalog" => dir.join(name),
            n => dir.join("records").and_then(|r| r.join(n)),
        };
        let Ok(key) = key else { continue };
        let kind = if name == "index" {
            "catalog-index"
        } else {
            "backup-record"
        };
        let bytes = if i % 2 == 0 {
            ptrack_format::envelope::frame(kind, 1, body.as_bytes())
        } else {
            body.as_bytes().to_vec()
        };
        store.put(&key, &bytes).unwrap();
    }
    if let Ok(cat) = Records::new(&store, &dir).load() {
        let _ = cat.check();
    }
});
