//! Tests of the retention planner: the rules one by one, then random catalogs checked against
//! the invariants every plan must keep.

use super::*;
use ptrack_format::catalog::sample_info;
use ptrack_testkit::TestRng;

const DAY: i64 = 86_400;
const NOW: i64 = 1_000 * DAY;

/// A backup ending `days_ago` days before NOW, starting at LSN `lsn` MiB.
fn b(id: &str, parent: Option<&str>, days_ago: i64, lsn: u64) -> BackupInfo {
    BackupInfo {
        mode: if parent.is_some() {
            Mode::Ptrack
        } else {
            Mode::Full
        },
        parent: parent.map(str::to_string),
        start_lsn: Lsn(lsn << 20),
        start_time: NOW - days_ago * DAY - 60,
        end_time: Some(NOW - days_ago * DAY),
        ..sample_info(id, Status::Ok)
    }
}

fn kept(p: &Plan) -> Vec<&str> {
    p.verdicts
        .iter()
        .filter(|v| v.keep)
        .map(|v| v.id.as_str())
        .collect()
}

fn policy(
    redundancy: Option<u32>,
    window_days: Option<u32>,
    wal_depth: Option<u32>,
) -> RetentionPolicy {
    RetentionPolicy {
        redundancy,
        window_days,
        wal_depth,
    }
}

/// F1 ← I1, F2 ← I2 ← I3, F3 (ten, eight, …, one day old).
fn chains() -> Catalog {
    Catalog {
        backups: vec![
            b("A1", None, 10, 1),
            b("A2", Some("A1"), 9, 2),
            b("A3", None, 8, 3),
            b("A4", Some("A3"), 7, 4),
            b("A5", Some("A4"), 6, 5),
            b("A6", None, 1, 6),
        ],
    }
}

#[test]
fn without_a_policy_everything_and_all_wal_stay() {
    let p = plan(&chains(), &RetentionPolicy::default(), NOW);
    assert_eq!(kept(&p).len(), 6);
    assert!(p.verdicts.iter().all(|v| v.why == Why::NoPolicy));
    assert_eq!(p.wal_keep_from, None);
}

#[test]
fn redundancy_keeps_the_newest_fulls_with_their_incrementals() {
    let p = plan(&chains(), &policy(Some(2), None, None), NOW);
    assert_eq!(kept(&p), ["A3", "A4", "A5", "A6"]);
    assert_eq!(p.verdict("A1").unwrap().why, Why::Expired);
    assert_eq!(p.wal_keep_from, Some(Lsn(3 << 20)));
    let p = plan(&chains(), &policy(Some(1), None, Some(1)), NOW);
    assert_eq!(kept(&p), ["A6"]);
    assert_eq!(p.wal_keep_from, Some(Lsn(6 << 20)));
}

#[test]
fn the_window_keeps_what_it_covers_and_the_restore_point_where_it_opens() {
    // A window of 7 days: A5 (6 days) and A6 are inside; A4 (7 days, ended exactly as the
    // window opens) is inside too; A3 is its parent; A2 is the newest before... no: A4 is at
    // the edge, so the newest before the window is A3 itself (8 days).
    let p = plan(&chains(), &policy(None, Some(7), None), NOW);
    assert_eq!(kept(&p), ["A3", "A4", "A5", "A6"]);
    assert_eq!(p.verdict("A3").unwrap().why, Why::WindowStart);
    // A window of 5 days: only A6 is inside; A5, the newest before, opens it with its chain.
    let p = plan(&chains(), &policy(None, Some(5), None), NOW);
    assert_eq!(kept(&p), ["A3", "A4", "A5", "A6"]);
    assert_eq!(p.verdict("A5").unwrap().why, Why::WindowStart);
    assert_eq!(
        p.verdict("A4").unwrap().why,
        Why::ParentOf { child: "A5".into() }
    );
    // WAL depth 1 with the window: A6 and the window's first restore point keep PITR.
    let p = plan(&chains(), &policy(None, Some(5), Some(1)), NOW);
    assert_eq!(p.wal_keep_from, Some(Lsn(5 << 20)));
}

