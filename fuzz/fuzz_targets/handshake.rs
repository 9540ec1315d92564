//! The acceptor side of the connection handshake fed a stranger's bytes:
//! never panics, never accepts without the key.
#![no_main]
use courier::bootstrap::auth::{Acceptor, JobKey, AUTH_LEN, HELLO_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < HELLO_LEN + AUTH_LEN {
        return;
    }
    let key = JobKey::from_hex(&"ab".repeat(32)).expect("key");
    let hello: &[u8; HELLO_LEN] = data[..HELLO_LEN].try_into().expect("len");
    let auth: &[u8; AUTH_LEN] = data[HELLO_LEN..HELLO_LEN + AUTH_LEN]
        .try_into()
        .expect("len");
    if let Ok((a, _challenge)) = Acceptor::handle_hello(key, 1, 8, hello) {
        assert!(a.handle_auth(auth).is_err(), "accepted without the key");
    }
});
