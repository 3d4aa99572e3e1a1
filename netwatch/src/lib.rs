//! netwatch: eBPF network isolation enforcer and traffic observer for Docker hosts.
pub mod accept;
pub mod agent;
pub mod api;
pub mod cli;
pub mod datapath;
pub mod docker;
pub mod export;
pub mod flows;
pub mod guard;
pub mod host;
pub mod logging;
pub mod policy;
pub mod render;
pub mod standalone;
