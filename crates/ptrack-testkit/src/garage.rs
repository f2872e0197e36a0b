//! A throwaway Garage cluster (a real distributed S3-compatible object store) on loopback: one
//! or three nodes in a private temporary directory, each on its own free ports, with one bucket
//! and one access key; killed and deleted on drop. The binary is the one `scripts/setup`
//! installs once per machine (`$PTRACK_GARAGE`, else `$PTRACK_CACHE/garage-2.5.0/bin/garage`).
//! The commands follow Garage's own quick start: `server`, `node id`, `node connect`,
//! `layout assign`, `layout apply`, `bucket create`, `key create`, `bucket allow`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::install::ci;

/// The Garage release the project installs.
pub const GARAGE_VERSION: &str = "2.5.0";

/// The installed binary, if any.
pub fn find_garage() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("PTRACK_GARAGE") {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let cache = std::env::var("PTRACK_CACHE").unwrap_or_else(|_| "/var/cache/ptrack".into());
    Some(PathBuf::from(format!(
        "{cache}/garage-{GARAGE_VERSION}/bin/garage"
    )))
    .filter(|p| p.is_file())
}

/// The Garage binary, or `None` after a loud SKIPPED line; under `CI=true` a missing binary
/// fails the test.
pub fn require_garage() -> Option<PathBuf> {
    match find_garage() {
        Some(p) => Some(p),
        None => {
            let msg = format!(
                "Garage {GARAGE_VERSION} is not installed (run scripts/setup, or set PTRACK_GARAGE)"
            );
            if ci() {
                panic!("CI=true and {msg}");
            }
            eprintln!("SKIPPED: {msg}");
            None
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

struct Node {
    config: PathBuf,
    child: Option<Child>,
    s3_port: u16,
}

/// A running cluster with bucket [`Garage::bucket`] and an access key for it.
pub struct Garage {
    bin: PathBuf,
    dir: tempfile::TempDir,
    nodes: Vec<Node>,
    /// The bucket.
    pub bucket: String,
    /// Access key id.
    pub key_id: String,
    /// Secret key.
    pub secret: String,
}

impl Garage {
    /// Starts `n` nodes (replication factor `n`: 1 or 3) and waits until the bucket serves.
    pub fn start(bin: &Path, n: usize) -> Garage {
        let dir = tempfile::Builder::new()
            .prefix("ptrack-garage-")
            .tempdir()
            .expect("temporary directory");
        let secret: String = (0..32).map(|_| format!("{:02x}", rand_byte())).collect();
        let mut nodes = Vec::new();
        for i in 0..n {
            let d = dir.path().join(format!("node{i}"));
            std::fs::create_dir_all(&d).expect("node directory");
            let (rpc, s3, admin) = (free_port(), free_port(), free_port());
            let config = d.join("garage.toml");
            std::fs::write(
                &config,
                format!(
                    "metadata_dir = \"{m}/meta\"\ndata_dir = \"{m}/data\"\ndb_engine = \"sqlite\"\n\
                     replication_factor = {n}\nrpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
                     rpc_public_addr = \"127.0.0.1:{rpc}\"\nrpc_secret = \"{secret}\"\n\
                     [s3_api]\ns3_region = \"garage\"\napi_bind_addr = \"127.0.0.1:{s3}\"\n\
                     root_domain = \".s3.garage.localhost\"\n\
                     [admin]\napi_bind_addr = \"127.0.0.1:{admin}\"\n",
                    m = d.display()
                ),
            )
            .expect("garage.toml");
            nodes.push(Node {
                config,
                child: None,
                s3_port: s3,
            });
        }
        let mut g = Garage {
            bin: bin.to_path_buf(),
            dir,
            nodes,
            bucket: "ptrack-test".into(),
            key_id: String::new(),
            secret: String::new(),
        };
        for i in 0..n {
            g.start_node(i);
        }
        g.configure();
        g
    }

    fn start_node(&mut self, i: usize) {
        let log =
            std::fs::File::create(self.dir.path().join(format!("node{i}.log"))).expect("node log");
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(&self.nodes[i].config)
            .arg("server")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("garage server starts");
        self.nodes[i].child = Some(child);
    }

    /// Runs an admin command on node 0 until it succeeds (the node may still be starting);
    /// returns its standard output.
    fn admin(&self, args: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = Command::new(&self.bin)
                .arg("-c")
                .arg(&self.nodes[0].config)
                .args(args)
                .stdin(Stdio::null())
                .output()
                .expect("garage runs");
            if out.status.success() {
                return String::from_utf8_lossy(&out.stdout).into_owned();
            }
            if Instant::now() > deadline {
                panic!(
                    "garage {args:?} failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn node_id(&self, i: usize) -> String {
        let out = Command::new(&self.bin)
            .arg("-c")
            .arg(&self.nodes[i].config)
            .args(["node", "id", "-q"])
            .output()
            .expect("garage node id");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn configure(&mut self) {
        let mut ids = Vec::new();
        for i in 0..self.nodes.len() {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut id = self.node_id(i);
            while !id.contains('@') {
                assert!(Instant::now() < deadline, "garage node {i} gives no id");
                std::thread::sleep(Duration::from_millis(200));
                id = self.node_id(i);
            }
            ids.push(id);
        }
        for id in &ids[1..] {
            self.admin(&["node", "connect", id]);
        }
        for (i, id) in ids.iter().enumerate() {
            let short = id.split('@').next().unwrap_or(id);
            let zone = format!("dc{}", i + 1);
            self.admin(&["layout", "assign", "-z", &zone, "-c", "1G", short]);
        }
        self.admin(&["layout", "apply", "--version", "1"]);
        self.admin(&["bucket", "create", &self.bucket]);
        let out = self.admin(&["key", "create", "ptrack-test-key"]);
        let field = |name: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
                .unwrap_or_else(|| panic!("no {name} in: {out}"))
        };
        self.key_id = field("Key ID:");
        self.secret = field("Secret key:");
        let b = self.bucket.clone();
        let k = self.key_id.clone();
        self.admin(&[
            "bucket", "allow", "--read", "--write", "--owner", &b, "--key", &k,
        ]);
    }

    /// The S3 endpoint of node `i`.
    pub fn endpoint(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.nodes[i].s3_port)
    }

    /// The environment a client needs (AWS conventions), through node 0.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint(0)),
            ("AWS_REGION", "garage".into()),
            ("AWS_ACCESS_KEY_ID", self.key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret.clone()),
        ]
    }

    /// The same, as `object_store` settings (for `ptrack_repo::s3::S3Store::with_settings`).
    pub fn settings(&self) -> Vec<(&'static str, String)> {
        vec![
            ("aws_endpoint", self.endpoint(0)),
            ("aws_region", "garage".into()),
            ("aws_access_key_id", self.key_id.clone()),
            ("aws_secret_access_key", self.secret.clone()),
        ]
    }

    /// Kills node `i` (SIGKILL).
    pub fn kill_node(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts node `i` again after [`Garage::kill_node`].
    pub fn restart_node(&mut self, i: usize) {
        self.start_node(i);
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill_node(i);
        }
    }
}

fn rand_byte() -> u8 {
    use std::hash::{BuildHasher, RandomState};
    (RandomState::new().hash_one(std::time::SystemTime::now()) & 0xff) as u8
}
