//! Recovery targets for `ptrack restore --recovery-target`: parsing (LSNs as `X/X`, times in the
//! ISO forms PostgreSQL's `timestamptz` input accepts, transaction IDs, restore point names),
//! checking a target against a backup's consistency point before anything is written (a server
//! asked to stop before it is consistent refuses to start: `xlogrecovery.c`, "requested
//! recovery stop point is before consistent recovery point"), and the recovery settings written
//! into the restored cluster.

use std::str::FromStr;

use ptrack_types::Lsn;

use ptrack_format::catalog::BackupInfo;

/// Where recovery should stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryTarget {
    /// As soon as the restored cluster is consistent (end of the backup).
    Immediate,
    /// To the end of the archive, following the newest timeline (`recovery_target_timeline =
    /// 'latest'`, no target).
    Latest,
    /// At this LSN.
    Lsn(Lsn),
    /// At this time.
    Time(TargetTime),
    /// After this transaction.
    Xid(u64),
    /// At this named restore point.
    Name(String),
}

/// A recovery target time as given, with its instant when a time zone was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetTime {
    /// The text given (written to `recovery_target_time` as is).
    pub text: String,
    /// Unix seconds (rounded down) of the local time read as UTC.
    pub utc_seconds: i64,
    /// Offset east of UTC in seconds, when the text names one.
    pub offset: Option<i32>,
}

impl TargetTime {
    /// The earliest and latest Unix second the text can mean (without a zone: any offset from
    /// UTC−12 to UTC+14).
    pub fn bounds(&self) -> (i64, i64) {
        match self.offset {
            Some(o) => (
                self.utc_seconds - i64::from(o),
                self.utc_seconds - i64::from(o),
            ),
            None => (self.utc_seconds - 14 * 3600, self.utc_seconds + 12 * 3600),
        }
    }
}

const SYNTAX: &str = "expected immediate, latest, lsn:X/X, time:'YYYY-MM-DD[ HH:MM[:SS[.frac]]][ ZONE]' \
                      (ZONE: Z, UTC, +HH, +HH:MM or -HHMM), xid:N or name:NAME";

impl FromStr for RecoveryTarget {
    type Err = String;
    fn from_str(s: &str) -> Result<RecoveryTarget, String> {
        match s {
            "immediate" => return Ok(RecoveryTarget::Immediate),
            "latest" => return Ok(RecoveryTarget::Latest),
            _ => {}
        }
        let (k, v) = s.split_once(':').ok_or_else(|| SYNTAX.to_string())?;
        match k {
            "lsn" => Lsn::from_str(v)
                .ok()
                .filter(|l| l.is_valid())
                .map(RecoveryTarget::Lsn)
                .ok_or_else(|| format!("bad recovery target LSN {v:?}: {SYNTAX}")),
            "time" => parse_time(v)
                .map(RecoveryTarget::Time)
                .ok_or_else(|| format!("bad recovery target time {v:?}: {SYNTAX}")),
            "xid" => v
                .parse::<u64>()
                .ok()
                .filter(|x| *x >= 3)
                .map(RecoveryTarget::Xid)
                .ok_or_else(|| format!("bad recovery target transaction ID {v:?}: {SYNTAX}")),
            "name" if !v.is_empty() && v.len() < 64 && !v.contains('\0') => {
                Ok(RecoveryTarget::Name(v.into()))
            }
            _ => Err(format!("unknown recovery target {s:?}: {SYNTAX}")),
        }
    }
}

