//! dockerd for the end-to-end tests: started when missing, repaired when a
//! killed dockerd left its network store unreadable, the test image built
//! from busybox (no registry), and iptables rules of removed bridges
//! deleted.

use std::fs;
use std::os::unix::fs::symlink;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::cmd::Cmd;
use crate::host;

use super::Outcome;

/// Where a dockerd that setup starts writes its log.
const DOCKERD_LOG: &str = "/tmp/netwatch-dockerd.log";

/// How long setup waits for a dockerd it started to answer.
const DOCKERD_WAIT: Duration = Duration::from_secs(30);

/// The image the Docker tests run (`tests/src/docker.rs` names it too).
const TEST_IMAGE: &str = "netwatch-test:busybox";

/// The busybox applets the test image links (busybox-static's /bin/busybox).
const TEST_IMAGE_APPLETS: &[&str] = &["sh", "nc", "ping", "ip", "sleep", "cat", "echo"];

/// dockerd's version, when it answers.
fn docker_server() -> Result<String> {
    let version = Cmd::new("docker")
        .args([
            "version",
            "--format",
            "{{.Server.Version}} (API {{.Server.APIVersion}})",
        ])
        .probe()?;
    Ok(version.trim().to_owned())
}

/// Make sure dockerd answers. When it does not, start `dockerd` itself in
/// the background (not through its service: on these machines
/// /usr/sbin/policy-rc.d forbids starting services, and there may be no
/// systemd), in its own process group so that ^C on a test run does not
/// stop it, and wait for it to answer.
///
/// One failure is repaired: dockerd 20.10.24 (Debian's) panics at startup
/// in libnetwork's `reservePools` when its network store holds a network
/// without IPAM data, which is what a dockerd killed while creating a
/// network leaves (moby#45057, fixed upstream after 20.10.24). Nothing but
/// moving the store aside lets it start again, so setup does that — keeping
/// the old store next to it — and says which networks were in it.
pub(super) fn dockerd(root: bool) -> Result<Outcome> {
    let not_answering = match docker_server() {
        Ok(version) => return Ok(Outcome::Ok(format!("running, Docker {version}"))),
        Err(e) => format!("{e:#}"),
    };
    if !root {
        return Ok(Outcome::Skipped(format!(
            "dockerd does not answer ({not_answering}) and starting it needs root: \
             run `cargo xtask setup` as root"
        )));
    }
    let dockerd = host::which("dockerd")
        .or_else(|| Some(PathBuf::from("/usr/sbin/dockerd")).filter(|p| p.is_file()))
        .context(
            "dockerd does not answer and there is no dockerd binary; `apt-get install docker.io`",
        )?;
    match start_dockerd(&dockerd)? {
        DockerdStart::Answering(outcome) => Ok(outcome),
        DockerdStart::Exited(status) if network_store_panic() => {
            let moved = move_network_store_aside()?;
            eprintln!(
                "dockerd panicked restoring its network store (moby#45057: a network left \
                 half-created by a killed dockerd); moved it to {} — networks it held: {}; \
                 starting dockerd again",
                moved.display(),
                store_network_names(&moved).join(", ")
            );
            remove_orphans_of(&moved);
            match start_dockerd(&dockerd)? {
                DockerdStart::Answering(outcome) => Ok(outcome),
                DockerdStart::Exited(again) => bail!(
                    "dockerd exited ({status}), and again ({again}) with a fresh network \
                     store; its log is {DOCKERD_LOG}"
                ),
            }
        }
        DockerdStart::Exited(status) => {
            bail!("dockerd exited ({status}) right after starting; its log is {DOCKERD_LOG}")
        }
    }
}

/// libnetwork's persistent store of networks and endpoints.
const DOCKER_NETWORK_STORE: &str = "/var/lib/docker/network/files/local-kv.db";

enum DockerdStart {
    Answering(Outcome),
    Exited(std::process::ExitStatus),
}

