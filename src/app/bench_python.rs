//! The bench's Python agents: a no-op agent written with the Python SDK (`sdk/python`), served
//! over HTTP by the SDK's own server or as a stdio worker pool, so the figures show what a
//! Python platform gets from the `http` and `pool` handlers.
//!
//! The interpreter is `REDRIVE_BENCH_PYTHON`, else `sdk/python/.venv/bin/python` (made by
//! scripts/setup.sh) when it exists, else `python3`; it must import `redrive`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use crate::error::{Error, Result};

/// The agent module: a sync handler for the threaded HTTP server, an async one for the pool
/// (with concurrency > 1 the SDK runs async handlers on one event loop).
const AGENT: &str = r#"
from redrive import Agent

sync_agent = Agent()
async_agent = Agent()


@sync_agent.handler("*")
def noop(task, ctx):
    return None


@async_agent.handler("*")
async def anoop(task, ctx):
    return None
"#;

/// A Python interpreter that imports the SDK, and a directory holding the agent module.
pub(crate) struct PythonAgent {
    /// The interpreter.
    pub python: PathBuf,
    /// The directory of `bench_agent.py` (the pool's `cwd`).
    pub dir: PathBuf,
}

impl PythonAgent {
    /// Finds the interpreter, checks it imports the SDK, and writes the agent module.
    pub(crate) fn prepare() -> Result<PythonAgent> {
        let python = match std::env::var_os("REDRIVE_BENCH_PYTHON") {
            Some(p) => PathBuf::from(p),
            None => {
                let venv = PathBuf::from("sdk/python/.venv/bin/python");
                if venv.exists() {
                    venv
                } else {
                    PathBuf::from("python3")
                }
            }
        };
        // Absolute (the pool runs it from another directory), but not resolved: a venv's
        // interpreter is a symlink whose target would lose the venv.
        let python = if python.components().count() > 1 {
            std::path::absolute(&python).unwrap_or(python)
        } else {
            python
        };
        let ok = Command::new(&python)
            .args(["-c", "import redrive"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            return Err(Error::Config(format!(
                "bench: {} cannot import the Python SDK (redrive): run scripts/setup.sh from the \
                 repository root, or set REDRIVE_BENCH_PYTHON to an interpreter that has it",
                python.display()
            )));
        }
        let dir = std::env::temp_dir().join(format!("redrive-bench-py-{}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(dir.join("bench_agent.py"), AGENT))
            .map_err(|e| Error::io(format!("writing the bench agent to {}", dir.display()), e))?;
        Ok(PythonAgent { python, dir })
    }

    /// The pool command: `python -m redrive pool bench_agent:async_agent --concurrency N`.
    pub(crate) fn pool_command(&self, concurrency: usize) -> Vec<String> {
        vec![
            self.python.display().to_string(),
            "-m".into(),
            "redrive".into(),
            "pool".into(),
            "bench_agent:async_agent".into(),
            "--concurrency".into(),
            concurrency.to_string(),
        ]
    }

    /// Starts the SDK's HTTP server on a free loopback port; returns it with its URL.
    pub(crate) fn serve_http(&self) -> Result<(PythonServer, String)> {
        let mut child = Command::new(&self.python)
            .args([
                "-m",
                "redrive",
                "http",
                "bench_agent:sync_agent",
                "--port",
                "0",
            ])
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::io("starting the Python SDK's HTTP server", e))?;
        let mut line = String::new();
        if let Some(err) = child.stderr.take() {
            let mut reader = BufReader::new(err);
            let _ = reader.read_line(&mut line);
            // Keep draining, so the server never writes into a closed pipe.
            std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
        }
        let server = PythonServer { child };
        match line.split_whitespace().find(|w| w.starts_with("http://")) {
            Some(url) => Ok((server, url.to_owned())),
            None => Err(Error::Protocol(format!(
                "bench: the Python SDK's server did not start (said {:?})",
                line.trim()
            ))),
        }
    }
}

impl Drop for PythonAgent {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The SDK's HTTP server process; killed when dropped.
pub(crate) struct PythonServer {
    child: Child,
}

impl Drop for PythonServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
