//! Reading manifests and backup chains the way every command must: the manifest is the
//! authority. A manifest is accepted only when its BLAKE3 digest is the one the catalog recorded,
//! it names the backup it belongs to, its shape is sound (paths, links, sizes), and the facts the
//! catalog repeats (mode, parent, timeline, start and stop LSN) agree with it. A chain is accepted
//! only when each child's manifest records the digest of its parent's manifest file (a hash
//! chain), so a catalog whose `parent` was edited cannot splice another backup in.

use crate::catalog::{BackupInfo, Catalog, Status};
use crate::envelope;
use crate::manifest::{MANIFEST_VERSION, Manifest};
use crate::paths::Digest;
use crate::repo::Instance;
use crate::{Error, Result, refused};

/// One backup of a chain with its checked manifest.
#[derive(Debug, Clone)]
pub struct Link {
    /// Catalog record.
    pub info: BackupInfo,
    /// Manifest.
    pub manifest: Manifest,
    /// BLAKE3 of the manifest file.
    pub digest: Digest,
}

/// Reads backup `b`'s manifest and checks it against the catalog record.
pub fn read_manifest(instance: &Instance, b: &BackupInfo) -> Result<(Manifest, Digest)> {
    let path = instance.existing_backup_dir(&b.id)?.join("manifest");
    let read = envelope::stream::read::<Manifest>(&path, "manifest", MANIFEST_VERSION)?;
    let digest = read.digest;
    let corrupt = |why: String| Error::Corrupt(format!("backup {}: {why}", b.id));
    match b.manifest_digest {
        Some(d) if d == digest => {}
        Some(_) => {
            return Err(corrupt(format!(
                "manifest \"{}\" is not the one recorded in the catalog (BLAKE3 differs)",
                path.display()
            )));
        }
        None => {
            return Err(corrupt(
                "the catalog records no manifest digest for it".into(),
            ));
        }
    }
    let m = read.value?;
    m.check_shape()
        .and_then(|()| check_segments(&m, instance.info.relseg_blocks))
        .map_err(|why| corrupt(format!("manifest \"{}\": {why}", path.display())))?;
    let diff = m.disagreements(b);
    if !diff.is_empty() {
        return Err(corrupt(diff.join("; ")));
    }
    Ok((m, digest))
}

/// No relation segment has more blocks than the cluster's segment size (restore sizes its work
/// by them).
fn check_segments(m: &Manifest, relseg_blocks: u32) -> std::result::Result<(), String> {
    for e in m.entries.iter() {
        if let crate::manifest::EntryKind::Data { blocks, .. } = e.kind
            && blocks > relseg_blocks
        {
            return Err(format!(
                "\"{}\" has {blocks} blocks, more than a segment's {relseg_blocks}",
                e.path
            ));
        }
    }
    Ok(())
}

/// The chain of `id`, newest first, down to its full backup: every link OK (or CORRUPT when
/// `allow_corrupt`, for validate), every manifest checked, every parent digest matching.
pub fn load_chain(instance: &Instance, cat: &Catalog, id: &str) -> Result<Vec<Link>> {
    let chain = cat.chain(id).map_err(refused)?;
    let mut out: Vec<Link> = Vec::new();
    for c in chain {
        if c.status != Status::Ok {
            return Err(refused(format!(
                "backup {id} needs backup {} which has status {}",
                c.id, c.status
            )));
        }
        let (manifest, digest) = read_manifest(instance, c)?;
        if let Some(child) = out.last() {
            check_link(&child.manifest, &child.info.id, c, &digest)?;
        }
        out.push(Link {
            info: c.clone(),
            manifest,
            digest,
        });
    }
    Ok(out)
}

/// Checks that `child`'s manifest names `parent` and records its manifest digest.
pub fn check_link(
    child: &Manifest,
    child_id: &str,
    parent: &BackupInfo,
    digest: &Digest,
) -> Result<()> {
    if child.parent.as_deref() != Some(parent.id.as_str()) {
        return Err(Error::Corrupt(format!(
            "backup {child_id}: its manifest does not name backup {} as its parent",
            parent.id
        )));
    }
    if child.parent_manifest.as_ref() != Some(digest) {
        return Err(Error::Corrupt(format!(
            "backup {child_id}: the manifest of its parent {} is not the one it was taken against (BLAKE3 differs)",
            parent.id
        )));
    }
    if parent.start_lsn > child.start_lsn {
        return Err(Error::Corrupt(format!(
            "backup {child_id}: its parent {} starts at {}, after it ({})",
            parent.id, parent.start_lsn, child.start_lsn
        )));
    }
    Ok(())
}
