//! Connection options with libpq's conventions (`src/interfaces/libpq/fe-connect.c`): an option
//! given on the command line wins, then the `PGHOST`, `PGPORT`, `PGUSER`, `PGDATABASE`,
//! `PGPASSWORD` environment variables, then libpq's defaults (the Unix socket directory, port
//! 5432, the operating-system user, a database named like the user). A password not given
//! otherwise is looked up in the password file (`PGPASSFILE`, default `~/.pgpass`), with libpq's
//! matching: `hostname:port:database:username:password`, `*` matches anything, `\` escapes, a
//! socket directory matches `localhost`, and the file is ignored unless only its owner can read it.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Options as given by the user (`-h -p -U -d`).
#[derive(Debug, Clone, Default)]
pub struct ConnOptions {
    /// Host name or socket directory.
    pub host: Option<String>,
    /// Port.
    pub port: Option<u16>,
    /// User.
    pub user: Option<String>,
    /// Database.
    pub dbname: Option<String>,
}

/// Everything needed to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Host name or socket directory.
    pub host: String,
    /// Port.
    pub port: u16,
    /// User.
    pub user: String,
    /// Database.
    pub dbname: String,
    /// Password, when one was found.
    pub password: Option<String>,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn os_user() -> String {
    env("USER").unwrap_or_else(|| {
        // SAFETY: getpwuid returns a pointer to static storage or NULL; we copy the name out.
        unsafe {
            let pw = libc::getpwuid(libc::geteuid());
            if pw.is_null() {
                "postgres".into()
            } else {
                std::ffi::CStr::from_ptr((*pw).pw_name)
                    .to_string_lossy()
                    .into_owned()
            }
        }
    })
}

impl ConnOptions {
    /// Applies the environment and defaults.
    pub fn resolve(&self) -> Result<Resolved> {
        let host = self
            .host
            .clone()
            .or_else(|| env("PGHOST"))
            .unwrap_or_else(|| {
                if Path::new("/var/run/postgresql").is_dir() {
                    "/var/run/postgresql".into()
                } else {
                    "/tmp".into()
                }
            });
        let port = match self.port {
            Some(p) => p,
            None => match env("PGPORT") {
                Some(p) => p
                    .parse()
                    .map_err(|_| Error::from(crate::Refusal::BadPort(p.clone())))?,
                None => 5432,
            },
        };
        let user = self
            .user
            .clone()
            .or_else(|| env("PGUSER"))
            .unwrap_or_else(os_user);
        let dbname = self
            .dbname
            .clone()
            .or_else(|| env("PGDATABASE"))
            .unwrap_or_else(|| user.clone());
        let password = env("PGPASSWORD").or_else(|| {
            let file = env("PGPASSFILE")
                .map(PathBuf::from)
                .or_else(|| env("HOME").map(|h| Path::new(&h).join(".pgpass")))?;
            pgpass_lookup(&file, &host, port, &dbname, &user)
        });
        Ok(Resolved {
            host,
            port,
            user,
            dbname,
            password,
        })
    }

    /// Connects.
    pub fn connect(&self) -> Result<postgres::Client> {
        let r = self.resolve()?;
        let mut c = postgres::Config::new();
        c.host(&r.host)
            .port(r.port)
            .user(&r.user)
            .dbname(&r.dbname)
            .application_name("ptrack");
        if let Some(p) = &r.password {
            c.password(p);
        }
        c.connect(postgres::NoTls).map_err(|e| {
            Error::from(crate::ServerError::Connect {
                host: r.host.clone(),
                port: r.port,
                user: r.user.clone(),
                dbname: r.dbname.clone(),
                message: pg_message(&e),
            })
        })
    }
}

/// Splits a password-file line into its five fields, undoing `\` escapes.
fn pgpass_fields(line: &str) -> Option<[String; 5]> {
    let mut fields: Vec<String> = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => fields.last_mut()?.push(chars.next().unwrap_or('\\')),
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => fields.last_mut()?.push(c),
        }
    }
    fields.try_into().ok()
}

/// Looks a password up in a password file; `None` when the file is missing, readable by others,
/// or has no matching line.
pub fn pgpass_lookup(file: &Path, host: &str, port: u16, db: &str, user: &str) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(file).ok()?;
    if !meta.is_file() || meta.permissions().mode() & 0o077 != 0 {
        if meta.is_file() {
            eprintln!(
                "ptrack: warning: password file \"{}\" has group or world access; permissions should be u=rw (0600) or less",
                file.display()
            );
        }
        return None;
    }
    let text = std::fs::read_to_string(file).ok()?;
    let host = if host.starts_with('/') || host.is_empty() {
        "localhost"
    } else {
        host
    };
    let port = port.to_string();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let Some([h, p, d, u, pw]) = pgpass_fields(line) else {
            continue;
        };
        let m = |pat: &str, v: &str| pat == "*" || pat == v;
        if m(&h, host) && m(&p, &port) && m(&d, db) && m(&u, user) {
            return Some(pw);
        }
    }
    None
}

/// The server's message for a failed statement or connection (libpq's wording where the client
/// library has its own, so that DBAs recognise it).
pub fn pg_message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.message().to_string(),
        None => {
            let mut t = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(s) = src {
                t.push_str(&format!(": {s}"));
                src = s.source();
            }
            if t.contains("password missing") {
                "fe_sendauth: no password supplied (give one in PGPASSWORD or ~/.pgpass)".into()
            } else {
                t
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn pgpass_matching_follows_libpq() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("pgpass");
        std::fs::write(
            &f,
            "# comment\nother:5432:*:*:no\nlocalhost:5433:app:bob:pa\\:ss\n*:*:*:alice:star\n",
        )
        .unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            pgpass_lookup(&f, "/tmp", 5433, "app", "bob").as_deref(),
            Some("pa:ss")
        );
        assert_eq!(
            pgpass_lookup(&f, "db1", 1, "x", "alice").as_deref(),
            Some("star")
        );
        assert_eq!(pgpass_lookup(&f, "/tmp", 5432, "app", "bob"), None);
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(pgpass_lookup(&f, "db1", 1, "x", "alice"), None);
    }
}
