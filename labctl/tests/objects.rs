//! Shipped topologies on live labs. For each one in [`TOPOLOGIES`], the
//! lab `labctl plan -o script` builds with bash is the lab `up` builds,
//! object for object as the kernel reports them: in every namespace of the
//! lab, links (kind, MAC, MTU, master, bond, bridge, vlan, ipvlan and vxlan
//! details, link-netns), bridge vlans, addresses, routes, permanent
//! neighbours, static FDB entries, qdiscs and tc filters (the eBPF ones by
//! program name and tag), the nft ruleset, the IPVS table and the IPv4
//! sysctls; and the lab's pinned eBPF programs and maps (type, name, tag,
//! sizes, the maps' contents). And a whole run of vxlan-redirect, whose
//! first scenario changes a MAC, of kata-peer-pods and of ctrip-fabric
//! ([`RUNS`]) leaves the lab as it was.
//!
//! A lab runs where its kernel features are ([`common::place_for`]): the
//! trials whose labs need a VM all run in one VM boot, whichever of them
//! starts first boots it. Without root the trials are ignored with the
//! reason.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

use common::{Down, Place, ensure, labctl, ok, place_for};
use libtest_mimic::{Arguments, Failed, Trial};

mod common;

/// A shipped topology the script trial builds both ways.
struct Topology {
    /// The file's stem under `topologies/`.
    stem: &'static str,
    /// Template variables (`--var`), to keep a generated lab small.
    vars: &'static [(&'static str, &'static str)],
    /// Text the state of `up`'s lab must contain: proof that the
    /// comparison sees the topology's interesting objects.
    wants: &'static [&'static str],
}

/// Adding a topology to the trial is one entry here.
const TOPOLOGIES: &[Topology] = &[
    Topology {
        stem: "vxlan-redirect",
        vars: &[],
        wants: &[
            "vxlan id 555005 remote 192.168.10.201",
            "link-netns LAB-worker",
            "master br-int",
            "0a:58:0a:84:02:2e dev 8b7266486ea2861 master br-int static",
            "10.132.2.46 dev br-int lladdr 0a:58:0a:84:02:2e PERMANENT",
            "action order 1: mirred (Egress Redirect to device vxlan1) stolen",
            "addrgenmode none",
        ],
    },
    Topology {
        stem: "bond-vlan",
        vars: &[],
        wants: &[
            "bond mode active-backup active_slave eth0 miimon 100",
            "master bond0 state UP",
            "vlan protocol 802.1Q id 100",
            "vlan_filtering 1",
            "swp3              100 PVID Egress Untagged",
            "default via 10.200.0.1 dev eth0 proto static",
        ],
    },
    Topology {
        stem: "flannel",
        vars: &[],
        wants: &[
            "## node-180\n",
            "-A -t 192.168.13.23:80 -s rr",
            "-a -t 192.168.13.23:80 -r 172.23.96.163:80 -m -w 1",
            "table ip kube-proxy {",
            "meta mark & 0x00004000 == 0x00004000 masquerade",
            "172.23.96.64/26 via 10.0.1.216 dev vsw-b proto static",
            "kube-ipvs0",
            "@loop-back masquerade",
            "hairpin on",
        ],
    },
    Topology {
        stem: "flannel",
        vars: &[("proxy", "nftables")],
        wants: &[
            "## node-180\n",
            "numgen random mod 3 vmap",
            "goto external-default/nginx1/tcp/p80",
            // The lab counts each rule's hits (a `counter` kube-proxy has
            // not): `labctl run` reads them back to say which chains a
            // request went through.
            "ip daddr 192.168.0.0/16 counter packets 0 bytes 0 drop comment \"Drop traffic to unallocated ClusterIPs\"",
            "hairpin on",
        ],
    },
    Topology {
        stem: "flannel",
        vars: &[("backend", "vxlan"), ("services", "off")],
        wants: &[
            "## node-180\n",
            "vxlan id 1 local 10.0.0.180 dev eth0",
            "172.23.96.128/26 via 172.23.96.128 dev flannel.1",
            "172.23.96.128 dev flannel.1 lladdr 0e:6e:00:00:00:ce PERMANENT",
            "0e:6e:00:00:00:ce dev flannel.1 dst 10.0.1.206",
        ],
    },
    Topology {
        stem: "kube-proxy-nftables",
        vars: &[],
        wants: &[
            "## test-node\n",
            "numgen random mod 2 vmap",
            "fib saddr type local goto service-default/svc-local/tcp/p80",
            "hairpin on",
        ],
    },
    Topology {
        stem: "terway-ipvlan-ebpf",
        vars: &[],
        wants: &[
            "ipvlan  mode l2 bridge",
            "-a -t 47.243.139.183:80 -r 10.0.3.38:80 -m -w 1",
            "table bridge vswitch {",
            "lb_egress:[*fsobj] direct-action not_in_hw id ID name lb_egress tag",
            "lb_ingress:[*fsobj] direct-action not_in_hw id ID name lb_ingress tag",
            "prog lb_egress: sched_cls name lb_egress tag",
            "map LB_SERVICES: hash key 8 value 8 max_entries 1024 flags 0 name LB_SERVICES",
            "key c0 a8 1b f2 00 50 06 00 value 01 00 00 00 ff ff ff ff",
            "map LB_EVENTS: ringbuf key 0 value 0 max_entries 262144",
            "filters of eth0",
            "conf/all/arp_ignore:1",
        ],
    },
    Topology {
        stem: "ipvs-ipvlan",
        vars: &[],
        wants: &[
            "ipvlan  mode l2 bridge",
            "-a -t 192.168.27.242:80 -r 10.0.3.38:80 -m -w 1",
            "10.0.3.15/32 scope host ipvl_",
            "table ip kube-proxy {",
        ],
    },
    Topology {
        stem: "impair",
        vars: &[],
        wants: &[
            "## node2\n",
            "172.16.1.0/24 via 10.0.0.11 dev vsw proto static",
            "master cni0",
            "ip_forward:1",
        ],
    },
    Topology {
        stem: "kata-peer-pods",
        vars: &[],
        wants: &[
            "vxlan id 555005 remote 192.168.10.201",
            "neigh_suppress on",
            "10.132.2.46 dev br-int lladdr 0a:58:0a:84:02:2e PERMANENT",
            "arp_ignore:1",
        ],
    },
    Topology {
        stem: "cilium-vxlan",
        vars: &[],
        wants: &[
            "route_from_container",
            "route_from_overlay",
            "ROUTE_TUNNELS",
        ],
    },
    Topology {
        stem: "cilium-host-routing",
        vars: &[("redirect", "peer")],
        wants: &["route_from_container", "ROUTE_ENDPOINTS"],
    },
    Topology {
        stem: "ctrip-vlan",
        vars: &[("legacy", "true")],
        wants: &[
            "master qbr-inst1",
            "vlan protocol 802.1Q id 200",
            "vlan_filtering 1",
        ],
    },
    Topology {
        stem: "ctrip-fabric",
        vars: &[],
        wants: &[
            "neigh_suppress on",
            "dst 10.255.0.1 self permanent",
            "nexthop via 10.254.1.5 dev sp1 weight 1",
        ],
    },
    Topology {
        stem: "scale",
        vars: &[("nodes", "2"), ("pods", "3")],
        wants: &["## pod1-2\n", "10.101.0.4/16", "master cni0"],
    },
];