/// Starts dockerd and waits for it to answer or exit.
fn start_dockerd(dockerd: &Path) -> Result<DockerdStart> {
    let log = fs::File::create(DOCKERD_LOG).with_context(|| format!("creating {DOCKERD_LOG}"))?;
    eprintln!("+ {} >{DOCKERD_LOG} 2>&1 &", dockerd.display());
    let mut child = Command::new(dockerd)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .with_context(|| format!("could not start {}", dockerd.display()))?;
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(DockerdStart::Exited(status));
        }
        if let Ok(version) = docker_server() {
            return Ok(DockerdStart::Answering(Outcome::Installed(format!(
                "started dockerd (pid {}) after {}, Docker {version}; log in {DOCKERD_LOG}",
                child.id(),
                host::secs(start.elapsed())
            ))));
        }
        if start.elapsed() > DOCKERD_WAIT {
            // Do not leave a half-started daemon holding its pid file.
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "dockerd did not answer within {} s, so it was stopped; see why in {DOCKERD_LOG}",
                DOCKERD_WAIT.as_secs()
            );
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// Whether the dockerd that just exited died of moby#45057.
fn network_store_panic() -> bool {
    fs::read_to_string(DOCKERD_LOG).is_ok_and(|log| is_network_store_panic(&log))
}

fn is_network_store_panic(log: &str) -> bool {
    log.contains("panic: runtime error: index out of range")
        && log.contains("libnetwork.(*controller).reservePools")
}

/// Renames the network store to `local-kv.db.netwatch-moved-<unix time>`.
fn move_network_store_aside() -> Result<PathBuf> {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let moved = PathBuf::from(format!(
        "{DOCKER_NETWORK_STORE}.netwatch-moved-{since_epoch}"
    ));
    fs::rename(DOCKER_NETWORK_STORE, &moved).with_context(|| {
        format!(
            "dockerd cannot start with its network store {DOCKER_NETWORK_STORE} \
             (moby#45057) and moving it aside failed"
        )
    })?;
    Ok(moved)
}

/// What the networks and sandboxes of a moved-aside store left on the host:
/// no dockerd will ever delete them, since the new store does not know them
/// (and dockerd was not running, so no container uses them). Their bridges
/// (`br-` + the first 12 hex digits of the network id) still hold the old
/// subnets' routes; the sandboxes' namespaces, bind-mounted under
/// /run/docker/netns, keep the containers' veths alive.
///
/// Their iptables rules go too: a stale `POSTROUTING -s <subnet> ! -o
/// br-<old> -j MASQUERADE` rewrites the source of every packet bridged
/// inside a new network that gets the same subnet (br_netfilter sends
/// bridged packets through iptables), so containers see each other as the
/// gateway.
fn remove_orphans_of(store: &Path) {
    let mut bridges = Vec::new();
    for id in store_values(store, "id") {
        let is_network_id = id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit());
        if is_network_id {
            bridges.push(format!("br-{}", &id[..12]));
        }
    }
    for bridge in &bridges {
        if Path::new("/sys/class/net").join(bridge).exists() {
            eprintln!("+ ip link del {bridge}   (bridge of a network in the moved store)");
            if let Err(e) = Cmd::new("ip").args(["link", "del", bridge]).probe() {
                eprintln!("could not delete {bridge}: {e:#}");
            }
        }
    }
    delete_rules_naming(&bridges);
    let sandboxes = Path::new("/run/docker/netns");
    for entry in fs::read_dir(sandboxes).into_iter().flatten().flatten() {
        let path = entry.path();
        if entry.file_name() == "default" {
            continue;
        }
        // Unmounting drops the namespace (and with it the veth end in it);
        // a file that was never mounted is just removed.
        let _ = Cmd::new("umount").arg(path.as_os_str()).probe();
        let _ = fs::remove_file(&path);
    }
}

/// Deletes every iptables and ip6tables rule that names one of
/// `interfaces`; returns how many.
fn delete_rules_naming(interfaces: &[String]) -> usize {
    let mut deleted = 0;
    for (tool, save) in [
        ("iptables", "iptables-save"),
        ("ip6tables", "ip6tables-save"),
    ] {
        let Ok(rules) = Cmd::new(save).probe() else {
            continue;
        };
        for (table, rule) in rules_naming(&rules, interfaces) {
            eprintln!("+ {tool} -t {table} -D {rule}");
            let args: Vec<&str> = rule.split_whitespace().collect();
            match Cmd::new(tool).args(["-t", &table, "-D"]).args(args).probe() {
                Ok(_) => deleted += 1,
                Err(e) => eprintln!("could not delete the rule: {e:#}"),
            }
        }
    }
    deleted
}

