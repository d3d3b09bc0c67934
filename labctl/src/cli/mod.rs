//! Command-line parsing and dispatch, error reporting and exit codes.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use labctl::engine::EngineError;
use labctl_topology::Lab;

mod completions;
mod diff;
mod down;
mod exec;
mod graph;
mod kernel;
mod monitor;
mod netem;
mod plan;
mod render;
mod run;
mod serve;
mod show;
mod status;
mod up;
mod validate;
mod vm;

/// Rebuild container-network data paths from real kernel objects, on one
/// Linux machine, and prove what each interface sees.
#[derive(Parser)]
#[command(name = "labctl", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Up(up::Args),
    Down(down::Args),
    Status(status::Args),
    Exec(exec::Args),
    Validate(validate::Args),
    Render(render::Args),
    Plan(plan::Args),
    Graph(graph::Args),
    Run(run::Args),
    Diff(diff::Args),
    Kernel(kernel::Args),
    Show(show::Args),
    Monitor(monitor::Args),
    Netem(netem::Args),
    Vm(vm::Args),
    /// Print the JSON schema of topology files.
    Schema,
    Completions(completions::CompletionsArgs),
    Man(completions::ManArgs),
    /// Inside a VM: serve requests from the host in DIR.
    #[command(name = "__agent", hide = true)]
    Agent {
        dir: PathBuf,
        /// Leave the tools where they are (see `labctl::vm::warm`).
        #[arg(long)]
        cold: bool,
    },
    /// Inside a VM: run a command, for `labctl vm exec`.
    #[command(name = "__exec", hide = true)]
    ExecIn {
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    #[command(name = "__serve", hide = true)]
    Serve(serve::Args),
}

/// Exit codes.
#[derive(Debug, Clone, Copy)]
pub enum Exit {
    /// 1: a kernel action or other runtime step failed.
    Failed = 1,
    /// 2: the topology file or the command line is wrong.
    Usage = 2,
    /// 3: the lab is in the wrong state (already up, not up).
    State = 3,
    /// 4: the environment cannot run labs (no root).
    Environment = 4,
    /// 5: another labctl holds the lab's lock (an `up`, `down` or `run`
    /// of it still going): nothing was done, and the same command later
    /// may succeed. Not 3, so that a script (or a test) never takes a lab
    /// it could not look at for one that is not up.
    Busy = 5,
}

impl Exit {
    /// The exit code `code` of another labctl (in a VM), as one of these;
    /// any other failure is [`Exit::Failed`].
    pub fn from_code(code: i32) -> Exit {
        match code {
            2 => Exit::Usage,
            3 => Exit::State,
            4 => Exit::Environment,
            5 => Exit::Busy,
            _ => Exit::Failed,
        }
    }
}

/// An error for the user, with its exit code. Topology errors are printed
/// by miette with the offending source line.
pub struct Failure {
    code: Exit,
    report: miette::Report,
    /// Text for logs and pipes, when it says more than the report's first line.
    plain: Option<String>,
}

impl Failure {
    pub fn new(code: Exit, msg: impl std::fmt::Display) -> Self {
        Failure {
            code,
            report: miette::miette!("{msg}"),
            plain: None,
        }
    }
}

impl From<EngineError> for Failure {
    fn from(e: EngineError) -> Self {
        let e = match e {
            EngineError::State(e) => return state_failure(e),
            e => e,
        };
        let code = engine_exit(&e);
        Failure::new(code, e)
    }
}

/// The exit code of an engine error (a state error's is [`state_failure`]'s).
pub fn engine_exit(e: &EngineError) -> Exit {
    match e {
        EngineError::State(labctl::state::StateError::BadName(_)) => Exit::Usage,
        EngineError::State(labctl::state::StateError::Busy { .. }) => Exit::Busy,
        EngineError::AlreadyUp { .. } | EngineError::NotUp(_) | EngineError::Conflict(_) => {
            Exit::State
        }
        // Missing kernel modules are the machine's, like a missing root.
        EngineError::NotRoot | EngineError::FileLimit { .. } | EngineError::Modules(_) => {
            Exit::Environment
        }
        EngineError::Ebpf(e) => show::lb_exit(e),
        // What the machine lacks to run a VM is the environment's; a
        // kernel nobody installed is the command line's.
        EngineError::Vm(
            labctl::vm::VmError::NoKernel | labctl::vm::VmError::MissingTool { .. },
        ) => Exit::Environment,
        EngineError::Vm(labctl::vm::VmError::UnknownKernel(_)) => Exit::Usage,
        // labctl in the VM said why, with its own exit code.
        EngineError::InVm { code, .. } => Exit::from_code(*code),
        _ => Exit::Failed,
    }
}

