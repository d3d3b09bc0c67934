//! Kernel features: which ones a lab needs, and whether the running kernel
//! has them.
//!
//! A feature is checked by asking the kernel itself, in a scratch network
//! namespace that lives only as long as the check (a thread unshares it and
//! nothing names it): create the kind of link the lab will create, and see
//! whether the kernel accepts it. That also lets the kernel load the module
//! on demand, exactly as it will when the lab is built, so "has it" means
//! "a lab can use it here" and not "a module file exists somewhere".

use std::collections::BTreeSet;
use std::fmt;
use std::io;

use labctl_topology::Lab;
use netlink_packet_route::link::{IpVlanMode, MacVlanMode};
use rtnetlink::{
    LinkBond, LinkBridge, LinkDummy, LinkIpVlan, LinkMacVlan, LinkVeth, LinkVlan, LinkVxlan,
};
use serde::Serialize;

use crate::sys;

/// A kernel capability a lab can depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Feature {
    /// veth pairs (CONFIG_VETH).
    Veth,
    /// Linux bridges (CONFIG_BRIDGE).
    Bridge,
    /// VXLAN devices (CONFIG_VXLAN).
    Vxlan,
    /// ipvlan devices (CONFIG_IPVLAN).
    Ipvlan,
    /// dummy devices (CONFIG_DUMMY), for kube-ipvs0.
    Dummy,
    /// IPVS, the kernel's layer-4 load balancer (CONFIG_IP_VS).
    Ipvs,
    /// Bridged traffic through netfilter (CONFIG_BRIDGE_NETFILTER), which
    /// kube-proxy's IPVS mode needs for same-node replies across cni0.
    BrNetfilter,
    /// The netem qdisc (CONFIG_NET_SCH_NETEM), for scenarios' link
    /// impairments.
    Netem,
    /// 802.1Q VLAN devices (CONFIG_VLAN_8021Q).
    Vlan,
    /// Bonds (CONFIG_BONDING).
    Bond,
    /// macvlan devices (CONFIG_MACVLAN).
    Macvlan,
    /// Bridges that forward by VLAN (CONFIG_BRIDGE_VLAN_FILTERING).
    BridgeVlanFiltering,
}

impl Feature {
    pub const ALL: [Feature; 12] = [
        Feature::Veth,
        Feature::Bridge,
        Feature::Vxlan,
        Feature::Ipvlan,
        Feature::Dummy,
        Feature::Ipvs,
        Feature::BrNetfilter,
        Feature::Netem,
        Feature::Vlan,
        Feature::Bond,
        Feature::Macvlan,
        Feature::BridgeVlanFiltering,
    ];

    /// The kernel config option and module that provide it.
    pub fn module(self) -> (&'static str, &'static str) {
        match self {
            Feature::Veth => ("CONFIG_VETH", "veth"),
            Feature::Bridge => ("CONFIG_BRIDGE", "bridge"),
            Feature::Vxlan => ("CONFIG_VXLAN", "vxlan"),
            Feature::Ipvlan => ("CONFIG_IPVLAN", "ipvlan"),
            Feature::Dummy => ("CONFIG_DUMMY", "dummy"),
            Feature::Ipvs => ("CONFIG_IP_VS", "ip_vs"),
            Feature::BrNetfilter => ("CONFIG_BRIDGE_NETFILTER", "br_netfilter"),
            Feature::Netem => ("CONFIG_NET_SCH_NETEM", "sch_netem"),
            Feature::Vlan => ("CONFIG_VLAN_8021Q", "8021q"),
            Feature::Bond => ("CONFIG_BONDING", "bonding"),
            Feature::Macvlan => ("CONFIG_MACVLAN", "macvlan"),
            Feature::BridgeVlanFiltering => ("CONFIG_BRIDGE_VLAN_FILTERING", "bridge"),
        }
    }
}

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Feature::Veth => "veth",
            Feature::Bridge => "bridge",
            Feature::Vxlan => "vxlan",
            Feature::Ipvlan => "ipvlan",
            Feature::Dummy => "dummy",
            Feature::Ipvs => "ipvs",
            Feature::BrNetfilter => "br_netfilter",
            Feature::Netem => "netem",
            Feature::Vlan => "vlan",
            Feature::Bond => "bond",
            Feature::Macvlan => "macvlan",
            Feature::BridgeVlanFiltering => "bridge-vlan-filtering",
        })
    }
}