fn path(stem: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../topologies/{stem}.yaml"))
}

/// `script_builds_what_up_builds::STEM`, with `[k=v,...]` for a variant
/// (as the scenarios suite names them), so each can be run alone.
fn trial_name(t: &Topology) -> String {
    let vars: Vec<String> = t.vars.iter().map(|(k, v)| format!("{k}={v}")).collect();
    if vars.is_empty() {
        format!("script_builds_what_up_builds::{}", t.stem)
    } else {
        format!(
            "script_builds_what_up_builds::{}[{}]",
            t.stem,
            vars.join(",")
        )
    }
}

/// `--var k=v` for each of `t`'s variables.
fn var_args(t: &Topology) -> Vec<String> {
    t.vars
        .iter()
        .flat_map(|(k, v)| ["--var".to_string(), format!("{k}={v}")])
        .collect()
}

/// The namespaces of lab `name` (`NAME-ENTITY`), by entity, sorted.
fn namespaces(name: &str) -> Result<Vec<String>, Failed> {
    let o = ok(Command::new("ip").args(["netns", "list"]))?;
    let prefix = format!("{name}-");
    let mut out: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|ns| ns.strip_prefix(&prefix))
        .map(str::to_string)
        .collect();
    out.sort();
    Ok(out)
}

/// What a namespace holds, as iproute2, tc, nft, ipvsadm and procfs print
/// it; labctl's ownership alias dropped, and the bpf filters' program ids
/// (each load gets new ones; the name and tag say which program it is).
/// Neighbour and FDB entries sorted (the kernel lists them in the order
/// they were made, which `up`'s concurrent steps do not fix). Qdiscs
/// sorted, filters (of the devices with a clsact or ingress qdisc,
/// where the labs put them) and bridge vlans by device in name order: `tc
/// qdisc show` lists devices in the order they joined the namespace and
/// `bridge vlan show` ports in the order they joined the bridge, which
/// `up` (concurrent within a phase) does not fix. The IPVS table in `ipvsadm
/// -S` form, a line per service or real server, sorted (the kernel lists
/// them in hash order). Ifindexes stay: both ways request the same ones.
/// IPv6 is off both ways by the same means, each link's `addrgenmode` set
/// to `none` before it comes up and `::1` taken off `lo`: each link's
/// `addrgenmode` is compared (`ip -o -d link`), and so is any IPv6
/// address either leaves (`ip -o addr`).
///
/// Few processes: in the VM (software emulation) each one costs 60-200
/// ms (`ip` about 160), and a lab is read at least twice per trial. So a
/// namespace is read by one `ip` batch (links, addresses, routes,
/// permanent neighbours: [`IP_READ`], split by [`ip_sections`]), one
/// `bridge` batch (static FDB entries and each link's vlans) and one `tc`
/// (qdiscs), started by a thread inside the namespace (no `ip netns exec`,
/// no shell); the sysctls are read there from procfs without a process.
/// `nft`, the costliest (over a second there), runs only in a namespace
/// that has an nftables table ([`has_nft_tables`]): without one it prints
/// nothing; `ipvsadm` only once IPVS is loaded.
const IP_READ: &str = "link show\naddr show\nroute show\nneigh show nud permanent\n";

/// [`IP_READ`]'s output (`ip -o -d`) in its four sections: each line says
/// which it is (a link `N: NAME: <FLAGS>`, an address `N: NAME inet..`, a
/// route its type first, which `-d` always prints, a neighbour its
/// address first) and they come in that order; anything else fails.
fn ip_sections(text: &str) -> Result<[Vec<&str>; 4], Failed> {
    const ROUTE_TYPES: &[&str] = &[
        "unicast",
        "local",
        "broadcast",
        "anycast",
        "multicast",
        "blackhole",
        "unreachable",
        "prohibit",
        "throw",
        "nat",
    ];
    let mut sections: [Vec<&str>; 4] = Default::default();
    let mut at = 0;
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or("");
        let second = words.next().unwrap_or("");
        let third = words.next().unwrap_or("");
        let indexed = first
            .strip_suffix(':')
            .is_some_and(|n| n.parse::<u32>().is_ok());
        let kind = if indexed && second.ends_with(':') && third.starts_with('<') {
            0
        } else if indexed && (third == "inet" || third == "inet6") {
            1
        } else if ROUTE_TYPES.contains(&first) {
            2
        } else if first.parse::<std::net::IpAddr>().is_ok() && line.contains(" PERMANENT") {
            3
        } else {
            return Err(format!("`ip -o -d` printed a line of no known kind: {line}").into());
        };
        if kind < at {
            return Err(format!("`ip -o -d` printed a line out of order: {line}").into());
        }
        at = kind;
        sections[kind].push(line);
    }
    Ok(sections)
}

