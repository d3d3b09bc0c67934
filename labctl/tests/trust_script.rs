//! Trust (issue 16): what labctl prints and reports can be taken at its
//! word.
//!
//! - `labctl plan -o script` is run by bash: a name or value of the
//!   topology is passed to `ip` as the one argument it is and never runs
//!   anything. The script runs for real here, with a PATH that holds only
//!   fake programs (they record their arguments and do nothing else), in a
//!   directory of its own: it cannot reach the host's network or files.
//! - `labctl run topologies/flannel.yaml --var services=off`, the pod
//!   network without IPVS (which runs on a kernel without it), passes every
//!   scenario, against golden files of its own
//!   (`golden/flannel/services=off/`; `cargo insta review` accepts a
//!   changed one).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Down, Place, gate, ignored, labctl_here, place_for, unique};
use labctl::kernel::{bridge, ipvs, link, macvlan, nft};
use labctl::plan::{Action, IfRef, NsSpec, Phase, Plan, Step};
use labctl_topology::Role;
use libtest_mimic::{Arguments, Failed, Trial};

mod common;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A directory of its own for one trial, removed however it ends.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Result<TempDir, Failed> {
        let dir = std::env::temp_dir().join(format!("labctl-{}", unique(tag)));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Every program a script could call, faked: each appends `call NAME ARGC
/// ARG...` (NUL-separated) to `$LOG`, and when its last argument is `-`
/// (`nft -f -`) its standard input as `stdin BODY`; called with a `show`
/// argument it prints `$SHOW` (what `ip neigh show` would list). Bash
/// builtins only, so the fakes need nothing from the real PATH.
const FAKES: &[&str] = &[
    "ip", "nft", "ipvsadm", "sysctl", "cat", "touch", "rm", "id", "sh", "bash", "curl",
];

const BASH: &str = "/usr/bin/bash";

fn fake_program() -> String {
    format!(
        "#!{BASH}\n\
         {{ printf 'call\\0%s\\0%d\\0' \"${{0##*/}}\" \"$#\"; printf '%s\\0' \"$@\"; }} >> \"$LOG\"\n\
         if [ \"$#\" -gt 0 ] && [ \"${{@: -1}}\" = - ]; then\n\
           IFS= read -r -d '' body\n\
           printf 'stdin\\0%s\\0' \"$body\" >> \"$LOG\"\n\
         fi\n\
         if [[ \" $* \" == *' show '* ]]; then printf '%s' \"$SHOW\"; fi\n\
         exit 0\n"
    )
}

/// One recorded program run.
#[derive(Debug, Default)]
struct Call {
    program: String,
    args: Vec<String>,
    stdin: Option<String>,
}

/// What running a script under the fakes did.
struct ScriptRun {
    status: std::process::ExitStatus,
    stderr: String,
    calls: Vec<Call>,
    /// Files the script left in its working directory.
    left: Vec<String>,
}

impl ScriptRun {
    /// Everything about the run, for a failure message.
    fn describe(&self, script: &str) -> String {
        format!(
            "status {}, stderr:\n{}\nscript:\n{script}\ncalls: {:#?}",
            self.status, self.stderr, self.calls
        )
    }

