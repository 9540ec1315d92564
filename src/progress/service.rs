//! The link to the launcher's rendezvous service, kept after wire-up: abort
//! notices and its loss reach the rank through it, and the rank tells it
//! FINALIZE and ABORT.

use crate::bootstrap::protocol::{Deframer, Reply, Request, MAX_REPLY};
use crate::error::{Error, Result};
use crate::transport::tcp::TcpTransport;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

#[derive(Debug)]
struct ServiceLink {
    stream: mio::net::TcpStream,
    deframer: Deframer,
}

/// What this rank knows of the launcher.
#[derive(Debug, Default)]
pub(super) struct Service {
    link: Option<ServiceLink>,
    /// The launcher announced an abort with this exit code.
    aborted: Option<i32>,
    /// The connection closed.
    lost: bool,
}

impl Service {
    /// Watches `stream` (through `tcp`'s poller) for abort notices and EOF.
    pub(super) fn attach(
        &mut self,
        stream: std::net::TcpStream,
        tcp: &mut TcpTransport,
    ) -> Result<()> {
        stream
            .set_nonblocking(true)
            .map_err(|e| Error::io(None, e))?;
        let mut stream = mio::net::TcpStream::from_std(stream);
        tcp.register_service(&mut stream)
            .map_err(|e| Error::io(None, e))?;
        self.link = Some(ServiceLink {
            stream,
            deframer: Deframer::new(MAX_REPLY),
        });
        Ok(())
    }

    /// Sends a request to the service (abort, finalize); gives up after 2 s.
    pub(super) fn send(&mut self, bytes: &[u8]) -> Result<()> {
        let Some(s) = self.link.as_mut() else {
            return Ok(());
        };
        s.stream.set_nodelay(true).ok();
        let mut off = 0;
        let deadline = Instant::now() + Duration::from_secs(2);
        while off < bytes.len() && Instant::now() < deadline {
            match s.stream.write(&bytes[off..]) {
                Ok(n) => off += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io(None, e)),
            }
        }
        Ok(())
    }

    /// Tells the launcher this rank finalized, so that its exit is not taken
    /// for a crash. Best effort: a launcher already gone needs no notice.
    pub(super) fn tell_finalized(&mut self) {
        let _ = self.send(&Request::Finalize.encode());
    }

    /// Reads what the service sent (abort notices) and notices its loss.
    pub(super) fn read(&mut self) {
        let Some(s) = self.link.as_mut() else {
            return;
        };
        let mut buf = [0u8; 4096];
        loop {
            match s.stream.read(&mut buf) {
                Ok(0) => {
                    self.lost = true;
                    break;
                }
                Ok(n) => s.deframer.push(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.lost = true;
                    break;
                }
            }
        }
        while let Ok(Some(body)) = s.deframer.next_message() {
            if let Ok(Reply::Abort { code }) = Reply::decode(&body) {
                self.aborted = Some(code);
            }
        }
    }

    /// The job's state as the launcher told it: an error once it aborted
    /// the job or went away.
    pub(super) fn check(&self) -> Result<()> {
        if let Some(code) = self.aborted {
            return Err(Error::Aborted { code });
        }
        if self.lost {
            return Err(Error::Bootstrap(
                "lost the connection to the launcher".into(),
            ));
        }
        Ok(())
    }

    /// After asking the launcher to abort: waits (at most `limit`) until it
    /// announces the abort, so it learns the cause before it sees us exit.
    pub(super) fn await_abort_notice(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.aborted.is_none()
            && !self.lost
            && self.link.is_some()
            && Instant::now() < deadline
        {
            self.read();
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
