//! A private virtual network for fault tests: every host in its own network namespace,
//! joined by veth pairs to a bridge in a hub namespace, on a /24 of 10.x.y.0 that only
//! these namespaces use. Faults are iptables rules inside the hosts' namespaces
//! ([`Net::cut`], [`Net::cut_one_way`], [`Net::heal`]).
//!
//! Nothing is created in the machine's own namespace: the test's clients join one of
//! the hosts with [`Net::enter`] (setns on the calling thread; threads it creates
//! afterwards inherit it), servers are started through [`Net::command`]
//! (`ip netns exec`). Names carry the test process's pid (`hnem<pid>x<n>…`), so every
//! run's names are its own; [`Net::drop`] deletes the namespaces (which deletes their
//! links and rules), and [`Net::create`] first deletes what an earlier run left whose
//! process is gone (a run killed with SIGKILL runs no destructor).
//!
//! Needs root, `ip` (iproute2) and `iptables`; [`Net::available`] says whether this
//! machine has them.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Prefix of every namespace this module makes.
const PREFIX: &str = "hnem";

/// Networks made by this process so far (for unique names).
static SEQ: AtomicU32 = AtomicU32::new(0);

/// A virtual network of named hosts.
pub struct Net {
    /// `hnem<pid>x<n>`: the prefix of this network's namespaces and links.
    run: String,
    /// The second and third octet of the subnet.
    subnet: (u8, u8),
    /// Host name → (namespace, address).
    hosts: BTreeMap<String, (String, String)>,
    /// The hub namespace holding the bridge.
    hub: String,
}

