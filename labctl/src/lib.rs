//! labctl: rebuild container-network data paths from real kernel objects.
//!
//! The program runs parse -> resolve -> plan -> apply -> observe: the
//! `labctl-topology` crate turns a YAML file into a validated [`Lab`]
//! model, [`plan`] turns the model into kernel actions, [`engine`] applies
//! them through the [`kernel::Kernel`] interface, [`observe`] reads the lab
//! back. [`state`] remembers what was made so `down` can always remove it.

pub use labctl_topology::Lab;

pub mod capture;
pub mod channel;
pub mod conntrack;
pub mod diff;
pub mod engine;
mod fault;
pub mod features;
pub mod golden;
pub mod graph;
pub mod html;
pub mod impair;
pub mod ipvs;
pub mod junit;
pub mod kernel;
pub mod lb;
pub mod netem;
pub mod observe;
pub mod owner;
pub mod plan;
pub mod release;
pub mod route;
pub mod scenario;
pub mod serve;
pub mod services;
pub mod state;
pub mod sys;
pub mod traffic;
pub mod vm;
mod wire;
