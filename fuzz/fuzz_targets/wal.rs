//! Fuzz target: the WAL decoder fed any bytes (in two pieces) never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ptrack_types::{Lsn, WalSegSize};
use ptrack_wal::{DecoderConfig, Poll, Start, WalDecoder};

fuzz_target!(|data: &[u8]| {
    let cfg = DecoderConfig {
        seg_size: WalSegSize::new(1 << 20).expect("a valid size"),
        ..DecoderConfig::default()
    };
    let mut d = WalDecoder::new(cfg, Lsn(1 << 20), Start::FirstOnPage(Lsn(1 << 20)));
    let cut = data
        .first()
        .map_or(0, |b| usize::from(*b) * 64)
        .min(data.len());
    d.feed(&data[..cut]);
    for _ in 0..2 {
        loop {
            match d.poll() {
                Ok(Poll::Record(r)) => {
                    let _ = ptrack_wal::changes_of(&r, ptrack_types::PgMajorVersion::V18, 8192);
                }
                Ok(Poll::Abandoned { .. }) => {}
                Ok(Poll::NeedMore) | Ok(Poll::End(_)) | Err(_) => break,
            }
        }
        d.feed(&data[cut..]);
    }
});
