//! Parsers never panic on any bytes: random and mutated inputs for the page verifier, the
//! pg_control parser and the relation path parser. Deterministic (a fixed xorshift seed) so a
//! failure reproduces; `fuzz/` runs the same entry points under libFuzzer for open-ended search.

use ptrack_page::builder::HeapPageBuilder;
use ptrack_page::control::synthetic_control_file;
use ptrack_page::{PageCheck, classify_path, parse_control_file, verify_page};
use ptrack_types::ForkNumber;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn check_all_ways(page: &[u8], blkno: u32) {
    for fork in ForkNumber::ALL {
        for checksums in [true, false] {
            let problems = verify_page(page, blkno, PageCheck { checksums, fork });
            for p in problems {
                assert!(!p.to_string().is_empty());
            }
        }
    }
}

#[test]
fn verify_page_survives_random_and_mutated_pages() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut valid = HeapPageBuilder::new(8192);
    for i in 0..30u8 {
        valid.add_tuple(4, &[i; 100]).unwrap();
    }
    let valid = valid.finish(0);
    for round in 0..3000 {
        // Mutations of a valid page: a few random bytes, often in the header and line pointers.
        let mut p = valid.clone();
        for _ in 0..1 + rng.below(8) {
            let at = if rng.below(2) == 0 {
                rng.below(24 + 30 * 4)
            } else {
                rng.below(8192)
            };
            p[at] = rng.next() as u8;
        }
        check_all_ways(&p, round);
        // Pure noise, and short or odd-sized buffers.
        let len = [0, 1, 23, 24, 100, 4096, 8192][rng.below(7)];
        let noise: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        check_all_ways(&noise, rng.next() as u32);
    }
}

#[test]
fn control_parser_survives_random_and_mutated_files() {
    let mut rng = Rng(0xDEAD_BEEF_CAFE_F00D);
    let seeds = [
        synthetic_control_file(1300, 202209061),
        synthetic_control_file(1700, 202406281),
        synthetic_control_file(1800, 202506291),
    ];
    for s in &seeds {
        assert!(parse_control_file(s).is_ok());
    }
    for _ in 0..20_000 {
        let mut b = seeds[rng.below(3)].clone();
        let cut = rng.below(b.len() + 1);
        if rng.below(4) == 0 {
            b.truncate(cut);
        }
        for _ in 0..rng.below(4) {
            if !b.is_empty() {
                let at = rng.below(b.len().min(300));
                b[at] = rng.next() as u8;
            }
        }
        let _ = parse_control_file(&b);
    }
}

#[test]
fn path_parser_survives_random_strings() {
    let mut rng = Rng(42);
    let alphabet: Vec<char> = "0123456789/._tbaseglobalpg_tblspcPG_fsmvinit\u{e9}"
        .chars()
        .collect();
    for _ in 0..50_000 {
        let s: String = (0..rng.below(40))
            .map(|_| alphabet[rng.below(alphabet.len())])
            .collect();
        let _ = classify_path(&s);
    }
}
