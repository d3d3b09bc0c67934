//! The eBPF load balancer's plan steps on the host kernel, which has veth,
//! bridges, cls_bpf and BPF (the Terway lab itself needs ipvlan and IPVS,
//! so its scenarios run in the VM): a lab with `ebpf:` and two veth pods,
//! no services.
//!
//! - `up` runs `BpfLoad`, a clsact qdisc per pod and `BpfAttach` per pod
//!   and hook through the one executor: `tc filter show` in each pod lists
//!   `lb_egress` on egress and `lb_ingress` on ingress, direct-action, and
//!   the programs are pinned beside the maps.
//! - The plan's `tc filter add ... object-pinned` lines, run with bash
//!   after deleting `up`'s filters, give the same `tc filter show`.
//! - A `BpfMaps` step run on the lab that is up through
//!   `engine::apply_steps` (as a scenario's overrides are) leaves exactly
//!   its services in the maps, read back as `labctl show lb` reads them,
//!   and the client's connection to the service address reaches the
//!   server: the attached programs translate it. A second, empty `BpfMaps`
//!   removes the service again.
//!
//! Without root, or on a build without the eBPF programs, the trial is
//! ignored with the reason (a failure under `LABCTL_REQUIRE_ALL=1`).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::process::Command;

use common::{Down, ensure, gate, ignored, labctl, ok};
use labctl::plan::{Action, Phase, Step};
use libtest_mimic::{Arguments, Failed, Trial};

mod common;

const TOPOLOGY: &str = "\
name: ebst
ebpf: { in_cluster_external: false }
vpc:
  subnets: [{ name: vsw, cidr: 10.0.0.0/24, gateway: 10.0.0.253 }]
nodes:
  - name: node
    interfaces: [{ name: eth0, subnet: vsw, address: 10.0.0.10 }]
    pod_cidr: 10.0.3.0/24
pods:
  - { name: client, node: node, address: 10.0.3.5 }
  - { name: server, node: node, address: 10.0.3.38, ports: [80] }
";

const VIP: Ipv4Addr = Ipv4Addr::new(192, 168, 27, 242);

/// A file removed however the trial ends.
struct RemoveFile(std::path::PathBuf);

impl Drop for RemoveFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn tc_filters(netns: &str, hook: &str) -> Result<String, Failed> {
    let o = ok(Command::new("tc").args(["-n", netns, "filter", "show", "dev", "eth0", hook]))?;
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

fn maps_step(name: &str, services: Vec<labctl::lb::BpfService>) -> Step {
    Step {
        phase: Phase::Changes,
        netns: format!("{name}-client"),
        action: Action::BpfMaps(labctl::kernel::ebpf::BpfMaps {
            pin_dir: labctl::lb::pin_dir(name).display().to_string(),
            services,
        }),
    }
}

fn steps_attach_and_program_a_live_lab() -> Result<(), Failed> {
    let name = common::unique("ebst");
    let file = std::env::temp_dir().join(format!("{name}.yaml"));
    std::fs::write(&file, TOPOLOGY)?;
    let _file = RemoveFile(file.clone());
    let _down = Down(name.clone());
    ok(labctl().args(["up", "-q", "--name", &name]).arg(&file))?;

    let pin_dir = labctl::lb::pin_dir(&name);
    for program in ["lb_egress", "lb_ingress"] {
        ensure(
            pin_dir.join(program).exists(),
            format!("{program} is not pinned in {}", pin_dir.display()),
        )?;
    }
    for pod in ["client", "server"] {
        let ns = format!("{name}-{pod}");
        for (hook, program) in [("egress", "lb_egress"), ("ingress", "lb_ingress")] {
            let shown = tc_filters(&ns, hook)?;
            ensure(
                shown.contains(&format!(
                    "bpf chain 0 handle 0x1 {program}:[*fsobj] direct-action"
                )),
                format!("{ns} {hook}: no {program} direct-action filter:\n{shown}"),
            )?;
            ensure(
                shown.lines().filter(|l| l.contains(" bpf ")).count() == 2,
                format!(
                    "{ns} {hook}: one filter expected (a filter line and its handle line):\n{shown}"
                ),
            )?;
        }
    }

    // The plan's own `tc` lines, run with bash on the server pod after
    // deleting what `up` attached, attach the same: `tc filter show` is
    // the same, program ids included (both use the pinned programs).
    let lab = labctl_topology::load(&file, &Default::default())?;
    let lab = labctl::Lab {
        name: name.clone(),
        ..lab
    };
    let server = format!("{name}-server");
    let lines: Vec<String> = labctl::plan::plan(&lab)
        .steps
        .iter()
        .filter(|s| s.netns == server && matches!(s.action, Action::BpfAttach { .. }))
        .map(|s| s.to_string())
        .collect();
    ensure(lines.len() == 2, format!("two attach steps: {lines:?}"))?;
    let by_up = [
        tc_filters(&server, "egress")?,
        tc_filters(&server, "ingress")?,
    ];
    for hook in ["egress", "ingress"] {
        ok(Command::new("tc").args(["-n", &server, "filter", "del", "dev", "eth0", hook]))?;
    }
    ok(Command::new("bash").args(["-c", &format!("set -e\n{}", lines.join("\n"))]))?;
    let by_script = [
        tc_filters(&server, "egress")?,
        tc_filters(&server, "ingress")?,
    ];
    ensure(
        by_up == by_script,
        format!("up attached {by_up:?}, the script {by_script:?}"),
    )?;

    let record = labctl::state::load(&name)?.ok_or("the lab has no record")?;
    let service = labctl::lb::BpfService {
        vip: VIP,
        port: 80,
        protocol: labctl_topology::Protocol::Tcp,
        backends: vec![SocketAddrV4::new(Ipv4Addr::new(10, 0, 3, 38), 80)],
        pinned: Some(0),
    };
    labctl::engine::apply_steps(&record, &[maps_step(&name, vec![service])])?;
    let (services, _) = labctl::lb::services_and_flows(&name)?;
    ensure(
        services.len() == 1
            && services[0].service.to_string() == "192.168.27.242:80/TCP"
            && services[0].pinned_backend()
                == Some(SocketAddrV4::new(Ipv4Addr::new(10, 0, 3, 38), 80)),
        format!("maps after the step: {services:?}"),
    )?;
    let req = labctl::traffic::Request::new(
        labctl::traffic::Kind::TcpConnect,
        SocketAddr::new(VIP.into(), 80),
    )
    .with_attempts(3);
    let outcome = labctl::traffic::run_client(&format!("{name}-client"), &req);
    ensure(
        outcome.result.is_ok(),
        format!("client -> {VIP}:80 through the attached programs: {outcome:?}"),
    )?;

    labctl::engine::apply_steps(&record, &[maps_step(&name, Vec::new())])?;
    let (services, flows) = labctl::lb::services_and_flows(&name)?;
    ensure(
        services.is_empty() && flows.is_empty(),
        format!("an empty maps step leaves {services:?} and {flows:?}"),
    )?;
    Ok(())
}

fn main() {
    let args = Arguments::from_args();
    let trials = vec![Trial::ignorable_test(
        "steps_attach_and_program_a_live_lab",
        || {
            if !labctl_lb::programs_built() {
                return ignored(format!(
                    "eBPF programs not built ({}): run ebpf/setup.sh and rebuild",
                    labctl_lb::skip_reason()
                ));
            }
            gate(steps_attach_and_program_a_live_lab)
        },
    )];
    libtest_mimic::run(&args, trials).exit();
}