/// Docker's rules for bridges that no longer exist: a dockerd killed (or a
/// private test daemon stopped) before it removed a network's rules leaves
/// them, and a stale `POSTROUTING -s <subnet> ! -o br-<gone> -j MASQUERADE`
/// rewrites the source of every packet bridged inside any later network
/// with that subnet (br_netfilter sends bridged packets through iptables):
/// containers then see each other as the gateway. Docker writes a bridge's
/// rules after creating it and removes them before deleting it, so with no
/// network being made, a rule naming a missing `br-…` is stale.
pub(super) fn stale_bridge_rules() -> Result<Outcome> {
    let missing = missing_bridges_in_rules();
    if missing.is_empty() {
        return Ok(Outcome::Ok("no rules for missing bridges".into()));
    }
    let deleted = delete_rules_naming(&missing);
    Ok(Outcome::Installed(format!(
        "deleted {deleted} iptables rules of bridges that no longer exist: {}",
        missing.join(", ")
    )))
}

/// The Docker bridges (`br-…`) that iptables or ip6tables rules name but
/// that do not exist, sorted, once each.
pub fn missing_bridges_in_rules() -> Vec<String> {
    let dump = Cmd::new("iptables-save").probe().unwrap_or_default()
        + &Cmd::new("ip6tables-save").probe().unwrap_or_default();
    let mut missing: Vec<String> = dump
        .split_whitespace()
        .filter(|word| is_docker_bridge_name(word))
        .filter(|name| !Path::new("/sys/class/net").join(name).exists())
        .map(str::to_owned)
        .collect();
    missing.sort();
    missing.dedup();
    missing
}

