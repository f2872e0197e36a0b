//! Checks of the extension's two postmaster settings, `ptrack.map_size` and
//! `ptrack.map_location`, worded as PostgreSQL words its own (`guc.c:
//! parse_and_validate_value`, whose range message gained units in PostgreSQL 16).
//!
//! Why the extension checks them itself: a preloaded library's settings are read from the
//! configuration as placeholders, and `guc.c: define_custom_variable` applies a placeholder's
//! value with only a WARNING when it is invalid, leaving the default. For `ptrack.map_size = -1`
//! that silently turned tracking off and deleted the map; the original ptrack 2.4 (range 0 ..
//! 32768; −1 was the 2.1/2.2 default, "not set") behaves the same. A bad value of a postmaster
//! setting must stop the server instead, as one of PostgreSQL's own does; so the extension
//! checks the placeholder's text with these functions before it defines the setting.

use crate::files::MapLocation;
use crate::map::MAX_MAP_SIZE_MB;

/// A setting's value the server must not start with: the message and a hint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SettingError {
    /// PostgreSQL's message for the value.
    pub message: String,
    /// What the setting accepts.
    pub hint: String,
}

/// `ptrack.map_size` after PostgreSQL's integer parsing (`guc.c: parse_int`, with units).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParsedSize<'a> {
    /// Not an integer with a valid memory unit; PostgreSQL's hint, when it gave one.
    Invalid(Option<&'a str>),
    /// The value in MB.
    Mb(i32),
}

const MAP_SIZE_HINT: &str =
    "ptrack.map_size is the map's size in MB, from 1 to 32768 (32 GB), or 0 to turn ptrack off.";

/// Checks `ptrack.map_size` given as `text` (parsed as `parsed`) on major `major`: the size in
/// MB, or the message the server stops with.
pub fn check_map_size(text: &str, parsed: ParsedSize<'_>, major: u32) -> Result<u32, SettingError> {
    let mb = match parsed {
        ParsedSize::Invalid(hint) => {
            return Err(SettingError {
                message: format!("invalid value for parameter \"ptrack.map_size\": \"{text}\""),
                hint: hint.map_or_else(|| MAP_SIZE_HINT.to_string(), str::to_string),
            });
        }
        ParsedSize::Mb(mb) => mb,
    };
    match u32::try_from(mb) {
        Ok(v) if v <= MAX_MAP_SIZE_MB => Ok(v),
        _ => {
            let range = if major >= 16 {
                format!("0 MB .. {MAX_MAP_SIZE_MB} MB")
            } else {
                format!("0 .. {MAX_MAP_SIZE_MB}")
            };
            Err(SettingError {
                message: format!(
                    "{mb} MB is outside the valid range for parameter \"ptrack.map_size\" ({range})"
                ),
                hint: MAP_SIZE_HINT.to_string(),
            })
        }
    }
}

/// Checks `ptrack.map_location` given as `text`.
pub fn check_map_location(text: &str) -> Result<MapLocation, SettingError> {
    MapLocation::parse(text).ok_or_else(|| SettingError {
        message: format!("invalid value for parameter \"ptrack.map_location\": \"{text}\""),
        hint: format!(
            "Available values: {}.",
            MapLocation::ALL.map(MapLocation::name).join(", ")
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_size_messages_are_postgresql_s() {
        assert_eq!(check_map_size("64MB", ParsedSize::Mb(64), 18), Ok(64));
        assert_eq!(check_map_size("0", ParsedSize::Mb(0), 15), Ok(0));
        assert_eq!(check_map_size("32GB", ParsedSize::Mb(32768), 15), Ok(32768));
        let e = check_map_size("-1", ParsedSize::Mb(-1), 15).unwrap_err();
        assert_eq!(
            e.message,
            "-1 MB is outside the valid range for parameter \"ptrack.map_size\" (0 .. 32768)"
        );
        let e = check_map_size("100000000", ParsedSize::Mb(100_000_000), 18).unwrap_err();
        assert_eq!(
            e.message,
            "100000000 MB is outside the valid range for parameter \"ptrack.map_size\" (0 MB .. 32768 MB)"
        );
        assert!(e.hint.contains("or 0 to turn ptrack off"));
        let e = check_map_size("lots", ParsedSize::Invalid(None), 18).unwrap_err();
        assert_eq!(
            e.message,
            "invalid value for parameter \"ptrack.map_size\": \"lots\""
        );
        let e = check_map_size("1XB", ParsedSize::Invalid(Some("Valid units…")), 18).unwrap_err();
        assert_eq!(e.hint, "Valid units…");
    }

    #[test]
    fn map_location_values() {
        assert_eq!(check_map_location("Global"), Ok(MapLocation::Global));
        assert_eq!(check_map_location("pg_ptrack"), Ok(MapLocation::PgPtrack));
        let e = check_map_location("elsewhere").unwrap_err();
        assert_eq!(
            e.message,
            "invalid value for parameter \"ptrack.map_location\": \"elsewhere\""
        );
        assert_eq!(e.hint, "Available values: pg_ptrack, global.");
    }
}
