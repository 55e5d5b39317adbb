//! A test harness only: `tests/mesh_sim.rs` runs five relays and two users
//! in virtual time, the users on the real client engine
//! (`postern-engine`: paths, entry failover, resend decisions, the watch
//! timers with cover traffic) and the relays on the relay's real hop rules
//! (`postern_relay::hop`). This crate has no library code.
