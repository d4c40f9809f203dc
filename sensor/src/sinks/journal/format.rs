//! On-disk format of a journal segment, and its checked decoding.
//!
//! ```text
//! segment file  <first seq, 20 decimal digits>.seg
//! header        magic "SNSRJNL\0" (8) | version u32 LE (1) | flags u32 LE (0) | first seq u64 LE
//! record        len u32 LE | crc32 u32 LE | body (len bytes)
//! body          seq u64 LE | time_ns i64 LE | payload (opaque, at most MAX_PAYLOAD bytes)
//! ```
//!
//! `crc32` (IEEE, as computed by `crc32fast`) covers the body. The records of a segment carry
//! contiguous sequence numbers starting at the one in its name. Nothing read from disk is
//! trusted: every length is bounded before it is used, and decoding never panics.

use std::{fmt, io};

pub(super) const MAGIC: [u8; 8] = *b"SNSRJNL\0";
pub(super) const VERSION: u32 = 1;
/// Length of the segment header.
pub(super) const HEADER_LEN: u64 = 24;
/// `len | crc` in front of every body.
pub(super) const FRAME_LEN: u64 = 8;
/// `seq | time_ns` at the start of every body.
pub(super) const BODY_FIXED_LEN: u64 = 16;
/// Largest payload of one record.
pub const MAX_PAYLOAD: usize = 1 << 20;
const MAX_BODY: u64 = BODY_FIXED_LEN + MAX_PAYLOAD as u64;
const SEGMENT_SUFFIX: &str = ".seg";
const SEQ_DIGITS: usize = 20;

pub(super) fn segment_file_name(first_seq: u64) -> String {
    format!("{first_seq:020}{SEGMENT_SUFFIX}")
}

/// The first sequence number in a segment file name, `None` for any other name.
pub(super) fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != SEQ_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

pub(super) fn encode_header(first_seq: u64) -> [u8; HEADER_LEN as usize] {
    let mut header = [0u8; HEADER_LEN as usize];
    header[..8].copy_from_slice(&MAGIC);
    header[8..12].copy_from_slice(&VERSION.to_le_bytes());
    header[16..24].copy_from_slice(&first_seq.to_le_bytes());
    header
}

/// Why a segment header was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderProblem {
    /// The file is shorter than a header.
    Short {
        len: u64,
    },
    BadMagic,
    UnsupportedVersion(u32),
    UnknownFlags(u32),
    /// The first sequence number in the header is not the one in the file name.
    SeqMismatch {
        header: u64,
        name: u64,
    },
}

impl fmt::Display for HeaderProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Short { len } => write!(f, "{len} bytes, shorter than a segment header"),
            Self::BadMagic => f.write_str("bad magic"),
            Self::UnsupportedVersion(v) => write!(f, "unsupported format version {v}"),
            Self::UnknownFlags(flags) => write!(f, "unknown header flags {flags:#x}"),
            Self::SeqMismatch { header, name } => {
                write!(f, "header says first seq {header}, file name says {name}")
            }
        }
    }
}

pub(super) fn check_header(bytes: &[u8], name_seq: u64) -> Result<(), HeaderProblem> {
    let short = HeaderProblem::Short {
        len: bytes.len() as u64,
    };
    if bytes.get(..8) != Some(&MAGIC[..]) {
        return Err(if bytes.len() < HEADER_LEN as usize {
            short
        } else {
            HeaderProblem::BadMagic
        });
    }
    let (Some(version), Some(flags), Some(first_seq)) =
        (le_u32(bytes, 8), le_u32(bytes, 12), le_u64(bytes, 16))
    else {
        return Err(short);
    };
    if version != VERSION {
        return Err(HeaderProblem::UnsupportedVersion(version));
    }
    if flags != 0 {
        return Err(HeaderProblem::UnknownFlags(flags));
    }
    if first_seq != name_seq {
        return Err(HeaderProblem::SeqMismatch {
            header: first_seq,
            name: name_seq,
        });
    }
    Ok(())
}

