//! The IPVS client against a real kernel, each test in a fresh network
//! namespace. Where the host kernel has no IPVS (this project's build
//! machines), each kernel trial re-runs this very test binary inside a VM
//! booted from an installed distro kernel, where `ip_vs` loads, and passes
//! or fails with it; the trial's kind says where it ran. Without root, or
//! without IPVS and a VM kernel, a trial is reported ignored with the
//! reason (a failure under `LABCTL_REQUIRE_ALL=1`).

use std::net::Ipv4Addr;

use labctl::ipvs::{Dest, DestInfo, Forward, Ipvs, IpvsError, Protocol, Service, format_table};

/// Move this test's thread into a namespace of its own, with `lo` up.
/// Tests run on threads libtest made for them, so the rest of the process
/// is untouched.
///
/// `lo` matters: IPVS refuses a destination with EINVAL unless
/// `inet_addr_type()` calls its address local or unicast, and a namespace
/// without a single IPv4 address has no local routing table, so every
/// address counts as broadcast there.
fn fresh_netns() {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
        .expect("unshare(CLONE_NEWNET) needs root");
    // A child starts in the namespace of the thread that spawns it.
    let status = std::process::Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .expect("run ip");
    assert!(status.success(), "ip link set lo up: {status}");
}

fn services_and_dests_round_trip_through_the_kernel() {
    fresh_netns();
    let mut ipvs = Ipvs::open().expect("open IPVS");
    assert!(
        ipvs.services().unwrap().is_empty(),
        "fresh namespace has no services"
    );

    let vip = Service::new(Protocol::Tcp, Ipv4Addr::new(192, 168, 13, 23), 80);
    let a = Dest::new(Ipv4Addr::new(10, 0, 0, 2), 8080);
    let b = Dest {
        weight: 3,
        forward: Forward::Tunnel,
        ..Dest::new(Ipv4Addr::new(10, 0, 0, 3), 8080)
    };
    ipvs.add_service(&vip).unwrap();
    let err = ipvs.add_service(&vip).unwrap_err();
    assert_eq!(
        err.to_string(),
        "service 192.168.13.23:80/tcp already exists (File exists)"
    );
    ipvs.add_dest(&vip, &b).unwrap();
    ipvs.add_dest(&vip, &a).unwrap();
    let dns = Service {
        scheduler: "wrr".into(),
        ..Service::new(Protocol::Udp, Ipv4Addr::new(10, 96, 0, 10), 53)
    };
    ipvs.add_service(&dns).unwrap();

    let dump = ipvs.services().unwrap();
    print!("{}", format_table(&dump));
    cross_check_with_ipvsadm(&format_table(&dump));
    let idle = |dest: &Dest| DestInfo {
        dest: dest.clone(),
        active: 0,
        inactive: 0,
    };
    assert_eq!(
        dump,
        vec![
            (dns.clone(), vec![]),
            (vip.clone(), vec![idle(&a), idle(&b)])
        ]
    );

    ipvs.del_dest(&vip, &a).unwrap();
    let err = ipvs.del_dest(&vip, &a).unwrap_err();
    assert_eq!(err.errno(), Some(nix::libc::ENOENT), "{err}");
    assert_eq!(
        ipvs.services().unwrap(),
        vec![(dns.clone(), vec![]), (vip.clone(), vec![idle(&b)])]
    );

    let mut bad = vip.clone();
    bad.port = 81;
    bad.scheduler = "nosuch".into();
    let err = ipvs.add_service(&bad).unwrap_err();
    println!("{err}");
    assert_eq!(
        err.to_string(),
        "scheduler \"nosuch\" of service 192.168.13.23:81/tcp is not available \
         (No such file or directory)"
    );

    ipvs.del_service(&dns).unwrap();
    let err = ipvs.del_service(&dns).unwrap_err();
    assert_eq!(
        err.to_string(),
        "service 10.96.0.10:53/udp does not exist (No such process)"
    );
    ipvs.flush().unwrap();
    assert!(ipvs.services().unwrap().is_empty());
}

