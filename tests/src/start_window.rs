//! A container's first packets: probes that reach for the host as their
//! very first act, and the window between a probe's first packet and its
//! veth's attachment, on the kernel's clocks. Shared by the start-window
//! test (`docker_boot`) and the benchmark (`bench-scale`).
//!
//! The window is the time from the container's first packet (the earliest
//! `first_seen` of its flows to the listener in the kernel's flow table,
//! whichever program saw it: the veth's, or the bridge's network-wide
//! policy) to its veth's programs being attached (the modification time of
//! the link's pin, written right after the attach: an upper bound). A
//! window ≤ 0 means the veth was enforced before the container sent
//! anything.

use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, TcpListener},
    path::{Path, PathBuf},
    time::{Duration, Instant, UNIX_EPOCH},
};

use anyhow::{Context as _, Result, anyhow, ensure};
use netwatch::datapath::{pinned, pins};
use nix::time::{ClockId, clock_gettime};

use crate::docker::{TEST_IMAGE, TestContainer, TestNetwork, docker, unique_name};

/// A TCP listener on the host whose completed connections are counted
/// without a thread: a handshake that completed waits in the listen queue
/// until accepted, so counting drains the queue.
pub struct HostListener {
    listener: TcpListener,
    accepted: usize,
}

impl HostListener {
    /// Listens on `addr` (`0.0.0.0` for every host address), any free port.
    pub fn bind(addr: Ipv4Addr) -> Result<HostListener> {
        let listener =
            TcpListener::bind((addr, 0)).with_context(|| format!("listening on {addr}"))?;
        listener.set_nonblocking(true)?;
        Ok(HostListener {
            listener,
            accepted: 0,
        })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Connections completed so far (accepting what is queued).
    pub fn accepted(&mut self) -> usize {
        while self.listener.accept().is_ok() {
            self.accepted += 1;
        }
        self.accepted
    }
}

/// Starts (`docker run -d`) a container on `network` whose first act is a
/// connection to `gateway:port`; it is gone 0.5 s later.
pub fn launch_probe(network: &TestNetwork, gateway: Ipv4Addr, port: u16) -> Result<TestContainer> {
    // The guard exists before the container does.
    let mut container = TestContainer {
        name: unique_name("probe"),
        id: String::new(),
    };
    let script = format!("nc -w 1 {gateway} {port} </dev/null & sleep 0.5; kill $! 2>/dev/null");
    container.id = docker(&[
        "run",
        "-d",
        "--name",
        &container.name,
        "--network",
        &network.name,
        TEST_IMAGE,
        "sh",
        "-c",
        &script,
    ])
    .map_err(|e| anyhow!(e))?;
    Ok(container)
}

/// [`launch_probe`], waiting for it to finish; with how long `docker run
/// -d` took to return, ms.
pub fn probe_start(
    network: &TestNetwork,
    gateway: Ipv4Addr,
    port: u16,
) -> Result<(TestContainer, f64)> {
    let launched = Instant::now();
    let container = launch_probe(network, gateway, port)?;
    let run_ms = launched.elapsed().as_secs_f64() * 1e3;
    docker(&["wait", &container.id]).map_err(|e| anyhow!(e))?;
    Ok((container, run_ms))
}

/// `CLOCK_REALTIME − CLOCK_MONOTONIC`, in ns: turns a file time into the
/// kernel flow table's clock.
pub fn realtime_offset_ns() -> Result<i128> {
    let ns = |id| -> Result<i128> {
        let t = clock_gettime(id)?;
        Ok(i128::from(t.tv_sec()) * 1_000_000_000 + i128::from(t.tv_nsec()))
    };
    let mono = ns(ClockId::CLOCK_MONOTONIC)?;
    let real = ns(ClockId::CLOCK_REALTIME)?;
    Ok(real - mono)
}

/// `CLOCK_MONOTONIC` now, in ns (the flow table's `first_seen_ns`).
pub fn monotonic_ns() -> Result<u64> {
    let now = clock_gettime(ClockId::CLOCK_MONOTONIC)?;
    Ok(u64::try_from(now.tv_sec())? * 1_000_000_000 + u64::try_from(now.tv_nsec())?)
}

/// What one probe start showed.
#[derive(Clone, Copy, Debug)]
pub struct StartWindow {
    /// µs from the first packet to the veth's attachment (≤ 0: attached
    /// first).
    pub window_us: f64,
    /// Whether the first packet was seen by the veth's own programs (else
    /// by the bridge's network-wide policy).
    pub first_on_veth: bool,
    /// How long `docker run -d` took to return, ms.
    pub run_ms: f64,
}

/// `from_container` link pins under `pin_root`.
fn link_pins(pin_root: &Path) -> BTreeSet<PathBuf> {
    link_pins_named(pin_root, |name| name.ends_with("-from_container"))
}

/// Link pins under `pin_root` whose file names `matches`.
pub fn link_pins_named(pin_root: &Path, matches: impl Fn(&str) -> bool) -> BTreeSet<PathBuf> {
    std::fs::read_dir(pins::links_dir(pin_root))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(&matches))
        .collect()
}

/// One probe start with an agent pinning under `pin_root`: its window, or
/// `None` when no program saw a packet of it.
pub fn probe_start_enforced(
    network: &TestNetwork,
    gateway: Ipv4Addr,
    port: u16,
    pin_root: &Path,
) -> Result<Option<StartWindow>> {
    let before = link_pins(pin_root);
    let offset = realtime_offset_ns()?;
    let start_mono_ns = monotonic_ns()?;
    let launched = Instant::now();
    let container = launch_probe(network, gateway, port)?;
    let run_ms = launched.elapsed().as_secs_f64() * 1e3;
    let deadline = Instant::now() + Duration::from_secs(5);
    let (attached_at, veth) = loop {
        if let Some(pin) = link_pins(pin_root).difference(&before).next() {
            let modified = std::fs::metadata(pin)?.modified()?;
            let real = modified.duration_since(UNIX_EPOCH)?.as_nanos() as i128;
            // `tc-<ifindex>-from_container`
            let veth: Option<u32> = pin
                .file_name()
                .and_then(|n| n.to_str()?.split('-').nth(1)?.parse().ok());
            break (real - offset, veth);
        }
        ensure!(
            Instant::now() < deadline,
            "the probe's veth was not attached within 5 s"
        );
        std::thread::sleep(Duration::from_millis(1));
    };
    docker(&["wait", &container.id]).map_err(|e| anyhow!(e))?;
    let first = pinned::read_flows(pin_root)?
        .into_iter()
        .filter(|(key, stats)| {
            key.dst[..4] == gateway.octets()
                && key.dst_port == port
                && stats.first_seen_ns >= start_mono_ns
        })
        .min_by_key(|(_, stats)| stats.first_seen_ns);
    drop(container);
    Ok(first.map(|(key, stats)| StartWindow {
        window_us: (attached_at - i128::from(stats.first_seen_ns)) as f64 / 1e3,
        first_on_veth: Some(key.ifindex) == veth,
        run_ms,
    }))
}
