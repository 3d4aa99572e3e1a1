//! Compose projects for tests: brought up from the test's files, taken
//! down (with their networks) when dropped.

use std::process::Command;

use crate::docker::{docker_ok, unique_name};
use crate::reach::Netns;

/// The seed's microservice topology (frontend; backend and db internal).
pub const SEED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/fixtures/seed/docker-compose.yml"
);

/// The seed's services.
pub const SEED_SERVICES: [&str; 4] = ["frontend", "api-gateway", "auth-service", "db"];

/// A compose project, brought down (with its networks) on drop.
pub struct Project {
    pub name: String,
    files: Vec<String>,
}

impl Project {
    /// `up -d` of `files` as project `nwtest-…-<what>`.
    pub fn up(what: &str, files: &[&str]) -> Project {
        let mut project = Project {
            name: unique_name(what),
            files: Vec::new(),
        };
        project.recreate(files);
        project
    }

    /// `down`, then `up -d` with `files` (network labels are fixed when a
    /// network is created: a changed label needs the stack recreated).
    pub fn recreate(&mut self, files: &[&str]) {
        if !self.files.is_empty() {
            self.compose(&["down", "-t", "0"]);
        }
        self.files = files.iter().map(|f| f.to_string()).collect();
        self.compose(&["up", "-d"]);
    }

    pub fn compose(&self, args: &[&str]) {
        let mut command = Command::new("docker-compose");
        for file in &self.files {
            command.args(["-f", file]);
        }
        let out = command
            .args(["-p", &self.name])
            .args(args)
            .output()
            .expect("docker-compose is installed by `cargo xtask setup`");
        assert!(
            out.status.success(),
            "docker-compose {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn network(&self, key: &str) -> String {
        format!("{}_{key}", self.name)
    }

    /// The running container of `service` (one replica).
    pub fn container(&self, service: &str) -> String {
        docker_ok(&[
            "ps",
            "--format",
            "{{.Names}}",
            "--filter",
            &format!("label=com.docker.compose.project={}", self.name),
            "--filter",
            &format!("label=com.docker.compose.service={service}"),
        ])
        .trim()
        .to_owned()
    }

    pub fn netns(&self, service: &str) -> Netns {
        let pid = docker_ok(&[
            "inspect",
            "--format",
            "{{.State.Pid}}",
            &self.container(service),
        ]);
        Netns::of_pid(pid.trim().parse().expect("a pid"))
    }

    /// The host veths of `services`' containers, by the kernel's own
    /// names.
    pub fn veths(&self, services: &[&str]) -> Vec<String> {
        let mut veths = Vec::new();
        for service in services {
            let container = self.container(service);
            let pid: u32 = docker_ok(&["inspect", "--format", "{{.State.Pid}}", &container])
                .trim()
                .parse()
                .expect("a pid");
            let macs = docker_ok(&[
                "inspect",
                "--format",
                "{{range .NetworkSettings.Networks}}{{.MacAddress}} {{end}}",
                &container,
            ]);
            for mac in macs.split_whitespace() {
                let veth = netwatch::host::interfaces::host_veth(pid, mac.parse().expect("a MAC"))
                    .expect("the kernel names the host veth");
                veths.push(veth.ifname);
            }
        }
        veths
    }
}

impl Drop for Project {
    /// `down` with the files that are still there (an override a test
    /// wrote may have gone with its directory: `down` with a missing file
    /// fails and would leave the stack up), then whatever still carries
    /// the project's label, by Docker's own bookkeeping.
    fn drop(&mut self) {
        let mut command = Command::new("docker-compose");
        for file in self
            .files
            .iter()
            .filter(|f| std::path::Path::new(f).exists())
        {
            command.args(["-f", file]);
        }
        let _ = command.args(["-p", &self.name, "down", "-t", "0"]).output();
        let label = format!("label=com.docker.compose.project={}", self.name);
        for (list, remove) in [
            (&["ps", "-aq", "--filter"][..], &["rm", "-f"][..]),
            (
                &["network", "ls", "-q", "--filter"][..],
                &["network", "rm"][..],
            ),
        ] {
            let mut args = list.to_vec();
            args.push(&label);
            let Ok(ids) = crate::docker::docker(&args) else {
                continue;
            };
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let mut args = remove.to_vec();
                args.extend(ids);
                let _ = crate::docker::docker(&args);
            }
        }
    }
}