    /// The script succeeded, said nothing on stderr and left no file.
    fn clean(&self, script: &str) -> Result<(), Failed> {
        if !self.status.success() || !self.stderr.is_empty() || !self.left.is_empty() {
            let (left, run) = (&self.left, self.describe(script));
            return Err(format!("the script failed or left {left:?}: {run}").into());
        }
        Ok(())
    }
}

/// Run `script` with bash in `dir`, with a PATH of fakes only and an
/// environment of nothing else.
fn run_script(dir: &Path, script: &str) -> Result<ScriptRun, Failed> {
    run_script_showing(dir, script, "")
}

/// [`run_script`] with fakes that print `show` when called to show.
fn run_script_showing(dir: &Path, script: &str, show: &str) -> Result<ScriptRun, Failed> {
    let bin = dir.join("bin");
    let work = dir.join("work");
    std::fs::create_dir_all(&bin)?;
    std::fs::create_dir_all(&work)?;
    for name in FAKES {
        let path = bin.join(name);
        std::fs::write(&path, fake_program())?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    }
    let script_path = dir.join("plan.sh");
    std::fs::write(&script_path, script)?;
    let log = dir.join("calls.log");
    std::fs::write(&log, "")?;
    let o = Command::new(BASH)
        .arg(&script_path)
        .current_dir(&work)
        .env_clear()
        .env("PATH", &bin)
        .env("LOG", &log)
        .env("SHOW", show)
        .output()?;
    let raw = std::fs::read(&log)?;
    let raw = String::from_utf8(raw).map_err(|e| format!("log is not UTF-8: {e}"))?;
    let mut fields = raw.split('\0');
    let mut calls: Vec<Call> = Vec::new();
    while let Some(kind) = fields.next() {
        match kind {
            "" => break,
            "call" => {
                let program = fields.next().ok_or("truncated log")?.to_string();
                let n: usize = fields.next().ok_or("truncated log")?.parse()?;
                let args = (0..n)
                    .map(|_| fields.next().map(str::to_string).ok_or("truncated log"))
                    .collect::<Result<_, _>>()?;
                calls.push(Call {
                    program,
                    args,
                    stdin: None,
                });
            }
            "stdin" => {
                let body = fields.next().ok_or("truncated log")?.to_string();
                calls.last_mut().ok_or("stdin before any call")?.stdin = Some(body);
            }
            other => return Err(format!("unknown log record {other:?}").into()),
        }
    }
    let calls = expand_batches(calls)?;
    let mut left: Vec<String> = std::fs::read_dir(&work)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    Ok(ScriptRun {
        status: o.status,
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        calls,
        left,
    })
}

/// Each `ip -n NS -batch -` call as the `ip -n NS WORDS...` calls its
/// lines are, split as iproute2 splits a batch line (`makeargs` after
/// `getcmdline`): a `#` ends the line, words part at blanks, a word that
/// starts with `'` or `"` runs to the next one of those; blank lines are
/// skipped. An unterminated quote is an error, as it is to `ip`.
fn expand_batches(calls: Vec<Call>) -> Result<Vec<Call>, Failed> {
    let mut out = Vec::new();
    for call in calls {
        let (program, args) = (call.program.as_str(), call.args.as_slice());
        let [n, ns, batch, dash] = args else {
            out.push(call);
            continue;
        };
        if program != "ip" || n != "-n" || batch != "-batch" || dash != "-" {
            out.push(call);
            continue;
        }
        let body = call
            .stdin
            .as_deref()
            .ok_or("`ip -batch -` without its stdin")?;
        for line in body.lines() {
            let line = line.split('#').next().unwrap_or_default();
            let mut words = vec!["-n".to_string(), ns.clone()];
            let mut rest = line;
            loop {
                rest = rest.trim_start_matches([' ', '\t', '\r']);
                let Some(first) = rest.chars().next() else {
                    break;
                };
                if first == '\'' || first == '"' {
                    let end = rest[1..]
                        .find(first)
                        .ok_or_else(|| format!("unterminated quote in batch line {line:?}"))?;
                    words.push(rest[1..1 + end].to_string());
                    rest = &rest[end + 2..];
                } else {
                    let end = rest.find([' ', '\t', '\r']).unwrap_or(rest.len());
                    words.push(rest[..end].to_string());
                    rest = &rest[end..];
                }
            }
            if words.len() > 2 {
                out.push(Call {
                    program: "ip".into(),
                    args: words,
                    stdin: None,
                });
            }
        }
    }
    Ok(out)
}

/// The words a topology could smuggle into a plan: a command substitution
/// of each kind, quotes, a command separator, a newline, a glob, a tilde.
/// Each would leave a file `pwned*` in the working directory or run a fake
/// program other than `ip` if the shell ran it.
const HOSTILE: &[&str] = &[
    "$(touch /tmp/pwned)",
    "$(>pwned1)",
    "a'b;>pwned2",
    "x;y",
    "x\ny >pwned3",
    "`>pwned4`",
    "\"$(>pwned5)\"",
    "* ~ $HOME",
    "",
];

/// A plan with a hostile word in every place a topology's name or value
/// reaches, in every kind of action.
fn hostile_plan() -> Plan {
    let mut steps = Vec::new();
    let mut namespaces = Vec::new();
    for (i, &h) in HOSTILE.iter().enumerate() {
        let netns = format!("lab-{h}");
        namespaces.push(NsSpec {
            name: netns.clone(),
            entity: h.to_string(),
            role: Role::Node,
        });
        let other = HOSTILE[(i + 1) % HOSTILE.len()].to_string();
        let actions = vec![
            Action::LoopbackUp(link::LoopbackUp),
            Action::AddBridge(bridge::AddBridge {
                name: h.into(),
                ifindex: 2,
                mac: None,
            }),
            Action::AddVeth(labctl::kernel::veth::AddVeth {
                name: h.into(),
                ifindex: 3,
                mac: Some([0x0a, 0x58, 0, 0, 0, 1]),
                controller: Some(IfRef {
                    name: other.clone(),
                    ifindex: 2,
                }),
                peer_name: other.clone(),
                peer_netns: h.into(),
                peer_ifindex: 2,
                peer_mac: None,
            }),
            Action::AddDummy(labctl::kernel::dummy::AddDummy {
                name: h.into(),
                ifindex: 4,
            }),
            Action::AddOffParent(macvlan::AddOffParent {
                name: h.into(),
                ifindex: 5,
                parent: IfRef {
                    name: other.clone(),
                    ifindex: 2,
                },
                netns: Some(h.into()),
                mac: None,
                mode: macvlan::Mode::Ipvlan(labctl_topology::IpvlanMode::L2),
            }),
            Action::AddOffParent(macvlan::AddOffParent {
                name: h.into(),
                ifindex: 6,
                parent: IfRef {
                    name: other.clone(),
                    ifindex: 2,
                },
                netns: None,
                mac: None,
                mode: macvlan::Mode::Ipvlan(labctl_topology::IpvlanMode::L2),
            }),
            Action::IpvsTable(ipvs::IpvsTable {
                services: Vec::new(),
            }),
            Action::Nftables(nft::Nftables {
                ruleset: format!(
                    "table ip t {{\n\tcomment \"{h}\"\nEOF\n>pwned6\n'EOF'\nEOF1\n}}\n"
                ),
            }),
            Action::LinkUp(link::LinkUp {
                ifname: h.into(),
                ifindex: 3,
            }),
            Action::IsolatePort(link::IsolatePort {
                ifname: h.into(),
                ifindex: 3,
            }),
            Action::RenameUp(link::RenameUp {
                from: h.into(),
                ifname: other.clone(),
                ifindex: 5,
            }),
            Action::AddHostAddress(labctl::kernel::addr::AddHostAddress {
                ifname: h.into(),
                ifindex: 6,
                address: "10.0.0.1/32".parse().unwrap(),
            }),
            Action::ArpOff(link::ArpOff {
                ifname: h.into(),
                ifindex: 6,
            }),
            Action::SelfNeighbour(labctl::kernel::neigh::SelfNeighbour {
                ifname: h.into(),
                ifindex: 5,
                address: "10.0.0.1".parse().unwrap(),
            }),
            Action::AddAddress(labctl::kernel::addr::AddAddress {
                ifname: h.into(),
                ifindex: 3,
                address: "10.0.0.2/24".parse().unwrap(),
            }),
            Action::AddRoute(labctl::kernel::route::AddRoute {
                destination: "172.23.96.0/26".parse().unwrap(),
                via: Some("10.0.0.253".parse().unwrap()),
                ifname: h.into(),
                ifindex: 3,
            }),
            Action::Sysctl(labctl::kernel::sysctl::Sysctl {
                key: format!("net.ipv4.conf.{h}.rp_filter"),
                value: other.clone(),
            }),
            Action::AddVlan(labctl::kernel::vlan::AddVlan {
                name: h.into(),
                ifindex: 7,
                parent: IfRef {
                    name: other.clone(),
                    ifindex: 2,
                },
                id: 100,
                mac: None,
                parent_up: true,
            }),
            Action::AddBond(labctl::kernel::bond::AddBond {
                name: h.into(),
                ifindex: 8,
                mac: None,
                mode: labctl_topology::BondMode::ActiveBackup,
                miimon: Some(100),
            }),
            Action::Enslave(labctl::kernel::bond::Enslave {
                ifname: h.into(),
                ifindex: 3,
                bond: IfRef {
                    name: other.clone(),
                    ifindex: 8,
                },
            }),
            Action::AddOffParent(labctl::kernel::macvlan::AddOffParent {
                name: h.into(),
                ifindex: 9,
                parent: IfRef {
                    name: other.clone(),
                    ifindex: 2,
                },
                netns: Some(other.clone()),
                mac: None,
                mode: labctl::kernel::macvlan::Mode::Macvlan(labctl_topology::MacvlanMode::Vepa),
            }),
            Action::AddVlanBridge(labctl::kernel::bridge::AddVlanBridge {
                name: h.into(),
                ifindex: 10,
                mac: None,
                default_pvid: Some(0),
            }),
            Action::SetPort(labctl::kernel::bridge::SetPort {
                ifname: h.into(),
                ifindex: 3,
                learning: Some(false),
                neigh_suppress: None,
                isolated: None,
                hairpin: None,
            }),
            Action::AddNsRoute(labctl::kernel::route::AddNsRoute {
                destination: "10.8.0.0/16".parse().unwrap(),
                via: None,
                dev: None,
                onlink: false,
                table: Some(100),
                metric: None,
                scope: None,
                nexthops: vec![labctl::kernel::route::NextHop {
                    via: Some("10.0.0.254".parse().unwrap()),
                    dev: IfRef {
                        name: h.into(),
                        ifindex: 3,
                    },
                    weight: 2,
                    onlink: false,
                }],
            }),
        ];
        for action in actions {
            steps.push(Step {
                phase: Phase::Devices,
                netns: netns.clone(),
                action,
            });
        }
    }
    Plan {
        lab: "lab".into(),
        namespaces,
        steps,
    }
}

fn argv(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

/// The harness itself catches an injection: an unquoted substitution in a
/// script leaves its file behind.
fn harness_catches_an_unquoted_word() -> Result<(), Failed> {
    let dir = TempDir::new("unquoted")?;
    let run = run_script(&dir.0, "set -e\nip link add $(>pwned0) $(touch x)\n")?;
    if run.left != ["pwned0"] || !run.calls.iter().any(|c| c.program == "touch") {
        return Err(format!(
            "the harness missed an injection: left {:?}, calls {:?}",
            run.left, run.calls
        )
        .into());
    }
    Ok(())
}

/// Every hostile word reaches `ip` as one argument, intact, and the shell
/// runs nothing else.
fn script_passes_hostile_words_intact() -> Result<(), Failed> {
    harness_catches_an_unquoted_word()?;
    let plan = hostile_plan();
    let script = plan.to_script();
    let dir = TempDir::new("script")?;
    let run = run_script(&dir.0, &script)?;
    let show = || run.describe(&script);
    if !run.status.success() || !run.stderr.is_empty() {
        return Err(format!("the script failed: {}", show()).into());
    }
    if !run.left.is_empty() {
        return Err(format!("the script made files {:?}: {}", run.left, show()).into());
    }
    if Path::new("/tmp/pwned").exists() {
        // Not ours to remove; a leftover could also be another run's.
        eprintln!("note: /tmp/pwned exists (not made by this script: `touch` was never run)");
    }
    if let Some(c) = run.calls.iter().find(|c| c.program != "ip") {
        return Err(format!("the script ran {c:?}: {}", show()).into());
    }
    let has = |want: &[String]| run.calls.iter().any(|c| c.args == want);
    for (i, &h) in HOSTILE.iter().enumerate() {
        let ns = format!("lab-{h}");
        let other = HOSTILE[(i + 1) % HOSTILE.len()];
        let netns_conf = format!("net.ipv4.conf.{h}.rp_filter={other}");
        let sys_path = format!("/sys/class/net/{h}/address");
        let expected: Vec<Vec<String>> = vec![
            argv(&["netns", "add", &ns]),
            argv(&["-n", &ns, "link", "set", "lo", "up"]),
            argv(&["-n", &ns, "-6", "addr", "flush", "dev", "lo"]),
            // IPv6 address generation off on each link made, in the
            // namespace it lives in: here, the veth's peer's, and where
            // the ipvlan and the macvlan were moved to.
            argv(&["-n", &ns, "link", "set", h, "addrgenmode", "none"]),
            argv(&["-n", h, "link", "set", other, "addrgenmode", "none"]),
            argv(&["-n", h, "link", "set", h, "addrgenmode", "none"]),
            argv(&["-n", other, "link", "set", h, "addrgenmode", "none"]),
            argv(&[
                "-n",
                &ns,
                "link",
                "add",
                h,
                "index",
                "2",
                "type",
                "bridge",
                "mcast_snooping",
                "0",
            ]),
            argv(&["-n", &ns, "link", "set", h, "up"]),
            argv(&[
                "-n",
                &ns,
                "link",
                "add",
                h,
                "index",
                "3",
                "address",
                "0a:58:00:00:00:01",
                "numtxqueues",
                "1",
                "numrxqueues",
                "1",
                "type",
                "veth",
                "peer",
                "name",
                other,
                "netns",
                h,
                "index",
                "2",
                "numtxqueues",
                "1",
                "numrxqueues",
                "1",
            ]),
            argv(&["-n", &ns, "link", "set", h, "master", other]),
            argv(&[
                "-n", &ns, "link", "add", "link", other, "name", h, "netns", h, "index", "5",
                "type", "ipvlan", "mode", "l2",
            ]),
            argv(&[
                "-n", &ns, "link", "add", "link", other, "name", h, "index", "6", "type", "ipvlan",
                "mode", "l2",
            ]),
            argv(&["-n", &ns, "link", "add", h, "index", "4", "type", "dummy"]),
            argv(&["netns", "exec", &ns, "sh", "-c", "ipvsadm -C"]),
            argv(&["netns", "exec", &ns, "nft", "-f", "-"]),
            argv(&[
                "-n",
                &ns,
                "link",
                "set",
                h,
                "type",
                "bridge_slave",
                "isolated",
                "on",
            ]),
            argv(&["-n", &ns, "link", "set", h, "name", other, "up"]),
            argv(&[
                "-n",
                &ns,
                "addr",
                "add",
                "10.0.0.1/32",
                "dev",
                h,
                "scope",
                "host",
            ]),
            argv(&["-n", &ns, "link", "set", h, "arp", "off"]),
            argv(&["netns", "exec", &ns, "cat", &sys_path]),
            // The fake `cat` printed nothing: the MAC is one empty word.
            argv(&[
                "-n",
                &ns,
                "neigh",
                "replace",
                "10.0.0.1",
                "dev",
                h,
                "lladdr",
                "",
                "nud",
                "permanent",
            ]),
            argv(&[
                "-n",
                &ns,
                "addr",
                "add",
                "10.0.0.2/24",
                "brd",
                "+",
                "dev",
                h,
            ]),
            argv(&[
                "-n",
                &ns,
                "route",
                "add",
                "172.23.96.0/26",
                "via",
                "10.0.0.253",
                "dev",
                h,
                "proto",
                "static",
            ]),
            argv(&["netns", "exec", &ns, "sysctl", "-qw", &netns_conf]),
            argv(&[
                "-n", &ns, "link", "add", "link", other, "name", h, "index", "7", "type", "vlan",
                "id", "100",
            ]),
            argv(&[
                "-n",
                &ns,
                "link",
                "add",
                h,
                "index",
                "8",
                "type",
                "bond",
                "mode",
                "active-backup",
                "miimon",
                "100",
            ]),
            argv(&["-n", &ns, "link", "set", h, "down"]),
            argv(&["-n", &ns, "link", "set", h, "master", other]),
            argv(&[
                "-n", &ns, "link", "add", "link", other, "name", h, "netns", other, "index", "9",
                "type", "macvlan", "mode", "vepa",
            ]),
            argv(&[
                "-n",
                &ns,
                "link",
                "add",
                h,
                "index",
                "10",
                "type",
                "bridge",
                "mcast_snooping",
                "0",
                "vlan_filtering",
                "1",
                "vlan_default_pvid",
                "0",
            ]),
            argv(&[
                "-n",
                &ns,
                "link",
                "set",
                h,
                "type",
                "bridge_slave",
                "learning",
                "off",
            ]),
            argv(&[
                "-n",
                &ns,
                "route",
                "add",
                "10.8.0.0/16",
                "table",
                "100",
                "proto",
                "static",
                "nexthop",
                "via",
                "10.0.0.254",
                "dev",
                h,
                "weight",
                "2",
            ]),
        ];
        for want in &expected {
            if !has(want) {
                return Err(format!("no call of ip {want:?}: {}", show()).into());
            }
        }
        // The ruleset reaches nft as it is, its `EOF` lines included.
        let ruleset = format!("table ip t {{\n\tcomment \"{h}\"\nEOF\n>pwned6\n'EOF'\nEOF1\n}}\n");
        let nft = run
            .calls
            .iter()
            .find(|c| c.args == argv(&["netns", "exec", &ns, "nft", "-f", "-"]))
            .ok_or("no nft call")?;
        if nft.stdin.as_deref() != Some(ruleset.as_str()) {
            return Err(format!("nft got {:?}, want {ruleset:?}", nft.stdin).into());
        }
    }
    Ok(())
}

/// A scenario's neighbour reset as the text labctl reports for it, run by
/// bash under the fakes with every hostile namespace: `flush all`, and with
/// an address to keep, the `show` whose lines (from the fake) lead to one
/// `del` of the entry not kept, each with the namespace as one word.
fn forget_neighbours_passes_hostile_namespaces_intact() -> Result<(), Failed> {
    use labctl::kernel::neigh::ForgetNeighbours;
    let mut script = String::from("set -e\n");
    for h in HOSTILE {
        for keep in [Vec::new(), vec!["10.0.0.9".parse().unwrap()]] {
            let step = Step {
                phase: Phase::Changes,
                netns: format!("lab-{h}"),
                action: Action::ForgetNeighbours(ForgetNeighbours { keep }),
            };
            script.push_str(&format!("{step}\n"));
        }
    }
    let dir = TempDir::new("forget")?;
    let shown = "10.0.0.5 dev eth0 lladdr 02:00:00:00:00:05 STALE \n\
                 10.0.0.9 dev eth0 lladdr 02:00:00:00:00:09 REACHABLE \n";
    let run = run_script_showing(&dir.0, &script, shown)?;
    run.clean(&script)?;
    let show = || run.describe(&script);
    if let Some(c) = run.calls.iter().find(|c| c.program != "ip") {
        return Err(format!("the script ran {c:?}: {}", show()).into());
    }
    for h in HOSTILE {
        let ns = format!("lab-{h}");
        let calls: Vec<&Vec<String>> = run
            .calls
            .iter()
            .map(|c| &c.args)
            .filter(|a| a.get(1) == Some(&ns))
            .collect();
        let expected = [
            argv(&["-n", &ns, "-4", "neigh", "flush", "all"]),
            argv(&[
                "-n",
                &ns,
                "-4",
                "neigh",
                "show",
                "nud",
                "reachable",
                "nud",
                "stale",
                "nud",
                "delay",
                "nud",
                "probe",
                "nud",
                "incomplete",
                "nud",
                "failed",
                "nud",
                "none",
            ]),
            argv(&["-n", &ns, "neigh", "del", "10.0.0.5", "dev", "eth0"]),
        ];
        if !calls.iter().copied().eq(expected.iter()) {
            return Err(format!("in {ns:?}, calls {calls:#?}: {}", show()).into());
        }
    }
    Ok(())
}

/// A step of one program run inside the namespace (`ip netns exec NS
/// WORDS...`), as the text labctl reports for it, run by bash under the
/// fakes with every hostile namespace: `ip netns exec` gets the namespace
/// as one word and `words` after it, and nothing else runs.
fn netns_exec_passes_hostile_namespaces_intact(
    what: &str,
    action: Action,
    words: &[&str],
) -> Result<(), Failed> {
    let mut script = String::from("set -e\n");
    for h in HOSTILE {
        let step = Step {
            phase: Phase::Changes,
            netns: format!("lab-{h}"),
            action: action.clone(),
        };
        script.push_str(&format!("{step}\n"));
    }
    let dir = TempDir::new(what)?;
    let run = run_script(&dir.0, &script)?;
    run.clean(&script)?;
    let show = || run.describe(&script);
    let expected: Vec<Vec<String>> = HOSTILE
        .iter()
        .map(|h| {
            let ns = format!("lab-{h}");
            argv(&[&["netns", "exec", &ns][..], words].concat())
        })
        .collect();
    let calls: Vec<&Vec<String>> = run.calls.iter().map(|c| &c.args).collect();
    if run.calls.iter().any(|c| c.program != "ip") || !calls.iter().copied().eq(expected.iter()) {
        return Err(format!("calls differ from {expected:#?}: {}", show()).into());
    }
    Ok(())
}

/// A scenario's conntrack flush: conntrack-tools' words after the
/// namespace.
fn flush_conntrack_passes_hostile_namespaces_intact() -> Result<(), Failed> {
    use labctl::kernel::conntrack::FlushConntrack;
    netns_exec_passes_hostile_namespaces_intact(
        "flush",
        Action::FlushConntrack(FlushConntrack),
        &["conntrack", "-F", "-f", "ipv4"],
    )
}

/// A scenario's TIME_WAIT reset: iproute2's `ss -K` words after the
/// namespace.
fn forget_time_wait_passes_hostile_namespaces_intact() -> Result<(), Failed> {
    use labctl::kernel::timewait::ForgetTimeWait;
    netns_exec_passes_hostile_namespaces_intact(
        "timewait",
        Action::ForgetTimeWait(ForgetTimeWait),
        &["ss", "-K", "-4", "-t", "state", "time-wait"],
    )
}

/// The real Flannel plan (services on: IPVS tables and nftables rulesets
/// included) runs under the fakes too, each ruleset reaching nft intact.
fn flannel_script_runs() -> Result<(), Failed> {
    let file = root().join("topologies/flannel.yaml");
    let lab = labctl_topology::load(&file, &BTreeMap::new())?;
    let plan = labctl::plan::plan(&lab);
    let dir = TempDir::new("flannel")?;
    let run = run_script(&dir.0, &plan.to_script())?;
    if !run.status.success() || !run.left.is_empty() {
        return Err(format!("status {}, left {:?}: {}", run.status, run.left, run.stderr).into());
    }
    let rulesets: Vec<&str> = plan
        .steps
        .iter()
        .filter_map(|s| match &s.action {
            Action::Nftables(nft::Nftables { ruleset }) => Some(ruleset.as_str()),
            _ => None,
        })
        .collect();
    let got: Vec<&str> = run
        .calls
        .iter()
        .filter_map(|c| c.stdin.as_deref())
        .collect();
    if rulesets.is_empty() || got != rulesets {
        return Err(format!("nft got {got:#?}\nwant {rulesets:#?}").into());
    }
    let adds = run
        .calls
        .iter()
        .filter(|c| c.args.starts_with(&argv(&["netns", "add"])))
        .count();
    if adds != plan.namespaces.len() {
        return Err(format!("{adds} namespaces added, want {}", plan.namespaces.len()).into());
    }
    Ok(())
}

const SERVICES_OFF: (&str, &str) = ("services", "off");

/// `labctl run topologies/flannel.yaml --var services=off`: exit 0, every
/// scenario passed, every golden file of the variant there and matching.
/// A golden text that differs or is missing is also handed to insta, so
/// `cargo insta review` shows and accepts it.
fn flannel_services_off_passes(place: Place) -> Result<(), Failed> {
    let file = root().join("topologies/flannel.yaml");
    let vars: BTreeMap<String, String> =
        [(SERVICES_OFF.0.to_string(), SERVICES_OFF.1.to_string())].into();
    let lab = labctl_topology::load(&file, &vars)?;
    let name = unique("off");
    let _down = Down(name.clone());
    let mut cmd = labctl_here();
    cmd.args([
        "run",
        "--name",
        &name,
        "--var",
        "services=off",
        "-o",
        "json",
    ]);
    if let Place::Vm(kernel) = &place {
        cmd.args(["--kernel", kernel]);
    }
    let o = cmd.arg(&file).output()?;
    let outcomes: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout)
        .map_err(|e| format!("no JSON reports ({e}): {}", common::text(&o)))?;

    let golden_dir = labctl::golden::dir_for(&file, &vars);
    let mut problems = Vec::new();
    for out in &outcomes {
        let scenario = out["scenario"].as_str().ok_or("report without a name")?;
        if out["golden"] != "match" {
            let text = out["golden_text"].as_str().ok_or("no golden text")?;
            std::fs::create_dir_all(&golden_dir)?;
            let mut settings = insta::Settings::clone_current();
            settings.set_snapshot_path(&golden_dir);
            settings.set_prepend_module_to_snapshot(false);
            settings.set_input_file(&file);
            settings.set_omit_expression(true);
            settings.set_description("labctl run topologies/flannel.yaml --var services=off");
            // Every scenario's text reaches insta, not only the first.
            let compared = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                settings.bind(|| insta::assert_snapshot!(scenario.to_string(), text))
            }));
            problems.push(format!(
                "{scenario}: golden {} ({})",
                out["golden"],
                if compared.is_ok() {
                    "insta has it now"
                } else {
                    "see `cargo insta review`"
                }
            ));
        }
        if out["passed"] != true {
            problems.push(format!("{scenario} failed:\n{out:#}"));
        }
    }
    let ran: Vec<&str> = outcomes
        .iter()
        .filter_map(|o| o["scenario"].as_str())
        .collect();
    let want: Vec<&str> = lab.scenarios.iter().map(|s| s.name.as_str()).collect();
    if ran != want {
        problems.push(format!("ran {ran:?}, want {want:?}"));
    }
    if !o.status.success() {
        problems.push(format!("exit {:?}, want 0", o.status.code()));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{}\nstderr:\n{}",
            problems.join("\n"),
            String::from_utf8_lossy(&o.stderr)
        )
        .into())
    }
}