/// Say what `down` left alone and why, one line each.
/// A spinner on stderr for work that takes seconds (a VM boot), with the
/// time it has taken; hidden when stderr is not a terminal, so logs and
/// pipes stay clean.
pub fn spinner(message: String) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
            .expect("static template"),
    );
    bar.set_message(message);
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}

pub fn warn_left(left: &[String]) {
    for l in left {
        eprintln!("labctl: warning: {l}");
    }
}

/// A state error for the user: a bad lab name is a usage error, a busy lab
/// has its own code.
pub fn state_failure(e: labctl::state::StateError) -> Failure {
    use labctl::state::StateError;
    let code = match &e {
        StateError::BadName(_) => Exit::Usage,
        StateError::Busy { .. } => Exit::Busy,
        _ => Exit::Failed,
    };
    Failure::new(code, e)
}

impl From<labctl_topology::TopologyError> for Failure {
    fn from(e: labctl_topology::TopologyError) -> Self {
        // Every problem, one per line with its hint, like a compiler's
        // non-terminal output.
        let problems = e.problems();
        let plain = (!problems.is_empty()).then(|| {
            problems
                .iter()
                .map(|p| match &p.help {
                    Some(h) => format!(
                        "error: {p}
  help: {h}"
                    ),
                    None => format!("error: {p}"),
                })
                .collect::<Vec<_>>()
                .join("\n")
        });
        Failure {
            code: Exit::Usage,
            report: miette::Report::new(e),
            plain,
        }
    }
}

pub type Result<T = ()> = std::result::Result<T, Failure>;

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Up(a) => up::run(a),
        Command::Down(a) => down::run(a),
        Command::Status(a) => status::run(a),
        Command::Exec(a) => exec::run(a),
        Command::Validate(a) => validate::run(a),
        Command::Render(a) => render::run(a),
        Command::Plan(a) => plan::run(a),
        Command::Graph(a) => graph::run(a),
        Command::Run(a) => run::run(a),
        Command::Diff(a) => diff::run(a),
        Command::Completions(a) => completions::completions(a),
        Command::Man(a) => completions::man(a),
        Command::Kernel(a) => kernel::run(a),
        Command::Show(a) => show::run(a),
        Command::Monitor(a) => monitor::run(a),
        Command::Netem(a) => netem::run(a),
        Command::Vm(a) => vm::run(a),
        Command::Agent { dir, cold } => labctl::vm::agent(&dir, !cold)
            .map_err(|e| Failure::new(Exit::Failed, format!("agent: {e}"))),
        Command::ExecIn { command } => {
            use std::os::unix::process::CommandExt;
            let err = std::process::Command::new(&command[0])
                .args(&command[1..])
                .exec();
            Err(Failure::new(
                Exit::Failed,
                format!("cannot run `{}`: {err}", command[0]),
            ))
        }
        Command::Serve(a) => serve::run(a),
        Command::Schema => {
            println!(
                "{}",
                serde_json::to_string_pretty(&labctl_topology::schema()).expect("schema is JSON")
            );
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            if std::io::stderr().is_terminal() {
                eprintln!("{:?}", f.report);
            } else if let Some(plain) = &f.plain {
                eprintln!("{plain}");
            } else {
                eprintln!("error: {}", f.report);
            }
            ExitCode::from(f.code as u8)
        }
    }
}

/// `-o table|json`, for the commands that print tables.
#[derive(clap::ValueEnum, Clone, Copy, PartialEq)]
pub enum TableFormat {
    Table,
    Json,
}

