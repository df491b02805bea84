//! A real PostgreSQL for a test binary: Debian's binaries (`/usr/lib/postgresql/<highest>/bin`),
//! `initdb` into a fresh directory under /tmp owned by user `postgres` (PostgreSQL refuses to run
//! as root), trust authentication for user `mayfly` on 127.0.0.1 only, a free loopback port and
//! its socket in its own directory. Each test takes a database of its own
//! ([`Postgres::create_database`]); [`Postgres::restart`] restarts the server under the clients;
//! [`Postgres::enable_tls`] turns TLS on; dropping it stops the server (immediate mode) and
//! removes the directory, also after a panic.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

pub struct Postgres {
    bin: PathBuf,
    dir: PathBuf,
    pub port: u16,
}

fn bin_dir() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed (/usr/lib/postgresql): scripts/install-deps --test installs Debian's `postgresql`")
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, p)| p.join("initdb").is_file())
        .collect();
    versions.sort();
    versions.pop().expect("no PostgreSQL version with an initdb under /usr/lib/postgresql").1
}

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// `program args…` as user `postgres` when root, else as ourselves.
fn as_postgres(program: &std::path::Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Postgres {
    /// initdb + start; returns once it accepts connections (generous deadline: a loaded machine).
    pub async fn start() -> Postgres {
        let bin = bin_dir();
        let dir = tempfile::Builder::new().prefix("mayfly-pg-").tempdir().unwrap().keep();
        if is_root() {
            let pg = nix::unistd::User::from_name("postgres").unwrap().expect("the postgres user (Debian's postgresql package makes it)");
            nix::unistd::chown(&dir, Some(pg.uid), Some(pg.gid)).unwrap();
        }
        let out = as_postgres(&bin.join("initdb"))
            .args(["-D"])
            .arg(dir.join("data"))
            .args(["-U", "mayfly", "--auth=trust", "--no-sync", "-E", "UTF8"])
            .output()
            .unwrap();
        assert!(out.status.success(), "initdb failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        let pg = Postgres { bin, dir, port: free_port() };
        pg.pg_ctl_start();
        pg.wait_ready().await;
        pg
    }

    fn pg_ctl_start(&self) {
        let opts = format!("-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200", self.port, self.dir.display());
        let status = as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-o", &opts, "-l"])
            .arg(self.dir.join("log"))
            .args(["-w", "-t", "120", "start"])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "pg_ctl start failed:\n{}", self.log());
    }

    fn pg_ctl_stop(&self, mode: &str) {
        let _ = as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", mode, "-w", "-t", "120", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    /// `postgres://mayfly@127.0.0.1:<port>/<db>`
    pub fn url(&self, db: &str) -> String {
        format!("postgres://mayfly@127.0.0.1:{}/{db}", self.port)
    }

    async fn wait_ready(&self) {
        use sqlx::Connection;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            match sqlx::PgConnection::connect(&self.url("postgres")).await {
                Ok(c) => {
                    let _ = c.close().await;
                    return;
                }
                Err(e) => {
                    assert!(tokio::time::Instant::now() < deadline, "PostgreSQL did not accept connections: {e}\n{}", self.log());
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// A new, empty database `name`; returns its URL.
    pub async fn create_database(&self, name: &str) -> String {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(&self.url("postgres")).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE \"{name}\"")).execute(&mut c).await.unwrap();
        let _ = c.close().await;
        self.url(name)
    }

    /// Stops the server (fast: clients are disconnected) and starts it again on the same port.
    pub async fn restart(&self) {
        self.pg_ctl_stop("fast");
        self.pg_ctl_start();
        self.wait_ready().await;
    }

    /// Stops the server (clients get connection errors until [`Postgres::start_again`]).
    pub fn stop(&self) {
        self.pg_ctl_stop("fast");
    }

    pub async fn start_again(&self) {
        self.pg_ctl_start();
        self.wait_ready().await;
    }
}

impl Postgres {
    /// Turns TLS on (a fresh self-signed certificate for 127.0.0.1 made with `openssl`, then a
    /// configuration reload); returns once new connections are offered TLS. Plain connections
    /// still work (`sslmode=disable`).
    pub async fn enable_tls(&self) {
        use sqlx::Connection;
        let data = self.dir.join("data");
        let out = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1", "-keyout"])
            .arg(data.join("server.key"))
            .arg("-out")
            .arg(data.join("server.crt"))
            .output()
            .unwrap();
        assert!(out.status.success(), "openssl failed: {}", String::from_utf8_lossy(&out.stderr));
        if is_root() {
            let pg = nix::unistd::User::from_name("postgres").unwrap().unwrap();
            for f in ["server.key", "server.crt"] {
                nix::unistd::chown(&data.join(f), Some(pg.uid), Some(pg.gid)).unwrap();
            }
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(data.join("server.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut c = sqlx::PgConnection::connect(&format!("{}?sslmode=disable", self.url("postgres"))).await.unwrap();
        sqlx::query("ALTER SYSTEM SET ssl = 'on'").execute(&mut c).await.unwrap();
        sqlx::query("SELECT pg_reload_conf()").execute(&mut c).await.unwrap();
        let _ = c.close().await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let mut c = sqlx::PgConnection::connect(&format!("{}?sslmode=disable", self.url("postgres"))).await.unwrap();
            let on: String = sqlx::query_scalar("SHOW ssl").fetch_one(&mut c).await.unwrap();
            let _ = c.close().await;
            if on == "on" {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "PostgreSQL did not turn TLS on:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.pg_ctl_stop("immediate");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
