//! A real `mlflow server` on loopback, for the tests of tracking over MLflow's REST API.

use std::net::TcpListener;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `mlflow server`, with its SQLite store and artifacts in a folder of the test's;
/// killed when dropped.
pub struct MlflowServer {
    child: Child,
    /// Its port.
    pub port: u16,
    dir: PathBuf,
}

impl MlflowServer {
    /// Starts a server keeping its store in `dir`, on `port` (a free one when `None`), and waits
    /// until it answers. `None` (after saying so) outside CI when Python has no full `mlflow`.
    pub fn start(dir: &Path, port: Option<u16>) -> Option<MlflowServer> {
        super::python::run_python("flask", "import mlflow.server", &[])?;
        let port = port.unwrap_or_else(|| {
            TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        });
        std::fs::create_dir_all(dir).unwrap();
        let log = std::fs::File::create(dir.join(format!("server-{port}.log"))).unwrap();
        let child = Command::new("python3")
            .args([
                "-m",
                "mlflow",
                "server",
                "--host",
                "127.0.0.1",
                "--workers",
                "1",
            ])
            .args(["--port", &port.to_string()])
            .arg("--backend-store-uri")
            .arg(format!("sqlite:///{}", dir.join("mlflow.db").display()))
            .arg("--artifacts-destination")
            .arg(dir.join("artifacts"))
            // Its own process group, so that killing it kills its workers too.
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(log.try_clone().unwrap())
            .spawn()
            .expect("python3 starts mlflow server");
        let mut server = MlflowServer {
            child,
            port,
            dir: dir.to_owned(),
        };
        server.wait_until_it_answers();
        Some(server)
    }

    /// Its tracking URI.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn wait_until_it_answers(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("mlflow server stopped ({status}):\n{}", self.log());
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                let health = Command::new("python3")
                    .args([
                        "-c",
                        "import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + '/health')",
                    ])
                    .arg(self.url())
                    .output()
                    .unwrap();
                if health.status.success() {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("mlflow server did not answer in 120 s:\n{}", self.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("server-{}.log", self.port)))
            .unwrap_or_default()
    }

    /// Kills the server at once, as a crash would, and waits until its port is free.
    pub fn kill(&mut self) {
        // The server's workers are its children: the whole process group goes.
        // SAFETY: kill(2) with a process group id the test started; no memory is involved.
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGKILL);
        }
        let _ = self.child.wait();
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for MlflowServer {
    fn drop(&mut self) {
        self.kill();
    }
}
