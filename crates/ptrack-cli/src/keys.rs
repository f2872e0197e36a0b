//! `ptrack key list | add | remove`: the key slots of an encrypted repository (rotation). The
//! keyring's logic is `ptrack_repo::keyring`, its use `ptrack_format::repo`; this file only
//! parses and prints. Rotating a key re-wraps the repository's data key: the data are not
//! re-encrypted.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use ptrack_format::repo::{KeyListing, Repository};
use ptrack_repo::keyring::{KdfParams, KeySource};

use crate::EXIT_OK;
use crate::backups::{RepoArgs, parse_kdf_cost, repo_owner};

/// The environment variable holding the passphrase of a key being added.
pub const NEW_PASSPHRASE_ENV: &str = "PTRACK_NEW_ENCRYPTION_PASSPHRASE";

/// `ptrack key`.
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// List the repository's keys (ids, when added, Argon2 cost). No key is needed; with one,
    /// the key it matches is marked.
    List(ListArgs),
    /// Add a key: the repository's data key wrapped under a new key as well. Needs a key of the
    /// repository (--encryption-key-file or PTRACK_ENCRYPTION_PASSPHRASE) and the new one
    /// (--new-key-file or PTRACK_NEW_ENCRYPTION_PASSPHRASE).
    Add(AddArgs),
    /// Remove a key by its id; never the last one, nor the one given to open the repository.
    /// The data are not re-encrypted: a leaked data key needs a new repository.
    Remove(RemoveArgs),
}

/// Options of `ptrack key list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    repo: RepoArgs,
    /// Print as JSON.
    #[arg(long)]
    json: bool,
}

/// Options of `ptrack key add`.
#[derive(Debug, Args)]
pub struct AddArgs {
    #[command(flatten)]
    repo: RepoArgs,
    /// The new key: a file (mode 0600 or stricter). Without it, the passphrase in the
    /// environment variable PTRACK_NEW_ENCRYPTION_PASSPHRASE.
    #[arg(long = "new-key-file", value_name = "FILE")]
    new_key_file: Option<PathBuf>,
    /// Argon2id cost of the new key: memory KiB, passes, lanes (default 65536,3,1).
    #[arg(long, hide = true, value_parser = parse_kdf_cost)]
    kdf_cost: Option<KdfParams>,
}

/// Options of `ptrack key remove`.
#[derive(Debug, Args)]
pub struct RemoveArgs {
    #[command(flatten)]
    repo: RepoArgs,
    /// The id of the key to remove (as `ptrack key list` shows it).
    key_id: String,
}

fn print(l: &KeyListing, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(l)?);
        return Ok(());
    }
    println!("data key {}", l.data_key_id);
    for k in &l.keys {
        let mark = match l.given.as_deref() == Some(k.key_id.as_str()) {
            true => "  (the key given)",
            false => "",
        };
        println!(
            "key {}  added {}  argon2id m={} KiB t={} p={}{mark}",
            k.key_id,
            crate::backups::format_time(k.created),
            k.argon2[0],
            k.argon2[1],
            k.argon2[2]
        );
    }
    Ok(())
}

/// Runs `ptrack key …`.
pub fn run(c: &KeyCommand) -> Result<u8> {
    match c {
        KeyCommand::List(a) => {
            repo_owner(&a.repo.repo)?;
            let l = Repository::list_keys(&a.repo.repo, a.repo.key.source().as_ref())?;
            print(&l, a.json)?;
        }
        KeyCommand::Add(a) => {
            repo_owner(&a.repo.repo)?;
            let Some(new) = KeySource::resolve(a.new_key_file.as_deref(), NEW_PASSPHRASE_ENV)
            else {
                anyhow::bail!(
                    "give the new key: --new-key-file FILE or the environment variable {NEW_PASSPHRASE_ENV}"
                );
            };
            let repo = a.repo.open()?;
            let id = repo.add_key(&new, a.kdf_cost.unwrap_or(KdfParams::DEFAULT))?;
            println!(
                "ptrack: key {id} added to \"{}\" ({}); the data are not re-encrypted",
                a.repo.repo,
                new.describe()
            );
        }
        KeyCommand::Remove(a) => {
            repo_owner(&a.repo.repo)?;
            let repo = a.repo.open()?;
            let left = repo.remove_key(&a.key_id)?;
            println!(
                "ptrack: key {} removed from \"{}\"; the data are not re-encrypted (a leaked data key needs a new repository)",
                a.key_id, a.repo.repo
            );
            print(&left, false)?;
        }
    }
    Ok(EXIT_OK)
}
