//! Record decoding on real PG15.20 and PG14.23 record bytes from spec §2.7 (CRCs included).

use super::*;

fn hex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}

const SMGR_CREATE: &str = "2A 00 00 00 D4 02 00 00 F8 2A 75 01 00 00 00 00
    11 02 00 00 48 7D 03 35 FF 10 7F 06 00 00 05 00 00 00 00 40 00 00 00 00 00 00";

const HEAP_INSERT_INIT: &str = "41 00 00 00 D5 02 00 00 E0 65 77 01 00 00 00 00
    80 0A 00 00 A0 00 ED 0B 00 60 10 00 7F 06 00 00 05 00 00 00 00 40 00 00 00 00 00 00 FF 03 02 00
    02 08 18 00 01 00 00 00 0D 68 65 6C 6C 6F 01 00 00";

const XLOG_SWITCH_REC: &str =
    "18 00 00 00 00 00 00 00 58 2D C6 01 00 00 00 00 40 00 00 00 D6 6B 05 F4";

#[test]
fn crc_matches_real_records() {
    for (rec, crc) in [
        (SMGR_CREATE, 0x35037D48u32),
        (HEAP_INSERT_INIT, 0x0BED00A0),
        (XLOG_SWITCH_REC, 0xF4056BD6),
    ] {
        assert_eq!(record_crc(&hex(rec)), crc);
    }
    assert_eq!(crc32c::crc32c(b"123456789"), 0xE3069283);
}

#[test]
fn smgr_create_has_no_blocks_and_its_main_data() {
    let r = decode_record(
        &hex(SMGR_CREATE),
        Lsn(0x0175_2B28),
        Lsn(0x0175_2B52),
        PgMajorVersion::V15,
        8192,
    )
    .unwrap();
    assert_eq!((r.rmid, r.info, r.xid, r.tot_len), (2, 0x11, 724, 42));
    assert_eq!(r.prev, Lsn(0x0175_2AF8));
    assert!(r.blocks.is_empty());
    assert_eq!(r.main_data.len(), 16);
    assert_eq!(
        read_locator(&r.main_data).unwrap().to_string(),
        "1663/5/16384"
    );
    assert_eq!(r.rmgr_name(), "Storage");
}

#[test]
fn heap_insert_init_block_ref() {
    let r = decode_record(
        &hex(HEAP_INSERT_INIT),
        Lsn(0x0177_6A28),
        Lsn(0x0177_6A69),
        PgMajorVersion::V15,
        8192,
    )
    .unwrap();
    assert_eq!((r.rmid, r.rmgr_info()), (10, 0x80));
    assert_eq!(r.blocks.len(), 1);
    let b = &r.blocks[0];
    assert_eq!(
        (b.id, b.fork, b.block.0, b.will_init, b.data_len),
        (0, ForkNumber::Main, 0, true, 16)
    );
    assert_eq!(b.locator.to_string(), "1663/5/16384");
    assert!(b.image.is_none());
    assert_eq!(r.main_data, vec![1, 0, 0]);
}

#[test]
fn truncated_and_malformed_records_are_errors_not_panics() {
    let full = hex(HEAP_INSERT_INIT);
    // Every cut must be handled without a panic. Cuts inside the fragment headers (bytes 25..44)
    // are always errors; a few longer cuts happen to be grammatical records (PostgreSQL would
    // accept them too), which the CRC check in the decoder rejects.
    for cut in 0..full.len() {
        let mut r = full[..cut].to_vec();
        if r.len() >= 4 {
            r[..4].copy_from_slice(&(cut as u32).to_le_bytes());
        }
        let res = decode_record(&r, Lsn(0), Lsn(0), PgMajorVersion::V15, 8192);
        if (25..44).contains(&cut) || cut < 24 {
            assert!(res.is_err(), "cut {cut}");
        }
    }
    // Block ids out of order, SAME_REL on the first block, fork 7, HAS_DATA without data.
    for (at, v) in [(24usize, 40u8), (25, 0xE0), (25, 0x67), (25, 0x40)] {
        let mut r = full.clone();
        r[at] = v;
        assert!(
            decode_record(&r, Lsn(0), Lsn(0), PgMajorVersion::V15, 8192).is_err(),
            "byte {at} = {v:#x}"
        );
    }
}

fn image_record(bimg_info: u8, extra: &[u8], len: u16, hole_off: u16) -> Vec<u8> {
    // header(24) | blk0 ff=0x10 data_len=0 | bimg_len hole_offset bimg_info [hole_length] | rel | blk | image
    let mut r = vec![0u8; 24];
    r.extend_from_slice(&[0, 0x10, 0, 0]);
    r.extend_from_slice(&len.to_le_bytes());
    r.extend_from_slice(&hole_off.to_le_bytes());
    r.push(bimg_info);
    r.extend_from_slice(extra);
    r.extend_from_slice(&[0x7F, 6, 0, 0, 5, 0, 0, 0, 4, 0x40, 0, 0, 9, 0, 0, 0]);
    r.extend(std::iter::repeat_n(0xAB, usize::from(len)));
    let tot = r.len() as u32;
    r[..4].copy_from_slice(&tot.to_le_bytes());
    r
}

#[test]
fn image_flags_follow_the_major() {
    // 0x05: HOLE|APPLY uncompressed in PG14, HOLE|PGLZ compressed in PG15 (which then has a
    // hole_length field).
    let pg14 = image_record(0x05, &[], 88, 72);
    let r = decode_record(&pg14, Lsn(0), Lsn(0), PgMajorVersion::V14, 8192).unwrap();
    let img = r.blocks[0].image.unwrap();
    assert_eq!(
        (img.compression, img.apply, img.hole_length),
        ("none", true, 8104)
    );
    assert!(decode_record(&pg14, Lsn(0), Lsn(0), PgMajorVersion::V15, 8192).is_err());

    let pg15 = image_record(0x05, &7376u16.to_le_bytes(), 173, 64);
    let r = decode_record(&pg15, Lsn(0), Lsn(0), PgMajorVersion::V15, 8192).unwrap();
    let img = r.blocks[0].image.unwrap();
    assert_eq!(
        (img.compression, img.apply, img.hole_length),
        ("pglz", false, 7376)
    );
    assert_eq!(r.blocks[0].block.0, 9);
    // PG14's compressed-with-hole applied image is 0x07 (spec §2.7).
    let pg14c = image_record(0x07, &7376u16.to_le_bytes(), 173, 64);
    let img = decode_record(&pg14c, Lsn(0), Lsn(0), PgMajorVersion::V14, 8192)
        .unwrap()
        .blocks[0]
        .image
        .unwrap();
    assert_eq!((img.compression, img.apply), ("pglz", true));
}