/// `--var KEY=VALUE` options shared by the commands that read a topology.
#[derive(clap::Args, Debug, Default)]
pub struct Vars {
    /// Set a template variable of the topology file (repeatable), e.g.
    /// `--var pods=1000`.
    #[arg(long = "var", value_name = "KEY=VALUE", value_parser = parse_var)]
    vars: Vec<(String, String)>,
}

impl Vars {
    pub fn map(&self) -> BTreeMap<String, String> {
        self.vars.iter().cloned().collect()
    }
}

fn parse_var(s: &str) -> std::result::Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("`{s}` is not KEY=VALUE"))
}

/// Read and validate a topology file.
pub fn load(file: &Path, vars: &Vars) -> Result<Lab> {
    Ok(labctl_topology::load(file, &vars.map())?)
}

/// `down` and friends accept a topology file or a lab name.
pub fn lab_name(file_or_lab: &str, vars: &Vars) -> Result<String> {
    let path = PathBuf::from(file_or_lab);
    if path.is_file() {
        Ok(load(&path, vars)?.name)
    } else {
        labctl_topology::check_lab_name(file_or_lab).map_err(|e| {
            Failure::new(
                Exit::Usage,
                format!("`{file_or_lab}` is neither a topology file nor a lab name: {e}"),
            )
        })?;
        Ok(file_or_lab.to_string())
    }
}

/// Run `labctl ARGV` inside a lab's VM and pass its output and exit code
/// through: the VM lab behaves like a host lab from the user's side.
/// The lab's record, or why there is none.
pub fn record(lab: &str) -> Result<labctl::state::LabState> {
    labctl::state::load(lab)
        .map_err(state_failure)?
        .ok_or_else(|| {
            Failure::new(
                Exit::State,
                format!("lab `{lab}` is not up (`labctl status` lists the labs that are)"),
            )
        })
}

/// How long a command forwarded into a VM may run (`exec` of a long
/// command, `run` of a whole file under software emulation).
const FORWARD_DEADLINE: std::time::Duration = std::time::Duration::from_secs(4 * 3600);

pub fn forward(vm: &labctl::vm::Vm, argv: Vec<String>) -> Result {
    let code = forward_code(vm, argv)?;
    if code != 0 {
        std::process::exit(code);
    }
    Ok(())
}

/// Run `labctl ARGV...` in the VM as a live session ([`labctl::vm::Vm::session`]):
/// output as it comes, stdin as `mode` says, for as long as the command
/// runs; exit with its code when it is not 0.
pub fn session(vm: &labctl::vm::Vm, argv: Vec<String>, mode: labctl::vm::Mode) -> Result {
    let reply = vm
        .session(&argv, mode, None)
        .map_err(|e| Failure::new(Exit::Failed, e))?;
    if reply.code != 0 {
        std::process::exit(reply.code);
    }
    Ok(())
}

/// [`forward`], returning the exit code instead of exiting with it.
pub fn forward_code(vm: &labctl::vm::Vm, argv: Vec<String>) -> Result<i32> {
    use std::io::Write;
    let reply = vm
        .call(&argv, FORWARD_DEADLINE)
        .map_err(|e| Failure::new(Exit::Failed, e))?;
    let _ = std::io::stdout().write_all(&reply.stdout);
    let _ = std::io::stderr().write_all(&reply.stderr);
    let _ = std::io::stdout().flush();
    Ok(reply.code)
}

/// Options choosing where a lab runs.
#[derive(clap::Args, Debug, Default, Clone)]
pub struct Where {
    /// Run the lab in a VM booted from an installed distro kernel
    /// (`labctl kernel list`), even when the host kernel could run it.
    #[arg(long)]
    vm: bool,
    /// The VM kernel, by release (implies --vm; default: the newest
    /// installed; env LABCTL_KERNEL).
    #[arg(long, value_name = "RELEASE", env = "LABCTL_KERNEL")]
    kernel: Option<String>,
}

