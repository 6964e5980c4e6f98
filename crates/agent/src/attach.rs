//! Attaching to a container's own stdio (`pods/attach`), independent of the transport: one [`Hub`]
//! per container run owns the write side of the container's stdin (a pipe, or the pty master with
//! `tty: true`), fans the container's output out to attached clients, applies `stdinOnce` (the
//! container's stdin is closed when the first attach that used it ends) and terminal resizes.
//! A transport (the WebSocket channel protocol in [`ws`], SPDY elsewhere) takes an [`Attachment`]
//! and moves bytes: [`Attachment::write_stdin`], [`Attachment::close_stdin`], [`Attachment::resize`],
//! [`Attachment::next_output`].

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::sync::{broadcast, mpsc, watch};

use crate::proc;

/// How many output chunks an attached client may fall behind before it misses some.
const OUTPUT_BACKLOG: usize = 1024;

/// Which of the container's streams a chunk came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// The sending side of one output stream, handed to the log pump of that stream. Dropping every
/// `Tap` of a hub marks the container's output as ended.
pub struct Tap {
    tx: broadcast::Sender<Bytes>,
    _live: mpsc::Sender<()>,
}

impl Tap {
    /// Pass a chunk of output to every attached client (nobody attached: dropped).
    pub fn send(&self, data: &[u8]) {
        if self.tx.receiver_count() > 0 {
            let _ = self.tx.send(Bytes::copy_from_slice(data));
        }
    }
}

enum StdinOp {
    Data(Bytes),
    Close,
}

/// One container run's stdio, as attach sees it.
pub struct Hub {
    tty: bool,
    stdin_once: bool,
    /// To the task that owns the container's stdin; None when the container has no stdin.
    stdin: Option<mpsc::Sender<StdinOp>>,
    stdin_closed: Arc<AtomicBool>,
    pty: Option<Arc<OwnedFd>>,
    stdout: broadcast::Sender<Bytes>,
    stderr: broadcast::Sender<Bytes>,
    /// Becomes true once every [`Tap`] is gone (the container's output ended).
    ended: watch::Receiver<bool>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").field("tty", &self.tty).field("stdin_open", &self.stdin_open()).finish()
    }
}

impl Hub {
    /// A hub for a run started with `proc::spawn`: `stdin` is the write end of the stdin pipe,
    /// `pty` the pty master (with a TTY it is the stdin too). Returns the hub and the taps for the
    /// stdout and stderr pumps (with a TTY only stdout is used; drop the other).
    pub fn new(tty: bool, stdin_once: bool, stdin: Option<File>, pty: Option<OwnedFd>) -> (Arc<Hub>, Tap, Tap) {
        let (stdout, _) = broadcast::channel(OUTPUT_BACKLOG);
        let (stderr, _) = broadcast::channel(OUTPUT_BACKLOG);
        let (live_tx, mut live_rx) = mpsc::channel::<()>(1);
        let (ended_tx, ended) = watch::channel(false);
        tokio::spawn(async move {
            // recv() returns None once every Tap (each holds a live_tx clone) is dropped.
            while live_rx.recv().await.is_some() {}
            let _ = ended_tx.send(true);
        });
        let pty = pty.map(Arc::new);
        let stdin_closed = Arc::new(AtomicBool::new(false));
        let writer: Option<Box<dyn tokio::io::AsyncWrite + Send + Unpin>> = match (&pty, stdin) {
            (Some(m), _) => proc::dup_file(m.as_raw_fd())
                .ok()
                .map(|f| Box::new(tokio::fs::File::from_std(f)) as Box<dyn tokio::io::AsyncWrite + Send + Unpin>),
            (None, Some(f)) => match tokio::net::unix::pipe::Sender::from_file(f) {
                Ok(s) => Some(Box::new(s) as Box<dyn tokio::io::AsyncWrite + Send + Unpin>),
                Err(e) => {
                    tracing::warn!("container stdin: {e}");
                    None
                }
            },
            (None, None) => None,
        };
        let stdin = writer.map(|w| {
            let (tx, rx) = mpsc::channel(64);
            tokio::spawn(stdin_task(w, rx, tty, stdin_closed.clone()));
            tx
        });
        let hub = Arc::new(Hub { tty, stdin_once, stdin, stdin_closed, pty, stdout, stderr, ended });
        let t_out = Tap { tx: hub.stdout.clone(), _live: live_tx.clone() };
        let t_err = Tap { tx: hub.stderr.clone(), _live: live_tx };
        (hub, t_out, t_err)
    }

    /// Whether the container has a TTY.
    pub fn tty(&self) -> bool {
        self.tty
    }

    /// Whether the container's stdin is (still) open for writing.
    pub fn stdin_open(&self) -> bool {
        self.stdin.is_some() && !self.stdin_closed.load(Ordering::SeqCst)
    }

    /// Attach a client. `stdin`: the client sends input (ignored when the container has no stdin).
    /// Output from now on reaches the client; earlier output is in the logs only.
    pub fn attach(self: &Arc<Self>, stdin: bool) -> Attachment {
        Attachment {
            hub: self.clone(),
            stdin: stdin && self.stdin.is_some(),
            stdout: self.stdout.subscribe(),
            stderr: self.stderr.subscribe(),
            ended: self.ended.clone(),
            stdout_open: true,
            stderr_open: true,
        }
    }

    fn close_stdin(&self) {
        if let Some(tx) = &self.stdin {
            if !self.stdin_closed.swap(true, Ordering::SeqCst) {
                let tx = tx.clone();
                // The queue may be full of data that must go first: send from a task.
                tokio::spawn(async move {
                    let _ = tx.send(StdinOp::Close).await;
                });
            }
        }
    }
}

