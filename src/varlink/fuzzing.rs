//! The varlink connection's reading and translating, without a socket or a service: a byte
//! stream is cut into messages by the same reader under the same limits, and each message is
//! decoded and translated as `connection` does (see `crate::fuzzing`).

use std::sync::{Arc, OnceLock};

use serde_json::Value;
use tokio::io::BufReader;

use super::limits::{Limits, Timeouts};
use super::wire::{Read, read_message};
use super::{Reply, decode_call, encode, methods};

fn runtime() -> Option<&'static tokio::runtime::Runtime> {
    static RT: OnceLock<Option<tokio::runtime::Runtime>> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .ok()
    })
    .as_ref()
}

/// `data[0]` is the read buffer's size (how the stream arrives in pieces); the rest is what a
/// client of user 1000 sent on one connection. How many of its messages were varlink calls.
pub fn stream(data: &[u8]) -> usize {
    let Some((&cap, bytes)) = data.split_first() else {
        return 0;
    };
    let Some(rt) = runtime() else { return 0 };
    rt.block_on(async {
        let limits = Arc::new(Limits::default());
        let Ok(conn) = limits.admit(1000) else { return 0 };
        let mut calls = 0;
        let mut rd = BufReader::with_capacity(usize::from(cap).max(1), bytes);
        while let Ok(Read::Message(message, held)) = read_message(&mut rd, &conn, &Timeouts::DAEMON).await {
            assert_eq!(
                held.held(),
                message.len() + 1,
                "a message's bytes are held until answered"
            );
            calls += usize::from(call(&message));
        }
        calls
    })
}

/// One message (without its NUL) as `connection` decodes and translates it; the reply to a
/// refused one is encoded as it would be sent. Whether it was a call.
pub fn call(message: &[u8]) -> bool {
    let (call, params) = match decode_call(message) {
        Ok(c) => c,
        Err(reply) => {
            assert_eq!(encode(&reply, false).last(), Some(&0));
            return false;
        }
    };
    let _ = params
        .get("allowInteractiveAuthentication")
        .and_then(Value::as_bool);
    let reply = match call.method.strip_prefix("org.nftlbd1.") {
        Some(name) => match methods::translate(name, &params) {
            Ok(Some(op)) => match crate::fuzzing::apply(op) {
                Ok(_) => return true,
                Err(e) => Reply::from(e),
            },
            Ok(None) => return true,
            Err(reply) => reply,
        },
        None => match methods::service_method(&call.method, &params) {
            Ok(v) => Reply::Ok(v),
            Err(reply) => reply,
        },
    };
    assert_eq!(encode(&reply, call.more).last(), Some(&0));
    true
}
