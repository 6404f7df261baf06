//! `switchboard-signaling`: the stateless WebSocket signaling server.
//! Not built yet; see the open signaling issues.

fn main() {
    eprintln!("switchboard-signaling: not implemented yet");
    std::process::exit(2);
}
