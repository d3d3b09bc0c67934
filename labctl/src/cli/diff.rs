//! `labctl diff`: run the same scenarios under two variants of a lab and
//! print what differs. Each side is a whole `labctl run -o json` of its own
//! lab (this binary, run again: the run machinery, the VM included, is
//! `run`'s), one side after the other; the comparison is
//! [`labctl::diff`]'s.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use labctl::diff::{self, SideInfo};
use labctl::engine::EngineError;
use labctl::html::ScenarioView;
use labctl_topology::{LAB_NAME_MAX, Lab};

use super::{Exit, Failure, Result, Vars, Where};

/// Run the same scenarios under two variants of a lab and print, per
/// scenario, what differs: result, the client the server saw, the path,
/// which interfaces saw the destination (service) address, the sightings,
/// conntrack, eBPF translations, IPVS and, in kube-proxy's nftables mode,
/// the chains of its table the request went through.
///
/// The two sides: a `--var KEY` given twice makes them (side A takes its
/// first value, B its second; a key given once applies to both), e.g.
/// `labctl diff topologies/kata-peer-pods.yaml --var arp_responder=on --var
/// arp_responder=off`; or a second topology file does (`labctl diff FILE1
/// FILE2`, every --var then applying to both). Each side is a whole `labctl
/// run` of a lab of its own, PREFIX-a then PREFIX-b, each taken down after
/// its run (in a VM when its kernel features need one, as `run` decides).
/// A side's own failed checks are reported by its run on stderr; they are
/// not the diff's. Exits 0 when both sides ran, however much differs;
/// non-zero, with the side's error, when one could not run.
#[derive(clap::Args)]
pub struct Args {
    /// Topology file (YAML) of side A, and of side B unless FILE2 is given.
    file: PathBuf,
    /// Side B's topology file, when the first of these names an existing
    /// file (scenario names never hold a `/`: `./NAME` is always a file),
    /// then the scenarios to compare (default: all of both sides').
    #[arg(value_name = "FILE2|SCENARIO")]
    rest: Vec<String>,
    #[command(flatten)]
    vars: Vars,
    /// Run the sides as labs PREFIX-a and PREFIX-b (default: side A's lab
    /// name, shortened to fit).
    #[arg(long, value_name = "PREFIX")]
    name: Option<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "text")]
    output: Format,
    #[command(flatten)]
    place: Where,
}

#[derive(clap::ValueEnum, Clone, Copy, PartialEq)]
enum Format {
    Text,
    Json,
}

/// One side, as it will run.
struct Side {
    /// `A` or `B`.
    name: &'static str,
    file: PathBuf,
    vars: BTreeMap<String, String>,
    lab: String,
    /// The scenarios asked for that this side has (empty: all of its own).
    scenarios: Vec<String>,
    /// How many scenarios it runs.
    count: usize,
}

pub fn run(args: Args) -> Result {
    let (a, b) = sides(&args)?;
    if !labctl::sys::is_root() {
        return Err(EngineError::NotRoot.into());
    }
    // Fresh labs only: a lab that is up under a side's name is someone's.
    for s in [&a, &b] {
        if labctl::state::load(&s.lab)
            .map_err(super::state_failure)?
            .is_some()
        {
            return Err(Failure::new(
                Exit::State,
                format!(
                    "lab `{}` is up; diff runs each side in a lab of its own: take it down \
                     (`labctl down {}`) or give another --name",
                    s.lab, s.lab
                ),
            ));
        }
    }
    let ra = run_side(&a, &args.place)?;
    let rb = run_side(&b, &args.place)?;
    let result = diff::compare(summary(&a, &ra), &ra, summary(&b, &rb), &rb);
    match args.output {
        Format::Text => print!("{}", result.render()),
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&result).expect("a diff is JSON")
        ),
    }
    Ok(())
}

