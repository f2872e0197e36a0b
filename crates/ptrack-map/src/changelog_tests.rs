//! Tests of [`super`]: names, coverage (gaps, overlaps, timelines), union, pruning.

use super::*;
use ptrack_types::{BlockNumber, Oid, RelFileNumber};

fn name(tli: u32, s: u64, e: u64) -> SetName {
    SetName {
        tli: TimeLineId(tli),
        start: Lsn(s),
        end: Lsn(e),
    }
}

#[test]
fn names_round_trip_and_odd_names_are_ignored() {
    let n = name(2, 0x1_0000_0028, 0x1_0200_0000);
    assert_eq!(
        n.file_name(),
        "00000002-0000000100000028-0000000102000000.pcs"
    );
    assert_eq!(SetName::parse(&n.file_name()), Some(n));
    for bad in [
        "00000002-0000000100000028-0000000102000000.pcs.tmp",
        "00000002-0000000100000028-0000000102000000",
        "0000002-0000000100000028-0000000102000000.pcs",
        "00000002-0000000100000028-00000001020000g0.pcs",
        "00000002-0000000100000028-0000000102000000-1.pcs",
        "00000001-0000000000000010-0000000000000010.pcs",
        "00000001-0000000000000010-000000000000000a.pcs",
    ] {
        assert_eq!(SetName::parse(bad), None, "{bad}");
    }
}

#[test]
fn coverage_needs_no_gap_and_the_right_timelines() {
    let tl1 = |_: Lsn| TimeLineId(1);
    let names = [name(1, 10, 50), name(1, 30, 80), name(1, 80, 120)];
    // Overlaps are fine; only what reaches past the start counts.
    assert_eq!(
        covering(&names, Lsn(40), Lsn(100), tl1),
        Some(vec![name(1, 10, 50), name(1, 30, 80), name(1, 80, 120)])
    );
    assert_eq!(
        covering(&names, Lsn(85), Lsn(120), tl1),
        Some(vec![name(1, 80, 120)])
    );
    // Not reaching the end, or starting after the start: no.
    assert_eq!(covering(&names, Lsn(40), Lsn(121), tl1), None);
    assert_eq!(covering(&names, Lsn(5), Lsn(100), tl1), None);
    // A gap.
    let gap = [name(1, 10, 50), name(1, 51, 120)];
    assert_eq!(covering(&gap, Lsn(20), Lsn(100), tl1), None);
    assert!(covering(&gap, Lsn(60), Lsn(100), tl1).is_some());
    // History: timeline 2 from 70. A timeline-1 set past 70 is another history.
    let hist = |l: Lsn| TimeLineId(if l.0 < 70 { 1 } else { 2 });
    assert_eq!(covering(&names, Lsn(40), Lsn(100), hist), None);
    let good = [name(1, 10, 70), name(2, 70, 120)];
    assert_eq!(
        covering(&good, Lsn(40), Lsn(100), hist).map(|v| v.len()),
        Some(2)
    );
    // A record ending exactly at a cut is in the set before it.
    let cut = [name(1, 10, 50), name(1, 50, 90)];
    assert_eq!(
        covering(&cut, Lsn(50), Lsn(90), tl1).map(|v| v.len()),
        Some(2)
    );
    assert_eq!(
        covering(&cut, Lsn(51), Lsn(90), tl1).map(|v| v.len()),
        Some(1)
    );
    assert_eq!(covering(&cut[1..], Lsn(50), Lsn(90), tl1), None);
}

fn loc(rel: u32) -> RelFileLocator {
    RelFileLocator {
        spc_oid: Oid(1663),
        db_oid: Oid(5),
        rel_number: RelFileNumber(rel),
    }
}

#[test]
fn union_of_written_sets_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join(DIR);
    let mut a = ChangeSet::new(9, Lsn(10));
    a.mark(loc(1), ForkNumber::Main, BlockNumber(5));
    a.end = Lsn(50);
    let mut b = ChangeSet::new(9, Lsn(50));
    b.mark(loc(1), ForkNumber::Main, BlockNumber(7));
    b.mark(loc(2), ForkNumber::Fsm, BlockNumber(0));
    b.end = Lsn(90);
    let na = write(&d, TimeLineId(1), &a).unwrap();
    let nb = write(&d, TimeLineId(1), &b).unwrap();
    assert_eq!(list(&d), vec![na, nb]);
    // From 30: the first set began before it (its blocks are to be probed), the second after.
    let c = read_chain(&d, &[na, nb], Lsn(30), 9).unwrap();
    assert_eq!(
        c.probe[&(loc(1), ForkNumber::Main)]
            .iter()
            .collect::<Vec<_>>(),
        vec![5]
    );
    assert_eq!(
        c.exact[&(loc(1), ForkNumber::Main)]
            .iter()
            .collect::<Vec<_>>(),
        vec![7]
    );
    assert_eq!(c.exact[&(loc(2), ForkNumber::Fsm)].len(), 1);
    assert!(c.has(&(loc(2), ForkNumber::Fsm)) && !c.has(&(loc(3), ForkNumber::Main)));
    // From 11 (the first set's records all end after 10): everything exact.
    let c = read_chain(&d, &[na, nb], Lsn(11), 9).unwrap();
    assert!(c.probe.is_empty());
    // Another cluster's, or a file renamed to another range: refused.
    assert!(read_chain(&d, &[na], Lsn(30), 10).is_err());
    std::fs::rename(d.join(na.file_name()), d.join(name(1, 10, 49).file_name())).unwrap();
    assert!(read_chain(&d, &[name(1, 10, 49)], Lsn(30), 9).is_err());
    // Damaged: refused.
    let p = d.join(nb.file_name());
    let mut bytes = std::fs::read(&p).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&p, bytes).unwrap();
    assert!(read_chain(&d, &[nb], Lsn(60), 9).is_err());
}

#[test]
fn prune_drops_unusable_then_oldest_over_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join(DIR);
    for i in 0..6u64 {
        let mut s = ChangeSet::new(9, Lsn(i * 100));
        for b in 0..200 {
            s.mark(loc(i as u32), ForkNumber::Main, BlockNumber(b * 7));
        }
        s.end = Lsn(i * 100 + 100);
        write(&d, TimeLineId(1), &s).unwrap();
    }
    let size = std::fs::metadata(d.join(list(&d)[0].file_name()))
        .unwrap()
        .len();
    // Ends at or before init_lsn 200: the first two go.
    assert_eq!(prune(&d, Lsn(200), u64::MAX).unwrap(), 2);
    assert_eq!(list(&d)[0].start, Lsn(200));
    // Over a cap of two files: the oldest go, the newest stay.
    assert_eq!(prune(&d, Lsn(0), 2 * size).unwrap(), 2);
    assert_eq!(
        list(&d).iter().map(|n| n.start.0).collect::<Vec<_>>(),
        vec![400, 500]
    );
    clear(&d).unwrap();
    assert!(list(&d).is_empty());
    // More files than MAX_SETS: the oldest go.
    for i in 0..(MAX_SETS as u64 + 3) {
        let mut s = ChangeSet::new(9, Lsn(i * 10));
        s.end = Lsn(i * 10 + 10);
        write(&d, TimeLineId(1), &s).unwrap();
    }
    assert_eq!(prune(&d, Lsn(0), u64::MAX).unwrap(), 3);
    assert_eq!(list(&d).len(), MAX_SETS);
    assert_eq!(list(&d)[0].start, Lsn(30));
}
