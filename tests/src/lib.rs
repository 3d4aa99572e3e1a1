//! Shared fixtures for netwatch integration tests.
