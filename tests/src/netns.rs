//! A network namespace joined to the host by a veth pair, for running one process behind a
//! link the test can cut: its traffic to one address and port is dropped (iptables, inside
//! the namespace) and let through again, as a network partition does, while the rest of its
//! traffic flows. Needs root (CAP_NET_ADMIN); the namespace and its link are deleted on drop.

use std::net::Ipv4Addr;
use std::process::Command;

use crate::{HarnessError, Result};

/// A namespace `name`, whose `inner` address reaches the host's `outer` address.
#[derive(Debug)]
pub struct NetNamespace {
    name: String,
    outer: Ipv4Addr,
    inner: Ipv4Addr,
}

fn run(program: &str, args: &[&str]) -> Result<()> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(HarnessError::io(format!(
            "run {program} {}",
            args.join(" ")
        )))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(HarnessError::Build(format!(
            "{program} {} failed (network namespaces need root): {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

impl NetNamespace {
    /// Creates the namespace and its veth pair, on a /30 picked from this process's id so
    /// concurrent test binaries do not collide.
    pub fn create() -> Result<Self> {
        let tag = std::process::id() % 60000;
        let name = format!("sb-part-{tag}");
        let (host_if, ns_if) = (format!("sbh{tag}"), format!("sbn{tag}"));
        let [hi, lo] = u16::try_from(tag).unwrap_or(0).to_be_bytes();
        let outer = Ipv4Addr::new(10, 213 + (hi & 0x1f), lo, 1);
        let inner = Ipv4Addr::new(10, 213 + (hi & 0x1f), lo, 2);
        // A namespace left by a killed earlier run with the same id.
        let _ = run("ip", &["netns", "del", &name]);
        run("ip", &["netns", "add", &name])?;
        let namespace = NetNamespace { name, outer, inner };
        let name = namespace.name.as_str();
        run(
            "ip",
            &[
                "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
            ],
        )?;
        run("ip", &["link", "set", &ns_if, "netns", name])?;
        run(
            "ip",
            &["addr", "add", &format!("{outer}/30"), "dev", &host_if],
        )?;
        run("ip", &["link", "set", &host_if, "up"])?;
        namespace.exec(&["ip", "addr", "add", &format!("{inner}/30"), "dev", &ns_if])?;
        namespace.exec(&["ip", "link", "set", &ns_if, "up"])?;
        namespace.exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(namespace)
    }

    /// Runs a command inside the namespace.
    pub fn exec(&self, args: &[&str]) -> Result<()> {
        let mut all = vec!["netns", "exec", self.name.as_str()];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The host's end of the link, as seen from inside.
    pub fn outer(&self) -> Ipv4Addr {
        self.outer
    }

    /// The namespace's end of the link, as seen from the host.
    pub fn inner(&self) -> Ipv4Addr {
        self.inner
    }

    /// Drops every packet between the namespace and `outer`:`port`, both ways, without a
    /// reset: to the process inside, the peer just goes silent.
    pub fn cut(&self, port: u16) -> Result<()> {
        let (to, port) = (self.outer.to_string(), port.to_string());
        self.exec(&[
            "iptables", "-A", "OUTPUT", "-d", &to, "-p", "tcp", "--dport", &port, "-j", "DROP",
        ])?;
        self.exec(&[
            "iptables", "-A", "INPUT", "-s", &to, "-p", "tcp", "--sport", &port, "-j", "DROP",
        ])
    }

    /// Lets everything through again.
    pub fn heal(&self) -> Result<()> {
        self.exec(&["iptables", "-F"])
    }
}

impl Drop for NetNamespace {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the veth pair, and with it the host's.
        let _ = run("ip", &["netns", "del", &self.name]);
    }
}
