//! The `datapagemap_t` bitmap (`src/bin/pg_rewind/datapagemap.c`, the `pagemap` column of
//! `ptrack_get_pagemapset`): bit `b % 8` of byte `b / 8` is set when block `b` changed. One
//! decoder and one encoder for every crate that reads or builds such a map.

/// The blocks whose bits are set, ascending.
pub fn blocks(map: &[u8]) -> impl Iterator<Item = u32> + '_ {
    map.iter().enumerate().flat_map(|(i, &byte)| {
        (0..8u32)
            .filter(move |bit| byte & (1 << bit) != 0)
            .map(move |bit| i as u32 * 8 + bit)
    })
}

/// Sets block `b`'s bit, growing the map as needed; true when it was not set before.
pub fn set(map: &mut Vec<u8>, b: u32) -> bool {
    let offset = (b / 8) as usize;
    if offset >= map.len() {
        map.resize(offset + 1, 0);
    }
    let bit = 1u8 << (b % 8);
    let was = map[offset] & bit != 0;
    map[offset] |= bit;
    !was
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_bits_round_trip_in_datapagemap_order() {
        let mut m = Vec::new();
        for b in [0u32, 7, 8, 9, 1000, 3] {
            assert!(set(&mut m, b));
        }
        assert!(!set(&mut m, 8));
        assert_eq!(m[0], 0b1000_1001);
        assert_eq!(m[1], 0b0000_0011);
        assert_eq!(blocks(&m).collect::<Vec<_>>(), vec![0, 3, 7, 8, 9, 1000]);
        assert_eq!(blocks(&[]).count(), 0);
    }
}
