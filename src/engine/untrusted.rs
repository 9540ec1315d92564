//! The engine fed with hostile bytes (fuzz targets and a property test).

use super::{Direction, Engine, ProtocolError};
use crate::wire::Frame;

/// Feeds untrusted bytes to an engine the way a driver would: a stream of
/// `[peer byte][40-byte header][payload]` records, with receives, sends and
/// pulls posted along the way. Used by the fuzz targets and a property
/// test; it must never panic, whatever the bytes.
pub(crate) fn feed_untrusted(data: &[u8]) {
    use crate::wire::HEADER_LEN;
    let mut e = Engine::new(0, 4, 64);
    e.set_peer_caps(1, 64, true);
    e.set_coop_min(128);
    e.set_window(0);
    let mut live = Vec::new();
    let mut rest = data;
    while let Some((&peer, tail)) = rest.split_first() {
        // Now and then act like the application.
        match peer % 16 {
            13 => live.push(e.post_recv(0, None, None, 256)),
            14 => live.push(e.post_send(
                u32::from(peer % 4),
                0,
                1,
                usize::from(peer) * 3,
                peer % 2 == 0,
            )),
            15 => {
                while let Some(c) = e.poll_copy() {
                    let ok = match c.dir {
                        Direction::Pull => peer % 3 != 0,
                        Direction::Push => peer % 3 == 0,
                    };
                    e.handle_copy_done(c, ok);
                }
            }
            _ => {}
        }
        let Some(hlen) = tail
            .first()
            .map(|&b| Frame::header_len(b).unwrap_or(HEADER_LEN))
        else {
            break;
        };
        if tail.len() < hlen {
            break;
        }
        let (h, tail) = tail.split_at(hlen);
        rest = tail;
        let Ok(frame) = Frame::decode(h, 1 << 20) else {
            continue;
        };
        let from = u32::from(peer % 5); // 4 is out of range on purpose
        if let Frame::Eager { len, .. } = frame {
            // As the driver does when the payload came with the header.
            if peer % 2 == 1 && len <= rest.len() as u64 {
                let (body, tail) = rest.split_at(len as usize);
                rest = tail;
                if let Err(ProtocolError(why)) = e.handle_eager_whole(from, frame, body) {
                    e.handle_peer_lost(from, why.into());
                }
                continue;
            }
        }
        match e.handle_frame(from, frame) {
            Ok(Some(_)) => {
                let n = (frame.payload_len() as usize).min(rest.len());
                if let Some(buf) = e.staging_mut(from) {
                    let k = n.min(buf.len());
                    crate::sys::copy::copy(&mut buf[..k], &rest[..k]);
                }
                rest = &rest[n..];
                e.handle_payload_done(from);
            }
            Ok(None) => {}
            Err(ProtocolError(why)) => e.handle_peer_lost(from, why.into()),
        }
        while e.poll_transmit().is_some() {}
        while let Some((_, buf)) = e.poll_delivery() {
            e.recycle(buf);
        }
        for &id in &live {
            let _ = e.take_result(id);
        }
    }
}
