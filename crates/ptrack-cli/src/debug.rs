//! Hidden developer commands: `ptrack debug corrupt` (the corruption simulator, used by the
//! quickstart demo and tests) and `ptrack debug control` (pg_control as JSON).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use ptrack_page::damage::{DamageKind, damage_block};
use ptrack_page::{DataDir, PathKind, classify_path};

use crate::EXIT_OK;

#[derive(Debug, Subcommand)]
pub(crate) enum DebugCommand {
    /// Damage one block of a relation file on purpose (the server must be stopped).
    Corrupt {
        /// Data directory.
        #[arg(short = 'D', long = "pgdata", value_name = "PGDATA")]
        pgdata: PathBuf,
        /// PGDATA-relative path of the relation segment file, e.g. base/5/16384.
        #[arg(long, value_name = "PATH")]
        path: String,
        /// Block number within that file.
        #[arg(long, value_name = "N")]
        block: u32,
        /// What to damage: header, line-pointer, tuple-header, tuple-data or checksum.
        #[arg(long, value_name = "KIND", value_parser = |s: &str| s.parse::<DamageKind>())]
        kind: DamageKind,
    },
    /// Print global/pg_control as JSON.
    Control {
        /// Data directory.
        #[arg(short = 'D', long = "pgdata", value_name = "PGDATA")]
        pgdata: PathBuf,
    },
}

pub(crate) fn run(cmd: &DebugCommand) -> Result<u8> {
    match cmd {
        DebugCommand::Corrupt {
            pgdata,
            path,
            block,
            kind,
        } => {
            let dd = DataDir::open(pgdata)?;
            if dd.online {
                bail!(
                    "{}: postmaster.pid exists; stop the server before damaging its files",
                    pgdata.display()
                );
            }
            let PathKind::Relation(seg) = classify_path(path) else {
                bail!("{path}: not a relation file path (expected e.g. base/5/16384)");
            };
            let what = damage_block(
                &pgdata.join(path),
                seg.segno,
                *block,
                dd.blcksz(),
                dd.control.relseg_size,
                *kind,
            )
            .with_context(|| format!("damage block {block} of {path}"))?;
            println!("{path} block {block}: {what}");
            Ok(EXIT_OK)
        }
        DebugCommand::Control { pgdata } => {
            let dd = DataDir::open(pgdata)?;
            println!("{}", serde_json::to_string_pretty(&dd.control)?);
            Ok(EXIT_OK)
        }
    }
}
