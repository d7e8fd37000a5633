//! Simulator (to come).
