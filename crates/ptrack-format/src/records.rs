//! Where an instance's catalog lives: one write-once record object per backup state, and an
//! index that only speeds reading up. No object is ever rewritten in place, so two writers can
//! never lose each other's updates on a store without rename or conditional writes (S3):
//!
//! ```text
//! <sysid>/records/<ID>.<gen>   a `backup-record` document: the BackupInfo of backup ID, state
//!                              number gen (10 decimal digits); the highest gen is current
//! <sysid>/index                a `catalog-index` document: every current record with its gen
//!                              (a cache, rebuilt from the records whenever it disagrees)
//! <sysid>/catalog              legacy (format 2): the whole catalog in one document; read when
//!                              no record exists, converted into records by the first writer
//! ```
//!
//! A new state of a backup is written as gen + 1 before the older gens are deleted, so a crash
//! leaves either state, never none. Reading lists `records/` once, takes every record the index
//! holds at its current gen, and reads only the others.

use std::collections::BTreeMap;

use ptrack_repo::{Key, Storage};
use serde::{Deserialize, Serialize};

use crate::catalog::{BackupInfo, CATALOG_VERSION, Catalog, is_backup_id};
use crate::{Error, RepoDamage, Result, envelope};

/// `backup-record` document format version.
pub const RECORD_VERSION: u32 = 1;
/// `catalog-index` document format version.
pub const INDEX_VERSION: u32 = 1;
/// The highest state number a record name holds (10 digits).
pub const MAX_GENERATION: u64 = 9_999_999_999;

/// One index entry: a record and the gen it was read from.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Indexed {
    generation: u64,
    info: BackupInfo,
}

/// The index document.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    records: Vec<Indexed>,
}

/// The record object name of `id` at `generation`.
pub fn record_name(id: &str, generation: u64) -> String {
    format!("{id}.{generation:010}")
}

/// Parses a record object name into (ID, gen); `None` when it is not one.
pub fn parse_record_name(name: &str) -> Option<(&str, u64)> {
    let (id, g) = name.split_once('.')?;
    if !is_backup_id(id) || g.len() != 10 || !g.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((id, g.parse().ok()?))
}

/// A catalog and the gens of the record objects behind it (every gen of each backup,
/// ascending; `[0]` for a legacy catalog's backups).
#[derive(Debug, Clone)]
pub struct Snapshot {
    cat: Catalog,
    gens: BTreeMap<String, Vec<u64>>,
}

impl Snapshot {
    /// The catalog.
    pub fn catalog(&self) -> &Catalog {
        &self.cat
    }
}

/// The catalog objects of one instance.
pub struct Records<'a> {
    store: &'a dyn Storage,
    dir: &'a Key,
}

