//! Shared fixtures for netwatch integration tests.

pub mod agent;
pub mod corpus;
pub mod docker;
pub mod fixture;
pub mod netns;
pub mod packets;
