//! The interface listener (`netwatch::host::links::watch`) on a real kernel, in
//! network namespaces of the test's own: it reports an interface created
//! after it started, and a veth enslaved in another namespace with that
//! namespace's id, as libnetwork does with an overlay's sandbox veth. Needs
//! root (unshare), so it lives here and not among the unit tests, which a
//! plain `cargo test` runs as any user.

use std::{os::fd::AsRawFd as _, thread, time::Duration};

use netwatch::{
    host::links::{LinkEvent, watch},
    host::rtnetlink::RtNetlink,
};
use netwatch_tests::fixture::require_root;

#[test]
fn the_listener_reports_an_interface_created_after_it_started() {
    require_root();
    // The listener and the new veth pair live in a namespace of this
    // test's own: a thread that moved there, and `ip` run through it.
    let handle = thread::spawn(|| {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare (root?)");
        let mut events = watch().expect("listening");
        let netns = std::fs::File::open("/proc/thread-self/ns/net").expect("own netns");
        let fd = netns.as_raw_fd();
        let created = std::process::Command::new("nsenter")
            .arg(format!("--net=/proc/{}/fd/{fd}", std::process::id()))
            .args([
                "ip", "link", "add", "nwlw0", "type", "veth", "peer", "name", "nwlw1",
            ])
            .status()
            .expect("nsenter ip link add");
        assert!(created.success());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(5), async {
                loop {
                    match events.recv().await {
                        Some(LinkEvent::Changed(link)) if link.ifname == "nwlw0" => {
                            assert_eq!(link.kind.as_deref(), Some("veth"));
                            return;
                        }
                        Some(_) => {}
                        None => panic!("the listener stopped"),
                    }
                }
            })
            .await
            .expect("an RTM_NEWLINK for nwlw0 within 5 s");
        });
    });
    handle.join().expect("listener test thread");
}

#[test]
fn a_veth_enslaved_in_another_namespace_is_reported_with_that_namespaces_nsid() {
    require_root();
    // The listener in a namespace of this test's own (A); a second
    // namespace (B) held by a `sleep` of its own; a veth pair made in A
    // with one end moved into B and enslaved to a bridge there, as
    // libnetwork does with an overlay's sandbox veth.
    let handle = thread::spawn(|| {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare (root?)");
        let mut events = watch().expect("listening");
        let own = std::fs::File::open("/proc/thread-self/ns/net").expect("own netns");
        let in_a = format!("--net=/proc/{}/fd/{}", std::process::id(), own.as_raw_fd());
        let mut holder = std::process::Command::new("unshare")
            .args(["--net", "sleep", "30"])
            .spawn()
            .expect("unshare --net sleep");
        let b = format!("/proc/{}/ns/net", holder.id());
        // Wait for the holder's own namespace: it starts in A (this
        // thread's, not the process's) and unshares after exec.
        let a_link = std::fs::read_link("/proc/thread-self/ns/net").expect("A's link");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::fs::read_link(&b)
            .ok()
            .is_none_or(|link| link == a_link)
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the holder did not unshare within 5 s"
            );
            thread::sleep(Duration::from_millis(5));
        }
        let run = |args: &[&str]| {
            let done = std::process::Command::new("nsenter")
                .args(args)
                .status()
                .expect("nsenter");
            assert!(done.success(), "{args:?}");
        };
        let pid = holder.id().to_string();
        run(&[
            &in_a, "ip", "link", "add", "nwan0", "type", "veth", "peer", "name", "nwan1",
        ]);
        run(&[&in_a, "ip", "link", "set", "nwan1", "netns", &pid]);
        let in_b = format!("--net={b}");
        run(&[&in_b, "ip", "link", "add", "nwanbr", "type", "bridge"]);
        run(&[&in_b, "ip", "link", "set", "nwan1", "master", "nwanbr"]);
        let b_file = std::fs::File::open(&b).expect("B's namespace file");
        let nsid = RtNetlink::open()
            .and_then(|netlink| netlink.nsid(&b_file))
            .expect("A's id for B");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        let seen = runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(5), async {
                loop {
                    match events.recv().await {
                        Some(LinkEvent::ChangedIn { nsid, link })
                            if link.ifname == "nwan1" && link.master.is_some() =>
                        {
                            return (nsid, link);
                        }
                        Some(_) => {}
                        None => panic!("the listener stopped"),
                    }
                }
            })
            .await
        });
        let _ = holder.kill();
        let _ = holder.wait();
        let (seen_nsid, link) = seen.expect("nwan1 enslaved in B, reported within 5 s");
        assert_eq!(seen_nsid, nsid, "tagged with A's id for B");
        assert_eq!(link.kind.as_deref(), Some("veth"));
    });
    handle.join().expect("listener test thread");
}