/// Owns the container's stdin; closing it (or, with a TTY, sending the terminal's EOF character,
/// since closing the master would hang the terminal up) tells the container there is no more input.
async fn stdin_task(
    mut w: Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
    mut rx: mpsc::Receiver<StdinOp>,
    tty: bool,
    closed: Arc<AtomicBool>,
) {
    while let Some(op) = rx.recv().await {
        match op {
            StdinOp::Data(d) => {
                if w.write_all(&d).await.is_err() || w.flush().await.is_err() {
                    break;
                }
            }
            StdinOp::Close => {
                if tty {
                    let _ = w.write_all(&[0x04]).await;
                    let _ = w.flush().await;
                }
                break;
            }
        }
    }
    closed.store(true, Ordering::SeqCst);
    let _ = w.shutdown().await;
}

/// One attached client.
pub struct Attachment {
    hub: Arc<Hub>,
    stdin: bool,
    stdout: broadcast::Receiver<Bytes>,
    stderr: broadcast::Receiver<Bytes>,
    ended: watch::Receiver<bool>,
    stdout_open: bool,
    stderr_open: bool,
}

impl Attachment {
    /// Whether the container has a TTY (stderr is then part of stdout).
    pub fn tty(&self) -> bool {
        self.hub.tty
    }

    /// Send input to the container. Without stdin (the container's or the request's) it is dropped.
    pub async fn write_stdin(&self, data: &[u8]) {
        if !self.stdin || data.is_empty() || self.hub.stdin_closed.load(Ordering::SeqCst) {
            return;
        }
        if let Some(tx) = &self.hub.stdin {
            let _ = tx.send(StdinOp::Data(Bytes::copy_from_slice(data))).await;
        }
    }

    /// The client's input ended. With `stdinOnce` the container's stdin is closed.
    pub fn close_stdin(&mut self) {
        if self.stdin {
            self.stdin = false;
            if self.hub.stdin_once {
                self.hub.close_stdin();
            }
        }
    }

    /// Set the terminal size (TTY only; the container gets SIGWINCH).
    pub fn resize(&self, cols: u16, rows: u16) {
        if let Some(m) = &self.hub.pty {
            proc::set_winsize(m.as_raw_fd(), cols, rows);
        }
    }

    /// The next chunk of output, or None once the container's output has ended (every chunk
    /// written before the end is delivered first).
    pub async fn next_output(&mut self) -> Option<(Stream, Bytes)> {
        loop {
            if !self.stdout_open && !self.stderr_open {
                return None;
            }
            tokio::select! {
                biased;
                r = self.stdout.recv(), if self.stdout_open => match r {
                    Ok(b) => return Some((Stream::Stdout, b)),
                    Err(broadcast::error::RecvError::Lagged(n)) => tracing::warn!("attach: client missed {n} stdout chunks"),
                    Err(broadcast::error::RecvError::Closed) => self.stdout_open = false,
                },
                r = self.stderr.recv(), if self.stderr_open => match r {
                    Ok(b) => return Some((Stream::Stderr, b)),
                    Err(broadcast::error::RecvError::Lagged(n)) => tracing::warn!("attach: client missed {n} stderr chunks"),
                    Err(broadcast::error::RecvError::Closed) => self.stderr_open = false,
                },
                _ = self.ended.wait_for(|e| *e) => {
                    // Taps are gone: deliver what is queued, then stop.
                    if let Ok(b) = self.stdout.try_recv() {
                        return Some((Stream::Stdout, b));
                    }
                    if let Ok(b) = self.stderr.try_recv() {
                        return Some((Stream::Stderr, b));
                    }
                    return None;
                }
            }
        }
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        // An attach that ends without closing its input counts as the end of input too.
        self.close_stdin();
    }
}

pub mod ws;

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn stdin_once_closes_after_first_attach() {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let (hub, t_out, t_err) = Hub::new(false, true, Some(File::from(w)), None);
        let mut a = hub.attach(true);
        a.write_stdin(b"hello\n").await;
        t_out.send(b"out");
        t_err.send(b"err");
        assert_eq!(a.next_output().await.unwrap(), (Stream::Stdout, Bytes::from_static(b"out")));
        assert_eq!(a.next_output().await.unwrap(), (Stream::Stderr, Bytes::from_static(b"err")));
        drop(a);
        let mut reader = tokio::net::unix::pipe::Receiver::from_file(File::from(r)).unwrap();
        let mut got = vec![];
        tokio::time::timeout(std::time::Duration::from_secs(5), reader.read_to_end(&mut got)).await.unwrap().unwrap();
        assert_eq!(got, b"hello\n");
        assert!(!hub.stdin_open());
        // Output ends when the taps are gone.
        let mut b = hub.attach(false);
        t_out.send(b"last");
        drop((t_out, t_err));
        assert_eq!(b.next_output().await.unwrap().1, Bytes::from_static(b"last"));
        assert!(b.next_output().await.is_none());
    }

    #[tokio::test]
    async fn stdin_stays_open_without_stdin_once() {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let (hub, _o, _e) = Hub::new(false, false, Some(File::from(w)), None);
        let mut a = hub.attach(true);
        a.write_stdin(b"one").await;
        a.close_stdin();
        drop(a);
        let b = hub.attach(true);
        b.write_stdin(b"two").await;
        let mut reader = tokio::net::unix::pipe::Receiver::from_file(File::from(r)).unwrap();
        let mut buf = vec![0u8; 6];
        tokio::time::timeout(std::time::Duration::from_secs(5), reader.read_exact(&mut buf)).await.unwrap().unwrap();
        assert_eq!(buf, b"onetwo");
        assert!(hub.stdin_open());
    }
}
