//! Command-line parsing and dispatch, error reporting and exit codes.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use labctl::engine::EngineError;
use labctl_topology::Lab;

mod down;
mod exec;
mod plan;
mod render;
mod run;
mod serve;
mod status;
mod up;
mod validate;

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
    Run(run::Args),
    /// Print the JSON schema of topology files.
    Schema,
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
    /// 3: the lab is in the wrong state (already up, not up, busy).
    State = 3,
    /// 4: the environment cannot run labs (no root).
    Environment = 4,
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
        let code = match &e {
            EngineError::AlreadyUp { .. } | EngineError::NotUp(_) | EngineError::Conflict(_) => {
                Exit::State
            }
            EngineError::State(labctl::state::StateError::Busy { .. }) => Exit::State,
            EngineError::NotRoot => Exit::Environment,
            _ => Exit::Failed,
        };
        Failure::new(code, e)
    }
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
        Command::Run(a) => run::run(a),
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
        Ok(file_or_lab.to_string())
    }
}