#[test]
fn a_pinned_backup_stays_with_its_chain_and_unpinned_it_goes() {
    let mut cat = chains();
    cat.get_mut("A2").unwrap().keep_until = Some(NOW + DAY);
    let p = plan(&cat, &policy(Some(1), None, None), NOW);
    assert_eq!(kept(&p), ["A1", "A2", "A6"]);
    assert_eq!(
        p.verdict("A2").unwrap().why,
        Why::Pinned { until: NOW + DAY }
    );
    // The pin expired: the backup expires with the others.
    cat.get_mut("A2").unwrap().keep_until = Some(NOW - 1);
    assert_eq!(kept(&plan(&cat, &policy(Some(1), None, None), NOW)), ["A6"]);
    cat.get_mut("A2").unwrap().keep_until = Some(KEEP_FOREVER);
    assert_eq!(
        kept(&plan(&cat, &policy(Some(1), None, None), NOW)),
        ["A1", "A2", "A6"]
    );
}

#[test]
fn failures_go_once_older_than_every_kept_backup_and_running_ones_stay() {
    let mut cat = chains();
    cat.backups.push(BackupInfo {
        ..sample_info("A7", Status::Running)
    });
    cat.get_mut("A1").unwrap().status = Status::Error;
    cat.get_mut("A4").unwrap().status = Status::Corrupt;
    let p = plan(&cat, &policy(Some(1), None, None), NOW);
    assert_eq!(p.verdict("A1").unwrap().why, Why::OldFailure);
    assert_eq!(p.verdict("A4").unwrap().why, Why::OldFailure);
    assert_eq!(p.verdict("A7").unwrap().why, Why::Running);
    assert_eq!(kept(&p), ["A6", "A7"]);
    // A failure newer than the oldest kept backup is evidence: it stays. (A3 is now the newest
    // OK full: A5 is kept with it, and so A4, its parent, CORRUPT or not.)
    cat.get_mut("A6").unwrap().status = Status::Error;
    let p = plan(&cat, &policy(Some(1), None, None), NOW);
    assert_eq!(kept(&p), ["A3", "A4", "A5", "A6", "A7"]);
    // A failed incremental whose parent expires goes with it (never a record without its
    // parent).
    cat.backups.push(BackupInfo {
        parent: Some("A2".into()),
        mode: Mode::Ptrack,
        ..sample_info("A8", Status::Error)
    });
    let p = plan(&cat, &policy(Some(1), None, None), NOW);
    assert_eq!(p.verdict("A8").unwrap().why, Why::ParentExpires);
    assert_eq!(p.verdict("A6").unwrap().why, Why::RecentFailure);
}

#[test]
fn a_deleting_backup_is_never_kept() {
    let mut cat = chains();
    cat.get_mut("A6").unwrap().status = Status::Deleting;
    let p = plan(&cat, &RetentionPolicy::default(), NOW);
    assert_eq!(p.verdict("A6").unwrap().why, Why::BeingDeleted);
    assert!(!p.verdict("A6").unwrap().keep);
}

/// A random catalog: chains of OK backups (now and then an ERROR, a CORRUPT, a pin), in time
/// order, over up to 40 days.
fn random_catalog(rng: &mut TestRng) -> Catalog {
    let n = 1 + rng.below(14) as usize;
    let mut backups: Vec<BackupInfo> = Vec::new();
    let mut days = 40;
    for i in 0..n {
        days -= rng.below(4) as i64;
        let id = format!("B{i:02}");
        let parent = backups
            .iter()
            .rev()
            .find(|p| p.status == Status::Ok)
            .filter(|_| rng.chance(60))
            .map(|p| p.id.clone());
        let mut info = b(&id, parent.as_deref(), days, 1 + i as u64);
        if rng.chance(10) {
            info.status = if rng.chance(50) {
                Status::Error
            } else {
                Status::Corrupt
            };
        }
        if rng.chance(8) {
            info.keep_until = Some(NOW - DAY + rng.below(3) as i64 * DAY);
        }
        backups.push(info);
    }
    // Now and then a backup being taken on the newest OK one.
    if rng.chance(15)
        && let Some(p) = backups.iter().rev().find(|p| p.status == Status::Ok)
    {
        let parent = p.id.clone();
        backups.push(BackupInfo {
            parent: Some(parent),
            mode: Mode::Ptrack,
            ..sample_info("B99", Status::Running)
        });
    }
    Catalog { backups }
}

