//! Nonblocking requests that own their buffers: no scope needed, the
//! buffer comes back from `wait`.

use super::{finish_on_drop, post_send_raw, wait_or_detach, Posted};
use crate::engine::ReqId;
use crate::error::Result;
use crate::group::Group;
use crate::progress::Driver;
use crate::status::Status;
use std::sync::Arc;

/// A nonblocking send that owns its buffer; `wait` gives the buffer back.
/// Dropping it waits for the send.
#[must_use = "a request must be waited for (dropping it waits)"]
#[derive(Debug)]
pub struct OwnedSend<T: bytemuck::Pod> {
    progress: Arc<Driver>,
    id: ReqId,
    buf: Option<Vec<T>>,
}

impl<T: bytemuck::Pod> OwnedSend<T> {
    /// A standard-mode send of `buf` to world rank `peer` on `context`.
    pub(crate) fn new(
        progress: &Arc<Driver>,
        peer: u32,
        context: u32,
        tag: u32,
        buf: Vec<T>,
    ) -> Result<Self> {
        let id = {
            let mut p = progress.lock_for_isend()?;
            let bytes: &[u8] = bytemuck::cast_slice(&buf);
            // SAFETY: the Vec's heap block stays put while `self` owns it (it
            // is never resized), and is only released after the request has
            // finished or been abandoned; a leaked `OwnedSend` leaks the block.
            match unsafe { post_send_raw(&mut p, peer, context, tag, bytes, false) } {
                Posted::Written => p.completed_send(peer),
                Posted::Req(id) => id,
            }
        };
        Ok(OwnedSend {
            progress: progress.clone(),
            id,
            buf: Some(buf),
        })
    }

    /// Waits for the send and returns the buffer.
    pub fn wait(mut self) -> Result<Vec<T>> {
        let r = {
            let mut p = self.progress.lock()?;
            wait_or_detach(&mut p, self.id)
        };
        let buf = self.buf.take().unwrap_or_default();
        r.map(|_| buf)
    }

    /// Whether the send has completed (makes progress first).
    pub fn test(&mut self) -> Result<bool> {
        let mut p = self.progress.lock()?;
        p.progress_once(Some(std::time::Duration::ZERO))?;
        Ok(p.is_done(self.id))
    }
}

impl<T: bytemuck::Pod> Drop for OwnedSend<T> {
    fn drop(&mut self) {
        if self.buf.is_some() {
            let mut p = self.progress.lock_for_drop();
            finish_on_drop(&mut p, self.id);
        }
    }
}

/// A nonblocking receive that owns its buffer; `wait` gives it back with the status.
/// Dropping it waits for the receive.
#[must_use = "a request must be waited for (dropping it waits)"]
#[derive(Debug)]
pub struct OwnedRecv<T: bytemuck::Pod> {
    progress: Arc<Driver>,
    /// The communicator's ranks, to translate the status.
    group: Arc<Group>,
    id: ReqId,
    buf: Option<Vec<T>>,
}

impl<T: bytemuck::Pod> OwnedRecv<T> {
    /// A receive into `buf` on `context`; `group` names the sender in its status.
    pub(crate) fn new(
        progress: &Arc<Driver>,
        group: Arc<Group>,
        context: u32,
        source: Option<u32>,
        tag: Option<u32>,
        mut buf: Vec<T>,
    ) -> Result<Self> {
        let id = {
            let mut p = progress.lock()?;
            let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut buf);
            // SAFETY: as in `OwnedSend::new`; nothing reads or writes the Vec
            // until the request has finished or been abandoned.
            unsafe { p.post_recv(context, source, tag, bytes) }
        };
        Ok(OwnedRecv {
            progress: progress.clone(),
            group,
            id,
            buf: Some(buf),
        })
    }

    /// Waits for the message; returns the buffer and the status.
    pub fn wait(mut self) -> Result<(Vec<T>, Status)> {
        let r = {
            let mut p = self.progress.lock()?;
            wait_or_detach(&mut p, self.id)
        };
        let buf = self.buf.take().unwrap_or_default();
        let info = r.map_err(|e| self.group.local_error(e))?;
        let status = self.group.status(info, std::mem::size_of::<T>())?;
        Ok((buf, status))
    }

    /// Whether the receive has completed (makes progress first).
    pub fn test(&mut self) -> Result<bool> {
        let mut p = self.progress.lock()?;
        p.progress_once(Some(std::time::Duration::ZERO))?;
        Ok(p.is_done(self.id))
    }
}

impl<T: bytemuck::Pod> Drop for OwnedRecv<T> {
    fn drop(&mut self) {
        if self.buf.is_some() {
            let mut p = self.progress.lock_for_drop();
            finish_on_drop(&mut p, self.id);
        }
    }
}
