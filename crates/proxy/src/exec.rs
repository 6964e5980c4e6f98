//! Running kernel tools (`nft`, `iptables-restore`, `conntrack`, `ip`) in the node's network
//! namespace, or in the current one when no namespace path is configured.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::Error;

/// Where commands run: a network namespace path, or the current namespace.
#[derive(Clone, Debug, Default)]
pub struct Netns {
    pub path: Option<PathBuf>,
}

impl Netns {
    pub fn new(path: Option<PathBuf>) -> Self {
        Netns { path }
    }
    pub fn current() -> Self {
        Netns { path: None }
    }
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// `program` to run in the namespace. Entered through `nsenter` rather than `setns` in a
    /// `pre_exec` hook: a hook forces `fork`, which copies the page tables of this (possibly
    /// large) process on every run; without one the child is spawned with `posix_spawn`.
    pub fn command(&self, program: &str) -> Command {
        match &self.path {
            Some(p) => {
                let mut c = Command::new("nsenter");
                let mut net = std::ffi::OsString::from("--net=");
                net.push(p.as_os_str());
                c.arg(net).arg("--").arg(program);
                c
            }
            None => Command::new(program),
        }
    }

    /// Run `program args` with `input` on stdin; error (with stderr) on non-zero exit.
    pub fn run(&self, program: &str, args: &[&str], input: Option<&str>) -> Result<String, Error> {
        let out = self.run_raw(program, args, input)?;
        if !out.status.success() {
            return Err(Error::Command {
                command: format!("{program} {}", args.join(" ")),
                message: format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim()),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Run and return the raw output whatever the exit status.
    pub fn run_raw(&self, program: &str, args: &[&str], input: Option<&str>) -> Result<Output, Error> {
        let mut cmd = self.command(program);
        cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() });
        let io_err = |e: std::io::Error| Error::Command { command: program.to_string(), message: e.to_string() };
        let mut child = cmd.spawn().map_err(io_err)?;
        if let Some(input) = input {
            let mut stdin = child.stdin.take().expect("piped stdin");
            // Write on a separate thread so a chatty child cannot deadlock us on a full pipe.
            let data = input.as_bytes().to_vec();
            let writer = std::thread::spawn(move || stdin.write_all(&data));
            let out = child.wait_with_output().map_err(io_err)?;
            let _ = writer.join();
            Ok(out)
        } else {
            child.wait_with_output().map_err(io_err)
        }
    }
}