fn random_policy(rng: &mut TestRng) -> RetentionPolicy {
    let some = |rng: &mut TestRng, max| rng.chance(60).then(|| 1 + rng.below(max) as u32);
    policy(some(rng, 4), some(rng, 30), some(rng, 4))
}

#[test]
fn random_plans_keep_every_chain_whole_and_every_rule() {
    let mut rng = TestRng::from_env("retention plans");
    for _ in 0..3000 {
        let cat = random_catalog(&mut rng);
        let pol = random_policy(&mut rng);
        let p = plan(&cat, &pol, NOW);
        check_plan(&cat, &pol, &p);
    }
}

/// The invariants of a plan, each stated apart from how `plan` works.
fn check_plan(cat: &Catalog, pol: &RetentionPolicy, p: &Plan) {
    let keep = |id: &str| p.verdict(id).is_some_and(|v| v.keep);
    assert_eq!(p.verdicts.len(), cat.backups.len());
    for bk in &cat.backups {
        if keep(&bk.id) {
            // Whole chains: every parent of a kept backup is kept.
            let mut cur = bk;
            while let Some(parent) = cur.parent.as_deref().and_then(|x| cat.get(x)) {
                assert!(
                    keep(&parent.id),
                    "{} kept without {}: {p:?}",
                    bk.id,
                    parent.id
                );
                cur = parent;
            }
        }
        if bk.pinned_at(NOW) || bk.status == Status::Running {
            assert!(keep(&bk.id), "pinned or running {} expired", bk.id);
        }
        if !pol.expires() {
            assert!(keep(&bk.id));
        }
    }
    let ok: Vec<&BackupInfo> = cat
        .backups
        .iter()
        .filter(|b| b.status == Status::Ok)
        .collect();
    if let Some(n) = pol.redundancy {
        let fulls: Vec<_> = ok
            .iter()
            .rev()
            .filter(|b| b.mode == Mode::Full)
            .take(n as usize)
            .collect();
        for f in fulls {
            assert!(keep(&f.id), "full {} within redundancy {n} expired", f.id);
        }
    }
    if let Some(d) = pol.window_days {
        let opens = NOW - i64::from(d) * DAY;
        // Every moment of the window can be restored: some kept OK backup ends at or before
        // the window opens, or the window holds the oldest OK backup's whole history.
        let covering = ok.iter().rfind(|b| b.end_time.unwrap() < opens);
        if let Some(c) = covering {
            assert!(keep(&c.id), "window start {} expired", c.id);
        }
        for b in ok.iter().filter(|b| b.end_time.unwrap() >= opens) {
            assert!(keep(&b.id), "{} within the window expired", b.id);
        }
    }
    if pol.expires() && !ok.is_empty() {
        assert!(
            ok.iter().any(|b| keep(&b.id)),
            "every OK backup expired: {p:?}"
        );
    }
    // WAL: nothing a kept backup's own recovery needs goes, and without a depth nothing any
    // kept OK backup's PITR needs.
    if let Some(from) = p.wal_keep_from {
        let kept_ok: Vec<_> = ok.iter().filter(|b| keep(&b.id)).collect();
        let newest = kept_ok
            .last()
            .expect("WAL is expired only when a kept OK backup exists");
        assert!(from <= newest.start_lsn);
        if pol.wal_depth.is_none() {
            assert!(kept_ok.iter().all(|b| from <= b.start_lsn));
        }
    } else {
        assert!(!pol.expires() || ok.iter().all(|b| !keep(&b.id)));
    }
}