/// The features a lab needs, from its model.
pub fn required(lab: &Lab) -> BTreeSet<Feature> {
    let mut need = BTreeSet::from([Feature::Veth, Feature::Bridge]);
    // The CNI keys' links (a Terway pod's ipvlan) as the user's own.
    for link in lab.lowered().links.iter().chain(&lab.objects.links) {
        use labctl_topology::LinkKind;
        match &link.kind {
            LinkKind::Vxlan(_) => need.insert(Feature::Vxlan),
            LinkKind::Vlan(_) => need.insert(Feature::Vlan),
            LinkKind::Bond(_) => need.insert(Feature::Bond),
            LinkKind::Dummy => need.insert(Feature::Dummy),
            LinkKind::Macvlan(_) => need.insert(Feature::Macvlan),
            LinkKind::Ipvlan(_) => need.insert(Feature::Ipvlan),
            LinkKind::Bridge(b) if b.vlan_filtering => need.insert(Feature::BridgeVlanFiltering),
            LinkKind::Veth { .. } | LinkKind::Bridge(_) => false,
        };
    }
    if lab.uses_ipvs() {
        need.insert(Feature::Ipvs);
    }
    if !lab.services.is_empty() {
        need.insert(Feature::BrNetfilter);
    }
    if lab
        .scenarios
        .iter()
        .flat_map(|s| &s.link_changes)
        .any(|c| c.netem.is_some())
    {
        need.insert(Feature::Netem);
    }
    need
}

/// The result of checking one feature.
#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    pub feature: Feature,
    pub present: bool,
    /// The kernel's answer when absent.
    pub reason: Option<String>,
}

/// Check features on the running kernel (needs root).
pub fn probe(features: &BTreeSet<Feature>) -> io::Result<Vec<Probe>> {
    let list: Vec<Feature> = features.iter().copied().collect();
    std::thread::scope(|s| {
        s.spawn(|| probe_on_this_thread(&list))
            .join()
            .expect("feature probe thread panicked")
    })
}