fn dest_in_a_namespace_without_addresses_is_explained() {
    // No `lo` up: no IPv4 address, no local table.
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
        .expect("unshare(CLONE_NEWNET) needs root");
    let mut ipvs = Ipvs::open().expect("open IPVS");
    let vip = Service::new(Protocol::Tcp, Ipv4Addr::new(192, 168, 13, 23), 80);
    ipvs.add_service(&vip).unwrap();
    let err = ipvs
        .add_dest(&vip, &Dest::new(Ipv4Addr::new(10, 0, 0, 2), 8080))
        .unwrap_err();
    println!("{err}");
    assert_eq!(err.errno(), Some(nix::libc::EINVAL));
    assert!(err.to_string().contains("without an IPv4 address"), "{err}");
    ipvs.flush().unwrap();
}

/// Where `ipvsadm` is installed, its `-Ln` must list the same lines as
/// [`format_table`] (ipvsadm pads the last column and may order services
/// differently, so lines are compared trimmed and sorted).
fn cross_check_with_ipvsadm(ours: &str) {
    let out = match std::process::Command::new("ipvsadm").arg("-Ln").output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!("ipvsadm not installed: cross-check skipped");
            return;
        }
        Err(e) => panic!("run ipvsadm: {e}"),
    };
    assert!(out.status.success(), "ipvsadm -Ln: {}", out.status);
    let text = String::from_utf8(out.stdout).unwrap();
    let lines = |t: &str| {
        let mut v: Vec<String> = t
            .lines()
            .filter(|l| !l.starts_with("IP Virtual Server version"))
            .map(|l| l.trim_end().to_string())
            .collect();
        v.sort();
        v
    };
    assert_eq!(lines(&text), lines(ours), "ipvsadm -Ln said:\n{text}");
    println!("ipvsadm -Ln agrees");
}

/// Runs everywhere: the family resolves, or the error says what is missing.
fn open_resolves_ipvs_or_says_which_module_is_missing() {
    match Ipvs::open() {
        Ok(mut ipvs) => {
            ipvs.services().expect("dump");
        }
        Err(e @ IpvsError::NoIpvs) => {
            assert!(
                e.to_string()
                    .starts_with("kernel has no IPVS (module ip_vs)"),
                "{e}"
            );
        }
        Err(e) => panic!("unexpected: {e}"),
    }
}

mod common;

use common::Place;

/// Where the kernel trials run: here if this kernel has IPVS.
fn place() -> Place {
    if std::env::var_os("LABCTL_IN_VM").is_some() || Ipvs::open().is_ok() {
        return Place::Here;
    }
    match labctl::vm::choose(std::env::var("LABCTL_KERNEL").ok().as_deref()) {
        Ok(k) => Place::Vm(k.release),
        Err(e) => Place::Nowhere(format!("the host kernel has no IPVS and {e}")),
    }
}

/// Run one trial of this binary inside a VM with `kernel`.
fn in_vm(kernel: &str, name: &str) -> Result<(), libtest_mimic::Failed> {
    common::in_vm(kernel, name, "modprobe ip_vs;", false).map(|_| ())
}

fn main() {
    use libtest_mimic::{Arguments, Trial};
    let args = Arguments::from_args();
    let place = if nix::unistd::geteuid().is_root() {
        place()
    } else {
        Place::Here // the root gate reports the trials ignored
    };
    let kind = place.kind();
    let kernel_trials: [(&str, fn()); 2] = [
        (
            "services_and_dests_round_trip_through_the_kernel",
            services_and_dests_round_trip_through_the_kernel,
        ),
        (
            "dest_in_a_namespace_without_addresses_is_explained",
            dest_in_a_namespace_without_addresses_is_explained,
        ),
    ];
    let mut trials = vec![Trial::test(
        "open_resolves_ipvs_or_says_which_module_is_missing",
        || {
            open_resolves_ipvs_or_says_which_module_is_missing();
            Ok(())
        },
    )];
    for (name, f) in kernel_trials {
        let place = place.clone();
        trials.push(
            Trial::ignorable_test(name, move || {
                common::gate(|| match place {
                    Place::Here => {
                        // Fresh namespaces per trial: on a thread of its own.
                        std::thread::spawn(f)
                            .join()
                            .map_err(|_| "the trial panicked".into())
                    }
                    Place::Vm(k) => in_vm(&k, name),
                    Place::Nowhere(why) => Err(why.into()),
                })
            })
            .with_kind(kind.clone()),
        );
    }
    libtest_mimic::run(&args, trials).exit();
}
