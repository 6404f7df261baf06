//! Frame parsing: raw bytes from a client, after the upgrade, read by the WebSocket library
//! with the server's limits as axum's upgrade sets them, then the signaling path: each text
//! message goes to the protocol parser, each refusal of the library to a close code. Every
//! refusal must map to a documented close code, and nothing may panic.
#![no_main]

use std::io::{Cursor, Read, Write};

use libfuzzer_sys::fuzz_target;
use switchboard_signaling::protocol::{CloseCode, close_for_receive_error, parse_client_message};
use tungstenite::protocol::{Role, WebSocket, WebSocketConfig};
use tungstenite::{Error, Message};

/// The client's bytes in; what the server writes back is dropped.
struct Wire(Cursor<Vec<u8>>);

impl Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for Wire {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The server's default limit; small enough for the fuzzer to reach it.
const LIMIT: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let config = WebSocketConfig::default()
        .read_buffer_size(1024)
        .max_message_size(Some(LIMIT))
        .max_frame_size(Some(LIMIT));
    let mut socket =
        WebSocket::from_raw_socket(Wire(Cursor::new(data.to_vec())), Role::Server, Some(config));
    for _ in 0..64 {
        match socket.read() {
            Ok(Message::Text(text)) => {
                let _ = parse_client_message(text.as_str());
            }
            Ok(Message::Close(_)) => break,
            Ok(_) => {}
            // The bytes ran out: the client is gone, nothing to close.
            Err(Error::Io(_)) | Err(Error::ConnectionClosed) | Err(Error::AlreadyClosed) => break,
            Err(error) => {
                let code = close_for_receive_error(&error.to_string());
                assert!(
                    matches!(
                        code,
                        None | Some(
                            CloseCode::ProtocolError
                                | CloseCode::InvalidPayload
                                | CloseCode::MessageTooBig
                        )
                    ),
                    "{error} maps to {code:?}"
                );
                break;
            }
        }
    }
});
