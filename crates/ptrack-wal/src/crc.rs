//! CRC-32C (Castagnoli) of WAL records, continued piece by piece: the checksum of
//! `src/include/port/pg_crc32c.h` (`INIT_CRC32C`, `COMP_CRC32C`, `FIN_CRC32C`), as
//! `xlogreader.c: ValidXLogRecord` computes it over each record.
//!
//! Every byte of WAL passes through here, so the implementation is chosen by length: for short
//! pieces (small records, header bytes) the `crc32` instruction eight bytes at a time from
//! unaligned loads (SSE 4.2, detected at run time; elsewhere the `crc32c` crate, which first
//! aligns one byte at a time: about 230 instructions per small record here, against about 15),
//! and `crc-fast`'s carry-less multiplication folding (AVX-512 VPCLMULQDQ where the CPU has it,
//! selected at run time) for longer ones, about twice as fast on page-sized pieces.

use crc_fast::{CrcAlgorithm, Digest};

/// Pieces shorter than this go through the `crc32` instruction loop.
const FOLD_MIN: usize = 128;

/// The CRC-32C of `crc`'s input followed by `data` (`crc` is a finished CRC, 0 for none).
pub fn crc32c_append(crc: u32, data: &[u8]) -> u32 {
    if data.len() < FOLD_MIN {
        return short_append(crc, data);
    }
    // A finished CRC-32C is the register inverted: resume from the register.
    let mut d = Digest::new_with_init_state(CrcAlgorithm::Crc32Iscsi, u64::from(!crc));
    d.update(data);
    d.finalize() as u32
}

/// [`crc32c_append`] of a short piece.
fn short_append(crc: u32, data: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("sse4.2") {
        // SAFETY: the CPU has SSE 4.2, checked just above.
        return unsafe { short_append_sse42(crc, data) };
    }
    crc32c::crc32c_append(crc, data)
}

/// The `crc32` instruction over `data`: eight bytes at a time (unaligned loads cost nothing
/// extra on x86-64), then four, then single bytes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
fn short_append_sse42(crc: u32, data: &[u8]) -> u32 {
    use std::arch::x86_64::{_mm_crc32_u8, _mm_crc32_u32, _mm_crc32_u64};
    let mut words = data.chunks_exact(8);
    let mut c = u64::from(!crc);
    for w in &mut words {
        c = _mm_crc32_u64(c, u64::from_le_bytes(w.try_into().unwrap_or_default()));
    }
    let mut c = c as u32;
    let mut rest = words.remainder();
    if let Some((w, tail)) = rest.split_first_chunk::<4>() {
        c = _mm_crc32_u32(c, u32::from_le_bytes(*w));
        rest = tail;
    }
    for &b in rest {
        c = _mm_crc32_u8(c, b);
    }
    !c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_append_equals_crc32c_for_every_length_and_split() {
        let data: Vec<u8> = (0..20_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        // The standard check value of CRC-32C.
        assert_eq!(crc32c_append(0, b"123456789"), 0xE306_9283);
        for len in (0..600).chain([4095, 4096, 8191, 8192, 16_384, 20_000]) {
            // Every alignment of the short path too.
            for shift in 0..8.min(len) {
                let d = &data[shift..len];
                assert_eq!(
                    short_append(0, d),
                    crc32c::crc32c(d),
                    "short {len} at {shift}"
                );
                let (a, b) = d.split_at(d.len() / 3);
                assert_eq!(
                    short_append(short_append(0, a), b),
                    crc32c::crc32c(d),
                    "short {len} at {shift}, split"
                );
            }
            let d = &data[..len];
            let want = crc32c::crc32c(d);
            assert_eq!(crc32c_append(0, d), want, "length {len}");
            for split in [0, 1, 7, 24, 127, 128, 129, len / 2, len] {
                let split = split.min(len);
                let (a, b) = d.split_at(split);
                assert_eq!(
                    crc32c_append(crc32c_append(0, a), b),
                    want,
                    "length {len} split {split}"
                );
            }
        }
    }
}