/// Runs `cmd`, panicking with its output when it fails.
fn sh(cmd: &[&str]) {
    let out = Command::new(cmd[0])
        .args(&cmd[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `cmd`, ignoring failure (teardown).
fn run_quiet(cmd: &[&str]) {
    let _ = Command::new(cmd[0]).args(&cmd[1..]).output();
}

/// The network namespaces that exist now.
fn namespaces() -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output();
    let Ok(out) = out else { return Vec::new() };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// The pid a namespace name of this module carries.
fn owner_pid(ns: &str) -> Option<u32> {
    ns.strip_prefix(PREFIX)?.split('x').next()?.parse().ok()
}

impl Net {
    /// Whether this machine can make networks: root, `ip` and `iptables`.
    pub fn available() -> Result<(), String> {
        if unsafe { libc::geteuid() } != 0 {
            return Err("not root".into());
        }
        for tool in ["ip", "iptables"] {
            let found = Command::new(tool).arg("-V").output().is_ok();
            if !found {
                return Err(format!("{tool} is not installed"));
            }
        }
        Ok(())
    }

    /// Makes a network with one namespace per host in `hosts`, each with one address.
    pub fn create(hosts: &[&str]) -> Net {
        Self::sweep();
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let run = format!("{PREFIX}{}x{n}", std::process::id());
        // 10.(200..=250).(0..=255): a subnet no other network of this run uses; the
        // namespaces are private, so it only has to differ between concurrent runs.
        let subnet = (200 + fastrand::u8(0..=50), fastrand::u8(..));
        let hub = format!("{run}hub");
        run_cmd_ns_add(&hub);
        sh(&["ip", "-n", &hub, "link", "add", "br0", "type", "bridge"]);
        sh(&["ip", "-n", &hub, "link", "set", "br0", "up"]);
        let mut net = Net {
            run,
            subnet,
            hosts: BTreeMap::new(),
            hub,
        };
        for (i, name) in hosts.iter().enumerate() {
            net.add_host(name, i);
        }
        net
    }

    fn add_host(&mut self, name: &str, i: usize) {
        let ns = format!("{}{name}", self.run);
        let addr = format!("10.{}.{}.{}", self.subnet.0, self.subnet.1, 10 + i);
        // Interface names: at most 15 bytes.
        let (inner, outer) = (
            format!("{}i{i}", self.short()),
            format!("{}o{i}", self.short()),
        );
        run_cmd_ns_add(&ns);
        sh(&[
            "ip", "link", "add", &inner, "type", "veth", "peer", "name", &outer,
        ]);
        sh(&["ip", "link", "set", &inner, "netns", &ns]);
        sh(&["ip", "link", "set", &outer, "netns", &self.hub]);
        sh(&[
            "ip", "-n", &self.hub, "link", "set", &outer, "master", "br0",
        ]);
        sh(&["ip", "-n", &self.hub, "link", "set", &outer, "up"]);
        sh(&[
            "ip",
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            &inner,
        ]);
        sh(&["ip", "-n", &ns, "link", "set", &inner, "up"]);
        sh(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        self.hosts.insert(name.to_owned(), (ns, addr));
    }

    /// A short form of the run's name for interface names (`h<pid % 1e5>x<n>`).
    fn short(&self) -> String {
        let rest = &self.run[PREFIX.len()..];
        let (pid, n) = rest.split_once('x').unwrap_or((rest, "0"));
        let pid: u32 = pid.parse().unwrap_or(0);
        format!("h{}x{n}", pid % 100_000)
    }

    /// Deletes the namespaces (and so links and rules) of runs whose process is gone.
    fn sweep() {
        for ns in namespaces() {
            if let Some(pid) = owner_pid(&ns) {
                let alive = std::path::Path::new(&format!("/proc/{pid}")).exists();
                if !alive {
                    run_quiet(&["ip", "netns", "del", &ns]);
                }
            }
        }
    }

    /// The address of `host`.
    pub fn ip(&self, host: &str) -> &str {
        &self.hosts[host].1
    }

    /// The namespace of `host`.
    pub fn ns(&self, host: &str) -> &str {
        &self.hosts[host].0
    }

    /// This network's hosts.
    pub fn hosts(&self) -> Vec<String> {
        self.hosts.keys().cloned().collect()
    }

    /// `program args…` to run inside `host`'s namespace, with `env` set (the command
    /// line for [`super::cluster::Proc::spawn`]).
    pub fn command(&self, host: &str, env: &[(String, String)], cmd: &[String]) -> Vec<String> {
        let mut full: Vec<String> = ["ip", "netns", "exec", self.ns(host), "env"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        full.extend(env.iter().map(|(k, v)| format!("{k}={v}")));
        full.extend(cmd.iter().cloned());
        full
    }

    /// Moves the calling thread into `host`'s namespace: its sockets, and those of
    /// threads it starts afterwards (a tokio runtime built next), are `host`'s.
    pub fn enter(&self, host: &str) {
        let path = format!("/var/run/netns/{}", self.ns(host));
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
        let rc = unsafe { libc::setns(fd, libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
    }

    fn iptables(&self, host: &str, args: &[&str]) {
        let mut cmd = vec!["ip", "netns", "exec", self.ns(host), "iptables", "-w"];
        cmd.extend_from_slice(args);
        sh(&cmd);
    }

    /// Adds `rules` (`-A …` lines of the filter table) on `host` in one atomic
    /// `iptables-restore`: they take effect together.
    fn add_rules(&self, host: &str, rules: &[String]) {
        use std::io::Write;
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                self.ns(host),
                "iptables-restore",
                "-w",
                "--noflush",
            ])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("iptables-restore");
        let text = format!("*filter\n{}\nCOMMIT\n", rules.join("\n"));
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write rules");
        let status = child.wait().expect("iptables-restore");
        assert!(
            status.success(),
            "iptables-restore on {host} failed: {text}"
        );
    }

    /// Drops every packet `from` sends to `to` (one direction).
    pub fn cut_one_way(&self, from: &str, to: &str) {
        self.cut_one_way_many(from, &[to]);
    }

    /// Drops every packet `from` sends to each of `to`, all at once.
    pub fn cut_one_way_many<S: AsRef<str>>(&self, from: &str, to: &[S]) {
        let rules: Vec<String> = to
            .iter()
            .map(|t| format!("-A OUTPUT -d {} -j DROP", self.ip(t.as_ref())))
            .collect();
        self.add_rules(from, &rules);
    }

    /// Drops every packet between `a` and `b`, both ways, at once (both rules on `a`).
    pub fn cut(&self, a: &str, b: &str) {
        self.isolate(a, &[b]);
    }

    /// Drops every packet between `host` and each of `others`, both ways, all at once
    /// (every rule on `host`, in one atomic change).
    pub fn isolate<S: AsRef<str>>(&self, host: &str, others: &[S]) {
        let mut rules = Vec::new();
        for o in others {
            let ip = self.ip(o.as_ref());
            rules.push(format!("-A OUTPUT -d {ip} -j DROP"));
            rules.push(format!("-A INPUT -s {ip} -j DROP"));
        }
        self.add_rules(host, &rules);
    }

    /// Drops packets `from` sends to `to`'s `port` (one service of a host).
    pub fn cut_port(&self, from: &str, to: &str, port: u16) {
        let to_ip = self.ip(to).to_owned();
        let port = port.to_string();
        self.iptables(
            from,
            &[
                "-A", "OUTPUT", "-p", "tcp", "-d", &to_ip, "--dport", &port, "-j", "DROP",
            ],
        );
    }

    /// Removes every rule: all links work again.
    pub fn heal(&self) {
        for host in self.hosts.keys() {
            self.iptables(host, &["-F", "OUTPUT"]);
            self.iptables(host, &["-F", "INPUT"]);
        }
    }

    /// The rules in force on `host` (for reports).
    pub fn rules(&self, host: &str) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", self.ns(host), "iptables", "-w", "-S"])
            .output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }
}

fn run_cmd_ns_add(ns: &str) {
    sh(&["ip", "netns", "add", ns]);
}

impl Drop for Net {
    fn drop(&mut self) {
        for (ns, _) in self.hosts.values() {
            run_quiet(&["ip", "netns", "del", ns]);
        }
        run_quiet(&["ip", "netns", "del", &self.hub]);
    }
}
