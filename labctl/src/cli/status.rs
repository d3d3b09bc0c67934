//! `labctl status`: the labs that are up, and what the kernel has for them.

use comfy_table::{Table, presets::NOTHING};
use labctl::observe::{self, NsStatus};
use labctl::state::{self, LabState};
use serde::{Deserialize, Serialize};

use super::{Exit, Failure, Result, TableFormat as Format};

/// Show the labs that are up, or one lab's namespaces and interfaces. For a
/// lab in the VM runtime they are read inside its VM.
#[derive(clap::Args)]
pub struct Args {
    /// Lab name; without it, every lab.
    lab: Option<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table")]
    output: Format,
}

#[derive(Serialize)]
struct LabView {
    lab: String,
    file: Option<std::path::PathBuf>,
    runtime: String,
    complete: bool,
    namespaces: Vec<NsStatus>,
    /// The built-in servers (`labctl __serve`), when pods declare ports.
    #[serde(skip_serializing_if = "Option::is_none")]
    serve: Option<ServeView>,
}

#[derive(Serialize, Deserialize)]
struct ServeView {
    pid: u32,
    running: bool,
    served: Vec<ServedView>,
}

#[derive(Serialize, Deserialize)]
struct ServedView {
    netns: String,
    /// `80/tcp`, `53/udp` ...
    ports: Vec<String>,
}

/// What the VM says of its lab: `labctl status LAB -o json` inside.
#[derive(Deserialize)]
struct InVm {
    namespaces: Vec<NsStatus>,
    serve: Option<ServeView>,
}

/// How long the VM may take to read its lab (a big lab under emulation).
const VM_STATUS_DEADLINE: std::time::Duration = std::time::Duration::from_secs(120);

fn view(record: &LabState) -> Result<LabView> {
    if let Some(vm) = &record.vm {
        let argv = ["status", &record.lab, "-o", "json"].map(String::from);
        let reply = vm
            .session(&argv, labctl::vm::Mode::Capture, Some(VM_STATUS_DEADLINE))
            .map_err(|e| Failure::new(Exit::Failed, e))?;
        if reply.code != 0 {
            return Err(Failure::new(
                Exit::Failed,
                format!(
                    "`labctl status {}` in the VM: {}",
                    record.lab,
                    String::from_utf8_lossy(&reply.stderr).trim()
                ),
            ));
        }
        let inside: InVm = serde_json::from_slice(&reply.stdout).map_err(|e| {
            Failure::new(
                Exit::Failed,
                format!(
                    "`labctl status {}` in the VM said no status ({e})",
                    record.lab
                ),
            )
        })?;
        return Ok(LabView {
            lab: record.lab.clone(),
            file: record.file.clone(),
            runtime: format!("vm {}", vm.release()),
            complete: record.complete,
            namespaces: inside.namespaces,
            serve: inside.serve,
        });
    }
    Ok(LabView {
        lab: record.lab.clone(),
        file: record.file.clone(),
        runtime: match &record.vm {
            Some(vm) => format!("vm {}", vm.kernel.release),
            None => record.runtime.clone(),
        },
        complete: record.complete,
        namespaces: observe::lab_status(record).map_err(labctl::engine::EngineError::Runtime)?,
        serve: record.serve.as_ref().map(|s| ServeView {
            pid: s.pid,
            running: labctl::sys::process_alive(s.pid),
            served: s
                .served
                .iter()
                .map(|x| ServedView {
                    netns: x.netns.clone(),
                    ports: x.ports_text(),
                })
                .collect(),
        }),
    })
}

pub fn run(args: Args) -> Result {
    let records = match &args.lab {
        Some(lab) => vec![
            state::load(lab)
                .map_err(super::state_failure)?
                .ok_or_else(|| Failure::new(Exit::State, format!("lab `{lab}` is not up")))?,
        ],
        None => state::list().map_err(|e| Failure::new(Exit::Failed, e))?,
    };
    if args.output == Format::Json {
        let views = records.iter().map(view).collect::<Result<Vec<_>>>()?;
        let json = if args.lab.is_some() {
            serde_json::to_string_pretty(&views[0])
        } else {
            serde_json::to_string_pretty(&views)
        };
        println!("{}", json.expect("status is JSON"));
        return Ok(());
    }
    if args.lab.is_none() {
        if records.is_empty() {
            println!("no labs are up");
            return Ok(());
        }
        let mut t = Table::new();
        t.load_style(NOTHING)
            .set_header(["LAB", "NAMESPACES", "STATE", "RUNTIME", "FILE"]);
        for r in &records {
            // A VM lab's namespaces are in its VM; "?" when it does not say.
            let namespaces = match &r.vm {
                Some(_) => view(r).map_or("?".into(), |v| v.namespaces.len().to_string()),
                None => r.namespaces.len().to_string(),
            };
            t.add_row([
                r.lab.clone(),
                namespaces,
                if r.complete {
                    "up"
                } else {
                    "incomplete (run down)"
                }
                .to_string(),
                match &r.vm {
                    Some(vm) => format!("vm {}", vm.kernel.release),
                    None => r.runtime.clone(),
                },
                r.file
                    .as_ref()
                    .map(|f| f.display().to_string())
                    .unwrap_or_default(),
            ]);
        }
        println!("{t}");
        return Ok(());
    }
    let v = view(&records[0])?;
    let mut t = Table::new();
    t.load_style(NOTHING).set_header([
        "NAMESPACE",
        "ROLE",
        "INTERFACE",
        "KIND",
        "MAC",
        "ADDRESSES",
        "MASTER",
    ]);
    for ns in &v.namespaces {
        let role = format!("{:?}", ns.role).to_lowercase();
        if !ns.present {
            t.add_row([ns.name.clone(), role, "(missing)".into()]);
            continue;
        }
        for (i, itf) in ns.interfaces.iter().enumerate() {
            let (name, role) = if i == 0 {
                (ns.name.clone(), role.clone())
            } else {
                (String::new(), String::new())
            };
            t.add_row([
                name,
                role,
                format!("{}{}", itf.name, if itf.up { "" } else { " (down)" }),
                itf.kind.clone(),
                itf.mac.clone().unwrap_or_default(),
                itf.addresses.join(" "),
                itf.master.clone().unwrap_or_default(),
            ]);
        }
    }
    println!(
        "lab `{}` ({}){}",
        v.lab,
        v.runtime,
        if v.complete {
            ""
        } else {
            ": incomplete, run `labctl down`"
        }
    );
    println!("{t}");
    if let Some(serve) = &v.serve {
        let running = if serve.running { "" } else { ", not running" };
        println!("built-in servers (pid {}{running}):", serve.pid);
        let width = serve.served.iter().map(|s| s.netns.len()).max();
        let width = width.unwrap_or(0);
        for s in &serve.served {
            println!("  {:<width$}  {}", s.netns, s.ports.join(" "));
        }
    }
    Ok(())
}
