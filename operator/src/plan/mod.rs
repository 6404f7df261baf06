//! The operator's pure planners: observed objects, the time and the configuration in; the
//! writes to make out. No client, no async, no clock: the loops (`crate::placer`,
//! `crate::nodes`) observe, call a planner and apply what it returns, as the TURN secret
//! rotation loop does with `switchboard_turn::rotation::plan`.
//!
//! They live in the operator, not in `switchboard-placement`, because they speak in CRD types
//! (statuses, conditions, reservations, finalizers); the placement crate stays free of
//! Kubernetes types and holds the decision each planner calls.

pub mod node;
pub mod placement;