fn digits(s: &str, n: usize) -> Option<i64> {
    (s.len() == n && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// Days since 1970-01-01 of a civil date (H. Hinnant's days-from-civil).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn parse_zone(z: &str) -> Option<i32> {
    match z {
        "Z" | "z" | "UTC" | "utc" | "GMT" | "gmt" | "+00" => return Some(0),
        _ => {}
    }
    let (sign, rest) = match z.as_bytes().first()? {
        b'+' => (1, &z[1..]),
        b'-' => (-1, &z[1..]),
        _ => return None,
    };
    // `get`, not indexing: byte 2 of a zone that is not ASCII may be inside a character.
    let (h, m) = match rest.len() {
        2 => (digits(rest, 2)?, 0),
        4 => (digits(rest.get(..2)?, 2)?, digits(rest.get(2..)?, 2)?),
        5 if rest.as_bytes()[2] == b':' => (digits(&rest[..2], 2)?, digits(&rest[3..], 2)?),
        _ => return None,
    };
    (h <= 15 && m < 60).then(|| sign * (h * 3600 + m * 60) as i32)
}

/// Parses the ISO-style timestamps PostgreSQL accepts for `recovery_target_time`.
pub fn parse_time(text: &str) -> Option<TargetTime> {
    let t = text.trim();
    let (date, rest) = t.split_at(t.find([' ', 'T']).unwrap_or(t.len()));
    let mut dp = date.split('-');
    let (y, mo, d) = (
        digits(dp.next()?, 4)?,
        digits(dp.next()?, 2)?,
        digits(dp.next()?, 2)?,
    );
    if dp.next().is_some() || !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    let dim = [
        31,
        if y % 4 == 0 && (y % 100 != 0 || y % 400 == 0) {
            29
        } else {
            28
        },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if d > dim[(mo - 1) as usize] {
        return None;
    }
    let rest = rest.get(1..).unwrap_or("").trim_start();
    let (mut secs, mut offset) = (0i64, None);
    if !rest.is_empty() {
        let zone_at = rest
            .find(['+', '-', ' ', 'Z', 'z', 'U', 'G'])
            .unwrap_or(rest.len());
        let (clock, zone) = rest.split_at(zone_at);
        let mut cp = clock.split(':');
        let h = digits(cp.next()?, 2)?;
        let mi = digits(cp.next()?, 2)?;
        let s = match cp.next() {
            None => 0,
            Some(sf) => {
                let (whole, frac) = sf.split_once('.').unwrap_or((sf, "0"));
                if frac.is_empty() || frac.len() > 6 || !frac.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                digits(whole, 2)?
            }
        };
        if cp.next().is_some() || h > 23 || mi > 59 || s > 60 {
            return None;
        }
        secs = h * 3600 + mi * 60 + s;
        let zone = zone.trim();
        if !zone.is_empty() {
            offset = Some(parse_zone(zone)?);
        }
    }
    Some(TargetTime {
        text: t.to_string(),
        utc_seconds: days_from_civil(y, mo, d) * 86400 + secs,
        offset,
    })
}

impl RecoveryTarget {
    /// Why `b` cannot reach this target (it lies before the backup's consistency point), or
    /// `None`. Targets that cannot be placed (xid, name) are accepted.
    pub fn before_consistency(&self, b: &BackupInfo) -> Option<String> {
        match self {
            RecoveryTarget::Lsn(l) if Some(*l) < b.stop_lsn => Some(format!(
                "recovery target LSN {l} is before backup {}'s consistency point {} (its stop LSN)",
                b.id,
                b.stop_lsn.unwrap_or_default()
            )),
            RecoveryTarget::Time(t) if t.bounds().1 < b.end_time.unwrap_or(i64::MAX) => {
                Some(format!(
                    "recovery target time {} is before backup {} became consistent (it ended at Unix time {})",
                    t.text,
                    b.id,
                    b.end_time.unwrap_or_default()
                ))
            }
            _ => None,
        }
    }

    /// The `postgresql.conf` line for the target.
    fn setting(&self) -> String {
        let q = conf_quote;
        match self {
            RecoveryTarget::Immediate => "recovery_target = 'immediate'".to_string(),
            RecoveryTarget::Latest => "recovery_target_timeline = 'latest'".to_string(),
            RecoveryTarget::Lsn(l) => format!("recovery_target_lsn = '{l}'"),
            RecoveryTarget::Time(t) => format!("recovery_target_time = '{}'", q(&t.text)),
            RecoveryTarget::Xid(x) => format!("recovery_target_xid = '{x}'"),
            RecoveryTarget::Name(s) => format!("recovery_target_name = '{}'", q(s)),
        }
    }
}

/// A `postgresql.conf` string literal's content: `'` doubled and `\` escaped
/// (`guc-file.l` reads backslash escapes in quoted values).
fn conf_quote(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\'', "''")
}

/// Settings in `postgresql.auto.conf` that would change how a restored cluster recovers; an
/// earlier restore's are still there when the backup was taken of a restored cluster.
const RECOVERY_SETTINGS: &[&str] = &[
    "recovery_target",
    "recovery_target_lsn",
    "recovery_target_time",
    "recovery_target_xid",
    "recovery_target_name",
    "recovery_target_action",
    "recovery_target_inclusive",
    "recovery_target_timeline",
    "restore_command",
];

/// The value of setting `name` in the cluster at `pgdata` as its configuration files in the
/// data directory set it: `postgresql.conf`, then `postgresql.auto.conf`, the last line wins
/// (`guc-file.l`; `include` directives are not followed). `None` when neither sets it or the
/// value is empty (the default).
pub fn configured(pgdata: &std::path::Path, name: &str) -> Option<String> {
    let mut value = None;
    for f in ["postgresql.conf", "postgresql.auto.conf"] {
        let Ok(text) = std::fs::read_to_string(pgdata.join(f)) else {
            continue;
        };
        for line in text.lines() {
            if let Some(v) = setting_line(line, name) {
                value = Some(v);
            }
        }
    }
    value.filter(|v| !v.is_empty())
}

/// The value of `name` on one configuration line (`name = value`, `name value`, quoted or
/// not, a trailing comment), when the line sets it.
fn setting_line(line: &str, name: &str) -> Option<String> {
    let line = line.trim_start();
    let end = line.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))?;
    if !line[..end].eq_ignore_ascii_case(name) {
        return None;
    }
    let rest = line[end..].trim_start();
    let rest = rest.strip_prefix('=').unwrap_or(rest).trim_start();
    match rest.strip_prefix('\'') {
        Some(q) => {
            let mut out = String::new();
            let mut chars = q.chars().peekable();
            while let Some(c) = chars.next() {
                match c {
                    '\'' if chars.peek() == Some(&'\'') => {
                        chars.next();
                        out.push('\'');
                    }
                    '\'' => return Some(out),
                    '\\' => out.extend(chars.next()),
                    c => out.push(c),
                }
            }
            None
        }
        None => Some(
            rest.split(['#', ' ', '\t'])
                .next()
                .unwrap_or("")
                .to_string(),
        ),
    }
}

