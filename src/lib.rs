//! gatelock: one gateway process per configuration on a host.
//!
//! The modules follow the contract's sections: where the lock lives (`paths`),
//! what it says (`payload`), who owns it (`owner`, `process`, `probe`), how the
//! file is made, judged and removed (`lockfile`), the loop that ties them
//! together (`acquire`), and the Node.js surface (`binding`).

// Unit tests reach the core without the napi exports that use the rest.
#![cfg_attr(test, allow(dead_code))]

mod acquire;
mod argv;
mod binding;
mod clock;
mod error;
mod lockfile;
mod owner;
mod paths;
mod payload;
mod probe;
mod process;
mod registry;
mod runtime;
mod wait;