impl<'a> Records<'a> {
    /// The records of the instance whose objects are under `dir`.
    pub fn new(store: &'a dyn Storage, dir: &'a Key) -> Records<'a> {
        Records { store, dir }
    }

    fn records_dir(&self) -> Result<Key> {
        Ok(self.dir.join("records")?)
    }

    /// Every record object, by ID, with all its gens (ascending). A name that is not a record's
    /// is damage, reported with its key (never passed over: it could be a backup's state).
    fn list(&self) -> Result<BTreeMap<String, Vec<u64>>> {
        let prefix = self.records_dir()?;
        let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for k in self.store.list(Some(&prefix))? {
            let name = k.as_str().rsplit('/').next().unwrap_or_default();
            let (id, g) = parse_record_name(name)
                .ok_or_else(|| Error::from(RepoDamage::NotARecord(k.to_string())))?;
            out.entry(id.to_string()).or_default().push(g);
        }
        for gens in out.values_mut() {
            gens.sort_unstable();
        }
        Ok(out)
    }

    /// The legacy one-document catalog, if there is one.
    fn legacy(&self) -> Result<Option<Catalog>> {
        let k = self.dir.join("catalog")?;
        match envelope::read(self.store, &k, "catalog", CATALOG_VERSION) {
            Err(e) if e.is_not_found() => Ok(None),
            r => r.map(Some),
        }
    }

    /// The index, or an empty one when it is missing or damaged (it is only a cache).
    fn index(&self) -> Result<BTreeMap<String, Indexed>> {
        let k = self.dir.join("index")?;
        let idx: Index = match envelope::read(self.store, &k, "catalog-index", INDEX_VERSION) {
            Ok(i) => i,
            // Damage (a failed check, or a failed tag in an encrypted repository) is harmless here:
            // the index is only a cache and every entry is checked against the listing.
            Err(e) if e.is_not_found() || e.is_damage() => Index::default(),
            Err(e) => return Err(e),
        };
        Ok(idx
            .records
            .into_iter()
            .map(|e| (e.info.id.clone(), e))
            .collect())
    }

    fn read_record(&self, id: &str, generation: u64) -> Result<BackupInfo> {
        let k = self.records_dir()?.join(&record_name(id, generation))?;
        let info: BackupInfo = envelope::read(self.store, &k, "backup-record", RECORD_VERSION)?;
        if info.id != id {
            return Err(RepoDamage::RecordOfOther {
                key: k.to_string(),
                found: info.id.escape_debug().to_string(),
                expected: id.to_string(),
            }
            .into());
        }
        Ok(info)
    }

    /// The current catalog with every gen of each record (ascending; `[0]` for legacy ones). A
    /// record listed but gone when read was replaced by a newer state meanwhile: the listing is
    /// taken again.
    fn load_with_gens(&self, use_index: bool) -> Result<Snapshot> {
        const ATTEMPTS: usize = 8;
        let mut attempt = 1;
        loop {
            match self.load_once(use_index) {
                Err(e) if e.is_not_found() && attempt < ATTEMPTS => attempt += 1,
                r => return r,
            }
        }
    }

    fn load_once(&self, use_index: bool) -> Result<Snapshot> {
        let listed = self.list()?;
        if listed.is_empty() {
            let cat = self.legacy()?.unwrap_or_default();
            let gens = cat
                .backups
                .iter()
                .map(|b| (b.id.clone(), vec![0]))
                .collect();
            return Ok(Snapshot { cat, gens });
        }
        let mut index = if use_index {
            self.index()?
        } else {
            BTreeMap::new()
        };
        let mut cat = Catalog::default();
        let mut gens = BTreeMap::new();
        for (id, all) in listed {
            let g = *all.last().expect("listed IDs have a gen");
            let info = match index.remove(&id) {
                Some(e) if e.generation == g => e.info,
                _ => self.read_record(&id, g)?,
            };
            cat.backups.push(info);
            gens.insert(id, all);
        }
        Ok(Snapshot { cat, gens })
    }

    /// The current catalog.
    pub fn load(&self) -> Result<Catalog> {
        Ok(self.load_with_gens(true)?.cat)
    }

    /// The current catalog and the record objects behind it, for a writer that holds the
    /// instance lock (no one else changes them meanwhile) and saves through [`Records::save_in`].
    pub fn snapshot(&self) -> Result<Snapshot> {
        self.load_with_gens(true)
    }

    /// The current catalog read from every record object, the index left aside (what validate
    /// uses: a damaged record the index hides is found).
    pub fn load_verified(&self) -> Result<Catalog> {
        Ok(self.load_with_gens(false)?.cat)
    }

    /// Stores `info` as the new state of its backup (the caller holds the instance lock), then
    /// removes the older states and refreshes the index. Returns the catalog after the change.
    pub fn save(&self, info: &BackupInfo) -> Result<Catalog> {
        let mut snap = self.snapshot()?;
        self.save_in(&mut snap, info)?;
        Ok(snap.cat)
    }

    /// [`Records::save`] on a snapshot taken (and kept up to date) under the same instance lock:
    /// no listing or index read, only the new record's write, the old states' deletes and the
    /// index's write. `snap` is updated to the catalog after the change.
    pub fn save_in(&self, snap: &mut Snapshot, info: &BackupInfo) -> Result<()> {
        if snap.gens.values().flatten().any(|&g| g == 0) {
            self.convert_legacy(&snap.cat)?;
            snap.gens.values_mut().for_each(|g| *g = vec![1]);
        }
        let prev = snap
            .gens
            .get(&info.id)
            .and_then(|g| g.last())
            .copied()
            .unwrap_or(0);
        let next = prev + 1;
        if next > MAX_GENERATION {
            return Err(RepoDamage::LastGeneration {
                id: info.id.clone(),
                generation: prev,
                key: self
                    .records_dir()?
                    .join(&record_name(&info.id, prev))?
                    .to_string(),
            }
            .into());
        }
        let dir = self.records_dir()?;
        let k = dir.join(&record_name(&info.id, next))?;
        envelope::write(self.store, &k, "backup-record", RECORD_VERSION, info)?;
        let old = snap.gens.insert(info.id.clone(), vec![next]);
        match snap.cat.get_mut(&info.id) {
            Some(b) => *b = info.clone(),
            None => {
                snap.cat.backups.push(info.clone());
                snap.cat.backups.sort_by(|a, b| a.id.cmp(&b.id));
            }
        }
        // Old states and the index are garbage or cache: the new record is already durable, so
        // failing to tidy them must not fail the command (the next writer tidies again; a state
        // whose delete failed is listed and deleted by the next full load's writer).
        let mut kept = Vec::new();
        for g in old.into_iter().flatten().filter(|&g| g < next) {
            if self
                .store
                .delete(&dir.join(&record_name(&info.id, g))?)
                .is_err()
            {
                kept.push(g);
            }
        }
        if let Some(all) = snap.gens.get_mut(&info.id) {
            all.splice(0..0, kept);
        }
        let _ = self.write_index(&snap.cat, &snap.gens);
        Ok(())
    }

    /// Removes every record object of backup `id` (the caller holds the instance lock and has
    /// removed the backup's objects), then refreshes the index. A failed delete is an error:
    /// what remains is still listed, and a later load shows the backup as it was recorded.
    pub fn remove_in(&self, snap: &mut Snapshot, id: &str) -> Result<()> {
        if snap.gens.values().flatten().any(|&g| g == 0) {
            self.convert_legacy(&snap.cat)?;
            snap.gens.values_mut().for_each(|g| *g = vec![1]);
        }
        let dir = self.records_dir()?;
        let gens = snap.gens.get(id).cloned().unwrap_or_default();
        // Newest last: until the newest state is gone the backup reads as it was recorded.
        for g in &gens {
            self.store.delete(&dir.join(&record_name(id, *g))?)?;
            if let Some(all) = snap.gens.get_mut(id) {
                all.retain(|x| x != g);
            }
        }
        snap.gens.remove(id);
        snap.cat.backups.retain(|b| b.id != id);
        let _ = self.write_index(&snap.cat, &snap.gens);
        Ok(())
    }

    /// Writes every record of a legacy catalog as gen 1, then deletes the legacy document.
    fn convert_legacy(&self, cat: &Catalog) -> Result<()> {
        let dir = self.records_dir()?;
        for b in &cat.backups {
            let k = dir.join(&record_name(&b.id, 1))?;
            envelope::write(self.store, &k, "backup-record", RECORD_VERSION, b)?;
        }
        Ok(self.store.delete(&self.dir.join("catalog")?)?)
    }

    fn write_index(&self, cat: &Catalog, gens: &BTreeMap<String, Vec<u64>>) -> Result<()> {
        let records = cat
            .backups
            .iter()
            .map(|b| Indexed {
                generation: gens.get(&b.id).and_then(|g| g.last()).copied().unwrap_or(0),
                info: b.clone(),
            })
            .collect();
        let k = self.dir.join("index")?;
        envelope::write(
            self.store,
            &k,
            "catalog-index",
            INDEX_VERSION,
            &Index { records },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Status;
    use ptrack_repo::memory::MemStore;

    use crate::catalog::sample_info as info;

    #[test]
    fn names_round_trip_and_reject_others() {
        assert_eq!(
            parse_record_name(&record_name("0TOUE89", 12)),
            Some(("0TOUE89", 12))
        );
        for bad in [
            "",
            ".",
            "0TOUE89",
            "0TOUE89.12",
            "0TOUE89.00000000x1",
            "x.0000000001",
            "../a.0000000001",
            "0TOUE89.0000000001.tmp",
        ] {
            assert_eq!(parse_record_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn states_replace_each_other_and_the_index_is_only_a_cache() {
        let store = MemStore::new();
        let dir = Key::new("7").unwrap();
        let r = Records::new(&store, &dir);
        assert!(r.load().unwrap().backups.is_empty());
        r.save(&info("0000002", Status::Running)).unwrap();
        r.save(&info("0000001", Status::Running)).unwrap();
        r.save(&info("0000002", Status::Ok)).unwrap();
        let ids = |c: &Catalog| {
            c.backups
                .iter()
                .map(|b| (b.id.clone(), b.status))
                .collect::<Vec<_>>()
        };
        let want = vec![
            ("0000001".to_string(), Status::Running),
            ("0000002".to_string(), Status::Ok),
        ];
        assert_eq!(ids(&r.load().unwrap()), want);
        let keys = store.list(Some(&dir.join("records").unwrap())).unwrap();
        assert_eq!(keys.len(), 2, "old states are removed: {keys:?}");

        // A stale index (state 1 of 0000002) is corrected from the records.
        store.delete(&keys[1]).unwrap();
        let k2 = dir
            .join("records")
            .unwrap()
            .join(&record_name("0000002", 1))
            .unwrap();
        envelope::write(
            &store,
            &k2,
            "backup-record",
            RECORD_VERSION,
            &info("0000002", Status::Corrupt),
        )
        .unwrap();
        assert_eq!(
            r.load().unwrap().get("0000002").unwrap().status,
            Status::Corrupt
        );

        // A damaged or missing index changes nothing.
        store.put(&dir.join("index").unwrap(), b"junk").unwrap();
        assert_eq!(r.load().unwrap().backups.len(), 2);
        store.delete(&dir.join("index").unwrap()).unwrap();
        assert_eq!(r.load().unwrap().backups.len(), 2);
    }

    #[test]
    fn writers_of_different_backups_never_lose_each_others_states() {
        // What one rewritten catalog object lost: two writers racing (a lease overtaken while its
        // holder stalled). Each writes only its own backup's records.
        let store = MemStore::new();
        let dir = Key::new("7").unwrap();
        std::thread::scope(|s| {
            for id in ["0000001", "0000002"] {
                let (store, dir) = (&store, &dir);
                s.spawn(move || {
                    let r = Records::new(store, dir);
                    for n in 0..40 {
                        let mut b = info(id, Status::Running);
                        b.stored_bytes = n;
                        r.save(&b).unwrap();
                    }
                });
            }
        });
        let cat = Records::new(&store, &dir).load().unwrap();
        let got: Vec<(&str, u64)> = cat
            .backups
            .iter()
            .map(|b| (b.id.as_str(), b.stored_bytes))
            .collect();
        assert_eq!(got, vec![("0000001", 39), ("0000002", 39)]);
    }

    #[test]
    fn a_record_under_another_id_or_a_stray_object_is_damage() {
        let store = MemStore::new();
        let dir = Key::new("7").unwrap();
        let r = Records::new(&store, &dir);
        let k = dir
            .join("records")
            .unwrap()
            .join(&record_name("0000003", 1))
            .unwrap();
        envelope::write(
            &store,
            &k,
            "backup-record",
            RECORD_VERSION,
            &info("0000004", Status::Ok),
        )
        .unwrap();
        let e = r.load().unwrap_err().to_string();
        assert!(e.contains("0000003") && e.contains("0000004"), "{e}");
        store.delete(&k).unwrap();
        store
            .put(&dir.join("records").unwrap().join("notes").unwrap(), b"x")
            .unwrap();
        let e = r.load().unwrap_err().to_string();
        assert!(e.contains("records/notes"), "{e}");
    }

    #[test]
    fn a_removed_record_is_gone_from_listing_and_index() {
        let store = MemStore::new();
        let dir = Key::new("7").unwrap();
        let r = Records::new(&store, &dir);
        r.save(&info("0000001", Status::Ok)).unwrap();
        r.save(&info("0000002", Status::Ok)).unwrap();
        let mut snap = r.snapshot().unwrap();
        r.remove_in(&mut snap, "0000001").unwrap();
        let ids = |c: &Catalog| c.backups.iter().map(|b| b.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(snap.catalog()), ["0000002"]);
        assert_eq!(ids(&r.load().unwrap()), ["0000002"]);
        assert_eq!(ids(&r.load_verified().unwrap()), ["0000002"]);
        let keys = store.list(Some(&dir.join("records").unwrap())).unwrap();
        assert_eq!(keys.len(), 1, "{keys:?}");
        // Removing what is not there is no error.
        r.remove_in(&mut snap, "0000001").unwrap();
    }

    #[test]
    fn a_linked_index_is_refused_not_passed_over() {
        // A damaged index is only a stale cache, but a link where it should be is an attack:
        // the command fails naming it (and never reads what it points at).
        let d = tempfile::tempdir().unwrap();
        let store = ptrack_repo::local::LocalFs::new(d.path());
        let dir = Key::new("7").unwrap();
        let r = Records::new(&store, &dir);
        r.save(&info("0000001", Status::Ok)).unwrap();
        let index = d.path().join("7/index");
        std::fs::write(d.path().join("secret"), "TOPSECRET").unwrap();
        std::fs::remove_file(&index).unwrap();
        std::os::unix::fs::symlink(d.path().join("secret"), &index).unwrap();
        let e = r.load().unwrap_err().to_string();
        assert!(
            e.contains("symbolic link") && !e.contains("TOPSECRET"),
            "{e}"
        );
    }

    #[test]
    fn a_legacy_catalog_is_read_then_converted_by_the_first_writer() {
        let store = MemStore::new();
        let dir = Key::new("7").unwrap();
        let legacy = Catalog {
            backups: vec![info("0000001", Status::Ok), info("0000002", Status::Ok)],
        };
        let ck = dir.join("catalog").unwrap();
        envelope::write(&store, &ck, "catalog", CATALOG_VERSION, &legacy).unwrap();
        let r = Records::new(&store, &dir);
        assert_eq!(r.load().unwrap(), legacy);
        r.save(&info("0000003", Status::Running)).unwrap();
        assert!(matches!(
            store.get(&ck),
            Err(ptrack_repo::StorageError::NotFound { .. })
        ));
        let cat = r.load().unwrap();
        assert_eq!(cat.backups.len(), 3);
        assert_eq!(cat.backups[..2], legacy.backups[..]);
    }

    #[test]
    fn the_last_state_number_is_refused_without_a_delete_per_number() {
        let store = MemStore::new();
        let dir = Key::new("7").unwrap();
        let r = Records::new(&store, &dir);
        let k = dir
            .join("records")
            .unwrap()
            .join(&record_name("0000001", MAX_GENERATION - 1))
            .unwrap();
        envelope::write(
            &store,
            &k,
            "backup-record",
            RECORD_VERSION,
            &info("0000001", Status::Ok),
        )
        .unwrap();
        // One step below the end: a new state is written and the old one removed at once.
        r.save(&info("0000001", Status::Corrupt)).unwrap();
        let names = store.list(Some(&dir.join("records").unwrap())).unwrap();
        assert_eq!(names.len(), 1, "{names:?}");
        let e = r
            .save(&info("0000001", Status::Ok))
            .unwrap_err()
            .to_string();
        assert!(e.contains("move") && e.contains("9999999999"), "{e}");
        assert_eq!(r.load().unwrap().backups[0].status, Status::Corrupt);
    }

    #[test]
    fn a_damaged_record_the_index_hides_is_found_by_a_verified_load() {
        let store = MemStore::new();
        let dir = Key::new("7").unwrap();
        let r = Records::new(&store, &dir);
        r.save(&info("0000001", Status::Ok)).unwrap();
        let k = store.list(Some(&dir.join("records").unwrap())).unwrap()[0].clone();
        let mut bytes = store.get(&k).unwrap();
        let last = bytes.len() - 3;
        bytes[last] ^= 1;
        store.put(&k, &bytes).unwrap();
        assert_eq!(r.load().unwrap().backups.len(), 1, "the index holds it");
        let e = r.load_verified().unwrap_err().to_string();
        assert!(e.contains(k.as_str()), "{e}");
    }
}