/// Runs on a thread of its own: the scratch namespace is entered here and
/// the guard brings the thread back before it ends.
fn probe_on_this_thread(list: &[Feature]) -> io::Result<Vec<Probe>> {
    let socket = {
        let _back = sys::NetnsGuard::unshare()?;
        let mut socket = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_ROUTE)?;
        socket.bind_auto()?;
        // /proc/thread-self/net is this thread's namespace while we are in it.
        let ipvs = std::path::Path::new("/proc/thread-self/net/ip_vs").exists()
            || (try_modprobe("ip_vs")
                && std::path::Path::new("/proc/thread-self/net/ip_vs").exists());
        (socket, ipvs)
    };
    let (socket, ipvs) = socket;
    // Its sysctls exist once it is in the kernel (built in or loaded).
    let nf = std::path::Path::new("/proc/sys/net/bridge/bridge-nf-call-iptables");
    let br_netfilter = nf.exists() || (try_modprobe("br_netfilter") && nf.exists());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    rt.block_on(async move {
        let (conn, handle, _) = rtnetlink::from_socket(sys::tokio_socket(socket));
        let task = tokio::spawn(conn);
        let mut out = Vec::new();
        for (i, f) in list.iter().enumerate() {
            let name = format!("probe{i}");
            let msg = match f {
                Feature::Veth => Some(LinkVeth::new(&name, &format!("{name}p")).build()),
                Feature::Bridge => Some(LinkBridge::new(&name).build()),
                Feature::Vxlan => Some(LinkVxlan::new(&name, 42).port(4789).build()),
                Feature::Dummy => Some(LinkDummy::new(&name).build()),
                // ipvlan needs a parent: index 1 is the scratch namespace's lo,
                // which ipvlan refuses with EINVAL; a veth end is accepted.
                Feature::Ipvlan => {
                    let parent = format!("{name}v");
                    let _ = handle
                        .link()
                        .add(
                            LinkVeth::new(&parent, &format!("{parent}p"))
                                .index(100)
                                .build(),
                        )
                        .execute()
                        .await;
                    Some(LinkIpVlan::new(&name, 100, IpVlanMode::L2).build())
                }
                Feature::Bond => Some(LinkBond::new(&name).build()),
                Feature::BridgeVlanFiltering => {
                    Some(LinkBridge::new(&name).vlan_filtering(true).build())
                }
                // A vlan or macvlan needs a parent: a veth end of the
                // scratch namespace, as for ipvlan.
                Feature::Vlan | Feature::Macvlan => {
                    let parent = format!("{name}v");
                    let index = 102 + i as u32;
                    let _ = handle
                        .link()
                        .add(
                            LinkVeth::new(&parent, &format!("{parent}p"))
                                .index(index)
                                .build(),
                        )
                        .execute()
                        .await;
                    Some(if *f == Feature::Vlan {
                        LinkVlan::new(&name, index, 42).build()
                    } else {
                        LinkMacVlan::new(&name, index, MacVlanMode::Bridge).build()
                    })
                }
                // A netem qdisc on a veth of the scratch namespace (never
                // a host interface); the kernel loads sch_netem on demand.
                Feature::Netem => {
                    let veth = format!("{name}n");
                    let made = handle
                        .link()
                        .add(LinkVeth::new(&veth, &format!("{veth}p")).index(101).build())
                        .execute()
                        .await;
                    let netem = labctl_topology::Netem {
                        delay_ns: 1_000_000,
                        ..Default::default()
                    };
                    let result = match made {
                        Ok(()) => crate::netem::send_replace_root(&handle, 101, &netem).await,
                        Err(e) => Err(format!("no veth to try it on: {e}")),
                    };
                    out.push(Probe {
                        feature: *f,
                        present: result.is_ok(),
                        reason: result.err(),
                    });
                    continue;
                }
                Feature::Ipvs | Feature::BrNetfilter => None,
            };
            let result = match msg {
                Some(msg) => handle.link().add(msg).execute().await.map_err(|e| match e {
                    rtnetlink::Error::NetlinkError(m) => m
                        .code
                        .map(|c| io::Error::from_raw_os_error(-c.get()).to_string())
                        .unwrap_or_else(|| "refused".into()),
                    other => other.to_string(),
                }),
                None if *f == Feature::Ipvs && ipvs => Ok(()),
                None if *f == Feature::Ipvs => {
                    Err("no /proc/net/ip_vs after modprobe ip_vs".into())
                }
                None if br_netfilter => Ok(()),
                None => Err("no net.bridge sysctls after modprobe br_netfilter".into()),
            };
            out.push(Probe {
                feature: *f,
                present: result.is_ok(),
                reason: result.err(),
            });
        }
        task.abort();
        Ok(out)
    })
}

/// Load a module if modprobe exists; false when it cannot.
fn try_modprobe(module: &str) -> bool {
    std::process::Command::new("modprobe")
        .arg("-q")
        .arg(module)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The running kernel's release (`uname -r`).
pub fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".into())
}

/// What is missing, as one message naming each feature and the way out.
pub fn missing_message(missing: &[&Probe]) -> String {
    let list: Vec<String> = missing
        .iter()
        .map(|p| {
            let (config, module) = p.feature.module();
            format!(
                "{} ({config}, module {module}: {})",
                p.feature,
                p.reason.as_deref().unwrap_or("absent")
            )
        })
        .collect();
    format!(
        "kernel {} lacks {}; run the lab in a VM with a distro kernel: \
         `labctl kernel install debian`, then `labctl up --vm FILE`",
        kernel_release(),
        list.join(", ")
    )
}
