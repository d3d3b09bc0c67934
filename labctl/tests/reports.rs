//! What CI systems and packet tools read from `labctl run`: the merged
//! pcapng of `--pcap` checked with tshark and tcpdump against the report's
//! sighting table, and the JUnit file of `--junit` for a scenario the
//! kernel makes fail (the Flannel lab with a VPC route removed), parsed
//! with an XML parser. Each on the host kernel and, through the VM
//! runtime, on a VM kernel: the files are written on the host either way.
//! Without root, tshark or a VM kernel a trial is reported ignored with
//! the reason.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Down, ensure, gate, ignored, labctl_here, ok, text, unique};

use libtest_mimic::{Arguments, Completion, Failed, Trial};

mod common;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn flannel() -> PathBuf {
    root().join("topologies/flannel.yaml")
}

/// The Flannel lab without services: it runs on this host's kernel.
const NO_SERVICES: [&str; 2] = ["--var", "services=off"];
/// Across the VPC, so a removed VPC route stops it.
const ACROSS: &str = "f2-pod-ip-other-node-ping";
/// The VPC route to node-206's pod CIDR (flannel.yaml).
const NODE_206_PODS: &str = "172.23.96.128/26";

/// Where a trial runs labctl's lab.
#[derive(Clone)]
enum Runtime {
    Host,
    /// In a VM with this kernel release.
    Vm(String),
}

impl Runtime {
    fn word(&self) -> &'static str {
        match self {
            Runtime::Host => "host",
            Runtime::Vm(_) => "vm",
        }
    }

    /// `--kernel RELEASE` for the VM.
    fn args(&self) -> Vec<String> {
        match self {
            Runtime::Host => Vec::new(),
            Runtime::Vm(k) => vec!["--kernel".into(), k.clone()],
        }
    }

    /// The kernel release a report from here must name.
    fn release(&self) -> String {
        match self {
            Runtime::Host => labctl::features::kernel_release(),
            Runtime::Vm(k) => k.clone(),
        }
    }
}

/// A directory removed when the trial ends.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Result<TempDir, Failed> {
        let d = std::env::temp_dir().join(format!("labctl-{}", unique(tag)));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d)?;
        Ok(TempDir(d))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `tshark -r FILE -T fields -e FIELD... [-Y FILTER]`, one row per packet.
fn tshark(file: &Path, fields: &[&str], filter: Option<&str>) -> Result<Vec<String>, Failed> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-n").arg("-r").arg(file).args(["-T", "fields"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    if let Some(f) = filter {
        cmd.args(["-Y", f]);
    }
    let o = ok(&mut cmd)?;
    Ok(String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::to_string)
        .collect())
}

