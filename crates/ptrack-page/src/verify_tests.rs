//! Unit tests of the page rules on pages built byte by byte; the same rules run against real
//! servers' pages in `crates/ptrack-cli/tests/verify.rs`.

use super::*;
use crate::builder::{HeapPageBuilder, set_checksum};
use crate::damage::{DamageKind, damage_page};
use crate::page::{LinePointer, LpFlags};

const MAIN: PageCheck = PageCheck {
    checksums: true,
    fork: ForkNumber::Main,
};

fn page_with_tuples(n: usize) -> Vec<u8> {
    let mut b = HeapPageBuilder::new(8192);
    for i in 0..n {
        b.add_tuple(3, &[i as u8; 40]).unwrap();
    }
    b.finish(7)
}

fn kinds(p: &[Problem]) -> Vec<String> {
    p.iter()
        .map(|x| {
            serde_json::to_value(x).unwrap()["kind"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

#[test]
fn valid_pages_pass() {
    assert_eq!(verify_page(&page_with_tuples(5), 7, MAIN), vec![]);
    assert_eq!(verify_page(&vec![0u8; 8192], 7, MAIN), vec![]);
    // Same page without checksums: the stored value is ignored.
    let mut p = page_with_tuples(5);
    p[8] ^= 0xFF;
    let off = PageCheck {
        checksums: false,
        ..MAIN
    };
    assert_eq!(verify_page(&p, 7, off), vec![]);
}

#[test]
fn checksum_depends_on_absolute_block() {
    let p = page_with_tuples(2);
    let problems = verify_page(&p, 131_072 + 7, MAIN);
    assert!(matches!(
        problems.as_slice(),
        [Problem::ChecksumMismatch { .. }]
    ));
}

#[test]
fn new_page_with_data_is_invalid_and_not_checksummed() {
    let mut p = vec![0u8; 8192];
    p[5000] = 1;
    assert_eq!(verify_page(&p, 0, MAIN), vec![Problem::NewPageNotZero]);
}

#[test]
fn each_header_rule_is_named() {
    let cases: [(usize, u16, HeaderRule); 6] = [
        (10, 0x0100, HeaderRule::InvalidFlags),
        (12, 9000, HeaderRule::LowerAboveUpper),
        (16, 7984, HeaderRule::UpperAboveSpecial),
        (16, 8196, HeaderRule::SpecialBeyondPage),
        (12, 10, HeaderRule::LowerInsideHeader),
        (18, 0x2005, HeaderRule::PageSizeVersion),
    ];
    for (off, v, rule) in cases {
        let mut p = page_with_tuples(3);
        p[off..off + 2].copy_from_slice(&v.to_le_bytes());
        set_checksum(&mut p, 7);
        let got = verify_page(&p, 7, MAIN);
        assert!(
            got.iter()
                .any(|x| matches!(x, Problem::InsaneHeader { rule: r, .. } if *r == rule)),
            "{rule:?}: {got:?}"
        );
        assert!(!got.iter().any(Problem::is_checksum));
    }
    let mut p = page_with_tuples(1);
    p[16..18].copy_from_slice(&8188u16.to_le_bytes());
    set_checksum(&mut p, 7);
    assert!(verify_page(&p, 7, MAIN).iter().any(|x| matches!(
        x,
        Problem::InsaneHeader {
            rule: HeaderRule::SpecialNotAligned,
            ..
        }
    )));
}

#[test]
fn line_pointer_defects_are_found() {
    let build = |extra: LinePointer| {
        let mut b = HeapPageBuilder::new(8192);
        b.add_tuple(2, &[1; 16]).unwrap();
        b.add_line_pointer(extra);
        b.finish(0)
    };
    let lp = |off, flags, len| LinePointer { off, flags, len };
    let cases = [
        (lp(8, LpFlags::Unused, 0), LpDefect::UnusedHasStorage),
        (lp(8152, LpFlags::Normal, 10), LpDefect::TooShort),
        (lp(8156, LpFlags::Normal, 24), LpDefect::NotAligned),
        (lp(32, LpFlags::Normal, 24), LpDefect::BelowUpper),
        (lp(8176, LpFlags::Normal, 40), LpDefect::PastSpecial),
        (lp(1, LpFlags::Redirect, 4), LpDefect::RedirectHasLength),
        (lp(9, LpFlags::Redirect, 0), LpDefect::RedirectOutOfRange),
        (lp(0, LpFlags::Redirect, 0), LpDefect::RedirectOutOfRange),
        (lp(2, LpFlags::Redirect, 0), LpDefect::RedirectToRedirect),
        (lp(1, LpFlags::Redirect, 0), LpDefect::RedirectToNonHeapOnly),
    ];
    for (extra, want) in cases {
        let p = build(extra);
        let got = verify_page(&p, 0, MAIN);
        assert!(
            got.iter().any(
                |x| matches!(x, Problem::LinePointer { item: 2, defect, .. } if *defect == want)
            ),
            "{want:?}: {got:?}"
        );
    }
    // A dead pointer without storage and a redirect to a heap-only tuple are fine.
    let mut b = HeapPageBuilder::new(8192);
    let t = b.add_tuple(2, &[1; 16]).unwrap();
    b.add_line_pointer(lp(0, LpFlags::Dead, 0));
    let mut p = b.finish(0);
    let off = usize::from(LinePointer::read(&p, usize::from(t)).unwrap().off);
    p[off + 19] |= 0x80; // HEAP_ONLY_TUPLE in t_infomask2
    let mut b2 = p.clone();
    let lower = u16::from_le_bytes([b2[12], b2[13]]);
    b2[usize::from(lower)..usize::from(lower) + 4]
        .copy_from_slice(&lp(1, LpFlags::Redirect, 0).to_raw().to_le_bytes());
    b2[12..14].copy_from_slice(&(lower + 4).to_le_bytes());
    set_checksum(&mut b2, 0);
    assert_eq!(verify_page(&b2, 0, MAIN), vec![]);
}

#[test]
fn tuple_header_defects_are_found() {
    let base = page_with_tuples(1);
    let off = usize::from(LinePointer::read(&base, 1).unwrap().off);
    let cases: [(usize, u8, TupleDefect); 4] = [
        (22, 27, TupleDefect::HoffNotAligned),
        (22, 16, TupleDefect::HoffTooSmall),
        (22, 32, TupleDefect::HoffMismatch),
        (21, 0x14, TupleDefect::MultiXactCommitted),
    ];
    for (at, v, want) in cases {
        let mut p = base.clone();
        p[off + at] = v;
        set_checksum(&mut p, 7);
        let got = verify_page(&p, 7, MAIN);
        assert!(
            got.iter()
                .any(|x| matches!(x, Problem::TupleHeader { defect, .. } if *defect == want)),
            "{want:?}: {got:?}"
        );
    }
    // Null bitmap: 3 attributes with HEAP_HASNULL still fit in t_hoff 24.
    let mut p = base.clone();
    p[off + 20] |= 0x01;
    set_checksum(&mut p, 7);
    assert_eq!(verify_page(&p, 7, MAIN), vec![]);
    // Heap checks do not apply to pages with a special space (indexes) or to FSM/VM forks.
    let mut p = base;
    p[off + 22] = 27;
    set_checksum(&mut p, 7);
    let fsm = PageCheck {
        fork: ForkNumber::Fsm,
        ..MAIN
    };
    assert_eq!(verify_page(&p, 7, fsm), vec![]);
}

#[test]
fn every_damage_kind_is_detected_by_the_expected_rule() {
    for kind in DamageKind::ALL {
        let mut p = page_with_tuples(4);
        damage_page(&mut p, 7, kind).unwrap();
        let with = kinds(&verify_page(&p, 7, MAIN));
        assert!(
            with.contains(&"checksum_mismatch".to_string()),
            "{kind:?}: {with:?}"
        );
        let without = kinds(&verify_page(
            &p,
            7,
            PageCheck {
                checksums: false,
                ..MAIN
            },
        ));
        assert_eq!(
            !without.is_empty(),
            kind.detectable_without_checksums(),
            "{kind:?}: {without:?}"
        );
    }
}

#[test]
fn problems_render_as_one_line_each() {
    let mut p = page_with_tuples(2);
    damage_page(&mut p, 7, DamageKind::Header).unwrap();
    for prob in verify_page(&p, 7, MAIN) {
        let s = prob.to_string();
        assert!(!s.contains('\n') && !s.is_empty());
    }
}

#[test]
fn fast_path_never_accepts_what_the_full_check_rejects() {
    let mut seed = 0x1234_5678_9ABC_DEF1u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut b = HeapPageBuilder::new(8192);
    for i in 0..40u8 {
        b.add_tuple(1 + u16::from(i % 9), &[i; 64]).unwrap();
    }
    let valid = b.finish(0);
    let h = PageHeader::parse(&valid).unwrap();
    let nlp = h.line_pointer_count();
    let mut fast_ok = 0;
    for _ in 0..20_000 {
        let mut p = valid.clone();
        // Mutate line pointers and tuple headers, where the fast path decides.
        for _ in 0..1 + next() % 4 {
            let at = if next() % 2 == 0 {
                24 + (next() as usize % (nlp * 4))
            } else {
                let lp = LinePointer::read(&valid, 1 + next() as usize % nlp).unwrap();
                usize::from(lp.off) + 16 + (next() as usize % 8)
            };
            p[at] = next() as u8;
        }
        for item in 1..=nlp {
            let raw = u32::from_le_bytes(p[24 + (item - 1) * 4..][..4].try_into().unwrap());
            if item_fast_ok(&p, raw, u32::from(h.upper), u32::from(h.special)) {
                fast_ok += 1;
                let mut full = Vec::new();
                check_item(&p, &h, nlp, item, &mut full);
                assert_eq!(
                    full,
                    vec![],
                    "fast path accepted item {item} (raw {raw:#x})"
                );
            }
        }
    }
    assert!(
        fast_ok > 100_000,
        "the fast path must be exercised: {fast_ok}"
    );
}