/// The restored cluster's `postgresql.auto.conf`: the backed-up one with earlier recovery
/// settings commented out (each line kept, prefixed, so a DBA sees what was there), then this
/// restore's settings.
pub fn auto_conf(old: &[u8], settings: &str) -> Vec<u8> {
    let text = String::from_utf8_lossy(old);
    let mut out = String::new();
    for line in text.lines() {
        let name = line
            .trim_start()
            .split(['=', ' ', '\t'])
            .next()
            .unwrap_or("");
        if RECOVERY_SETTINGS.contains(&name.to_ascii_lowercase().as_str()) {
            out.push_str("# (earlier, disabled by ptrack restore) ");
        }
        out.push_str(line);
        out.push('\n');
    }
    out.push_str(settings);
    out.into_bytes()
}

/// A `--recovery-target-timeline` value as PostgreSQL reads it: `current`, `latest` or a
/// timeline number; the setting's line.
pub fn target_timeline_setting(v: &str) -> Result<String, String> {
    let ok = v == "current" || v == "latest" || v.parse::<u32>().is_ok_and(|t| t >= 1);
    match ok {
        true => Ok(format!("recovery_target_timeline = '{v}'\n")),
        false => Err(format!(
            "bad recovery target timeline {v:?}: expected current, latest or a timeline number"
        )),
    }
}

/// The settings appended to the restored cluster's `postgresql.auto.conf`: archive recovery
/// always (with `recovery.signal`), so the restored cluster ends recovery on a new timeline and
/// its later backups are told apart from the original's; a `restore_command` (one that finds
/// nothing makes the server read the WAL restored into `pg_wal`); the target and
/// `recovery_target_action = 'promote'` when one is given.
pub fn recovery_settings(
    t: Option<&RecoveryTarget>,
    restore_command: Option<&str>,
    id: &str,
) -> String {
    let q = conf_quote;
    let cmd = restore_command.unwrap_or("/bin/false");
    let mut out = format!(
        "\n# Recovery settings written by ptrack restore of backup {id}\nrestore_command = '{}'\n",
        q(cmd)
    );
    if let Some(t) = t {
        out.push_str(&t.setting());
        out.push_str("\nrecovery_target_action = 'promote'\n");
    }
    out
}

#[cfg(test)]
mod tests {

