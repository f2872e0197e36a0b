//! `pg_checksum_page`: PostgreSQL's data page checksum, byte-exact
//! (`src/include/storage/checksum_impl.h`, identical in PG13–18; spec §5.3).
//!
//! An FNV-1a-like hash over 32 parallel 32-bit columns (word index mod 32), two extra mixing
//! rounds, an XOR fold, the block number mixed in, and a reduction to 1..=65535. The
//! `pd_checksum` field counts as zero. The column layout is what makes the loop vectorise; on
//! x86-64 an AVX2 copy of the same code is picked at run time when the CPU has it.

/// FNV prime used by the mixing step.
const FNV_PRIME: u32 = 16_777_619;
/// Number of parallel sums.
const N_SUMS: usize = 32;
/// Bytes per row of the page: `N_SUMS` words of 4 bytes.
const ROW: usize = N_SUMS * 4;

/// Initial values of the 32 sums (`checksumBaseOffsets`).
const BASE_OFFSETS: [u32; N_SUMS] = [
    0x5B1F36E9, 0xB8525960, 0x02AB50AA, 0x1DE66D2A, 0x79FF467A, 0x9BB9F8A3, 0x217E7CD2, 0x83E13D2C,
    0xF8D4474F, 0xE39EB970, 0x42C6AE16, 0x993216FA, 0x7B093B5D, 0x98DAFF3C, 0xF718902A, 0x0B1C9CDB,
    0xE58F764B, 0x187636BC, 0x5D7B3BB1, 0xE73DE7DE, 0x92BEC979, 0xCCA6C0B2, 0x304A0979, 0x85AA43D4,
    0x783125BB, 0x6CA8EAA2, 0xE407EAC6, 0x4B5CFC3E, 0x9FBF8C76, 0x15CA20BE, 0xF2CA9FD3, 0x959BD756,
];

#[inline(always)]
fn comp(s: u32, v: u32) -> u32 {
    let t = s ^ v;
    t.wrapping_mul(FNV_PRIME) ^ (t >> 17)
}

/// The column hash of `page` (the raw 32-bit fold before the block number is mixed in).
/// `page.len()` must be a multiple of 128; trailing bytes of a shorter row are ignored.
#[inline(always)]
fn fold_generic(page: &[u8]) -> u32 {
    let mut sums = BASE_OFFSETS;
    let mut rows = page.chunks_exact(ROW);
    if let Some(first) = rows.next() {
        for (j, (s, w)) in sums.iter_mut().zip(first.chunks_exact(4)).enumerate() {
            let mut v = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
            if j == 2 {
                // Bytes 8..10 are pd_checksum: treated as zero.
                v &= 0xFFFF_0000;
            }
            *s = comp(*s, v);
        }
    }
    for row in rows {
        let mut words = [0u32; N_SUMS];
        for (d, w) in words.iter_mut().zip(row.chunks_exact(4)) {
            *d = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
        }
        for (s, v) in sums.iter_mut().zip(words) {
            *s = comp(*s, v);
        }
    }
    for _ in 0..2 {
        for s in sums.iter_mut() {
            *s = comp(*s, 0);
        }
    }
    sums.iter().fold(0, |acc, s| acc ^ s)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn fold_avx2(page: &[u8]) -> u32 {
    fold_generic(page)
}

fn fold(page: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            return unsafe { fold_avx2(page) };
        }
    }
    fold_generic(page)
}

/// `pg_checksum_page(page, blkno)`: the checksum PostgreSQL stores in `pd_checksum` for a page
/// of `page.len()` bytes (BLCKSZ) at absolute block number `blkno` of its fork
/// (`segment * RELSEG_SIZE + block in file`). Never returns 0.
pub fn pg_checksum_page(page: &[u8], blkno: u32) -> u16 {
    let r = fold(page) ^ blkno;
    // r % 65535 < 65535, so + 1 fits in u16.
    ((r % 65535) + 1) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    fn init_page() -> Vec<u8> {
        let mut p = vec![0u8; 8192];
        p[12..24].copy_from_slice(&[0x18, 0, 0, 0x20, 0, 0x20, 0x04, 0x20, 0, 0, 0, 0]);
        p
    }

    #[test]
    fn spec_test_vectors() {
        let ff = vec![0xFFu8; 8192];
        assert_eq!(fold(&ff), 0x0C7B01A0);
        assert_eq!(fold_generic(&ff), 0x0C7B01A0);
        assert_eq!(pg_checksum_page(&ff, 0), 0x0E1C);
        assert_eq!(pg_checksum_page(&ff, 999), 0x0EC3);

        let p = init_page();
        assert_eq!(fold(&p), 0x0302625D);
        assert_eq!(pg_checksum_page(&p, 0), 0x6560);
        assert_eq!(pg_checksum_page(&p, 1), 0x655F);
        assert_eq!(pg_checksum_page(&p, 131071), 0xA0A6);

        let mut seq: Vec<u8> = (0..8192).map(|i| (i & 0xFF) as u8).collect();
        seq[14..16].copy_from_slice(&[0x00, 0x10]);
        assert_eq!(fold(&seq), 0xFBA130CA);
        assert_eq!(pg_checksum_page(&seq, 0), 0x2C6D);
        for v in [[0u8, 0], [0xAB, 0xCD], [0xFF, 0xFF]] {
            seq[8..10].copy_from_slice(&v);
            assert_eq!(
                pg_checksum_page(&seq, 12345),
                0xFC95,
                "pd_checksum must not count"
            );
        }
    }

    #[test]
    fn other_block_sizes_match_pgbackrest_vectors() {
        for (size, b0, b999) in [
            (1024usize, 0x016E, 0x0391),
            (2048, 0xB57B, 0xB7A2),
            (4096, 0x5B9B, 0x5BB8),
            (16384, 0x158E, 0x18AD),
            (32768, 0x5366, 0x5745),
        ] {
            let ff = vec![0xFFu8; size];
            assert_eq!(pg_checksum_page(&ff, 0), b0, "size {size}");
            assert_eq!(pg_checksum_page(&ff, 999), b999, "size {size}");
        }
    }

    #[test]
    fn real_pg15_page_checksum_block_number_is_absolute() {
        // Block numbers across 1 GiB segments: block 5 of segment 2 is block 2*131072+5.
        let p = init_page();
        let abs = 2 * 131_072 + 5;
        assert_ne!(pg_checksum_page(&p, abs), pg_checksum_page(&p, 5));
        assert_eq!(pg_checksum_page(&p, abs), {
            let r = fold_generic(&p) ^ abs;
            ((r % 65535) + 1) as u16
        });
    }
}
