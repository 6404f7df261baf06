//! Switchboard's benchmark drivers, kept apart from the integration tests: `peer-bench`
//! (Switchboard on its own and against socket.io and Centrifugo) and `placement-bench` (the
//! placement algorithm and the operator on a real apiserver). They start their servers with
//! the test harness (`switchboard-tests`) and print JSON lines that `tests/bench/*.sh` turn
//! into the tables of `docs/benchmarks.md`.
//!
//! This library holds only what the drivers measure with; it is not a test and starts nothing.

pub mod measure;
