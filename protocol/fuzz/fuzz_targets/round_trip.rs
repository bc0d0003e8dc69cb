//! Fuzz target: arbitrary valid frames of both protocols, encoded and decoded again (see
//! `check_round_trip`).

#![no_main]

use libfuzzer_sys::fuzz_target;
use wschat_protocol_fuzz::{check_round_trip, AnyFrame};

fuzz_target!(|frame: AnyFrame| check_round_trip(&frame));