impl Where {
    /// These options again, for a `labctl` command run on their behalf.
    pub fn argv(&self) -> Vec<String> {
        let mut argv = Vec::new();
        if self.vm {
            argv.push("--vm".into());
        }
        if let Some(k) = &self.kernel {
            argv.push(format!("--kernel={k}"));
        }
        argv
    }

    /// The VM kernel to use, or `None` for the host. Without --vm/--kernel
    /// the host is used when its kernel has every feature the lab needs;
    /// otherwise an installed VM kernel is, and the user is told so.
    pub fn decide(&self, lab: &Lab) -> Result<Option<labctl::vm::Kernel>> {
        use labctl::{features, vm};
        if !labctl::sys::is_root() {
            return Err(EngineError::NotRoot.into());
        }
        if self.vm || self.kernel.is_some() {
            return vm::choose(self.kernel.as_deref())
                .map(Some)
                .map_err(|e| Failure::new(Exit::Environment, e));
        }
        let need = features::required(lab);
        let probes = features::probe(&need)
            .map_err(|e| Failure::new(Exit::Environment, format!("probe kernel features: {e}")))?;
        let missing: Vec<&features::Probe> = probes.iter().filter(|p| !p.present).collect();
        if missing.is_empty() {
            return Ok(None);
        }
        match vm::choose(None) {
            Ok(k) => {
                let names: Vec<String> = missing.iter().map(|p| p.feature.to_string()).collect();
                eprintln!(
                    "labctl: the host kernel {} lacks {}; running lab `{}` in a VM with kernel {}",
                    features::kernel_release(),
                    names.join(", "),
                    lab.name,
                    k.release
                );
                Ok(Some(k))
            }
            Err(_) => Err(Failure::new(
                Exit::Environment,
                features::missing_message(&missing),
            )),
        }
    }
}

/// What a VM lab's spinner says while it comes up: a boot, or the shared
/// VM of its kernel ([`labctl::vm::shared`]) when one is ready.
pub fn vm_up_message(lab: &str, kernel: &labctl::vm::Kernel) -> String {
    if labctl::vm::shared::find(&kernel.release).is_some() {
        format!(
            "bringing `{lab}` up in the shared VM (kernel {})",
            kernel.release
        )
    } else {
        format!(
            "booting a VM (kernel {}) and bringing `{lab}` up in it",
            kernel.release
        )
    }
}

/// The argv to repeat a topology command inside a VM: the file made
/// absolute (the VM sees the host's root filesystem), vars and name kept.
pub fn vm_argv(cmd: &str, file: &Path, vars: &Vars, name: &str) -> Vec<String> {
    let abs = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
    let mut argv = vec![cmd.to_string(), "--name".into(), name.to_string()];
    for (k, v) in &vars.vars {
        argv.push("--var".into());
        argv.push(format!("{k}={v}"));
    }
    argv.push(abs.display().to_string());
    argv
}

#[cfg(test)]
mod tests {
    use super::*;
    use labctl::vm::VmError;

    /// A lab whose `up` fails inside the VM exits as labctl there did (an
    /// unbuilt eBPF object is 4 there, so 4 here, not 1); the VM runtime's
    /// own errors say whose fault they are.
    #[test]
    fn vm_failures_keep_their_exit_codes() {
        let code = |e: EngineError| engine_exit(&e) as i32;
        let inside = |c: i32| EngineError::InVm {
            place: "VM",
            code: c,
            message: "x".into(),
        };
        assert_eq!(code(inside(4)), 4);
        assert_eq!(code(inside(3)), 3);
        assert_eq!(code(inside(2)), 2);
        assert_eq!(code(inside(1)), 1);
        assert_eq!(code(inside(101)), 1, "a panic inside is a failure");
        assert_eq!(code(EngineError::Vm(VmError::NoKernel)), 4);
        assert_eq!(
            code(EngineError::Vm(VmError::UnknownKernel("6.9".into()))),
            2
        );
        let gone = VmError::Gone {
            log: "/x/console.log".into(),
            last: String::new(),
        };
        assert_eq!(code(EngineError::Vm(gone)), 1);
        assert_eq!(
            inside(4).to_string(),
            "inside the VM: x",
            "the message is the VM's labctl's"
        );
    }
}
