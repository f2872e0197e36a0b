//! PostgreSQL's `hash_bytes_extended` (Bob Jenkins' lookup3, 64-bit result) and the 20-byte block
//! key ptrack hashes. Mirrors `src/common/hashfn.c: hash_bytes_extended` (the `mix`/`final`
//! macros and the little-endian tail) and ptrack's `engine.h: PtBlockId` / `BID_HASH_FUNC`
//! (spec ptrack.md §3.2).

/// One step of lookup3's `mix()` over three 32-bit words.
fn mix(a: &mut u32, b: &mut u32, c: &mut u32) {
    *a = a.wrapping_sub(*c);
    *a ^= c.rotate_left(4);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a);
    *b ^= a.rotate_left(6);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b);
    *c ^= b.rotate_left(8);
    *b = b.wrapping_add(*a);
    *a = a.wrapping_sub(*c);
    *a ^= c.rotate_left(16);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a);
    *b ^= a.rotate_left(19);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b);
    *c ^= b.rotate_left(4);
    *b = b.wrapping_add(*a);
}

/// lookup3's `final()`.
fn final_mix(a: &mut u32, b: &mut u32, c: &mut u32) {
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(14));
    *a ^= *c;
    *a = a.wrapping_sub(c.rotate_left(11));
    *b ^= *a;
    *b = b.wrapping_sub(a.rotate_left(25));
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(16));
    *a ^= *c;
    *a = a.wrapping_sub(c.rotate_left(4));
    *b ^= *a;
    *b = b.wrapping_sub(a.rotate_left(14));
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(24));
}

fn word(k: &[u8]) -> u32 {
    u32::from_le_bytes([k[0], k[1], k[2], k[3]])
}

/// `hash_bytes_extended(k, len, seed)` as computed on a little-endian host.
pub fn hash_bytes_extended(k: &[u8], seed: u64) -> u64 {
    // PostgreSQL takes the length as an int; keys here are far shorter.
    let init = 0x9e37_79b9_u32
        .wrapping_add(k.len() as u32)
        .wrapping_add(3_923_095);
    let (mut a, mut b, mut c) = (init, init, init);
    if seed != 0 {
        a = a.wrapping_add((seed >> 32) as u32);
        c = c.wrapping_add(seed as u32);
        mix(&mut a, &mut b, &mut c);
    }
    let mut k = k;
    while k.len() >= 12 {
        a = a.wrapping_add(word(&k[0..4]));
        b = b.wrapping_add(word(&k[4..8]));
        c = c.wrapping_add(word(&k[8..12]));
        mix(&mut a, &mut b, &mut c);
        k = &k[12..];
    }
    // The last 0..=11 bytes; the lowest byte of c is reserved for the length.
    let byte = |i: usize, shift: u32| u32::from(k[i]) << shift;
    let n = k.len();
    if n >= 11 {
        c = c.wrapping_add(byte(10, 24));
    }
    if n >= 10 {
        c = c.wrapping_add(byte(9, 16));
    }
    if n >= 9 {
        c = c.wrapping_add(byte(8, 8));
    }
    if n >= 8 {
        b = b.wrapping_add(byte(7, 24));
    }
    if n >= 7 {
        b = b.wrapping_add(byte(6, 16));
    }
    if n >= 6 {
        b = b.wrapping_add(byte(5, 8));
    }
    if n >= 5 {
        b = b.wrapping_add(byte(4, 0));
    }
    if n >= 4 {
        a = a.wrapping_add(byte(3, 24));
    }
    if n >= 3 {
        a = a.wrapping_add(byte(2, 16));
    }
    if n >= 2 {
        a = a.wrapping_add(byte(1, 8));
    }
    if n >= 1 {
        a = a.wrapping_add(byte(0, 0));
    }
    final_mix(&mut a, &mut b, &mut c);
    (u64::from(b) << 32) | u64::from(c)
}