/// `labctl run --pcap` of one scenario: the pcapng holds every interface
/// of the sighting table by its `ENTITY/IFNAME` name (tshark's
/// `frame.interface_name`), the IPv4 packets outside loopback are exactly
/// the table's, timestamps never go back, the first packet carries the
/// scenario's comment, and `tcpdump -r` reads all of it.
fn pcapng_matches_the_sighting_table(rt: &Runtime) -> Result<(), Failed> {
    if !have("tshark") {
        return Err("tshark is not installed".into());
    }
    // Host and VM trials run side by side: names of their own.
    let out = TempDir::new(&format!("pcap-{}", rt.word()))?;
    let name = unique(&format!("pc{}", &rt.word()[..1]));
    let _down = Down(name.clone());
    // The user's directory does not exist yet: labctl makes it.
    let dir = out.0.join("captures");
    let o = labctl_here()
        .args(["run", "-o", "json", "--name", &name])
        .args(NO_SERVICES)
        .args(rt.args())
        .arg("--pcap")
        .arg(&dir)
        .arg(flannel())
        .arg(ACROSS)
        .output()?;
    // Whatever the verdict (exit 1 when a check failed), the capture must
    // agree with the report.
    ensure(
        matches!(o.status.code(), Some(0 | 1)),
        format!("labctl run: {}", text(&o)),
    )?;
    let reports: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    let report = &reports[0];
    ensure(report["scenario"] == ACROSS, format!("report: {report:#}"))?;
    let table = report["table"].as_array().ok_or("no sighting table")?;
    let table_ifs: BTreeSet<String> = table
        .iter()
        .filter_map(|r| r["interface"].as_str().map(str::to_string))
        .collect();
    let table_packets: u64 = table.iter().filter_map(|r| r["packets"].as_u64()).sum();
    ensure(!table_ifs.is_empty(), "empty sighting table")?;

    let files: Vec<String> = std::fs::read_dir(&dir)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    ensure(
        files == [format!("{ACROSS}.pcapng")],
        format!("{} holds {files:?}", dir.display()),
    )?;
    let file = dir.join(format!("{ACROSS}.pcapng"));

    // Every packet's interface is one of the lab's, named ENTITY/IFNAME.
    let all = tshark(&file, &["frame.interface_name"], None)?;
    let lab = labctl_topology::load(
        &flannel(),
        &[("services".to_string(), "off".to_string())].into(),
    )?;
    let entities: BTreeSet<String> = lab.entities().into_iter().map(|(e, _)| e).collect();
    for n in &all {
        let entity = n.split_once('/').map(|(e, _)| e);
        ensure(
            entity.is_some_and(|e| entities.contains(e)),
            format!("interface name `{n}` is not ENTITY/IFNAME of the lab"),
        )?;
    }
    let all_ifs: BTreeSet<String> = all.iter().cloned().collect();
    ensure(
        table_ifs.is_subset(&all_ifs),
        format!("the pcapng lacks interfaces: table {table_ifs:?}, pcapng {all_ifs:?}"),
    )?;
    // The table is the IPv4 traffic outside loopback: the same interfaces
    // and the same number of packets.
    let ip = tshark(
        &file,
        &["frame.interface_name"],
        Some(r#"ip && !(frame.interface_name matches "/lo$")"#),
    )?;
    let ip_ifs: BTreeSet<String> = ip.iter().cloned().collect();
    ensure(
        ip_ifs == table_ifs,
        format!("IPv4 interfaces in the pcapng {ip_ifs:?}, sighting table {table_ifs:?}"),
    )?;
    ensure(
        ip.len() as u64 == table_packets,
        format!(
            "{} IPv4 packets in the pcapng, {table_packets} in the table",
            ip.len()
        ),
    )?;
    // Merged in kernel-timestamp order, nanoseconds kept.
    let times: Vec<String> = tshark(&file, &["frame.time_epoch"], None)?;
    let ns = |t: &str| -> Option<u128> {
        let (s, f) = t.split_once('.')?;
        Some(
            s.parse::<u128>().ok()? * 1_000_000_000
                + format!("{f:0<9}")[..9].parse::<u128>().ok()?,
        )
    };
    let times: Vec<u128> = times.iter().filter_map(|t| ns(t)).collect();
    ensure(
        times.len() == all.len() && times.windows(2).all(|w| w[0] <= w[1]),
        format!("timestamps out of order: {times:?}"),
    )?;
    ensure(
        times.iter().any(|t| t % 1000 != 0),
        "no timestamp has sub-microsecond digits",
    )?;
    let comments = tshark(&file, &["frame.comment"], Some("frame.number == 1"))?;
    ensure(
        comments
            .first()
            .is_some_and(|c| c.contains(ACROSS) && c.contains("result is connected")),
        format!("first packet's comment: {comments:?}"),
    )?;

    let o = ok(Command::new("tcpdump").arg("-nn").arg("-r").arg(&file))?;
    let lines = String::from_utf8_lossy(&o.stdout).lines().count();
    ensure(
        lines == all.len(),
        format!(
            "tcpdump read {lines} packets, tshark {}:\n{}",
            all.len(),
            String::from_utf8_lossy(&o.stdout)
        ),
    )?;
    Ok(())
}

/// The Flannel lab with the VPC route to node-206's pods removed: the
/// scenario across the VPC fails, and the JUnit file says exactly that,
/// with the failed checks in the failure's message, the report as its text
/// and where it ran in the properties.
fn junit_names_the_failed_check(rt: &Runtime) -> Result<(), Failed> {
    let out = TempDir::new(&format!("junit-{}", rt.word()))?;
    let name = unique(&format!("ju{}", &rt.word()[..1]));
    let down = Down(name.clone());
    let o = labctl_here()
        .args(["up", "-q", "--name", &name])
        .args(NO_SERVICES)
        .args(rt.args())
        .arg(flannel())
        .output()?;
    ensure(o.status.success(), format!("labctl up: {}", text(&o)))?;
    let route_del = [
        "ip",
        "-n",
        &format!("{name}-vpc"),
        "route",
        "del",
        NODE_206_PODS,
    ];
    let o = match rt {
        Runtime::Host => Command::new(route_del[0]).args(&route_del[1..]).output()?,
        // The lab's namespaces live in the VM: remove it there.
        Runtime::Vm(_) => labctl_here()
            .args(["exec", &name, "vpc", "--", route_del[0]])
            .args(&route_del[3..])
            .output()?,
    };
    ensure(o.status.success(), format!("ip route del: {}", text(&o)))?;
    let junit = out.0.join("report.xml");
    let o = labctl_here()
        .args(["run", "--name", &name])
        .args(NO_SERVICES)
        .arg("--junit")
        .arg(&junit)
        .arg(flannel())
        .arg(ACROSS)
        .output()?;
    drop(down);
    ensure(
        o.status.code() == Some(1),
        format!("want exit 1 (a failed scenario): {}", text(&o)),
    )?;
    let xml = std::fs::read_to_string(&junit)?;
    let doc = roxmltree::Document::parse(&xml).map_err(|e| format!("{e}:\n{xml}"))?;
    let suites: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name("testsuite"))
        .collect();
    ensure(suites.len() == 1, format!("want one testsuite:\n{xml}"))?;
    let suite = suites[0];
    ensure(
        suite.attribute("name") == Some("flannel services=off"),
        format!("suite name:\n{xml}"),
    )?;
    let props: BTreeSet<(String, String)> = suite
        .descendants()
        .filter(|n| n.has_tag_name("property"))
        .filter_map(|n| Some((n.attribute("name")?.into(), n.attribute("value")?.into())))
        .collect();
    for want in [
        ("kernel".to_string(), rt.release()),
        ("runtime".to_string(), rt.word().to_string()),
        ("var.services".to_string(), "off".to_string()),
    ] {
        ensure(
            props.contains(&want),
            format!("no property {want:?}:\n{xml}"),
        )?;
    }
    let cases: Vec<_> = suite
        .children()
        .filter(|n| n.has_tag_name("testcase"))
        .collect();
    let names: Vec<&str> = cases.iter().filter_map(|c| c.attribute("name")).collect();
    ensure(names == [ACROSS], format!("testcases:\n{xml}"))?;
    ensure(
        cases.iter().all(|c| {
            c.attribute("time")
                .is_some_and(|t| t.parse::<f64>().is_ok_and(|t| t > 0.0))
        }),
        format!("a testcase without its time:\n{xml}"),
    )?;
    let failures: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name("failure") || n.has_tag_name("error"))
        .collect();
    ensure(failures.len() == 1, format!("want one failure:\n{xml}"))?;
    let failure = failures[0];
    ensure(
        failure.has_tag_name("failure")
            && failure.parent().and_then(|p| p.attribute("name")) == Some(ACROSS),
        format!("the failure is not {ACROSS}'s:\n{xml}"),
    )?;
    // The checks the kernel failed: the ping got no answer, and the golden
    // file (whose path goes on past the VPC) differs.
    let message = failure.attribute("message").unwrap_or_default();
    ensure(
        message.starts_with("failed: result is connected") && message.contains("; golden "),
        format!("failure message `{message}` does not name the failed checks"),
    )?;
    let body = failure.text().unwrap_or_default();
    ensure(
        body.contains(&format!("FAIL {ACROSS}"))
            && body.contains("[FAILED] result is connected (got: unreachable"),
        format!("failure text is not the report:\n{body}"),
    )?;
    Ok(())
}

