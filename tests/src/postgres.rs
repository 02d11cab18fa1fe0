//! A real PostgreSQL for pool mode's tests: Debian's server in a temporary data directory
//! on a free loopback port (`scripts/postgres.sh`), stopped on drop. Each test gets its own
//! server, so tests never see each other's pools.

use crate::{free_port, workspace};
use std::path::PathBuf;
use std::process::Command;

pub struct Postgres {
    /// `postgres://berth@127.0.0.1:PORT/postgres`
    pub url: String,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Postgres {
    /// Starts a fresh server; panics with the server's log when it cannot.
    pub fn start() -> Postgres {
        let dir = tempfile::Builder::new()
            .prefix("berth-pg-")
            .tempdir()
            .unwrap();
        // The server runs as `postgres` when the tests run as root: it must reach its dir.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let port = free_port();
        let out = Command::new(script())
            .arg("start")
            .arg(dir.path().join("pg"))
            .arg(port.to_string())
            .output()
            .expect("run scripts/postgres.sh");
        assert!(
            out.status.success(),
            "PostgreSQL did not start (run ./scripts/install-deps.sh): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let url = String::from_utf8(out.stdout).unwrap().trim().to_string();
        Postgres { url, port, dir }
    }

    /// Stops the server (fast shutdown); [`Postgres::restart`] brings it back on the same
    /// port with the same data.
    pub fn stop(&self) {
        let st = Command::new(script())
            .arg("stop")
            .arg(self.dir.path().join("pg"))
            .status()
            .unwrap();
        assert!(st.success(), "PostgreSQL did not stop");
    }

    pub fn restart(&self) {
        let out = Command::new(script())
            .arg("start")
            .arg(self.dir.path().join("pg"))
            .arg(self.port.to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "PostgreSQL did not restart: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs one SQL statement with psql; its output (unaligned, tuples only).
    pub fn psql(&self, sql: &str) -> String {
        let out = self.psql_command(sql).output().expect("psql");
        assert!(
            out.status.success(),
            "psql {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// As [`Postgres::psql`], `None` when the statement fails (the server is away).
    pub fn try_psql(&self, sql: &str) -> Option<String> {
        let out = self.psql_command(sql).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// psql running `sql` (several statements, one transaction unless they say otherwise)
    /// on this server: unaligned, tuples only, stopping at the first error.
    pub fn psql_command(&self, sql: &str) -> Command {
        let mut c = Command::new("psql");
        c.args([
            "-X",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            &self.url,
            "-c",
            sql,
        ]);
        c
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        Command::new(script())
            .arg("stop")
            .arg(self.dir.path().join("pg"))
            .status()
            .ok();
    }
}

fn script() -> PathBuf {
    workspace().join("scripts/postgres.sh")
}