/// The link's name in a line of `ip -o link` (`N: NAME@PEER: <...`).
fn link_name(line: &str) -> &str {
    let name = line.split_whitespace().nth(1).unwrap_or("");
    let name = name.strip_suffix(':').unwrap_or(name);
    name.split_once('@').map_or(name, |(n, _)| n)
}

/// The IPv4 sysctls of the calling thread's namespace, as `cd
/// /proc/sys/net/ipv4 && grep -r '' ip_forward conf neigh/*/proxy_delay`
/// prints them (`PATH:VALUE`, a line per line of each file).
fn ipv4_sysctls() -> std::io::Result<Vec<String>> {
    fn walk(root: &std::path::Path, rel: &str, out: &mut Vec<String>) -> std::io::Result<()> {
        let path = root.join(rel);
        if path.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                let name = entry?.file_name();
                walk(root, &format!("{rel}/{}", name.to_string_lossy()), out)?;
            }
        } else {
            let value = std::fs::read_to_string(&path)?;
            out.extend(value.lines().map(|l| format!("{rel}:{l}")));
        }
        Ok(())
    }
    let root = std::path::Path::new("/proc/sys/net/ipv4");
    let mut out = Vec::new();
    walk(root, "ip_forward", &mut out)?;
    walk(root, "conf", &mut out)?;
    for entry in std::fs::read_dir(root.join("neigh"))? {
        let name = entry?.file_name();
        walk(
            root,
            &format!("neigh/{}/proxy_delay", name.to_string_lossy()),
            &mut out,
        )?;
    }
    Ok(out)
}

/// Namespace `ns`'s state: links, addresses, routes, permanent
/// neighbours, static FDB entries, qdiscs and the tc filters of the
/// devices with a clsact or ingress qdisc (one `tc -batch` per device),
/// bridge vlans, the nft ruleset, the IPVS table and the IPv4 sysctls,
/// filtered and sorted as described there.
fn namespace_state(ns: &str) -> Result<String, Failed> {
    let nft = has_nft_tables(ns).unwrap_or(true);
    let read = || -> Result<_, Failed> {
        let ip = ok_with_input(
            Command::new("ip").args(["-o", "-d", "-batch", "-"]),
            IP_READ,
        )?;
        let ip = String::from_utf8_lossy(&ip.stdout).into_owned();
        let [links, ..] = ip_sections(&ip)?;
        let mut names: Vec<&str> = links.iter().map(|l| link_name(l)).collect();
        names.sort_unstable();
        let bridge_read: String = std::iter::once("fdb show\n".to_string())
            .chain(names.iter().map(|n| format!("vlan show dev {n}\n")))
            .collect();
        let bridge = ok_with_input(
            Command::new("bridge").args(["-force", "-batch", "-"]),
            &bridge_read,
        )?;
        let qdiscs = ok(Command::new("tc").args(["qdisc", "show"]))?;
        let nft = if nft {
            String::from_utf8_lossy(&ok(Command::new("nft").args(["list", "ruleset"]))?.stdout)
                .into_owned()
        } else {
            String::new()
        };
        let ipvs = if std::path::Path::new("/proc/thread-self/net/ip_vs").exists() {
            String::from_utf8_lossy(&ok(Command::new("ipvsadm").args(["-S", "-n"]))?.stdout)
                .into_owned()
        } else {
            String::new()
        };
        Ok((
            ip,
            String::from_utf8_lossy(&bridge.stdout).into_owned(),
            String::from_utf8_lossy(&qdiscs.stdout).into_owned(),
            nft,
            ipvs,
            ipv4_sysctls()?,
        ))
    };
    let (ip, bridge, qdiscs, nft, ipvs, sysctls) = labctl::sys::in_netns(ns, read)??;
    let [links, addrs, routes, neighbours] = ip_sections(&ip)?;
    let mut out = String::new();
    for line in links {
        out.push_str(&link_line(line));
        out.push('\n');
    }
    for line in addrs.into_iter().chain(routes) {
        out.push_str(line);
        out.push('\n');
    }
    out.push_str(&sorted(neighbours.into_iter()));
    // `fdb show` first, a line per entry led by its MAC; then each
    // `vlan show`, led by its header.
    let fdb_line = |l: &&str| {
        l.split_whitespace()
            .next()
            .is_some_and(|w| w.len() == 17 && w.split(':').count() == 6)
    };
    let fdb: Vec<&str> = bridge.lines().take_while(fdb_line).collect();
    let vlans = bridge.lines().skip(fdb.len());
    out.push_str(&sorted(
        fdb.into_iter()
            .filter(|l| l.contains(" static") || l.contains(" dst ")),
    ));
    out.push_str("# tc\n");
    out.push_str(&sorted(qdiscs.lines()));
    let mut hooked: Vec<&str> = qdiscs
        .lines()
        .filter_map(|l| {
            let rest = l
                .strip_prefix("qdisc clsact ffff: dev ")
                .or_else(|| l.strip_prefix("qdisc ingress ffff: dev "))?;
            let (dev, _) = rest.split_once(' ')?;
            (!dev.is_empty()).then_some(dev)
        })
        .collect();
    hooked.sort();
    for dev in hooked {
        let filters = ok_with_input(
            Command::new("tc").args(["-n", ns, "-batch", "-"]),
            &format!("filter show dev {dev} ingress\nfilter show dev {dev} egress\n"),
        )?;
        out.push_str(&format!("filters of {dev}\n"));
        for line in String::from_utf8_lossy(&filters.stdout).lines() {
            out.push_str(&prog_id_masked(line));
            out.push('\n');
        }
    }
    for line in vlans {
        out.push_str(line);
        out.push('\n');
    }
    out.push_str("# nft\n");
    out.push_str(&nft);
    out.push_str("# ipvs\n");
    out.push_str(&sorted(ipvs.lines()));
    out.push_str("# sysctl\n");
    out.push_str(&sorted(sysctls.iter().map(String::as_str)));
    Ok(out)
}

