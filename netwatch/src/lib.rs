//! netwatch: eBPF network isolation enforcer and traffic observer for Docker hosts.
