//! `Lsn`: a position in the WAL (`XLogRecPtr`, `src/include/access/xlogdefs.h`).
//!
//! Displayed and parsed in PostgreSQL's `X/X` form (`16/B374D848`: high and low 32-bit halves in
//! upper-case hex, as `LSN_FORMAT_ARGS` prints them). Serialises as that string in human-readable
//! formats (JSON) and as a plain `u64` otherwise.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A WAL location. `Lsn(0)` is `InvalidXLogRecPtr`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    /// `InvalidXLogRecPtr`.
    pub const INVALID: Lsn = Lsn(0);
    /// The largest representable position.
    pub const MAX: Lsn = Lsn(u64::MAX);

    /// True unless this is `InvalidXLogRecPtr` (`XLogRecPtrIsInvalid`).
    pub fn is_valid(self) -> bool {
        self.0 != 0
    }

    /// Builds an LSN from the two halves in which pages store it (`PageXLogRecPtr`).
    pub fn from_parts(xlogid: u32, xrecoff: u32) -> Lsn {
        Lsn((u64::from(xlogid) << 32) | u64::from(xrecoff))
    }

    /// `self + bytes`, or `None` on overflow.
    pub fn checked_add(self, bytes: u64) -> Option<Lsn> {
        self.0.checked_add(bytes).map(Lsn)
    }

    /// `self - other` in bytes, or `None` when `other` is later.
    pub fn checked_sub(self, other: Lsn) -> Option<u64> {
        self.0.checked_sub(other.0)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl fmt::Debug for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Lsn({self})")
    }
}

/// A string that is not an LSN in PostgreSQL's `X/X` form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid LSN {input:?}: expected two hexadecimal numbers of at most 8 digits separated by '/', such as 16/B374D848"
)]
pub struct ParseLsnError {
    /// The rejected text.
    pub input: String,
}

impl FromStr for Lsn {
    type Err = ParseLsnError;

    /// Parses `X/X` the way `pg_lsn_in` does: 1–8 hex digits on each side.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseLsnError {
            input: s.to_owned(),
        };
        let (hi, lo) = s.split_once('/').ok_or_else(err)?;
        let half = |t: &str| -> Result<u32, ParseLsnError> {
            if t.is_empty() || t.len() > 8 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(err());
            }
            u32::from_str_radix(t, 16).map_err(|_| err())
        };
        Ok(Lsn::from_parts(half(hi)?, half(lo)?))
    }
}

impl Serialize for Lsn {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            s.serialize_u64(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Lsn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct LsnVisitor;
        impl Visitor<'_> for LsnVisitor {
            type Value = Lsn;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an LSN as \"X/X\" or an unsigned integer")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Lsn, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Lsn, E> {
                Ok(Lsn(v))
            }
        }
        if d.is_human_readable() {
            d.deserialize_str(LsnVisitor)
        } else {
            d.deserialize_u64(LsnVisitor)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_display_matches_postgres_format() {
        assert_eq!(Lsn(0x16_B374_D848).to_string(), "16/B374D848");
        assert_eq!(Lsn(0).to_string(), "0/0");
        assert_eq!(Lsn::from_parts(0, 0x0177_6AE8).to_string(), "0/1776AE8");
        assert_eq!(Lsn::MAX.to_string(), "FFFFFFFF/FFFFFFFF");
    }

    #[test]
    fn lsn_parse_accepts_pg_forms_and_rejects_garbage() {
        assert_eq!("16/B374D848".parse::<Lsn>().unwrap(), Lsn(0x16_B374_D848));
        assert_eq!("0/1776ae8".parse::<Lsn>().unwrap(), Lsn(0x0177_6AE8));
        for bad in [
            "",
            "/",
            "1/",
            "/1",
            "1/2/3",
            "123456789/0",
            "g/0",
            "1 /2",
            "-1/0",
            "+1/0",
        ] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn lsn_round_trips_through_display_and_serde() {
        for v in [
            0u64,
            1,
            0xFFFF_FFFF,
            0x1_0000_0000,
            u64::MAX,
            0x16_B374_D848,
        ] {
            let l = Lsn(v);
            assert_eq!(l.to_string().parse::<Lsn>().unwrap(), l);
            let j = serde_json::to_string(&l).unwrap();
            assert_eq!(j, format!("\"{l}\""));
            assert_eq!(serde_json::from_str::<Lsn>(&j).unwrap(), l);
        }
    }

    #[test]
    fn lsn_checked_arithmetic() {
        assert_eq!(Lsn::MAX.checked_add(1), None);
        assert_eq!(Lsn(5).checked_sub(Lsn(7)), None);
    }
}