    #[test]
    fn configured_settings_are_read_as_postgresql_reads_them() {
        let d = tempfile::tempdir().unwrap();
        let w = |f: &str, t: &str| std::fs::write(d.path().join(f), t).unwrap();
        let get = || configured(d.path(), "recovery_target_timeline");
        assert_eq!(get(), None);
        w(
            "postgresql.conf",
            "recovery_target_timeline = 'latest' # c\n",
        );
        assert_eq!(get().as_deref(), Some("latest"));
        w(
            "postgresql.auto.conf",
            "#recovery_target_timeline = '9'\nRECOVERY_TARGET_TIMELINE 3\nrecovery_target_timeline_x = 4\n",
        );
        assert_eq!(
            get().as_deref(),
            Some("3"),
            "auto.conf last, case-insensitive"
        );
        w(
            "postgresql.auto.conf",
            "recovery_target_timeline = 'it''s'\n",
        );
        assert_eq!(get().as_deref(), Some("it's"));
        w("postgresql.auto.conf", "recovery_target_timeline = ''\n");
        assert_eq!(get(), None, "empty: the default");
    }
    use super::*;

    #[test]
    fn targets_parse_or_are_refused() {
        assert_eq!("immediate".parse(), Ok(RecoveryTarget::Immediate));
        assert_eq!("latest".parse(), Ok(RecoveryTarget::Latest));
        assert!(target_timeline_setting("current").is_ok());
        assert_eq!(
            target_timeline_setting("3").unwrap(),
            "recovery_target_timeline = '3'\n"
        );
        for bad in ["0", "x", "", "1'; x", "-1"] {
            assert!(target_timeline_setting(bad).is_err(), "{bad}");
        }
        assert!(matches!("lsn:0/1".parse(), Ok(RecoveryTarget::Lsn(_))));
        for bad in [
            "lsn:zz",
            "lsn:0/0",
            "xid:abc",
            "xid:1",
            "time:garbage",
            "time:2026-13-01",
            "time:2026-02-30 10:00",
            "time:2026-12-01 25:00",
            "time:2026-12-01 10:00 +99",
            "time:now",
            "name:",
            "when:x",
            "time:2026-12-01 10:00:00.",
        ] {
            assert!(bad.parse::<RecoveryTarget>().is_err(), "{bad}");
        }
        let t = parse_time("2026-12-01 10:00:30+02").unwrap();
        assert_eq!(t.offset, Some(7200));
        assert_eq!(t.bounds().0, 1_796_112_030); // date -u -d "2026-12-01 08:00:30" +%s
        assert_eq!(parse_time("1970-01-01").unwrap().utc_seconds, 0);
        assert_eq!(
            parse_time("2000-03-01T00:00:00Z").unwrap().bounds().0,
            951_868_800
        );
        assert!(parse_time("2026-12-01 10:00:00.123456 UTC").is_some());
        assert!(parse_time("2026-12-01 10:00:00-0530").is_some());
        // Found by tests/no_panic.rs: a four-byte zone with a character that is not ASCII
        // across byte 2 panicked ("+a\u{e9}1", "+0\u{fffd}").
        for z in ["+a\u{e9}1", "+1\u{e9}1", "+0\u{fffd}", "-\u{e9}:11"] {
            assert_eq!(parse_zone(z), None, "{z}");
            assert!(parse_time(&format!("2026-12-01 10:00 {z}")).is_none());
        }
        let no_zone = parse_time("2026-12-01 10:00").unwrap();
        let (lo, hi) = no_zone.bounds();
        assert!(lo < no_zone.utc_seconds && hi > no_zone.utc_seconds);
    }

    #[test]
    fn earlier_settings_are_disabled_and_quotes_escaped() {
        let old = b"work_mem = '8MB'\nrecovery_target_lsn = '0/4000100'\nrestore_command = 'x'\n";
        let new = auto_conf(old, &recovery_settings(None, Some("cp /a\\b/%f %p"), "X"));
        let t = String::from_utf8(new).unwrap();
        assert!(t.starts_with(
            "work_mem = '8MB'\n# (earlier, disabled by ptrack restore) recovery_target_lsn"
        ));
        assert!(t.contains("restore_command = 'cp /a\\\\b/%f %p'"), "{t}");
        assert_eq!(conf_quote("it's"), "it''s");
    }

    #[test]
    fn settings_always_ask_for_archive_recovery() {
        let s = recovery_settings(None, None, "X");
        assert!(s.contains("restore_command = '/bin/false'") && !s.contains("recovery_target"));
        let s = recovery_settings(
            Some(&RecoveryTarget::Name("it's".into())),
            Some("cp %f"),
            "X",
        );
        assert!(s.contains("recovery_target_name = 'it''s'") && s.contains("'promote'"));
    }
}
