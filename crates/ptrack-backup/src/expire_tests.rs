//! Tests of delete and expiry on the in-memory store: what is removed, what refuses, and that
//! a storage failure at every position leaves each backup whole, DELETING or gone, with the
//! next locked command finishing the job.

use std::sync::Arc;

use super::*;
use ptrack_format::catalog::{KEEP_FOREVER, Mode, sample_info};
use ptrack_format::repo::sample_instance;
use ptrack_repo::memory::MemStore;
use ptrack_repo::{Key, Storage};

const SYSID: u64 = 7;
const SEG: u64 = 16 << 20;

fn repo_on(mem: &MemStore) -> Repository {
    let repo = Repository::init_on(Arc::new(mem.clone())).unwrap();
    repo.add_instance(sample_instance(SYSID, "/x")).unwrap();
    repo
}

/// Stores an OK backup record with a manifest and two bundle objects; `start_seg` is its start
/// LSN in segments, `age` its age in days.
fn add(repo: &Repository, id: &str, parent: Option<&str>, start_seg: u64, age: i64) {
    let inst = repo.only_instance(None).unwrap();
    let lock = inst.lock("test").unwrap();
    let dir = inst.backup_key(id).unwrap();
    for name in ["manifest", "bundle-0", "bundle-1"] {
        inst.store()
            .put(&dir.join(name).unwrap(), id.as_bytes())
            .unwrap();
    }
    let now = now();
    let info = BackupInfo {
        mode: if parent.is_some() {
            Mode::Ptrack
        } else {
            Mode::Full
        },
        parent: parent.map(str::to_string),
        start_lsn: Lsn(start_seg * SEG),
        start_time: now - age * 86_400 - 10,
        end_time: Some(now - age * 86_400),
        ..sample_info(id, Status::Ok)
    };
    inst.save_record(&info, &lock).unwrap();
}

/// Archives WAL objects by name (their bytes are never read by expiry).
fn archive(mem: &MemStore, names: &[String]) {
    for n in names {
        let k = Key::new(&format!("{SYSID}/wal/{n}")).unwrap();
        mem.put(&k, b"wal").unwrap();
    }
}

fn seg_name(segno: u64) -> String {
    format!("00000001{:08X}{:08X}", segno / 256, segno % 256)
}

fn ids(repo: &Repository) -> Vec<(String, Status)> {
    let inst = repo.only_instance(None).unwrap();
    inst.catalog()
        .unwrap()
        .backups
        .iter()
        .map(|b| (b.id.clone(), b.status))
        .collect()
}

fn objects_of(mem: &MemStore, id: &str) -> usize {
    let k = Key::new(&format!("{SYSID}/{id}")).unwrap();
    mem.list(Some(&k)).unwrap().len()
}

/// F1 ← I1 ← I2, F2 (A1..A4).
fn sample(mem: &MemStore) -> Repository {
    let repo = repo_on(mem);
    add(&repo, "A1", None, 2, 30);
    add(&repo, "A2", Some("A1"), 4, 20);
    add(&repo, "A3", Some("A2"), 6, 10);
    add(&repo, "A4", None, 8, 1);
    repo
}

#[test]
fn a_parent_is_refused_unless_its_descendants_go_too() {
    let mem = MemStore::new();
    let repo = sample(&mem);
    let e = delete_backup(&repo, None, "A1", false, false)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("A2, A3") && e.contains("--with-descendants"),
        "{e}"
    );
    assert_eq!(ids(&repo).len(), 4, "nothing changed");
    let dry = delete_backup(&repo, None, "A1", true, true).unwrap();
    assert_eq!(dry.backups, ["A3", "A2", "A1"]);
    assert_eq!(ids(&repo).len(), 4, "a dry run changes nothing");
    let done = delete_backup(&repo, None, "A2", true, false).unwrap();
    assert_eq!(done.backups, ["A3", "A2"]);
    assert_eq!(
        ids(&repo),
        [
            ("A1".to_string(), Status::Ok),
            ("A4".to_string(), Status::Ok)
        ]
    );
    assert_eq!(objects_of(&mem, "A2") + objects_of(&mem, "A3"), 0);
    assert_eq!(objects_of(&mem, "A1"), 3);
    let e = delete_backup(&repo, None, "ZZ", false, false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("ZZ") && e.contains("not in the catalog"), "{e}");
}