/// The two sides the command line asks for, checked before anything runs
/// (and before root is needed): each nonsense a usage error.
fn sides(args: &Args) -> Result<(Side, Side)> {
    let usage = |msg: String| Failure::new(Exit::Usage, msg);
    let two_files = args.rest.first().is_some_and(|r| Path::new(r).is_file());
    // A file here named like a scenario of FILE: say so rather than guess.
    // Side A's vars are each key's first value either way.
    if two_files && !args.rest[0].contains('/') {
        let mut first = BTreeMap::new();
        for (k, v) in &args.vars.vars {
            first.entry(k.clone()).or_insert_with(|| v.clone());
        }
        let lab = labctl_topology::load(&args.file, &first)?;
        if lab.scenarios.iter().any(|s| s.name == args.rest[0]) {
            return Err(usage(format!(
                "`{0}` is both a file here and a scenario of {1}: write `./{0}` for the \
                 file; to compare the scenario, run diff from another directory",
                args.rest[0],
                args.file.display()
            )));
        }
    }
    let (vars_a, vars_b) =
        diff::sides(&args.vars.vars, two_files).map_err(|e| usage(e.to_string()))?;
    let (file_b, wanted) = match (two_files, args.rest.split_first()) {
        (true, Some((f, rest))) => (PathBuf::from(f), rest),
        _ => (args.file.clone(), &args.rest[..]),
    };
    let lab_a = labctl_topology::load(&args.file, &vars_a)?;
    let lab_b = labctl_topology::load(&file_b, &vars_b)?;
    // The same lab twice would differ only by chance (timing).
    let rendered = |f: &Path, v| labctl_topology::render(f, v).ok();
    if rendered(&args.file, &vars_a) == rendered(&file_b, &vars_b) {
        let why = if two_files {
            "the two files render alike"
        } else {
            "does the file use the variable, and do the values mean different things to it?"
        };
        return Err(usage(format!(
            "side A ({}) and side B ({}) make the same lab: nothing to compare ({why})",
            info(&args.file, &vars_a).label(),
            info(&file_b, &vars_b).label(),
        )));
    }
    for want in wanted {
        let has = |lab: &Lab| lab.scenarios.iter().any(|s| &s.name == want);
        if !has(&lab_a) && !has(&lab_b) {
            let mut known: Vec<&str> = lab_a.scenarios.iter().map(|s| s.name.as_str()).collect();
            for s in &lab_b.scenarios {
                if !known.contains(&s.name.as_str()) {
                    known.push(&s.name);
                }
            }
            return Err(usage(format!(
                "neither side has a scenario `{want}`; they have: {}",
                known.join(", ")
            )));
        }
    }
    let prefix = match &args.name {
        Some(p) => p.clone(),
        None => default_prefix(&lab_a.name),
    };
    let side = |name: &'static str,
                file: &Path,
                vars: BTreeMap<String, String>,
                lab: &Lab|
     -> Result<Side> {
        let lab_name = format!("{prefix}-{}", name.to_lowercase());
        labctl_topology::check_lab_name(&lab_name).map_err(|e| {
            usage(format!(
                "--name: side {name} would run as lab `{lab_name}`, and {e}"
            ))
        })?;
        let (scenarios, count) = if wanted.is_empty() {
            (Vec::new(), lab.scenarios.len())
        } else {
            let mine: Vec<String> = wanted
                .iter()
                .filter(|w| lab.scenarios.iter().any(|s| &&s.name == w))
                .cloned()
                .collect();
            let n = mine.len();
            (mine, n)
        };
        Ok(Side {
            name,
            file: file.to_path_buf(),
            vars,
            lab: lab_name,
            scenarios,
            count,
        })
    };
    let a = side("A", &args.file, vars_a, &lab_a)?;
    let b = side("B", &file_b, vars_b, &lab_b)?;
    Ok((a, b))
}

/// Side A's lab name, cut so that `-a` fits the lab name limit.
fn default_prefix(lab: &str) -> String {
    lab.chars().take(LAB_NAME_MAX - 2).collect()
}

fn info(file: &Path, vars: &BTreeMap<String, String>) -> SideInfo {
    SideInfo {
        file: file.display().to_string(),
        vars: vars.clone(),
        lab: String::new(),
        ran: 0,
        passed: 0,
    }
}

fn summary(side: &Side, reports: &[ScenarioView]) -> SideInfo {
    SideInfo {
        lab: side.lab.clone(),
        ran: reports.len(),
        passed: reports.iter().filter(|r| r.passed).count(),
        ..info(&side.file, &side.vars)
    }
}

/// Run one side: `labctl run -o json` of its lab, its stderr (progress, a
/// VM's boot, its own failed checks) passed through; its reports.
fn run_side(side: &Side, place: &Where) -> Result<Vec<ScenarioView>> {
    if side.count == 0 {
        return Ok(Vec::new());
    }
    if std::io::stderr().is_terminal() {
        eprintln!(
            "labctl diff: side {}: {} scenario(s) in lab {}",
            side.name, side.count, side.lab
        );
    }
    let exe = std::env::current_exe().map_err(|e| {
        Failure::new(
            Exit::Environment,
            format!("find labctl's own binary, to run side {}: {e}", side.name),
        )
    })?;
    let mut cmd = Command::new(exe);
    cmd.args(["run", "-o", "json", "--name", &side.lab]);
    for (k, v) in &side.vars {
        // One word: a value starting with `-` stays a value.
        cmd.arg(format!("--var={k}={v}"));
    }
    cmd.args(place.argv())
        .arg("--")
        .arg(&side.file)
        .args(&side.scenarios)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let out = cmd.output().map_err(|e| {
        Failure::new(
            Exit::Failed,
            format!("start `labctl run` for side {}: {e}", side.name),
        )
    })?;
    // Reports, whether or not each passed its own checks (`run` exits 1
    // when one did not): the side ran.
    if let Ok(views) = serde_json::from_slice::<Vec<ScenarioView>>(&out.stdout) {
        let failed = views.iter().filter(|v| !v.passed).count();
        if failed > 0 {
            eprintln!(
                "labctl diff: side {}: {failed} of {} scenario(s) failed their own checks \
                 (above); the diff compares what they did",
                side.name,
                views.len()
            );
        }
        return Ok(views);
    }
    let how = match out.status.code() {
        Some(c) => format!("exit code {c}"),
        None => "killed by a signal".into(),
    };
    Err(Failure::new(
        exit_of(out.status.code()),
        format!(
            "side {} did not run: `labctl run` of lab `{}` ended with {how} and no reports \
             (its error is above)",
            side.name, side.lab
        ),
    ))
}

/// The exit code of a side's `labctl run`, passed on as diff's own.
fn exit_of(code: Option<i32>) -> Exit {
    match code {
        Some(2) => Exit::Usage,
        Some(3) => Exit::State,
        Some(4) => Exit::Environment,
        Some(5) => Exit::Busy,
        _ => Exit::Failed,
    }
}