/// The runtimes to try: the host, and the VM when a kernel is installed
/// (`LABCTL_KERNEL` picks it).
fn vm_kernel() -> Result<String, String> {
    labctl::vm::choose(std::env::var("LABCTL_KERNEL").ok().as_deref())
        .map(|k| k.release)
        .map_err(|e| format!("no VM kernel: {e}"))
}

fn trial(
    name: &str,
    rt: Runtime,
    needs_tshark: bool,
    f: fn(&Runtime) -> Result<(), Failed>,
) -> Trial {
    let kind = match &rt {
        Runtime::Host => format!("host {}", labctl::features::kernel_release()),
        Runtime::Vm(k) => format!("vm {k}"),
    };
    Trial::ignorable_test(name, move || -> Result<Completion, Failed> {
        if !nix::unistd::geteuid().is_root() {
            // Reported ignored: needs root.
            return gate(|| Ok(()));
        }
        if needs_tshark && !have("tshark") {
            return ignored("tshark is not installed (Debian's tshark package; ./lab installs it)");
        }
        f(&rt).map(|()| Completion::Completed)
    })
    .with_kind(kind)
}

fn main() {
    let args = Arguments::from_args();
    let mut trials = vec![
        trial(
            "pcapng_matches_the_sighting_table",
            Runtime::Host,
            true,
            pcapng_matches_the_sighting_table,
        ),
        trial(
            "junit_names_the_failed_check",
            Runtime::Host,
            false,
            junit_names_the_failed_check,
        ),
    ];
    for (name, needs_tshark, f) in [
        (
            "vm::pcapng_matches_the_sighting_table",
            true,
            pcapng_matches_the_sighting_table as fn(&Runtime) -> Result<(), Failed>,
        ),
        (
            "vm::junit_names_the_failed_check",
            false,
            junit_names_the_failed_check,
        ),
    ] {
        match vm_kernel() {
            Ok(k) => trials.push(trial(name, Runtime::Vm(k), needs_tshark, f)),
            Err(why) => trials.push(
                Trial::ignorable_test(name, move || ignored(why.clone())).with_kind("nowhere"),
            ),
        }
    }
    libtest_mimic::run(&args, trials).exit();
}
