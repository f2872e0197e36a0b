//! Reading manifests and backup chains the way every command must: the manifest is the
//! authority. A manifest is accepted only when its BLAKE3 digest is the one the catalog recorded,
//! it names the backup it belongs to, its shape is sound (paths, links, sizes), and the facts the
//! catalog repeats (mode, parent, timeline, start and stop LSN) agree with it. A chain is accepted
//! only when each child's manifest records the digest of its parent's manifest file (a hash
//! chain), so a catalog whose `parent` was edited cannot splice another backup in.

use crate::{Error, Fault, Refusal, Result};
use ptrack_format::bundle::{BundleReader, PageEntry};
use ptrack_format::catalog::{BackupInfo, Catalog, Status};
use ptrack_format::envelope;
use ptrack_format::manifest::{Entry, EntryKind, MANIFEST_VERSION, Manifest, ManifestDoc};
use ptrack_format::paths::Digest;
use ptrack_format::repo::Instance;

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

/// A manifest read without its entries: they are skipped while the digest is computed over
/// them (an ancestor's links and facts, without holding its entries).
pub type ManifestHead = ManifestDoc<serde::de::IgnoredAny>;

/// Reads backup `b`'s manifest and checks it against the catalog record.
pub fn read_manifest(instance: &Instance, b: &BackupInfo) -> Result<(Manifest, Digest)> {
    let (m, digest, path) = read_checked(instance, b)?;
    m.check_shape()
        .and_then(|()| check_segments(&m, instance.info.relseg_blocks))
        .map_err(|why| {
            Error::backup(
                &b.id,
                Fault::ManifestShape {
                    key: path.to_string(),
                    why,
                },
            )
        })?;
    Ok((m, digest))
}

/// [`read_manifest`] without the entries (nor their shape check).
pub fn read_manifest_head(instance: &Instance, b: &BackupInfo) -> Result<(ManifestHead, Digest)> {
    let (m, digest, _) = read_checked(instance, b)?;
    Ok((m, digest))
}

/// Reads `b`'s manifest as `ManifestDoc<E>`: its digest must be the catalog's and the facts
/// the catalog repeats must agree.
fn read_checked<E>(
    instance: &Instance,
    b: &BackupInfo,
) -> Result<(ManifestDoc<E>, Digest, ptrack_repo::Key)>
where
    ManifestDoc<E>: serde::de::DeserializeOwned,
{
    let path = instance.backup_key(&b.id)?.join("manifest")?;
    let read = match envelope::stream::read::<ManifestDoc<E>>(
        instance.store(),
        &path,
        "manifest",
        MANIFEST_VERSION,
    ) {
        Err(e) if e.is_not_found() => {
            return Err(Error::backup(
                &b.id,
                Fault::ManifestMissing(path.to_string()),
            ));
        }
        r => r?,
    };
    let digest = read.digest;
    let fault = |f: Fault| Error::backup(&b.id, f);
    match b.manifest_digest {
        Some(d) if d == digest => {}
        Some(_) => return Err(fault(Fault::ManifestDigest(path.to_string()))),
        None => return Err(fault(Fault::NoManifestDigest)),
    }
    let m = read.value?;
    let diff = m.disagreements(b);
    if !diff.is_empty() {
        return Err(fault(Fault::Disagrees(diff)));
    }
    Ok((m, digest, path))
}

/// One bundle reader per link of `chain`, in its order.
pub fn readers(
    instance: &Instance,
    chain: &[Link],
) -> Result<Vec<ptrack_format::bundle::BundleReader>> {
    chain
        .iter()
        .map(|l| {
            Ok(ptrack_format::bundle::BundleReader::new(
                instance.shared_store(),
                &instance.backup_key(&l.info.id)?,
                l.manifest.compression,
            ))
        })
        .collect()
}

