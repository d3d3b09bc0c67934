//! `labctl netem`: impair one interface of a lab that is up, by hand.

use labctl::kernel::{Kernel, Netlink, qdisc};
use labctl::plan::{Action, Phase, Step};
use labctl_topology::{Netem, Percent, parse_netem_duration, parse_rate};

use super::{Exit, Failure, Result};

/// Put netem on an interface of a lab (what leaves the interface is
/// delayed, dropped, paced or reordered), or take it off, like `tc -n NS
/// qdisc replace dev IF root netem ...` inside the lab. Only the lab's own
/// namespaces are touched. A scenario's `changes: [{link: ..., netem:
/// ...}]` does the same for one scenario, on both ends of a link.
#[derive(clap::Args)]
pub struct Args {
    /// Lab name.
    lab: String,
    /// The interface: ENTITY/IFNAME (`node1/eth0`, `vpc/node1-eth0`).
    interface: String,
    /// Added delay, e.g. 20ms (units us, ms, s).
    #[arg(long)]
    delay: Option<String>,
    /// Random variation of the delay (needs --delay), e.g. 5ms.
    #[arg(long)]
    jitter: Option<String>,
    /// Packets dropped at random, e.g. 1%.
    #[arg(long)]
    loss: Option<String>,
    /// Bandwidth limit in bits per second, e.g. 10mbit (bit, kbit, mbit, gbit).
    #[arg(long)]
    rate: Option<String>,
    /// Packets sent ahead of the delayed ones (needs --delay), e.g. 25%.
    #[arg(long)]
    reorder: Option<String>,
    /// Remove the interface's netem queue instead.
    #[arg(long, conflicts_with_all = ["delay", "jitter", "loss", "rate", "reorder"])]
    clear: bool,
}

fn usage(msg: impl std::fmt::Display) -> Failure {
    Failure::new(Exit::Usage, msg)
}

/// The impairments from the flags, checked as the topology checks them.
fn netem(args: &Args) -> Result<Netem> {
    let field = |v: &Option<String>,
                 flag: &str,
                 parse: &dyn Fn(&str) -> std::result::Result<u64, String>| {
        v.as_deref()
            .map(|t| parse(t).map_err(|e| usage(format!("--{flag}: {e}"))))
            .transpose()
            .map(Option::unwrap_or_default)
    };
    let percent = |t: &str| Percent::parse(t).map(|p| u64::from(p.0));
    let duration = parse_netem_duration;
    let n = Netem {
        delay_ns: field(&args.delay, "delay", &duration)?,
        jitter_ns: field(&args.jitter, "jitter", &duration)?,
        loss: Percent(field(&args.loss, "loss", &percent)? as u32),
        rate_bps: field(&args.rate, "rate", &parse_rate)?,
        reorder: Percent(field(&args.reorder, "reorder", &percent)? as u32),
    };
    if n == Netem::default() {
        return Err(usage(
            "nothing to do: give --delay, --jitter, --loss, --rate or --reorder, or --clear",
        ));
    }
    if n.delay_ns == 0 && (n.jitter_ns > 0 || !n.reorder.is_zero()) {
        return Err(usage(
            "--jitter and --reorder work on delayed packets: add --delay (e.g. --delay 20ms)",
        ));
    }
    Ok(n)
}

pub fn run(args: Args) -> Result {
    labctl_topology::check_lab_name(&args.lab)
        .map_err(|e| usage(format!("`{}` is not a lab name: {e}", args.lab)))?;
    let action_netem = if args.clear {
        None
    } else {
        Some(netem(&args)?)
    };
    let record = super::record(&args.lab)?;
    if let Some(vm) = &record.vm {
        let mut argv = vec!["netem".into(), args.lab.clone(), args.interface.clone()];
        for (flag, v) in [
            ("--delay", &args.delay),
            ("--jitter", &args.jitter),
            ("--loss", &args.loss),
            ("--rate", &args.rate),
            ("--reorder", &args.reorder),
        ] {
            if let Some(v) = v {
                argv.push(flag.into());
                argv.push(v.clone());
            }
        }
        if args.clear {
            argv.push("--clear".into());
        }
        return super::forward(vm, argv);
    }
    let Some((entity, ifname)) = args.interface.split_once('/') else {
        return Err(usage(format!(
            "`{}` is not an interface: write ENTITY/IFNAME, e.g. node1/eth0",
            args.interface
        )));
    };
    let Some(ns) = record.netns_of(entity) else {
        let known: Vec<&str> = record
            .namespaces
            .iter()
            .map(|n| n.entity.as_str())
            .collect();
        return Err(usage(format!(
            "lab `{}` has no node, pod or client `{entity}`; it has: {}",
            args.lab,
            known.join(", ")
        )));
    };
    if !labctl::sys::is_root() {
        return Err(Failure::new(
            Exit::Environment,
            "labctl netem needs root (it changes a queue inside the lab's namespaces)",
        ));
    }
    let netns = ns.name.clone();
    let rt = labctl::engine::runtime()?;
    let failed = |e: labctl::kernel::KernelError| Failure::new(Exit::Failed, e);
    let text = rt.block_on(async {
        let mut kernel = Netlink::new(record.mark());
        kernel
            .attach(std::slice::from_ref(&netns))
            .map_err(failed)?;
        let links = kernel.links(&netns).await.map_err(failed)?;
        let Some(ifindex) = links.iter().find(|l| l.1 == ifname).map(|l| l.0) else {
            let names: Vec<&str> = links
                .iter()
                .map(|l| l.1.as_str())
                .filter(|n| *n != "lo")
                .collect();
            return Err(usage(format!(
                "`{entity}` has no interface `{ifname}`; it has: {}",
                names.join(", ")
            )));
        };
        let ifname = ifname.to_string();
        let action = match action_netem {
            Some(netem) => Action::Netem(qdisc::Netem {
                ifname,
                ifindex,
                netem,
            }),
            None => {
                let root = kernel.root_qdisc(&netns, ifindex).await.map_err(failed)?;
                if root.as_deref() != Some(labctl::netem::KIND) {
                    return Ok(format!(
                        "{entity}/{ifname} has no netem queue (root qdisc: {}); nothing to clear",
                        root.as_deref().unwrap_or("none")
                    ));
                }
                Action::QdiscDelete(qdisc::QdiscDelete { ifname, ifindex })
            }
        };
        let step = Step {
            phase: Phase::Changes,
            netns: netns.clone(),
            action,
        };
        kernel.run(&step).await.map_err(failed)?;
        Ok(step.to_string())
    })?;
    println!("{text}");
    Ok(())
}