/// Appends one framed record to `buf`. The caller bounds `payload` by [`MAX_PAYLOAD`].
pub(super) fn encode_record(buf: &mut Vec<u8>, seq: u64, time_ns: i64, payload: &[u8]) {
    let body_len = BODY_FIXED_LEN as usize + payload.len();
    let start = buf.len();
    buf.reserve(FRAME_LEN as usize + body_len);
    buf.extend_from_slice(&(body_len as u32).to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(&time_ns.to_le_bytes());
    buf.extend_from_slice(payload);
    let crc = crc32fast::hash(&buf[start + FRAME_LEN as usize..]);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Why a record was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordProblem {
    /// The file ends inside the record (`needed` bytes from its start, `available` present).
    Incomplete {
        needed: u64,
        available: u64,
    },
    /// The length field is below the fixed body or above the largest record.
    BadLength(u32),
    BadCrc,
    /// A well-formed record whose sequence number breaks the segment's contiguous run.
    BadSeq {
        expected: u64,
        found: u64,
    },
}

impl fmt::Display for RecordProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Incomplete { needed, available } => {
                write!(f, "incomplete record ({available} of {needed} bytes)")
            }
            Self::BadLength(len) => write!(f, "record length {len} out of bounds"),
            Self::BadCrc => f.write_str("crc mismatch"),
            Self::BadSeq { expected, found } => write!(f, "seq {found}, expected {expected}"),
        }
    }
}

/// The outcome of reading at a record boundary.
#[derive(Debug)]
pub(super) enum Frame {
    /// Clean end of the readable region.
    End,
    /// A checked record; its body is in the caller's buffer, `len` counts frame and body.
    Record {
        seq: u64,
        time_ns: i64,
        len: u64,
    },
    Bad(RecordProblem),
}

/// Reads and checks the record at the current position of `r`, `available` bytes before the
/// end of the region to read. The body is left in `body` (the payload starts at
/// [`BODY_FIXED_LEN`]). `Err` only for I/O errors other than a short read.
pub(super) fn read_record(
    r: &mut impl io::Read,
    available: u64,
    body: &mut Vec<u8>,
) -> io::Result<Frame> {
    if available == 0 {
        return Ok(Frame::End);
    }
    let incomplete = |needed| Ok(Frame::Bad(RecordProblem::Incomplete { needed, available }));
    if available < FRAME_LEN {
        return incomplete(FRAME_LEN);
    }
    let mut frame = [0u8; FRAME_LEN as usize];
    match r.read_exact(&mut frame) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return incomplete(FRAME_LEN),
        Err(e) => return Err(e),
    }
    let (Some(len), Some(crc)) = (le_u32(&frame, 0), le_u32(&frame, 4)) else {
        return incomplete(FRAME_LEN);
    };
    let body_len = u64::from(len);
    if !(BODY_FIXED_LEN..=MAX_BODY).contains(&body_len) {
        return Ok(Frame::Bad(RecordProblem::BadLength(len)));
    }
    if body_len > available - FRAME_LEN {
        return incomplete(FRAME_LEN + body_len);
    }
    body.clear();
    body.resize(len as usize, 0);
    match r.read_exact(body) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            return incomplete(FRAME_LEN + body_len);
        }
        Err(e) => return Err(e),
    }
    if crc32fast::hash(body) != crc {
        return Ok(Frame::Bad(RecordProblem::BadCrc));
    }
    let (Some(seq), Some(time)) = (le_u64(body, 0), le_u64(body, 8)) else {
        return Ok(Frame::Bad(RecordProblem::BadLength(len)));
    };
    Ok(Frame::Record {
        seq,
        time_ns: time as i64,
        len: FRAME_LEN + body_len,
    })
}

/// The highest sequence number `>= min_seq` of any well-formed record (bounded length, matching
/// crc) starting at any byte of `region`. Used on the damaged tail of the newest segment: records
/// written after the damage must not have their sequence numbers handed out again.
pub(super) fn highest_valid_seq(region: &[u8], min_seq: u64) -> Option<u64> {
    let min_record = (FRAME_LEN + BODY_FIXED_LEN) as usize;
    // A contiguous run starting at `min_seq` cannot go further than this within the region.
    let max_seq = min_seq.saturating_add((region.len() / min_record) as u64);
    let mut best = None;
    for at in 0..region.len().saturating_sub(min_record - 1) {
        let Some(len) = le_u32(region, at) else { break };
        let body_len = u64::from(len);
        if !(BODY_FIXED_LEN..=MAX_BODY).contains(&body_len) {
            continue;
        }
        let body_start = at + FRAME_LEN as usize;
        let Some(body) = region.get(body_start..body_start + len as usize) else {
            continue;
        };
        let Some(seq) = le_u64(body, 0) else { continue };
        if seq < min_seq || seq > max_seq || best.is_some_and(|b| seq <= b) {
            continue;
        }
        if le_u32(region, at + 4) == Some(crc32fast::hash(body)) {
            best = Some(seq);
        }
    }
    best
}

fn le_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn le_u64(bytes: &[u8], at: usize) -> Option<u64> {
    let b = bytes.get(at..at.checked_add(8)?)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    Some(u64::from_le_bytes(a))
}
