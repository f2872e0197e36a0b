//! A record spread over WAL pages, as the decoder's `gather` finds it: a list of pieces (LSN,
//! length), each inside one page of the decoder's [`ChunkBuf`]. Computes the record's CRC-32C
//! over the pieces in place and copies out only the byte ranges asked for (a prefix, the main
//! data), so a record's full-page images are never copied. Mirrors the CRC order of
//! `src/backend/access/transam/xlogreader.c: ValidXLogRecord` (body, then the header's first 20
//! bytes) on the reassembly `XLogDecodeNextRecord` does into its `readRecordBuf`.

use crate::buffer::ChunkBuf;
use crate::consts::SIZE_OF_XLOG_RECORD;

/// The CRC-32C of a record held in `pieces`, as `ValidXLogRecord` computes it (the body after the
/// 24-byte header, then the header's first 20 bytes), without copying the body.
pub(crate) fn pieces_crc(buf: &ChunkBuf, pieces: &[(u64, u64)]) -> Option<u32> {
    let mut body_crc = 0u32;
    let mut offset = 0usize;
    for (p, n) in pieces {
        let b = buf.slice(*p, *n)?;
        let skip = SIZE_OF_XLOG_RECORD.saturating_sub(offset).min(b.len());
        body_crc = crate::crc::crc32c_append(body_crc, b.get(skip..).unwrap_or_default());
        offset += b.len();
    }
    let mut head = [0u8; 20];
    let mut k = 0;
    for (p, n) in pieces {
        let b = buf.slice(*p, *n)?;
        for (h, x) in head.iter_mut().skip(k).zip(b) {
            *h = *x;
            k += 1;
        }
    }
    (k == head.len()).then(|| crate::crc::crc32c_append(body_crc, &head))
}

/// Copies record bytes `[off, off + n)` out of `pieces`; `None` if they do not hold them.
pub(crate) fn copy_out(
    buf: &ChunkBuf,
    pieces: &[(u64, u64)],
    off: usize,
    n: usize,
) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(n);
    copy_out_into(buf, pieces, off, n, &mut out).then_some(out)
}

/// Appends record bytes `[off, off + n)` out of `pieces` to `out`; false if they do not hold
/// them.
pub(crate) fn copy_out_into(
    buf: &ChunkBuf,
    pieces: &[(u64, u64)],
    off: usize,
    n: usize,
    out: &mut Vec<u8>,
) -> bool {
    let mut got = 0usize;
    let mut pos = 0usize;
    for (p, len) in pieces {
        let len = *len as usize;
        if pos + len > off && got < n {
            let start = off.saturating_sub(pos);
            let k = (n - got).min(len - start);
            let Some(b) = buf
                .slice(*p, len as u64)
                .and_then(|b| b.get(start..start + k))
            else {
                return false;
            };
            out.extend_from_slice(b);
            got += k;
        }
        pos += len;
    }
    got == n
}
