//! Encrypted repositories end to end (issue 12 §3) on PG18: `init --encrypt`, a full and a
//! delta backup (no extension needed: encryption is below every mode), validate, and the paranoia comparison of the restored incremental; no
//! plaintext page data anywhere in the repository; a byte flipped in a bundle makes validate
//! report the object CORRUPT (exit 1); without the key, or with another one, restore is refused
//! (exit 2) before anything is written; key rotation keeps the backups readable.

use std::path::{Path, PathBuf};

use ptrack_testkit::{ClusterConfig, PgCluster, require_pg};

use crate::backup_util::*;
use crate::util::{run, set_thread_env};

const PASSPHRASE: &str = "correct horse battery staple";
const CANARY: &str = "ENCRYPTION-CANARY-7f3a9c";

fn with_passphrase(p: Option<&str>) {
    set_thread_env(
        p.map(|p| vec![("PTRACK_ENCRYPTION_PASSPHRASE".to_string(), p.to_string())])
            .unwrap_or_default(),
    );
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn encrypted_repository_end_to_end() {
    let Some(install) = require_pg(18) else {
        return;
    };
    let mut c = PgCluster::init_with(&install, &ClusterConfig::new(true));
    c.start();
    c.pgbench_init(2);
    c.execute(&format!(
        "CREATE TABLE canary(t text); INSERT INTO canary SELECT '{CANARY}-' || g FROM generate_series(1, 3000) g; CHECKPOINT"
    ));
    let d = tempfile::tempdir().expect("tempdir");
    chown_postgres(d.path());
    let repo = d.path().join("repo").display().to_string();
    with_passphrase(Some(PASSPHRASE));
    let r = run(&["init", "-B", &repo, "--encrypt", "--kdf-cost", "1024,1,1"]);
    assert_eq!(r.code, 0, "init: {}", r.stderr);
    assert!(!r.stdout.contains(PASSPHRASE) && !r.stderr.contains(PASSPHRASE));
    let full = backup_with(&c, &repo, "full", &["--compress", "none"]);
    assert_eq!(full.code, 0, "full: {}", full.stderr);
    let full = full.json()["backup"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    c.execute(&format!(
        "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid % 50 = 0; INSERT INTO canary VALUES ('{CANARY}-late'); CHECKPOINT"
    ));
    let inc = backup_with(&c, &repo, "delta", &["--compress", "none"]);
    assert_eq!(inc.code, 0, "delta: {}", inc.stderr);
    let inc = inc.json()["backup"]["id"].as_str().expect("id").to_string();
    let v = run(&["validate", "-B", &repo]);
    assert_eq!(v.code, 0, "validate:\n{}{}", v.stdout, v.stderr);
    let mut restored = restore_and_compare(&mut c, &repo, &inc, &[]);
    assert_eq!(
        restored.query_one(&format!(
            "SELECT count(*) FROM canary WHERE t LIKE '{CANARY}%'"
        )),
        "3001"
    );
    restored.stop(ptrack_testkit::StopMode::Fast);

    // The canary is in the cluster's pages (stored uncompressed), never in the repository.
    let in_data = files_under(&c.datadir().join("base"))
        .iter()
        .any(|p| contains(&std::fs::read(p).unwrap_or_default(), CANARY.as_bytes()));
    assert!(in_data, "the canary is in the data directory's pages");
    for p in files_under(Path::new(&repo)) {
        let b = std::fs::read(&p).expect("read");
        assert!(
            !contains(&b, CANARY.as_bytes()),
            "plaintext page data in {}",
            p.display()
        );
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        // The marker and keyring are plain; the instance lock is an empty file (flock).
        if name != "ptrack-repo" && name != "ptrack-keys" && !b.is_empty() {
            assert!(
                b.starts_with(b"PTRACKE\x01"),
                "{} is not sealed",
                p.display()
            );
        }
    }

    // Without the key, or with another, nothing is restored.
    let target = PathBuf::from(d.path()).join("never");
    let t = target.display().to_string();
    with_passphrase(None);
    let r = run(&["restore", "-B", &repo, "-D", &t, "-i", &inc]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("is encrypted")
            && r.stderr.contains("--encryption-key-file")
            && r.stderr.contains("PTRACK_ENCRYPTION_PASSPHRASE"),
        "{}",
        r.stderr
    );
    with_passphrase(Some("not the passphrase"));
    let r = run(&["restore", "-B", &repo, "-D", &t, "-i", &inc]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    let wrong = r;
    with_passphrase(None);
    let keys = run(&["key", "list", "-B", &repo, "--json"]);
    assert_eq!(keys.code, 0, "key list needs no key: {}", keys.stderr);
    let old_id = keys.json()["keys"][0]["key_id"]
        .as_str()
        .expect("key id")
        .to_string();
    assert!(
        wrong.stderr.contains(&old_id),
        "the ids are named: {}",
        wrong.stderr
    );
    assert!(
        !wrong.stderr.contains("not the passphrase"),
        "{}",
        wrong.stderr
    );
    assert!(!target.exists(), "nothing written without the key");

    // Rotation: a key file added, the passphrase removed; the backups still validate.
    with_passphrase(Some(PASSPHRASE));
    let kf = d.path().join("new.key");
    std::fs::write(&kf, b"a key file's bytes\n").expect("write key");
    chown_postgres(&kf);
    let kfs = kf.display().to_string();
    let add = |mode: u32| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&kf, std::fs::Permissions::from_mode(mode)).expect("chmod");
        run(&[
            "key",
            "add",
            "-B",
            &repo,
            "--new-key-file",
            &kfs,
            "--kdf-cost",
            "1024,1,1",
        ])
    };
    let r = add(0o644);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains(&kfs) && r.stderr.contains("0644"),
        "{}",
        r.stderr
    );
    let r = add(0o600);
    assert_eq!(r.code, 0, "key add: {}", r.stderr);
    with_passphrase(None);
    let r = run(&[
        "key",
        "remove",
        "-B",
        &repo,
        "--encryption-key-file",
        &kfs,
        &old_id,
    ]);
    assert_eq!(r.code, 0, "key remove: {}", r.stderr);
    with_passphrase(Some(PASSPHRASE));
    let r = run(&["show", "-B", &repo]);
    assert_eq!(r.code, 2, "the removed passphrase is refused: {}", r.stdout);
    with_passphrase(None);
    let v = run(&["validate", "-B", &repo, "--encryption-key-file", &kfs]);
    assert_eq!(
        v.code, 0,
        "validate with the new key:\n{}{}",
        v.stdout, v.stderr
    );

    // One byte flipped in the middle of a bundle of the incremental: CORRUPT, the object named.
    let bundle = instance_dir(&repo).join(&inc).join("bundle.0");
    let mut b = std::fs::read(&bundle).expect("bundle");
    let mid = b.len() / 2;
    b[mid] ^= 0x04;
    std::fs::write(&bundle, &b).expect("tamper");
    let v = run(&["validate", "-B", &repo, "--encryption-key-file", &kfs]);
    assert_eq!(v.code, 1, "validate:\n{}{}", v.stdout, v.stderr);
    assert!(
        v.stdout.contains(&format!("{inc}/bundle.0")) && v.stdout.contains("damaged"),
        "{}",
        v.stdout
    );
    assert!(
        v.stdout.contains(&format!("backup {inc}: CORRUPT")),
        "{}",
        v.stdout
    );
    assert!(
        v.stdout.contains(&format!("backup {full}: OK")),
        "{}",
        v.stdout
    );
}