/// `br-` and 12 hex digits: the bridge of a user-defined Docker network.
fn is_docker_bridge_name(word: &str) -> bool {
    word.strip_prefix("br-")
        .is_some_and(|id| id.len() == 12 && id.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The rules of an `iptables-save` dump that name one of `interfaces`, as
/// (table, rule without its `-A`): what `iptables -t table -D rule` takes.
fn rules_naming(dump: &str, interfaces: &[String]) -> Vec<(String, String)> {
    let mut table = String::new();
    let mut rules = Vec::new();
    for line in dump.lines() {
        if let Some(name) = line.strip_prefix('*') {
            table = name.trim().to_owned();
        } else if let Some(rule) = line.strip_prefix("-A ")
            && rule
                .split_whitespace()
                .any(|word| interfaces.iter().any(|i| i == word))
        {
            rules.push((table.clone(), rule.to_owned()));
        }
    }
    rules
}

/// The network names a store mentions, for the message (the store is a
/// bbolt file of JSON values; a name we cannot read is simply not listed).
fn store_network_names(store: &Path) -> Vec<String> {
    store_values(store, "name")
}

/// Every string value of `key` in a store's JSON values, sorted, once each.
fn store_values(store: &Path, key: &str) -> Vec<String> {
    let bytes = fs::read(store).unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    let needle = format!("\"{key}\":\"");
    let mut names: Vec<String> = text
        .match_indices(&needle)
        .filter_map(|(at, key)| {
            let rest = &text[at + key.len()..];
            let name = &rest[..rest.find('"')?];
            (!name.is_empty() && name.len() < 256).then(|| name.to_owned())
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Make sure the image the Docker tests run exists: no image can be pulled
/// here, so it is imported from a rootfs holding busybox-static's
/// /bin/busybox and links for the applets the tests use.
pub(super) fn test_image() -> Result<Outcome> {
    let present = Cmd::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", TEST_IMAGE])
        .probe();
    if present.is_ok() {
        return Ok(Outcome::Ok(format!("{TEST_IMAGE} present")));
    }
    let busybox = Path::new("/bin/busybox");
    if !busybox.is_file() {
        bail!("building {TEST_IMAGE} needs /bin/busybox: `apt-get install busybox-static`");
    }
    let work = std::env::temp_dir().join(format!("netwatch-test-image-{}", std::process::id()));
    let result = build_test_image(busybox, &work);
    let _ = fs::remove_dir_all(&work);
    result?;
    Ok(Outcome::Installed(format!(
        "imported {TEST_IMAGE} (busybox-static: {})",
        TEST_IMAGE_APPLETS.join(", ")
    )))
}

fn build_test_image(busybox: &Path, work: &Path) -> Result<()> {
    let rootfs = work.join("rootfs");
    let bin = rootfs.join("bin");
    fs::create_dir_all(&bin).with_context(|| format!("creating {}", bin.display()))?;
    fs::copy(busybox, bin.join("busybox"))
        .with_context(|| format!("copying {}", busybox.display()))?;
    for applet in TEST_IMAGE_APPLETS {
        symlink("busybox", bin.join(applet))?;
    }
    let tarball = work.join("rootfs.tar");
    Cmd::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(&tarball)
        .arg(".")
        .run()?;
    Cmd::new("docker")
        .args(["import", "--change", r#"CMD ["/bin/sh"]"#])
        .args(["--message", "netwatch test image: Debian busybox-static"])
        .arg(&tarball)
        .arg(TEST_IMAGE)
        .run()?;
    // A dynamically linked busybox would import fine and fail in every
    // test: check, and do not leave a broken image that looks present.
    let check = Cmd::new("docker")
        .args(["run", "--rm", "--network", "none", TEST_IMAGE, "echo", "ok"])
        .run();
    if let Err(e) = check {
        let _ = Cmd::new("docker").args(["rmi", TEST_IMAGE]).run();
        return Err(e.context(format!(
            "{TEST_IMAGE} does not run; is /bin/busybox the static one (busybox-static)?"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_the_network_store_panic_of_a_killed_dockerd() {
        let log = "level=info msg=\"Starting up\"\n\
                   panic: runtime error: index out of range [0] with length 0\n\n\
                   goroutine 1 [running]:\n\
                   github.com/docker/libnetwork.(*controller).reservePools(0x55aa5695ce70?)\n";
        assert!(is_network_store_panic(log));
        assert!(!is_network_store_panic(
            "level=fatal msg=\"failed to start daemon: pid file found\""
        ));
        assert!(!is_network_store_panic(
            "panic: runtime error: index out of range [0] with length 0\nmain.main()"
        ));
    }

    #[test]
    fn finds_the_rules_of_removed_bridges_in_an_iptables_dump() {
        let dump = "# Generated by iptables-save\n*filter\n:FORWARD DROP [0:0]\n\
                    -A FORWARD -o br-76c11a802abb -j DOCKER\n\
                    -A FORWARD -o br-76c11a802abbX -j DOCKER\n\
                    -A FORWARD -o docker0 -j DOCKER\nCOMMIT\n*nat\n\
                    -A POSTROUTING -s 172.27.0.0/16 ! -o br-76c11a802abb -j MASQUERADE\nCOMMIT\n";
        let rules = rules_naming(dump, &["br-76c11a802abb".to_owned()]);
        assert_eq!(
            rules,
            [
                (
                    "filter".to_owned(),
                    "FORWARD -o br-76c11a802abb -j DOCKER".to_owned()
                ),
                (
                    "nat".to_owned(),
                    "POSTROUTING -s 172.27.0.0/16 ! -o br-76c11a802abb -j MASQUERADE".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn docker_bridge_names_are_br_and_twelve_hex_digits() {
        assert!(is_docker_bridge_name("br-a26ad16a8b5c"));
        assert!(!is_docker_bridge_name("br-a26ad16a8b5"));
        assert!(!is_docker_bridge_name("br-a26ad16a8b5cX"));
        assert!(!is_docker_bridge_name("docker0"));
        assert!(!is_docker_bridge_name("br-lan"));
    }

    #[test]
    fn lists_the_networks_a_moved_store_held() {
        let dir = std::env::temp_dir().join(format!("xtask-store-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let store = dir.join("local-kv.db");
        let mut bytes = b"\0\x01bolt{\"id\":\"ab\",\"name\":\"nwtest-1-a\",\"x\":1}".to_vec();
        bytes
            .extend_from_slice(b"\xff\0{\"name\":\"bridge\"}{\"name\":\"nwtest-1-a\"}{\"name\":\"");
        fs::write(&store, bytes).unwrap();
        let names = store_network_names(&store);
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(names, ["bridge", "nwtest-1-a"]);
    }
}