/// Whether namespace `ns` has an nftables table, asked of the kernel
/// in-process: a dump of its tables (`NFT_MSG_GETTABLE`, every family), as
/// `nft list tables` does over netlink. Everything `nft list ruleset`
/// prints lives in a table.
fn has_nft_tables(ns: &str) -> std::io::Result<bool> {
    use netlink_sys::{Socket, protocols::NETLINK_NETFILTER};
    const NFT_MSG_GETTABLE: u16 = (10 << 8) | 1; // NFNL_SUBSYS_NFTABLES
    const NFT_MSG_NEWTABLE: u16 = 10 << 8;
    const NLM_F_REQUEST_DUMP: u16 = 0x1 | 0x300;
    const NLMSG_ERROR: u16 = 2;
    const NLMSG_DONE: u16 = 3;
    labctl::sys::in_netns(ns, || -> std::io::Result<bool> {
        let mut socket = Socket::new(NETLINK_NETFILTER)?;
        socket.bind_auto()?;
        socket.connect(&netlink_sys::SocketAddr::new(0, 0))?;
        // nlmsghdr (length, type, flags, sequence, port) and nfgenmsg
        // (family AF_UNSPEC, version 0, resource id 0).
        let mut request = Vec::with_capacity(20);
        request.extend_from_slice(&20u32.to_ne_bytes());
        request.extend_from_slice(&NFT_MSG_GETTABLE.to_ne_bytes());
        request.extend_from_slice(&NLM_F_REQUEST_DUMP.to_ne_bytes());
        request.extend_from_slice(&1u32.to_ne_bytes());
        request.extend_from_slice(&0u32.to_ne_bytes());
        request.extend_from_slice(&[0, 0, 0, 0]);
        socket.send(&request, 0)?;
        let mut tables = 0;
        loop {
            let (buf, _) = socket.recv_from_full()?;
            let mut at = 0;
            while at + 16 <= buf.len() {
                let word = |i: usize| u32::from_ne_bytes(buf[i..i + 4].try_into().unwrap());
                let len = word(at) as usize;
                let kind = u16::from_ne_bytes([buf[at + 4], buf[at + 5]]);
                match kind {
                    NLMSG_DONE => return Ok(tables > 0),
                    NLMSG_ERROR if at + 20 <= buf.len() && word(at + 16) != 0 => {
                        let errno = -(word(at + 16) as i32);
                        return Err(std::io::Error::from_raw_os_error(errno));
                    }
                    NFT_MSG_NEWTABLE => tables += 1,
                    _ => {}
                }
                if len < 16 {
                    return Err(std::io::Error::other(
                        "a netlink message shorter than its header",
                    ));
                }
                at += len.next_multiple_of(4);
            }
        }
    })?
}

/// `lines` sorted bytewise, each ending in a newline (as `LC_ALL=C sort`).
fn sorted<'a>(lines: impl Iterator<Item = &'a str>) -> String {
    let mut lines: Vec<&str> = lines.collect();
    lines.sort_unstable();
    lines.iter().map(|l| format!("{l}\n")).collect()
}

/// Run `cmd` with `input` on its stdin; it must succeed.
fn ok_with_input(cmd: &mut Command, input: &str) -> Result<std::process::Output, Failed> {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .ok_or("no stdin")?
        .write_all(input.as_bytes())?;
    let o = child.wait_with_output()?;
    if o.status.success() {
        Ok(o)
    } else {
        Err(format!("{cmd:?} failed: {}", common::text(&o)).into())
    }
}

/// `line` without the first ` WORD` and the run of `keep` characters
/// after it, if it has one (sed's `s/ WORD[keep]*//`).
fn cut_first(line: &str, word: &str, keep: impl Fn(char) -> bool) -> String {
    match line.find(word) {
        Some(at) => {
            let rest = &line[at + word.len()..];
            let end = rest.find(|c: char| !keep(c)).unwrap_or(rest.len());
            format!("{}{}", &line[..at], &rest[end..])
        }
        None => line.to_string(),
    }
}

/// A line of `ip -o -d link` without what two builds of the same link
/// may differ in: labctl's ownership alias, the queue and GSO/GRO
/// counts that follow `numtxqueues` and timers' running values. As `sed
/// -e 's/ alias [^ ]*//' -e 's/ numtxqueues.*//' -e 's/ [a-z_]*timer
/// *[0-9.]*//g'`.
fn link_line(line: &str) -> String {
    let line = cut_first(line, " alias ", |c| c != ' ');
    let line = match line.find(" numtxqueues") {
        Some(at) => line[..at].to_string(),
        None => line,
    };
    without_timers(&line)
}

/// `line` without every ` [a-z_]*timer *[0-9.]*` (a bridge's or port's
/// timer and its running value), leftmost-longest as sed matches.
fn without_timers(line: &str) -> String {
    let b = line.as_bytes();
    let word = |c: u8| c.is_ascii_lowercase() || c == b'_';
    let mut out = String::with_capacity(line.len());
    let (mut i, mut kept) = (0, 0);
    while i < b.len() {
        if b[i] == b' ' {
            // The longest run of [a-z_] after the space that ends in `timer`.
            let mut k = i + 1;
            while k < b.len() && word(b[k]) {
                k += 1;
            }
            let end_of_timer = (i + 1 + 5..=k).rev().find(|&e| &b[e - 5..e] == b"timer");
            if let Some(mut e) = end_of_timer {
                while e < b.len() && b[e] == b' ' {
                    e += 1;
                }
                while e < b.len() && (b[e].is_ascii_digit() || b[e] == b'.') {
                    e += 1;
                }
                out.push_str(&line[kept..i]);
                (i, kept) = (e, e);
                continue;
            }
        }
        i += 1;
    }
    out.push_str(&line[kept..]);
    out
}