#[test]
fn a_failure_at_every_position_leaves_backups_whole_deleting_or_gone() {
    let probe = MemStore::new();
    let repo = sample(&probe);
    let before = probe.ops();
    delete_backup(&repo, None, "A1", true, false).unwrap();
    let total = probe.ops() - before;
    assert!(total > 10, "{total}");
    for n in 0..total {
        for transient in [false, true] {
            let mem = MemStore::new();
            let repo = sample(&mem);
            mem.fail_op(mem.ops() + n, transient);
            let r = delete_backup(&repo, None, "A1", true, false);
            assert!(!mem.take_pending_failure(), "op {n} was never reached");
            if transient {
                r.unwrap_or_else(|e| panic!("a transient failure at op {n} was not retried: {e}"));
            } else if let Err(e) = &r {
                assert!(!e.to_string().is_empty());
            }
            clear_intents(&mem);
            for (id, status) in ids(&repo) {
                match status {
                    Status::Ok => {
                        assert_eq!(objects_of(&mem, &id), 3, "{id} OK but not whole (op {n})")
                    }
                    Status::Deleting => {}
                    s => panic!("{id} is {s} after op {n} failed"),
                }
            }
            // An OK backup never stands on a DELETING or missing parent.
            let inst = repo.only_instance(None).unwrap();
            let cat = inst.catalog().unwrap();
            for b in cat.backups.iter().filter(|b| b.status == Status::Ok) {
                let chain = cat.chain(&b.id).unwrap();
                assert!(
                    chain.iter().all(|c| c.status == Status::Ok),
                    "op {n}: {chain:?}"
                );
            }
            // The next locked command finishes what was marked; the repeated delete does the
            // rest.
            drop(inst.lock("finish").unwrap());
            assert!(ids(&repo).iter().all(|(_, s)| *s == Status::Ok), "op {n}");
            if ids(&repo).len() > 1 {
                delete_backup(&repo, None, "A1", true, false).unwrap();
            }
            assert_eq!(ids(&repo), [("A4".to_string(), Status::Ok)], "op {n}");
            for id in ["A1", "A2", "A3"] {
                assert_eq!(objects_of(&mem, id), 0, "{id} left objects (op {n})");
            }
            assert_eq!(objects_of(&mem, "A4"), 3);
        }
    }
}

/// Removes lease intents a failed release left (they would block the next lock for minutes).
fn clear_intents(mem: &MemStore) {
    for k in mem.list(None).unwrap() {
        if k.as_str().contains("/lock/") {
            mem.delete(&k).unwrap();
        }
    }
}

#[test]
fn expiry_removes_expired_chains_and_the_wal_before_the_oldest_kept_start() {
    let mem = MemStore::new();
    let repo = sample(&mem);
    let mut wal: Vec<String> = (1..=10).map(seg_name).collect();
    wal.push(format!("{}.00000028.backup", seg_name(3)));
    wal.push(format!("{}.partial", seg_name(5)));
    wal.push("00000002.history".into());
    archive(&mem, &wal);
    let opts = ExpireOptions {
        over: RetentionPolicy {
            redundancy: Some(1),
            ..RetentionPolicy::default()
        },
        ..ExpireOptions::default()
    };
    let dry = ExpireOptions {
        dry_run: true,
        ..opts
    };
    let (_, plan, d) = delete_expired(&repo, None, &dry, now()).unwrap();
    assert_eq!(plan.expired().count(), 3);
    assert_eq!(d.backups, ["A3", "A2", "A1"]);
    assert_eq!(ids(&repo).len(), 4);
    // A4 starts in segment 8: segments 1..=7 (and what lies in them) go, oldest first.
    let (_, _, d) = delete_expired(&repo, None, &opts, now()).unwrap();
    assert_eq!(d.wal_keep_from, Some(Lsn(8 * SEG)));
    let want: Vec<String> = vec![
        seg_name(1),
        seg_name(2),
        seg_name(3),
        format!("{}.00000028.backup", seg_name(3)),
        seg_name(4),
        seg_name(5),
        format!("{}.partial", seg_name(5)),
        seg_name(6),
        seg_name(7),
    ];
    assert_eq!(d.wal, want);
    let left: Vec<String> = mem
        .list(Some(&Key::new(&format!("{SYSID}/wal")).unwrap()))
        .unwrap()
        .iter()
        .map(|k| k.as_str().rsplit('/').next().unwrap().to_string())
        .collect();
    assert_eq!(
        left,
        [
            seg_name(8),
            seg_name(9),
            seg_name(10),
            "00000002.history".into()
        ]
    );
    assert_eq!(ids(&repo), [("A4".to_string(), Status::Ok)]);
}

#[test]
fn a_stored_policy_is_applied_and_a_pinned_backup_survives_it() {
    let mem = MemStore::new();
    let repo = sample(&mem);
    let none = delete_expired(&repo, None, &ExpireOptions::default(), now()).unwrap();
    assert!(none.2.backups.is_empty() && none.2.wal_keep_from.is_none());
    let p = set_policy(
        &repo,
        None,
        &RetentionPolicy {
            window_days: Some(5),
            ..RetentionPolicy::default()
        },
    )
    .unwrap();
    assert_eq!(p.window_days, Some(5));
    assert_eq!(repo.only_instance(None).unwrap().retention().unwrap(), p);
    pin(&repo, None, "A1", Some(KEEP_FOREVER)).unwrap();
    let (_, plan, d) = delete_expired(&repo, None, &ExpireOptions::default(), now()).unwrap();
    // The window of 5 days holds A4 and opens at A3 (10 days), whose chain is A1 ← A2 ← A3:
    // nothing goes. On the command line, redundancy 1 and the window unset: A2 and A3 go, A1
    // stays pinned.
    assert!(d.backups.is_empty(), "{plan:?}");
    let over = ExpireOptions {
        over: RetentionPolicy {
            redundancy: Some(1),
            window_days: Some(0),
            ..RetentionPolicy::default()
        },
        ..ExpireOptions::default()
    };
    let (policy, _, d) = delete_expired(&repo, None, &over, now()).unwrap();
    assert_eq!(policy.window_days, None, "0 unsets on the command line");
    assert_eq!(d.backups, ["A3", "A2"]);
    assert_eq!(
        ids(&repo),
        [
            ("A1".to_string(), Status::Ok),
            ("A4".to_string(), Status::Ok)
        ]
    );
    pin(&repo, None, "A1", None).unwrap();
    let (_, _, d) = delete_expired(&repo, None, &over, now()).unwrap();
    assert_eq!(d.backups, ["A1"]);
}