fn main() {
    let args = Arguments::from_args();
    let file = root().join("topologies/flannel.yaml");
    let vars: BTreeMap<String, String> =
        [(SERVICES_OFF.0.to_string(), SERVICES_OFF.1.to_string())].into();
    let off = labctl_topology::load(&file, &vars).expect("flannel.yaml loads");
    let place = place_for(&off);
    let kind = place.kind();
    let trials = vec![
        Trial::test(
            "script_passes_hostile_words_intact",
            script_passes_hostile_words_intact,
        ),
        Trial::test(
            "forget_neighbours_passes_hostile_namespaces_intact",
            forget_neighbours_passes_hostile_namespaces_intact,
        ),
        Trial::test(
            "flush_conntrack_passes_hostile_namespaces_intact",
            flush_conntrack_passes_hostile_namespaces_intact,
        ),
        Trial::test(
            "forget_time_wait_passes_hostile_namespaces_intact",
            forget_time_wait_passes_hostile_namespaces_intact,
        ),
        Trial::test("flannel_script_runs", flannel_script_runs),
        Trial::ignorable_test("flannel_services_off_passes", move || match place {
            Place::Nowhere(why) => ignored(why),
            place => gate(|| flannel_services_off_passes(place)),
        })
        .with_kind(kind),
    ];
    libtest_mimic::run(&args, trials).exit();
}