/// A tc filter line with the bpf program's id replaced by `ID` (as `sed
/// 's/ not_in_hw id [0-9]* / not_in_hw id ID /'`): each load gets a new
/// one; the name and tag that follow say which program it is.
fn prog_id_masked(line: &str) -> String {
    const AT: &str = " not_in_hw id ";
    let mut from = 0;
    while let Some(at) = line[from..].find(AT).map(|a| a + from) {
        let rest = &line[at + AT.len()..];
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if rest[digits..].starts_with(' ') {
            return format!("{}{AT}ID{}", &line[..at], &rest[digits..]);
        }
        from = at + 1;
    }
    line.to_string()
}

/// Everything lab `name` has in the kernel: each namespace's state
/// ([`namespace_state`]) and its pinned eBPF objects ([`bpf_state`]), with
/// the lab's name replaced by `LAB` so two labs compare.
fn state(name: &str) -> Result<String, Failed> {
    let mut out = String::new();
    for entity in namespaces(name)? {
        let ns = format!("{name}-{entity}");
        out.push_str(&format!("## {entity}\n{}", namespace_state(&ns)?));
    }
    out.push_str(&bpf_state(name)?);
    Ok(out.replace(name, "LAB"))
}

/// The kernel updates a link's operational state (`state UP`) from a work
/// item that runs up to a second after the change (linkwatch), so a lab
/// read right after it was made may still change: how long to wait before
/// reading it again, and how many times.
const SETTLE: std::time::Duration = std::time::Duration::from_millis(1100);
const SETTLE_TRIES: usize = 4;

/// [`state`] once it stops changing: two reads [`SETTLE`] apart agree.
fn settled_state(name: &str) -> Result<String, Failed> {
    let mut last = state(name)?;
    for _ in 0..SETTLE_TRIES {
        std::thread::sleep(SETTLE);
        let now = state(name)?;
        if now == last {
            return Ok(now);
        }
        last = now;
    }
    Err(format!("lab {name} still changes:\n{last}").into())
}

fn bpftool_json(args: &[&str]) -> Result<serde_json::Value, Failed> {
    let o = ok(Command::new("bpftool").arg("-j").args(args))?;
    Ok(serde_json::from_slice(&o.stdout)?)
}

/// A JSON string as it is, anything else as JSON.
fn text(v: &serde_json::Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_string)
}

