//! Shared fixtures for netwatch integration tests.

pub mod agent;
pub mod bench;
pub mod compose;
pub mod corpus;
pub mod docker;
pub mod dockerd;
pub mod fake_dockerd;
pub mod fixture;
pub mod flood;
pub mod host_netns;
pub mod hostfw;
pub mod lan;
pub mod netns;
pub mod outside;
pub mod packets;
pub mod prometheus;
pub mod rawframe;
pub mod reach;
pub mod schema;
pub mod start_window;
pub mod swarm;
