//! Every `COURIER_*` tuning knob, parsed in one place.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `COURIER_EAGER_LIMIT` | 65536 | largest message (bytes) sent eagerly; larger ones use rendezvous |
//! | `COURIER_MAX_MESSAGE` | 2^40 | largest message length accepted from a peer |
//! | `COURIER_SPIN_US` | 500 (5 when oversubscribed) | microseconds to busy-poll before yielding |
//! | `COURIER_YIELD_US` | 2000 (200 when oversubscribed) | microseconds to poll-and-yield before blocking |

/// Default eager limit in bytes.
pub const DEFAULT_EAGER_LIMIT: usize = 64 * 1024;

fn parse_env<T: std::str::FromStr>(name: &str) -> Option<T> {
    let v = std::env::var(name).ok()?;
    match v.trim().parse() {
        Ok(x) => Some(x),
        Err(_) => {
            eprintln!("courier: ignoring {name}={v:?}: not a number");
            None
        }
    }
}

/// `COURIER_EAGER_LIMIT`.
pub(crate) fn eager_limit() -> usize {
    parse_env("COURIER_EAGER_LIMIT").unwrap_or(DEFAULT_EAGER_LIMIT)
}

/// `COURIER_MAX_MESSAGE`.
pub(crate) fn max_message_len() -> u64 {
    parse_env("COURIER_MAX_MESSAGE").unwrap_or(1 << 40)
}

/// A duration given in microseconds.
pub(crate) fn duration_us(name: &str) -> Option<std::time::Duration> {
    parse_env::<u64>(name).map(std::time::Duration::from_micros)
}
