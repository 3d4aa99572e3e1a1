//! Shared fixtures for netwatch integration tests.

pub mod corpus;
pub mod fixture;
pub mod netns;
pub mod packets;
