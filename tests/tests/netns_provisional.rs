//! Provisional macvlan child links on a real kernel, without Docker: what
//! the agent does with a macvlan child that appears in the host namespace
//! before Docker moves it into its container's (docs/drivers.md). The link
//! attached there goes with the device into another namespace; the kernel's
//! link info says where it is now; attaching the child under its namespace
//! then adopts that link (one program on the child's ingress, one pin);
//! a child deleted before it was adopted leaves a pin the agent can tell is
//! defunct.
//!
//! Everything here is the test's own: a veth pair as the parent, macvlan
//! children of it, a namespace held by a `sleep` of the test's; no traffic.

use std::{
    process::{Child, Command},
    time::Duration,
};

use netwatch::datapath::{Attachment, Datapath, LoadOptions, pinned, pins, provisional};
use netwatch_tests::{
    agent::wait_for,
    fixture::{require_root, tcx_program_counts},
    netns::{PinDir, ScratchVeth, run},
    reach::Netns,
};

/// A process of the test's own in a new network namespace, killed on drop
/// (the namespace, and any macvlan child in it, go with it).
struct Sleeper(Child);

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A host interface deleted on drop, if it is still in the host namespace.
struct HostLink(String);

impl Drop for HostLink {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).output();
    }
}

fn ifindex(name: &str) -> u32 {
    nix::net::if_::if_nametoindex(name).unwrap_or_else(|e| panic!("ifindex of {name}: {e}"))
}

fn netns_link(pid: u32) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/net"))
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// A macvlan child of `parent` in the host namespace, deleted on drop.
fn child_of(parent: &str, name: &str) -> HostLink {
    let _ = Command::new("ip").args(["link", "del", name]).output();
    let link = HostLink(name.to_owned());
    run(&[
        "ip", "link", "add", name, "link", parent, "type", "macvlan", "mode", "bridge",
    ]);
    link
}

#[test]
fn a_provisional_child_link_follows_its_device_and_is_adopted_once() {
    require_root();
    let pin_dir = PinDir::create();
    let root = pin_dir.0.clone();
    let parent = ScratchVeth::create("pv");
    let parent_index = ifindex(&parent.name);
    let mut datapath = Datapath::load(&LoadOptions {
        pin_root: Some(root.clone()),
        ..LoadOptions::default()
    })
    .unwrap();
    let pid = std::process::id();

    // A child appears in the host namespace: attached there.
    let name = format!("nwpv{pid}c");
    let _child = child_of(&parent.name, &name);
    let index = ifindex(&name);
    assert_eq!(
        datapath
            .attach_provisional_child(&name, index, parent_index)
            .unwrap(),
        Attachment::Attached
    );
    let pin = pins::provisional_child_path(&root, parent_index, index);
    let link = pinned::tcx_link(&pin).unwrap().expect("a TCX link");
    assert_eq!((link.ifindex, link.ingress), (index, true));
    assert_eq!(tcx_program_counts(&name), (1, 0));

    // Moved into a namespace of the test's own: the link went with it.
    let sleeper = Sleeper(
        Command::new("unshare")
            .args(["-n", "sleep", "60"])
            .spawn()
            .expect("unshare -n sleep"),
    );
    let sleeper_pid = sleeper.0.id();
    wait_for(
        "the sleeper's own namespace",
        Duration::from_secs(5),
        || netns_link(sleeper_pid) != netns_link(pid),
    );
    run(&[
        "ip",
        "link",
        "set",
        &name,
        "netns",
        &sleeper_pid.to_string(),
    ]);
    let (live, defunct) = provisional::provisional_links(&root);
    assert!(defunct.is_empty(), "{defunct:?}");
    assert_eq!(live.len(), 1);
    assert_eq!(
        live[0].link.ifindex, index,
        "the number was free in the new namespace: kept"
    );
    let ns = Netns::of_pid(sleeper_pid);
    let cookie = ns
        .run(netwatch::host::netns_cookie)
        .expect("the namespace's cookie");
    assert_eq!(ns.run(|| tcx_program_counts(&name)), (1, 0));

    // The reconcile attaches the child under its namespace: adopted.
    assert_eq!(
        datapath
            .attach_macvlan_child(sleeper_pid, cookie, &name, index)
            .unwrap(),
        Attachment::AlreadyAttached
    );
    assert!(pins::child_attached(&root, cookie, index));
    assert!(!pin.exists(), "the provisional pin was renamed, not copied");
    assert_eq!(
        ns.run(|| tcx_program_counts(&name)),
        (1, 0),
        "one program on the child's ingress: adopted, not attached twice"
    );
    assert!(provisional::provisional_links(&root).0.is_empty());

    // A second child appears and is deleted before anything adopts it:
    // its link is defunct (the kernel detached it with the device).
    let second = format!("nwpv{pid}d");
    let second_link = child_of(&parent.name, &second);
    let second_index = ifindex(&second);
    datapath
        .attach_provisional_child(&second, second_index, parent_index)
        .unwrap();
    drop(second_link);
    let (live, defunct) = provisional::provisional_links(&root);
    assert!(live.is_empty(), "{live:?}");
    assert_eq!(
        defunct,
        [pins::provisional_child_path(
            &root,
            parent_index,
            second_index
        )]
    );
    drop(sleeper);
}