/// Random histories of backups, archived segments and policy changes against a model: after
/// every `delete --expired`, every backup the plan keeps is whole with its whole chain, every
/// archived segment from the oldest PITR base's start on is there, and nothing else remains
/// (no object of an expired backup, no segment before that start).
#[test]
fn random_histories_keep_what_is_needed_and_nothing_else() {
    let mut rng = ptrack_testkit::TestRng::from_env("retention histories");
    for _ in 0..40 {
        let mem = MemStore::new();
        let repo = repo_on(&mem);
        let (mut seg, mut n, mut parent): (u64, u32, Option<String>) = (1, 0, None);
        // Segments an earlier expiry removed (a laxer policy later cannot bring them back).
        let mut gone = std::collections::BTreeSet::new();
        for _step in 0..12 {
            // Some WAL, then a backup: full, or incremental to the newest backup.
            let grow = 1 + rng.below(3);
            archive(&mem, &(seg..seg + grow).map(seg_name).collect::<Vec<_>>());
            seg += grow;
            let id = format!("C{n:02}");
            n += 1;
            let inc = parent.is_some() && rng.chance(60);
            add(
                &repo,
                &id,
                if inc { parent.as_deref() } else { None },
                seg,
                i64::from(12 - n as i32),
            );
            parent = Some(id);
            if rng.chance(40) {
                let over = RetentionPolicy {
                    redundancy: rng.chance(70).then(|| 1 + rng.below(3) as u32),
                    window_days: rng.chance(40).then(|| rng.below(8) as u32),
                    wal_depth: rng.chance(30).then(|| 1 + rng.below(2) as u32),
                };
                let opts = ExpireOptions {
                    over,
                    ..ExpireOptions::default()
                };
                let (policy, plan, done) = delete_expired(&repo, None, &opts, now()).unwrap();
                check_after(&mem, &repo, &policy, &plan, &done, seg, &gone);
                gone.extend(done.wal.iter().cloned());
                if !ids(&repo).iter().any(|(i, _)| Some(i) == parent.as_ref()) {
                    parent = None;
                }
            }
        }
    }
}

fn check_after(
    mem: &MemStore,
    repo: &Repository,
    policy: &RetentionPolicy,
    plan: &Plan,
    done: &Deletion,
    seg: u64,
    gone_before: &std::collections::BTreeSet<String>,
) {
    let inst = repo.only_instance(None).unwrap();
    let cat = inst.catalog().unwrap();
    for v in &plan.verdicts {
        let present = cat.get(&v.id).is_some();
        assert_eq!(present, v.keep, "{}: {plan:?}", v.id);
        if v.keep {
            for link in cat.chain(&v.id).unwrap() {
                assert_eq!(objects_of(mem, &link.id), 3, "{} of kept {}", link.id, v.id);
            }
        } else {
            assert_eq!(objects_of(mem, &v.id), 0, "expired {} left objects", v.id);
        }
    }
    let wal_dir = Key::new(&format!("{SYSID}/wal")).unwrap();
    let left: std::collections::BTreeSet<String> = mem
        .list(Some(&wal_dir))
        .unwrap()
        .iter()
        .map(|k| k.as_str().rsplit('/').next().unwrap().to_string())
        .collect();
    if let Some(from) = done.wal_keep_from {
        let first = from.0 / SEG;
        for s in 1..seg {
            let want = s >= first && !gone_before.contains(&seg_name(s));
            assert_eq!(
                left.contains(&seg_name(s)),
                want,
                "segment {s}, keep from {first}"
            );
        }
        for w in &done.wal {
            assert!(!gone_before.contains(w), "{w} deleted twice");
        }
        // Without a WAL depth every kept backup's recovery from its start is there; with one,
        // at least the newest's.
        let ok: Vec<_> = cat
            .backups
            .iter()
            .filter(|b| b.status == Status::Ok)
            .collect();
        if policy.wal_depth.is_none() {
            assert!(ok.iter().all(|b| b.start_lsn >= from), "{from} {ok:?}");
        }
        assert!(
            ok.last().is_some_and(|b| b.start_lsn >= from),
            "{from} {ok:?}"
        );
    } else {
        // No WAL was expired: every segment archived and not removed before is still there.
        let kept = |s: u64| left.contains(&seg_name(s)) != gone_before.contains(&seg_name(s));
        assert!((1..seg).all(kept));
    }
}