fn hex(v: &serde_json::Value) -> String {
    v.as_array()
        .map(|bytes| {
            bytes
                .iter()
                .map(|b| b.as_str().unwrap_or("?").trim_start_matches("0x"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|| v.to_string())
}

/// The lab's pins under its pin directory (`labctl::lb::pin_dir`), as
/// bpftool reads them: each program's type, name, tag, sizes and the names
/// of the maps it uses; each map's type, name, flags, sizes and, for hash,
/// array and LPM trie maps, its entries sorted (the kernel iterates in hash
/// order). The router's pins are read too, a directory per node. Ids and
/// load times, which every load changes, are left out.
fn bpf_state(name: &str) -> Result<String, Failed> {
    // The load balancer's pins, and the router's, a directory per node.
    let mut pins: Vec<(String, PathBuf)> = Vec::new();
    let lb = labctl::lb::pin_dir(name);
    for e in std::fs::read_dir(&lb).into_iter().flatten().flatten() {
        pins.push((e.file_name().to_string_lossy().into_owned(), e.path()));
    }
    let route = labctl::route::lab_dir(name);
    for node in std::fs::read_dir(&route).into_iter().flatten().flatten() {
        for e in std::fs::read_dir(node.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let label = format!(
                "{}/{}",
                node.file_name().to_string_lossy(),
                e.file_name().to_string_lossy()
            );
            pins.push((label, e.path()));
        }
    }
    if pins.is_empty() {
        return Ok(String::new());
    }
    pins.sort();
    let mut out = String::from("## bpf\n");
    for (file, pin) in pins {
        let p = pin.display().to_string();
        if let Ok(prog) = bpftool_json(&["prog", "show", "pinned", &p]) {
            let mut maps = Vec::new();
            for id in prog["map_ids"].as_array().into_iter().flatten() {
                let m = bpftool_json(&["map", "show", "id", &id.to_string()])?;
                maps.push(m["name"].as_str().unwrap_or("?").to_string());
            }
            maps.sort();
            out.push_str(&format!(
                "prog {file}: {} name {} tag {} gpl {} xlated {} jited {} maps {}\n",
                text(&prog["type"]),
                text(&prog["name"]),
                text(&prog["tag"]),
                prog["gpl_compatible"],
                prog["bytes_xlated"],
                prog["bytes_jited"],
                maps.join(",")
            ));
            continue;
        }
        let map = bpftool_json(&["map", "show", "pinned", &p])?;
        let kind = map["type"].as_str().unwrap_or("?");
        out.push_str(&format!(
            "map {file}: {kind} key {} value {} max_entries {} flags {} name {}\n",
            map["bytes_key"],
            map["bytes_value"],
            map["max_entries"],
            map["flags"],
            text(&map["name"])
        ));
        if kind.contains("hash") || kind == "array" || kind == "lpm_trie" {
            let dump = bpftool_json(&["map", "dump", "pinned", &p])?;
            let mut rows: Vec<String> = dump
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| format!("  key {} value {}\n", hex(&e["key"]), hex(&e["value"])))
                .collect();
            rows.sort();
            out.extend(rows);
        }
    }
    Ok(out)
}

/// `mac` (`a:b:..`, octets of one or two hex digits as iproute2's bridge
/// ids print them) with two digits an octet, if it is a MAC.
fn canonical_mac(mac: &str) -> Option<String> {
    let octets: Vec<&str> = mac.split(':').collect();
    let hex = |o: &&str| (1..=2).contains(&o.len()) && o.chars().all(|c| c.is_ascii_hexdigit());
    (octets.len() == 6 && octets.iter().all(hex)).then(|| {
        octets
            .iter()
            .map(|o| format!("{:0>2}", o.to_ascii_lowercase()))
            .collect::<Vec<_>>()
            .join(":")
    })
}

/// Every MAC in `text`, canonical.
fn macs(text: &str) -> HashSet<String> {
    text.split(|c: char| !(c.is_ascii_hexdigit() || c == ':'))
        .filter_map(canonical_mac)
        .collect()
}

/// `state` with each MAC the kernel chose at random replaced by `RANDOM`:
/// a MAC that is not in `fixed` (the MACs the plan names) and not a group
/// or zero address. Links without a `mac:` get random ones, and a bridge
/// takes its lowest port's, so two builds of the same topology differ
/// there and nowhere else; MACs the topology fixes are compared.
fn mask_random_macs(state: &str, fixed: &HashSet<String>) -> String {
    let mut out = String::with_capacity(state.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        // A bridge id is PRIORITY.MAC.
        let (prio, mac) = match word.rsplit_once('.') {
            Some((p, m)) => (format!("{p}."), m),
            None => (String::new(), word.as_str()),
        };
        match canonical_mac(mac) {
            Some(m)
                if !fixed.contains(&m)
                    && m != "00:00:00:00:00:00"
                    && u8::from_str_radix(&m[..2], 16).is_ok_and(|b| b & 1 == 0) =>
            {
                out.push_str(&prio);
                out.push_str("RANDOM");
            }
            _ => out.push_str(word),
        }
        word.clear();
    };
    for c in state.chars() {
        if c.is_ascii_hexdigit() || c == ':' || c == '.' {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

fn differ(what: &str, a: &str, b: &str) -> Result<(), Failed> {
    if a == b {
        return Ok(());
    }
    let diff = similar::TextDiff::from_lines(a, b)
        .unified_diff()
        .to_string();
    Err(format!("{what}:\n{diff}").into())
}

/// Namespaces and eBPF pins made by a script, removed however the trial
/// ends (no `labctl down`: the script leaves no state).
struct ScriptLab(String);

impl Drop for ScriptLab {
    fn drop(&mut self) {
        // One process for them all (each costs in the VM); `-force` goes
        // on past a failure.
        let del: String = namespaces(&self.0)
            .unwrap_or_default()
            .iter()
            .map(|entity| format!("netns del {}-{entity}\n", self.0))
            .collect();
        if !del.is_empty() {
            let _ = ok_with_input(Command::new("ip").args(["-force", "-batch", "-"]), &del);
        }
        let _ = std::fs::remove_dir_all(labctl::lb::pin_dir(&self.0));
    }
}

/// Builds topology `i` of [`TOPOLOGIES`] both ways, as labs named after
/// `i`: several of these trials run at once.
fn script_builds_what_up_builds(i: usize) -> Result<(), Failed> {
    let t = &TOPOLOGIES[i];
    let file = path(t.stem);
    let vars = var_args(t);
    let name = common::unique(&format!("up{i}"));
    let _down = Down(name.clone());
    let other = common::unique(&format!("sh{i}"));
    let _gone = ScriptLab(other.clone());
    // The two labs are built, and each read, at the same time: in the VM
    // (software emulation, two CPUs) building and reading are most of a
    // trial. They share nothing: namespaces and pins go by lab name.
    let (by_up, by_script) = std::thread::scope(|s| {
        let script_side = s.spawn(|| -> Result<(Vec<u8>, String), Failed> {
            let script = ok(labctl()
                .args(["plan", "-o", "script", "--name", &other])
                .args(&vars)
                .arg(&file))?;
            let path = std::env::temp_dir().join(format!("{other}.sh"));
            std::fs::write(&path, &script.stdout)?;
            let ran = ok(Command::new("bash").arg(&path));
            let _ = std::fs::remove_file(&path);
            ran?;
            Ok((script.stdout, state(&other)?))
        });
        let up_side = ok(labctl()
            .args(["up", "-q", "--name", &name])
            .args(&vars)
            .arg(&file))
        .and_then(|_| state(&name));
        let script_side = script_side
            .join()
            .unwrap_or_else(|_| Err("building the script's lab panicked".into()));
        (up_side, script_side)
    });
    let (by_up, (script, by_script)) = (by_up?, by_script?);
    let fixed = macs(&String::from_utf8_lossy(&script));
    let (mut by_up, mut by_script) = (by_up, by_script);
    // A difference may be the kernel still settling (see [`SETTLE`]):
    // read both again before calling it one.
    for _ in 0..SETTLE_TRIES {
        if mask_random_macs(&by_up, &fixed) == mask_random_macs(&by_script, &fixed) {
            break;
        }
        std::thread::sleep(SETTLE);
        (by_up, by_script) = (state(&name)?, state(&other)?);
    }
    let missing: Vec<&str> = t
        .wants
        .iter()
        .copied()
        .filter(|w| !by_up.contains(w))
        .collect();
    let same = differ(
        "the script's lab differs from up's",
        &mask_random_macs(&by_up, &fixed),
        &mask_random_macs(&by_script, &fixed),
    );
    match (missing.is_empty(), same) {
        (true, same) => same,
        (false, same) => Err(format!(
            "up's lab lacks {missing:?}; {}:\n{by_up}",
            same.err()
                .map_or("the two labs agree".into(), |e| format!("{e:?}"))
        )
        .into()),
    }
}

fn vxlan_redirect() -> PathBuf {
    path("vxlan-redirect")
}

const MAC_TRIAL: &str = "a_run_with_a_mac_change_leaves_the_lab_as_it_was";

fn a_run_with_a_mac_change_leaves_the_lab_as_it_was() -> Result<(), Failed> {
    let name = common::unique("objmac");
    let _down = Down(name.clone());
    ok(labctl()
        .args(["up", "-q", "--name", &name])
        .arg(vxlan_redirect()))?;
    let before = settled_state(&name)?;
    ensure(
        before.contains("vxlan0@if3: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1400"),
        before.clone(),
    )?;
    let o = ok(labctl()
        .args(["run", "--name", &name, "-o", "json"])
        .arg(vxlan_redirect()))?;
    let reports: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    let reports = reports.as_array().cloned().unwrap_or_default();
    ensure(reports.len() == 3, format!("{reports:#?}"))?;
    // The bug with the change (its expectation: a timeout), then the fix
    // on the same lab once the change is undone, then the pod's redirect
    // deleted for a scenario (and put back: the tc filters are compared).
    ensure(
        reports[0]["scenario"] == "k0-vxlan0-own-mac-drops"
            && reports[1]["scenario"] == "k1-ping-through-the-redirects"
            && reports[2]["scenario"] == "k2-redirect-removed",
        format!("{reports:#?}"),
    )?;
    for r in &reports {
        ensure(r["passed"] == true, format!("{r:#}"))?;
    }
    let after = settled_state(&name)?;
    differ("the lab changed", &before, &after)
}

/// Topologies whose whole run (every scenario, changes made and undone)
/// must leave the lab as `up` made it: trial name, file stem, number of
/// scenarios. The Kata lab's P2 and P4 give vxlan0 the pod's MAC (issue
/// 12's "the lab is unchanged after P2"); Ctrip's fabric pins spines by
/// route changes, moves a pod by link changes and reprograms EVPN's
/// entries (issue 13's "the lab is as before after each").
const RUNS: &[(&str, &str, usize)] = &[
    (
        "kata_run_with_the_fix_leaves_the_lab_as_it_was",
        "kata-peer-pods",
        4,
    ),
    (
        "ctrip_fabric_run_leaves_the_lab_as_it_was",
        "ctrip-fabric",
        5,
    ),
];

/// [`RUNS`]' trial `i`: up, read, run every scenario (each must pass),
/// read again, compare.
fn run_leaves_the_lab_as_it_was(i: usize) -> Result<(), Failed> {
    let (_, stem, count) = RUNS[i];
    let file = path(stem);
    // A name per trial: both may run at once.
    let name = common::unique(&format!("objrun{i}"));
    let _down = Down(name.clone());
    ok(labctl().args(["up", "-q", "--name", &name]).arg(&file))?;
    let before = settled_state(&name)?;
    let o = ok(labctl()
        .args(["run", "--name", &name, "-o", "json"])
        .arg(&file))?;
    let reports: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    let reports = reports.as_array().cloned().unwrap_or_default();
    ensure(reports.len() == count, format!("{reports:#?}"))?;
    for r in &reports {
        ensure(r["passed"] == true, format!("{r:#}"))?;
    }
    let after = settled_state(&name)?;
    differ("the lab changed", &before, &after)
}

/// How long the one VM run of every VM-placed trial may take.
const VM_LIMIT: std::time::Duration = std::time::Duration::from_secs(30 * 60);

/// The one VM run per kernel of every trial placed in a VM, by kernel:
/// whether it passed and its output.
static VM_RUNS: Mutex<BTreeMap<String, (bool, String)>> = Mutex::new(BTreeMap::new());

/// Trial `trial`'s outcome in the VM run of every trial placed on
/// `kernel` (booted by the first of them to get here; `others` are the
/// trials not placed there, skipped in it).
fn in_shared_vm(kernel: &str, trial: &str, others: &[String]) -> Result<(), Failed> {
    let mut runs = VM_RUNS.lock().unwrap_or_else(|e| e.into_inner());
    if !runs.contains_key(kernel) {
        // Every trial but `others`, by exact name (a `--skip` is a
        // substring otherwise), four at a time: the VM has two CPUs (see
        // `labctl::vm`), but a trial waits on the kernel (linkwatch's
        // settling) and on 9p as well as computes (two at a time left the
        // host's two cores 20-30 % idle under emulation; measured in the
        // shared VM, the whole binary 140-165 s at two against 127-140 s
        // at four).
        let mut args = String::from("--exact --test-threads 4");
        for o in others {
            args.push_str(&format!(" --skip {o}"));
        }
        // A failed boot or a timeout is every trial's outcome: no second
        // boot.
        let run = common::in_vm_args(kernel, "script", &args, "", true, VM_LIMIT)
            .unwrap_or_else(|e| (false, format!("{e:?}")));
        runs.insert(kernel.to_string(), run);
    }
    let (passed, out) = &runs[kernel];
    // libtest-mimic's line: `test [KIND] NAME<padding> ... ok`.
    let outcome = out.lines().find_map(|l| {
        let l = l.strip_prefix("test ")?;
        let l = l.split_once("] ").map_or(l, |(_, rest)| rest);
        let (name, outcome) = l.split_once(" ... ")?;
        (name.trim_end() == trial).then_some(outcome)
    });
    match outcome {
        Some("ok") => Ok(()),
        _ => Err(format!(
            "in the VM ({kernel}), {trial} did not pass (run passed: {passed}):\n{out}"
        )
        .into()),
    }
}

/// `ip -o -d`'s four sections are told apart line by line, in order, and
/// a line of no known kind or out of order fails the read.
fn ip_output_splits_into_its_sections() -> Result<(), Failed> {
    let text = "\
1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN\\    link/loopback
3: eth0@if4: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP
3: eth0    inet 10.0.0.2/24 brd 10.0.0.255 scope global eth0\\       valid_lft forever
unicast default via 10.0.0.1 dev eth0 proto static scope global
blackhole 10.9.0.0/16 proto boot scope global
10.0.0.5 dev eth0 lladdr 02:00:00:00:00:05 PERMANENT
fe80::5 dev eth0 lladdr 02:00:00:00:00:05 PERMANENT
";
    let [links, addrs, routes, neighbours] = ip_sections(text)?;
    ensure(
        links.len() == 2 && addrs.len() == 1 && routes.len() == 2 && neighbours.len() == 2,
        format!("{links:?} {addrs:?} {routes:?} {neighbours:?}"),
    )?;
    ensure(
        link_name(links[1]) == "eth0",
        format!("name of {}", links[1]),
    )?;
    let out_of_order = "10.0.0.5 dev eth0 lladdr 02:00:00:00:00:05 PERMANENT\n\
                        unicast default via 10.0.0.1 dev eth0\n";
    ensure(
        ip_sections(out_of_order).is_err(),
        "a route after a neighbour was taken",
    )?;
    ensure(
        ip_sections("Error: something\n").is_err(),
        "a line of no known kind was taken",
    )
}

/// The masking keeps what the plan fixes and hides only the kernel's
/// random choices, in both spellings iproute2 prints.
fn masking_hides_only_random_macs() -> Result<(), Failed> {
    let fixed = macs("ip link add a address 02:00:00:00:00:0a type veth");
    let state = "link/ether 02:00:00:00:00:0a brd ff:ff:ff:ff:ff:ff\n\
                 link/ether 5e:11:22:33:44:05 bridge_id 8000.5e:11:22:33:44:5 \
                 designated_root 8000.2:0:0:0:0:a group_address 01:80:c2:00:00:00\n";
    let masked = mask_random_macs(state, &fixed);
    let want = "link/ether 02:00:00:00:00:0a brd ff:ff:ff:ff:ff:ff\n\
                link/ether RANDOM bridge_id 8000.RANDOM \
                designated_root 8000.2:0:0:0:0:a group_address 01:80:c2:00:00:00\n";
    differ("masked", want, &masked)?;
    // A fixed MAC that changed is a difference.
    let other = state.replace("02:00:00:00:00:0a", "02:00:00:00:00:0b");
    ensure(
        mask_random_macs(&other, &fixed) != masked,
        "a changed fixed MAC was masked",
    )
}

const NFT_TRIAL: &str = "the_nftables_check_sees_a_table_of_any_family";

/// [`has_nft_tables`] says no for a new namespace and yes once it has a
/// table (of the bridge family: every family is asked), so a lab's
/// ruleset is never left unread.
fn the_nftables_check_sees_a_table_of_any_family() -> Result<(), Failed> {
    struct Gone(String);
    impl Drop for Gone {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
        }
    }
    let ns = common::unique("nft");
    ok(Command::new("ip").args(["netns", "add", &ns]))?;
    let _gone = Gone(ns.clone());
    ensure(!has_nft_tables(&ns)?, "a new namespace has a table")?;
    ok(Command::new("ip").args(["netns", "exec", &ns, "nft", "add", "table", "bridge", "t"]))?;
    ensure(has_nft_tables(&ns)?, "the bridge table was not seen")?;
    ensure(
        namespace_state(&ns)?.contains("# nft\ntable bridge t {\n}\n# ipvs"),
        "the table is not in the namespace's state",
    )
}

fn main() {
    let args = Arguments::from_args();
    let vxlan = labctl_topology::load(&vxlan_redirect(), &Default::default())
        .expect("vxlan-redirect loads");
    let why = "the host kernel lacks a feature of vxlan-redirect.yaml; this trial reads its \
               namespaces from the host";
    let mut trials = vec![
        Trial::test(
            "masking_hides_only_random_macs",
            masking_hides_only_random_macs,
        ),
        Trial::test(
            "ip_output_splits_into_its_sections",
            ip_output_splits_into_its_sections,
        ),
        Trial::ignorable_test(NFT_TRIAL, || {
            common::gate(the_nftables_check_sees_a_table_of_any_family)
        })
        .with_kind(Place::Here.kind()),
        common::placed_trial(
            &place_for(&vxlan),
            Some(why),
            MAC_TRIAL,
            a_run_with_a_mac_change_leaves_the_lab_as_it_was,
        ),
    ];
    // Where each topology's lab runs; a lab placed in a VM runs there
    // whole (labctl, the script and the reads).
    let places: Vec<(String, Place)> = TOPOLOGIES
        .iter()
        .map(|t| {
            let vars = t
                .vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let lab = labctl_topology::load(&path(t.stem), &vars)
                .unwrap_or_else(|e| panic!("{} loads: {e}", t.stem));
            (trial_name(t), place_for(&lab))
        })
        .chain(RUNS.iter().map(|(trial, stem, _)| {
            let lab = labctl_topology::load(&path(stem), &Default::default())
                .unwrap_or_else(|e| panic!("{stem} loads: {e}"));
            (trial.to_string(), place_for(&lab))
        }))
        .collect();
    // Whether this run's filter and skips select a trial (libtest-mimic's
    // own rule), so a filtered run asks the VM for its own trials only.
    let selected = |name: &str| {
        let hit = |pattern: &String| {
            if args.exact {
                name == pattern
            } else {
                name.contains(pattern.as_str())
            }
        };
        args.filter.as_ref().is_none_or(hit) && !args.skip.iter().any(hit)
    };
    for (i, (name, place)) in places.iter().enumerate() {
        let kind = place.kind();
        let place = place.clone();
        // The trials the VM run of this one skips: the mac-change trial,
        // those placed elsewhere and those this run does not select.
        let others: Vec<String> = places
            .iter()
            .filter(|(n, p)| {
                !selected(n)
                    || match (p, &place) {
                        (Place::Vm(a), Place::Vm(b)) => a != b,
                        _ => true,
                    }
            })
            .map(|(n, _)| n.clone())
            .chain([
                MAC_TRIAL.to_string(),
                NFT_TRIAL.to_string(),
                "masking_hides_only_random_macs".into(),
                "ip_output_splits_into_its_sections".into(),
            ])
            .collect();
        let trial = name.clone();
        trials.push(
            Trial::ignorable_test(name.clone(), move || match place {
                Place::Here if i < TOPOLOGIES.len() => {
                    common::gate(|| script_builds_what_up_builds(i))
                }
                Place::Here => common::gate(|| run_leaves_the_lab_as_it_was(i - TOPOLOGIES.len())),
                Place::Vm(k) => common::gate(|| in_shared_vm(&k, &trial, &others)),
                Place::Nowhere(why) => common::ignored(why),
            })
            .with_kind(kind),
        );
    }
    // libtest-mimic starts trials in this order. The first trial placed
    // in a VM makes the one VM run the others wait for, so the host's
    // trials go next, beside that run, not queued behind those waits.
    let (vm, here): (Vec<Trial>, Vec<Trial>) = trials
        .into_iter()
        .partition(|t| t.kind().starts_with("vm "));
    let mut vm = vm.into_iter();
    let trials: Vec<Trial> = vm.next().into_iter().chain(here).chain(vm).collect();
    libtest_mimic::run(&args, trials).exit();
}
