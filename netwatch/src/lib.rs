//! netwatch: eBPF network isolation enforcer and traffic observer for Docker hosts.
pub mod agent;
pub mod cli;
pub mod datapath;
pub mod host;
pub mod policy;
