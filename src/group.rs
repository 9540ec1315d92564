//! Who is in a communicator: the map between communicator ranks and world
//! ranks, used to address peers and to name senders in statuses and errors.

use crate::engine::MsgInfo;
use crate::error::{Error, Result};
use crate::status::Status;
use std::collections::HashMap;

/// Which world ranks a communicator holds, in communicator-rank order.
#[derive(Debug, Clone)]
pub(crate) enum Group {
    /// Comm rank r is world rank r.
    Identity(usize),
    /// Comm rank r is world rank `ranks[r]`.
    Map {
        ranks: Vec<u32>,
        inverse: HashMap<u32, usize>,
    },
}

impl Group {
    /// The group of these world ranks, in this order.
    pub(crate) fn of(ranks: Vec<u32>) -> Self {
        let inverse = ranks.iter().enumerate().map(|(i, &w)| (w, i)).collect();
        Group::Map { ranks, inverse }
    }

    pub(crate) fn size(&self) -> usize {
        match self {
            Group::Identity(n) => *n,
            Group::Map { ranks, .. } => ranks.len(),
        }
    }

    /// The world rank of communicator rank `r`.
    pub(crate) fn world_rank(&self, r: usize) -> Result<u32> {
        let size = self.size();
        if r >= size {
            return Err(Error::InvalidRank { rank: r, size });
        }
        match self {
            Group::Identity(_) => Ok(r as u32),
            Group::Map { ranks, .. } => ranks
                .get(r)
                .copied()
                .ok_or(Error::InvalidRank { rank: r, size }),
        }
    }

    /// The communicator rank of world rank `world` (`usize::MAX` for a
    /// stranger: messages on a communicator's contexts only come from members).
    #[inline]
    pub(crate) fn comm_rank(&self, world: u32) -> usize {
        match self {
            Group::Identity(_) => world as usize,
            Group::Map { inverse, .. } => inverse.get(&world).copied().unwrap_or(usize::MAX),
        }
    }

    /// Converts an engine result into a typed status for elements of `elem_size` bytes.
    #[inline]
    pub(crate) fn status(&self, info: MsgInfo, elem_size: usize) -> Result<Status> {
        let elem = elem_size.max(1);
        // Element sizes are nearly always powers of two: a mask, not a
        // division, on the way of every receive.
        let rest = if elem.is_power_of_two() {
            info.len & (elem - 1)
        } else {
            info.len % elem
        };
        if rest != 0 {
            return Err(Error::LengthMismatch {
                bytes: info.len,
                elem_size,
            });
        }
        Ok(Status {
            source: self.comm_rank(info.source),
            tag: info.tag,
            bytes: info.len,
        })
    }

    /// Translates the world ranks an error names into this group's ranks,
    /// where the API promises communicator ranks.
    pub(crate) fn local_error(&self, e: Error) -> Error {
        match e {
            Error::Truncated {
                rank,
                tag,
                capacity,
                incoming,
            } => Error::Truncated {
                rank: self.comm_rank(rank as u32),
                tag,
                capacity,
                incoming,
            },
            e => e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_count_whole_elements_of_any_size() {
        let g = Group::of(vec![5, 2]);
        let info = |len| MsgInfo {
            source: 2,
            tag: 7,
            len,
        };
        let s = g.status(info(12), 4).unwrap();
        assert_eq!((s.source, s.tag, s.bytes), (1, 7, 12));
        assert!(
            g.status(info(6), 4).is_err(),
            "a power of two, not a multiple"
        );
        assert!(g.status(info(9), 3).is_ok());
        assert!(
            g.status(info(10), 3).is_err(),
            "not a power of two, not a multiple"
        );
        assert!(
            g.status(info(3), 0).is_ok(),
            "zero-sized elements count as bytes"
        );
    }
}