/// No relation segment has more blocks than the cluster's segment size (restore sizes its work
/// by them).
fn check_segments(m: &Manifest, relseg_blocks: u32) -> std::result::Result<(), String> {
    for e in m.entries.iter() {
        if let ptrack_format::manifest::EntryKind::Data { blocks, .. } = e.kind
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
    walk_chain(instance, cat, id, true)
}

/// The chain of `id` checked as [`load_chain`] checks it, with only its newest manifest
/// loaded: the ancestors are read without their entries and not kept. For an incremental that
/// needs only its parent's entries: time and memory stay those of one manifest however long
/// the chain.
pub fn load_chain_head(instance: &Instance, cat: &Catalog, id: &str) -> Result<Vec<Link>> {
    walk_chain(instance, cat, id, false)
}

/// What a link check needs of a child's manifest.
struct LinkFacts {
    id: String,
    parent: Option<String>,
    parent_manifest: Option<Digest>,
    start: ptrack_types::Lsn,
}

impl LinkFacts {
    fn of<E>(b: &BackupInfo, m: &ManifestDoc<E>) -> LinkFacts {
        LinkFacts {
            id: b.id.clone(),
            parent: m.parent.clone(),
            parent_manifest: m.parent_manifest,
            start: m.start_lsn,
        }
    }
}

/// Checks the chain of `id` link by link; keeps the newest manifest, and with `whole` every
/// one (the others are read without their entries).
fn walk_chain(instance: &Instance, cat: &Catalog, id: &str, whole: bool) -> Result<Vec<Link>> {
    let chain = cat.chain(id).map_err(ptrack_format::Error::from)?;
    let mut out: Vec<Link> = Vec::new();
    let mut child: Option<LinkFacts> = None;
    for c in chain {
        if c.status != Status::Ok {
            return Err(Refusal::ChainNotOk {
                id: id.to_string(),
                needed: c.id.clone(),
                status: c.status,
            }
            .into());
        }
        let (facts, digest) = if whole || out.is_empty() {
            let (manifest, digest) = read_manifest(instance, c)?;
            let facts = LinkFacts::of(c, &manifest);
            out.push(Link {
                info: c.clone(),
                manifest,
                digest,
            });
            (facts, digest)
        } else {
            let (m, digest) = read_manifest_head(instance, c)?;
            (LinkFacts::of(c, &m), digest)
        };
        if let Some(ch) = &child {
            check_link_facts(ch, c, &digest)?;
        }
        child = Some(facts);
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
    let facts = LinkFacts {
        id: child_id.to_string(),
        parent: child.parent.clone(),
        parent_manifest: child.parent_manifest,
        start: child.start_lsn,
    };
    check_link_facts(&facts, parent, digest)
}

/// [`check_link`] from what it needs of the child's manifest.
fn check_link_facts(child: &LinkFacts, parent: &BackupInfo, digest: &Digest) -> Result<()> {
    let (child_id, child_start) = (&child.id, child.start);
    if child.parent.as_deref() != Some(parent.id.as_str()) {
        return Err(Error::backup(child_id, Fault::NotParent(parent.id.clone())));
    }
    if child.parent_manifest.as_ref() != Some(digest) {
        return Err(Error::backup(
            child_id,
            Fault::ParentManifest(parent.id.clone()),
        ));
    }
    if parent.start_lsn > child_start {
        return Err(Error::backup(
            child_id,
            Fault::ParentLater {
                parent: parent.id.clone(),
                parent_start: parent.start_lsn,
                start: child_start,
            },
        ));
    }
    Ok(())
}

/// Where the newest stored copy of a block is in a chain: the link (0 = the backup restored),
/// the bundle and the page's index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PagePick {
    /// Index of the backup in the chain, newest first.
    pub link: usize,
    /// Bundle number in that backup.
    pub bundle: u32,
    /// The page's index entry.
    pub page: PageEntry,
}

/// For each of the `blocks` blocks of relation segment `entry` (as the newest backup of
/// `chain` records it), the newest backup storing it: walking from the newest backup to older
/// ones until one that stores the file whole (`base`) or does not have it. A block no backup
/// stores is `None` (it is all zeros). What restore writes and merge folds.
pub fn newest_pages(
    chain: &[Link],
    readers: &mut [BundleReader],
    entry: &Entry,
    blocks: u32,
) -> Result<Vec<Option<PagePick>>> {
    let rel = &entry.path;
    let mut slots: Vec<Option<PagePick>> = vec![None; blocks as usize];
    for (k, l) in chain.iter().enumerate() {
        let kind = if k == 0 {
            Some(entry.kind.clone())
        } else {
            l.manifest.entry(rel).map(|e| e.kind)
        };
        let Some(EntryKind::Data { parts, base, .. }) = kind else {
            break;
        };
        let reader = readers
            .get_mut(k)
            .ok_or_else(|| Error::backup(&l.info.id, Fault::NoReader(k)))?;
        for p in &parts {
            let idx = reader.index(p).map_err(|cause| {
                Error::backup(
                    &l.info.id,
                    Fault::File {
                        path: rel.to_string(),
                        cause: Box::new(cause),
                    },
                )
            })?;
            for e in idx {
                if let Some(slot) = slots.get_mut(e.block as usize)
                    && slot.is_none()
                {
                    *slot = Some(PagePick {
                        link: k,
                        bundle: p.at.bundle,
                        page: e,
                    });
                }
            }
        }
        if base {
            break;
        }
    }
    Ok(slots)
}
