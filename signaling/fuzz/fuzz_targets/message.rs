//! Message parsing: any text a client sends is either a message that survives a round trip
//! through its own JSON, or an error with a documented code. Never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_signaling::protocol::{ClientMessage, ErrorCode, parse_client_message};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_client_message(text) {
        Ok(message) => {
            // What the parser accepts, serde writes back, and the parser reads the same again.
            let json = serde_json::to_string(&message).expect("a parsed message serializes");
            let again = parse_client_message(&json).expect("a serialized message parses");
            assert_eq!(again, message, "round trip changed the message");
            let _: ClientMessage = serde_json::from_str(&json).expect("serde reads it too");
        }
        Err(error) => {
            assert!(ErrorCode::ALL.contains(&error.code()), "undocumented code");
            let reply = error.to_server_message().to_json();
            assert!(
                reply.len() < 64 * 1024,
                "an error echoes too much: {} bytes",
                reply.len()
            );
        }
    }
});