/// ptrack's `PtBlockId`: tablespace, database, relation file number, fork (as `int32`) and block
/// number, 20 bytes without padding, hashed with seed 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockKey {
    /// Tablespace OID.
    pub spc: u32,
    /// Database OID.
    pub db: u32,
    /// Relation file number.
    pub rel: u32,
    /// Fork number (0–3 for real blocks; ptrack's summary levels add 16 or 32, see `map`).
    pub fork: i32,
    /// Block number (or chunk / segment number for the summary levels).
    pub blk: u32,
}

impl BlockKey {
    /// The 20 key bytes, little-endian.
    pub fn bytes(&self) -> [u8; 20] {
        let mut out = [0u8; 20];
        out[0..4].copy_from_slice(&self.spc.to_le_bytes());
        out[4..8].copy_from_slice(&self.db.to_le_bytes());
        out[8..12].copy_from_slice(&self.rel.to_le_bytes());
        out[12..16].copy_from_slice(&self.fork.to_le_bytes());
        out[16..20].copy_from_slice(&self.blk.to_le_bytes());
        out
    }

    /// `hash_bytes_extended(&key, 20, 0)`, specialised: one `mix` over the first 12 bytes, then
    /// the 8-byte tail (`a += fork`, `b += blk`) and `final`.
    pub fn hash(&self) -> u64 {
        let init = 0x9e37_79b9_u32.wrapping_add(20).wrapping_add(3_923_095);
        let (mut a, mut b, mut c) = (
            init.wrapping_add(self.spc),
            init.wrapping_add(self.db),
            init.wrapping_add(self.rel),
        );
        mix(&mut a, &mut b, &mut c);
        a = a.wrapping_add(self.fork as u32);
        b = b.wrapping_add(self.blk);
        final_mix(&mut a, &mut b, &mut c);
        (u64::from(b) << 32) | u64::from(c)
    }
}

/// The two slots of hash `h` in a map of `n` slots: `h % n` and `rotl64(h, 32) % n`.
pub fn slots(h: u64, n: u64) -> (usize, usize) {
    ((h % n) as usize, (h.rotate_left(32) % n) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Test vectors of spec ptrack.md §3.2 (hash, then slots in a 1 MB and a 64 MB map of the
    /// original's layout: N = (size - 20) / 8).
    #[test]
    fn spec_vectors() {
        let cases = [
            (
                (1663, 5, 1259, 0, 0),
                0xbaeb_a0c9_e758_f072_u64,
                (27676, 58108),
                (3667200, 3070380),
            ),
            (
                (1664, 0, 1262, 0, 0),
                0x8ec7_9185_288d_3f4e,
                (124271, 114428),
                (684626, 4791481),
            ),
            (
                (1663, 16384, 16385, 0, 7),
                0xc858_ca6d_40fd_7c2d,
                (117068, 43441),
                (5781550, 4915395),
            ),
            (
                (1663, 16384, 16385, 2, 0),
                0x8b4d_5a58_b320_d0ce,
                (114412, 89517),
                (5405664, 4940344),
            ),
        ];
        let n1 = ((1u64 << 20) - 20) / 8;
        let n64 = ((64u64 << 20) - 20) / 8;
        for ((spc, db, rel, fork, blk), hash, s1, s64) in cases {
            let k = BlockKey {
                spc,
                db,
                rel,
                fork,
                blk,
            };
            assert_eq!(k.hash(), hash, "{k:?}");
            assert_eq!(hash_bytes_extended(&k.bytes(), 0), hash, "{k:?} generic");
            assert_eq!(slots(hash, n1), s1, "{k:?} 1 MB");
            assert_eq!(slots(hash, n64), s64, "{k:?} 64 MB");
        }
    }

    #[test]
    fn specialised_equals_generic() {
        for i in 0..2000u32 {
            let k = BlockKey {
                spc: 1663 + i % 3,
                db: i.wrapping_mul(2_654_435_761),
                rel: 16384 + i,
                fork: (i % 4) as i32 + if i % 5 == 0 { 16 } else { 0 },
                blk: i.wrapping_mul(40503),
            };
            assert_eq!(k.hash(), hash_bytes_extended(&k.bytes(), 0));
        }
    }
}
