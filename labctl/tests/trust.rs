//! labctl runs as root on files other people wrote: these trials hand it a
//! hostile state file, hostile lab names, namespaces someone else makes
//! while a lab comes and goes, a process holding a namespace it has not yet
//! entered, a global sysctl, runaway templates and a VM whose agent is
//! silent, and check that it acts on nothing outside the lab. A randomized
//! SIGKILL campaign checks that nothing of a lab outlives `down`.
//!
//! Without root every trial is reported as ignored with the reason; with
//! `LABCTL_REQUIRE_ALL=1` that is a failure.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Down, ensure, fails_with, gate, labctl, ok, run, text, unique};
use labctl::plan::NsSpec;
use labctl::state::{self, LabState};
use labctl_topology::Role;
use libtest_mimic::{Arguments, Failed, Trial};

mod common;

fn topo(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../topologies")
        .join(name)
}

/// The Flannel pod network alone (the host kernel has no IPVS).
fn flannel() -> Vec<std::ffi::OsString> {
    vec![
        "--var".into(),
        "services=off".into(),
        topo("flannel.yaml").into(),
    ]
}

fn netns_list() -> Vec<String> {
    let o = run(Command::new("ip").args(["netns", "list"]));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(String::from)
        .collect()
}

fn netns_of(lab: &str) -> Vec<String> {
    let prefix = format!("{lab}-");
    netns_list()
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect()
}

/// A namespace of someone else's (`ip netns add`), removed on drop.
struct Foreign(String);

impl Foreign {
    fn add(name: &str) -> Result<Self, Failed> {
        ok(Command::new("ip").args(["netns", "add", name]))?;
        Ok(Foreign(name.to_string()))
    }
    /// A process of someone else's inside it.
    fn sleeper(&self) -> Result<Sleeper, Failed> {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.0, "sleep", "300"])
            .spawn()?;
        // `ip netns exec` execs sleep in place: the pid is sleep's once
        // its command name says so.
        let pid = child.id();
        wait_for(Duration::from_secs(5), || {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sleep")
        })?;
        Ok(Sleeper(child))
    }
    fn exists(&self) -> bool {
        netns_list().contains(&self.0)
    }
}

impl Drop for Foreign {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.0])
            .output();
    }
}

/// A process killed on drop.
struct Sleeper(Child);

impl Sleeper {
    fn alive(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> Result<(), Failed> {
    let t = Instant::now();
    while !cond() {
        if t.elapsed() > limit {
            return Err(format!("condition not met within {limit:?}").into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

fn ns(name: &str, entity: &str) -> NsSpec {
    NsSpec {
        name: name.into(),
        entity: entity.into(),
        role: Role::Pod,
    }
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// (2) A record listing what is not the lab's: a path out of /run/netns, a
/// namespace of another name, and one of the lab's names that someone else
/// made (with a process inside). `down` deletes and kills none of them and
/// says so.
fn hostile_state_file() -> Result<(), Failed> {
    let lab = unique("hostile");
    let victim = std::env::temp_dir().join(format!("{lab}-victim"));
    std::fs::write(&victim, "keep me")?;
    let other = Foreign::add(&format!("{lab}x-other"))?;
    let same_name = Foreign::add(&format!("{lab}-foo"))?;
    let mut inside = same_name.sleeper()?;
    let mut record = LabState::new(
        &lab,
        None,
        vec![
            ns(&format!("../../..{}", victim.display()), "x"),
            ns(&other.0, "x-other"),
            ns(&same_name.0, "foo"),
        ],
    );
    record.complete = true;
    state::save(&record)?;
    let o = run(labctl().args(["down", &lab]));
    let err = stderr(&o);
    ensure(o.status.success(), text(&o))?;
    ensure(
        victim.exists(),
        format!("down deleted {}", victim.display()),
    )?;
    let _ = std::fs::remove_file(&victim);
    ensure(other.exists(), "down deleted a namespace of another name")?;
    ensure(
        same_name.exists(),
        "down deleted a namespace it did not make",
    )?;
    ensure(
        inside.alive(),
        "down killed a process it has no business with",
    )?;
    for needle in [
        "is not a name `up` gives",
        &format!(
            "namespace `{}` left alone: it carries no labctl mark",
            same_name.0
        ),
    ] {
        ensure(err.contains(needle), format!("no `{needle}` in: {err}"))?;
    }
    ensure(state::load(&lab)?.is_none(), "the record is still there")
}

/// (2) A VM record whose directory and pid are not labctl's: neither is
/// removed or signalled, for a directory outside labctl's and for its own
/// directory without the lab's mark.
fn hostile_vm_record() -> Result<(), Failed> {
    let lib = tempdir("vmlib")?;
    for (n, outside) in [true, false].into_iter().enumerate() {
        let lab = unique(&format!("hvm{n}"));
        let dir = if outside {
            lib.join(format!("elsewhere-{lab}"))
        } else {
            lib.join("vm").join(&lab)
        };
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("precious"), "keep me")?;
        let mut sleeper = Sleeper(Command::new("sleep").arg("300").process_group(0).spawn()?);
        state::save(&vm_record(&lab, &dir, sleeper.0.id()))?;
        let o = run(labctl()
            .env("LABCTL_LIB_DIR", &lib)
            .env("LABCTL_VM_AGENT_WAIT", "2")
            .args(["down", &lab]));
        ensure(o.status.success(), text(&o))?;
        ensure(
            dir.join("precious").exists(),
            format!("down removed {}", dir.display()),
        )?;
        ensure(sleeper.alive(), "down killed a process that is not its VM")?;
        let err = stderr(&o);
        let needle = if outside {
            "is not labctl's own for this lab"
        } else {
            "is not the VM labctl started"
        };
        ensure(err.contains(needle), format!("no `{needle}` in: {err}"))?;
    }
    Ok(())
}

/// A record of a lab in a VM at `dir`, run by `pid`, as `up --vm` writes it.
fn vm_record(lab: &str, dir: &std::path::Path, pid: u32) -> LabState {
    let mut record = LabState::new(lab, None, Vec::new());
    record.runtime = "vm".into();
    record.vm = Some(labctl::vm::Vm {
        dir: dir.to_path_buf(),
        pid,
        kernel: labctl::vm::Kernel {
            release: "0.0-fake".into(),
            vmlinuz: "/nonexistent".into(),
            modules: "/nonexistent".into(),
        },
        shared: false,
    });
    record.complete = true;
    record
}

/// A fresh directory under the system's temp dir, kept for the post-mortem.
fn tempdir(tag: &str) -> Result<PathBuf, Failed> {
    let dir = std::env::temp_dir().join(unique(tag));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// (3) Lab names that are paths are refused by every command that takes a
/// lab name, before anything is read, locked or written there.
fn hostile_lab_names() -> Result<(), Failed> {
    let dir = tempdir("names")?;
    let foreign = Foreign::add(&format!("{}-victim-ns", unique("names")))?;
    // A record anyone could have written where a traversal would lead.
    let planted = dir.join("victim.json");
    let json = format!(
        r#"{{"lab":"victim","file":null,"started":0,"pid":1,"complete":true,"runtime":"host","namespaces":[{{"name":"{}","entity":"victim-ns","role":"pod"}}]}}"#,
        foreign.0
    );
    std::fs::write(&planted, &json)?;
    let name = format!("/../../..{}/victim", dir.display());
    for args in [
        vec!["down", name.as_str()],
        vec!["status", name.as_str()],
        vec!["exec", name.as_str(), "x", "--", "true"],
        vec!["show", "conntrack", name.as_str(), "x"],
        vec!["monitor", name.as_str(), "--count", "1", "--timeout", "1"],
    ] {
        let o = run(labctl().args(&args));
        fails_with(&o, 2, "lab name").map_err(|e| format!("labctl {}: {e:?}", args.join(" ")))?;
    }
    let left: Vec<_> = std::fs::read_dir(&dir)?
        .flatten()
        .map(|e| e.file_name())
        .collect();
    ensure(
        left == vec![std::ffi::OsString::from("victim.json")],
        format!("files appeared beside the planted record: {left:?}"),
    )?;
    ensure(
        std::fs::read_to_string(&planted)? == json,
        "the planted record changed",
    )?;
    ensure(
        foreign.exists(),
        "a namespace the planted record lists is gone",
    )
}

/// The namespaces `up` would make for the small lab, in creation order.
fn planned(lab: &str) -> Result<Vec<String>, Failed> {
    let o = ok(labctl()
        .args(["plan", "-o", "json", "--name", lab])
        .args(flannel()))?;
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    Ok(plan["namespaces"]
        .as_array()
        .ok_or("plan without namespaces")?
        .iter()
        .filter_map(|n| n["name"].as_str().map(String::from))
        .collect())
}

/// (4) A namespace of the lab's name that someone else makes while `up`
/// runs: `up` fails, and its rollback removes everything of the lab but that
/// namespace and its process, and says so.
fn foreign_namespace_during_up() -> Result<(), Failed> {
    let lab = unique("during");
    let names = planned(&lab)?;
    let target = names.last().ok_or("no namespaces")?.clone();
    let up = labctl()
        .args(["up", "-q", "--name", &lab])
        .args(flannel())
        .env("LABCTL_STOP_AT", "recorded")
        .stderr(Stdio::piped())
        .spawn()?;
    let pid = up.id();
    let stopped = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('T'))
        })
    };
    wait_for(Duration::from_secs(20), stopped)?;
    let foreign = Foreign::add(&target)?;
    let mut inside = foreign.sleeper()?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGCONT,
    )?;
    let o = up.wait_with_output()?;
    let err = stderr(&o);
    ensure(o.status.code() == Some(1), format!("up: {}", text(&o)))?;
    ensure(
        foreign.exists(),
        format!("rollback deleted {target}: {err}"),
    )?;
    ensure(
        inside.alive(),
        "rollback killed the foreign namespace's process",
    )?;
    ensure(
        err.contains(&format!("namespace `{target}` left alone")),
        format!("up does not say what it left: {err}"),
    )?;
    ensure(
        netns_of(&lab) == vec![target.clone()],
        format!("after the rollback: {:?}", netns_of(&lab)),
    )?;
    ensure(
        state::load(&lab)?.is_none(),
        "the record of a rolled-back lab is kept",
    )
}

/// (4) After an interrupted `up`, someone makes one of the namespaces it did
/// not get to: `down` removes the rest and leaves that one.
fn foreign_namespace_after_interrupted_up() -> Result<(), Failed> {
    let lab = unique("after");
    let names = planned(&lab)?;
    let o = run(labctl()
        .args(["up", "-q", "--name", &lab])
        .args(flannel())
        .env("LABCTL_KILL_AT", "half-namespaces"));
    use std::os::unix::process::ExitStatusExt;
    ensure(
        o.status.signal() == Some(9),
        format!("not killed: {}", text(&o)),
    )?;
    let existing = netns_of(&lab);
    let target = names
        .iter()
        .rev()
        .find(|n| !existing.contains(n))
        .ok_or("every namespace exists already")?
        .clone();
    let foreign = Foreign::add(&target)?;
    let mut inside = foreign.sleeper()?;
    let o = run(labctl().args(["down", &lab]));
    ensure(o.status.success(), text(&o))?;
    ensure(foreign.exists(), format!("down deleted {target}"))?;
    ensure(
        inside.alive(),
        "down killed the foreign namespace's process",
    )?;
    ensure(
        stderr(&o).contains(&format!("namespace `{target}` left alone")),
        text(&o),
    )?;
    ensure(
        netns_of(&lab) == vec![target],
        format!("after down: {:?}", netns_of(&lab)),
    )
}

/// (5) A process that opened a lab namespace but is not inside it yet (as
/// the built-in servers are, started by an `up` killed at that moment) does
/// not survive `down`, neither does the namespace it held.
fn process_holding_a_namespace() -> Result<(), Failed> {
    let lab = unique("holder");
    let _down = Down(lab.clone());
    ok(labctl().args(["up", "-q", "--name", &lab]).args(flannel()))?;
    let path = format!("/run/netns/{lab}-centos");
    let mut holder = Sleeper(
        Command::new("python3")
            .args([
                "-c",
                "import os, sys, time\nfd = os.open(sys.argv[1], os.O_RDONLY)\nprint('open', flush=True)\ntime.sleep(300)",
                &path,
            ])
            .stdout(Stdio::piped())
            .spawn()?,
    );
    let mut line = String::new();
    use std::io::BufRead;
    std::io::BufReader::new(holder.0.stdout.take().ok_or("no stdout")?).read_line(&mut line)?;
    ensure(line.trim() == "open", format!("holder said {line:?}"))?;
    let ino = std::fs::metadata(&path).map(|m| std::os::unix::fs::MetadataExt::ino(&m))?;
    ok(labctl().args(["down", &lab]))?;
    wait_for(Duration::from_secs(5), || !holder.alive())
        .map_err(|_| "a process holding a lab namespace outlived down")?;
    // No process anywhere still has that namespace.
    let still = labctl::sys::pids_holding(&[(nsfs_dev()?, ino)].into_iter().collect());
    ensure(
        still.is_empty(),
        format!("namespace still held by {still:?}"),
    )
}

fn nsfs_dev() -> Result<u64, Failed> {
    Ok(std::os::unix::fs::MetadataExt::dev(&std::fs::metadata(
        "/proc/self/ns/net",
    )?))
}

/// The small Flannel lab with `sysctls` on its first node.
fn with_node_sysctl(key: &str, value: &str) -> Result<PathBuf, Failed> {
    let src = std::fs::read_to_string(topo("flannel.yaml"))?;
    let marker = "    pod_cidr: 172.23.96.0/26\n";
    ensure(src.contains(marker), "flannel.yaml changed shape")?;
    let patched = src.replacen(
        marker,
        &format!("{marker}    sysctls: {{ {key}: {value} }}\n"),
        1,
    );
    let file = std::env::temp_dir().join(format!("{}.yaml", unique(&key.replace('.', "-"))));
    std::fs::write(&file, patched)?;
    Ok(file)
}

/// (1) Sysctls that are not per network namespace are refused, located,
/// by validate and up alike, and the host's values do not move.
fn global_sysctl_refused() -> Result<(), Failed> {
    let lease = "/proc/sys/fs/lease-break-time";
    let core = "/proc/sys/kernel/core_pattern";
    let before = (
        std::fs::read_to_string(lease)?,
        std::fs::read_to_string(core)?,
    );
    for (key, value) in [
        ("fs.lease-break-time", "46"),
        ("kernel.core_pattern", "'|/bin/touch /tmp/pwned'"),
    ] {
        let file = with_node_sysctl(key, value)?;
        for cmd in ["validate", "up", "plan"] {
            let o = run(labctl().arg(cmd).args(["--var", "services=off"]).arg(&file));
            let at = format!("{}:", file.display());
            fails_with(&o, 2, key).map_err(|e| format!("{cmd} {key}: {e:?}"))?;
            ensure(
                stderr(&o).contains(&at),
                format!("{cmd} {key}: not located: {}", text(&o)),
            )?;
        }
        let _ = std::fs::remove_file(&file);
    }
    let after = (
        std::fs::read_to_string(lease)?,
        std::fs::read_to_string(core)?,
    );
    ensure(
        before == after,
        format!("host sysctls moved: {before:?} -> {after:?}"),
    )
}

/// (6) Templates that would run forever or fill memory end within seconds
/// with a clear error, in validate, render and plan, and memory stays
/// bounded.
fn runaway_templates() -> Result<(), Failed> {
    let loops = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}\nname: x\n";
    let big =
        "{% set s = 'x' * 1000000 %}{% for i in range(100000) %}{{ s }}{% endfor %}\nname: x\n";
    for (tag, src) in [("loops", loops), ("big", big)] {
        let file = std::env::temp_dir().join(format!("{}.yaml", unique(tag)));
        std::fs::write(&file, src)?;
        for cmd in ["validate", "render", "plan"] {
            let t = Instant::now();
            let o = run(labctl().arg(cmd).arg(&file));
            let took = t.elapsed();
            ensure(
                o.status.code() == Some(2)
                    && ["fuel", "limit", "exceeds"]
                        .iter()
                        .any(|w| stderr(&o).contains(w)),
                format!("{cmd} {tag}: {}", text(&o)),
            )?;
            ensure(
                took < Duration::from_secs(10),
                format!("{cmd} {tag} took {took:?}"),
            )?;
        }
        let _ = std::fs::remove_file(&file);
    }
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)?;
    // ru_maxrss is in KiB: the largest child of this process so far.
    let max_mib = usage.max_rss() / 1024;
    ensure(
        max_mib < 1024,
        format!("a labctl child reached {max_mib} MiB"),
    )
}

/// (8) A VM whose agent does not answer: commands give up after the
/// deadline with a clear error, and `down` stops the VM by force (only
/// that process) and forgets the lab.
fn silent_vm_agent() -> Result<(), Failed> {
    let lib = tempdir("silent")?;
    let lab = unique("silent");
    let dir = lib.join("vm").join(&lab);
    std::fs::create_dir_all(&dir)?;
    // A stand-in for vng that never starts an agent, recognisable the way
    // labctl recognises its VM: its own process group, `--rwdir=DIR`.
    let mut fake = Sleeper(
        Command::new("python3")
            .args(["-c", "import time; time.sleep(300)"])
            .arg(format!("--rwdir={}", dir.display()))
            .process_group(0)
            .spawn()?,
    );
    let mut bystander = Sleeper(Command::new("sleep").arg("300").spawn()?);
    let record = vm_record(&lab, &dir, fake.0.id());
    std::fs::write(dir.join("owner"), record.mark())?;
    state::save(&record)?;
    let quick = |args: &[&str]| {
        let t = Instant::now();
        let o = run(labctl()
            .env("LABCTL_LIB_DIR", &lib)
            .env("LABCTL_VM_AGENT_WAIT", "2")
            .args(args));
        (o, t.elapsed())
    };
    let (o, took) = quick(&["exec", &lab, "pod", "--", "true"]);
    fails_with(&o, 1, "agent did not take the request within 2 s")?;
    ensure(
        took < Duration::from_secs(10),
        format!("exec took {took:?}"),
    )?;
    let (o, took) = quick(&["down", &lab]);
    ensure(o.status.success(), text(&o))?;
    ensure(
        stderr(&o).contains("stopped by force"),
        format!("down does not say it forced the VM: {}", text(&o)),
    )?;
    ensure(
        took < Duration::from_secs(10),
        format!("down took {took:?}"),
    )?;
    wait_for(Duration::from_secs(5), || !fake.alive())
        .map_err(|_| "the silent VM survived down")?;
    ensure(bystander.alive(), "down killed a bystander")?;
    ensure(!dir.exists(), "the VM directory is still there")?;
    ensure(state::load(&lab)?.is_none(), "the record is still there")
}

/// The README's privilege claim: a user who is not root but holds the
/// capabilities it lists brings a lab up, runs its scenarios, execs into it
/// and takes it down; with only CAP_SYS_ADMIN and CAP_NET_ADMIN, labctl
/// refuses at once with exit 4, naming what it needs.
fn capabilities_suffice() -> Result<(), Failed> {
    // Not beside the SIGKILL campaign: its load is not what this checks.
    let _alone = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let caps: Vec<String> = labctl::sys::LAB_CAPS
        .iter()
        .map(|(_, name)| format!("+{}", name.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    let as_user = |caps: &str| {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(format!("--inh-caps={caps}"))
            .arg(format!("--ambient-caps={caps}"))
            .args(["env", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"])
            .arg(
                std::env::var_os("LABCTL_TEST_LABCTL")
                    .unwrap_or(env!("CARGO_BIN_EXE_labctl").into()),
            );
        c
    };
    let lab = unique("caps");
    let _down = Down(lab.clone());
    let all = caps.join(",");
    ok(as_user(&all)
        .args(["up", "-q", "--name", &lab])
        .args(flannel()))?;
    let uid = ok(as_user(&all).args(["exec", &lab, "centos", "--", "id", "-u"]))?;
    ensure(
        String::from_utf8_lossy(&uid.stdout).trim() == "65534",
        format!("exec ran as {}", String::from_utf8_lossy(&uid.stdout)),
    )?;
    ok(as_user(&all).args([
        "exec",
        &lab,
        "centos",
        "--",
        "ping",
        "-c1",
        "-W2",
        "172.23.96.163",
    ]))?;
    let o = ok(as_user(&all).args(["run", "--name", &lab]).args(flannel()))?;
    ensure(
        String::from_utf8_lossy(&o.stdout).contains("4 passed, 0 failed"),
        text(&o),
    )?;
    ok(as_user(&all).args(["down", &lab]))?;
    ensure(
        netns_of(&lab).is_empty(),
        format!("left {:?}", netns_of(&lab)),
    )?;
    let o = run(as_user("+sys_admin,+net_admin")
        .args(["up", "--name", &lab])
        .args(flannel()));
    fails_with(&o, 4, "CAP_DAC_OVERRIDE")?;
    ensure(netns_of(&lab).is_empty(), "a refused up made namespaces")
}

/// Trials that must not run beside each other.
static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A small xorshift generator: the campaign prints its seed, so a failure
/// can be replayed with `LABCTL_TRUST_SEED`.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Everything of `lab` that might outlive it: namespaces, /run/netns
/// files, state, lock and temp files, processes started for it.
/// A lab another labctl is working on: `up`, `down` and `status` refuse at
/// once with their own exit code (5, not 3 "not up", which a script would
/// take for a lab that is gone) and change nothing; once the holder lets
/// go, `down` says the lab is not up (3).
fn busy_lab_has_its_own_code() -> Result<(), Failed> {
    let lab = unique("busy");
    let held = state::lock(&lab)?;
    for args in [
        vec!["down".to_string(), "-q".into(), lab.clone()],
        vec!["up".into(), "-q".into(), "--name".into(), lab.clone()]
            .into_iter()
            .chain(
                flannel()
                    .into_iter()
                    .map(|a| a.to_string_lossy().into_owned()),
            )
            .collect(),
    ] {
        let o = run(labctl().args(&args));
        ensure(
            o.status.code() == Some(5) && stderr(&o).contains("busy"),
            format!("`labctl {}` on a held lab: {}", args.join(" "), text(&o)),
        )?;
    }
    ensure(netns_of(&lab).is_empty(), "a refused `up` made namespaces")?;
    drop(held);
    let o = run(labctl().args(["down", "-q", &lab]));
    ensure(
        o.status.code() == Some(3),
        format!("`down` of a lab never up, once free: {}", text(&o)),
    )
}

fn leftovers(lab: &str) -> Vec<String> {
    let mut left: Vec<String> = netns_of(lab);
    let prefix = format!("{lab}-");
    if let Ok(entries) = std::fs::read_dir("/run/netns") {
        left.extend(
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&prefix))
                .map(|n| format!("/run/netns/{n}")),
        );
    }
    if let Ok(entries) = std::fs::read_dir(state::state_dir()) {
        left.extend(
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| {
                    let n = n.trim_start_matches('.');
                    n.strip_prefix(lab)
                        .is_some_and(|rest| rest.starts_with('.'))
                })
                .map(|n| format!("{}/{n}", state::state_dir().display())),
        );
    }
    if let Ok(procs) = std::fs::read_dir("/proc") {
        for p in procs.flatten() {
            let Ok(cmd) = std::fs::read(p.path().join("cmdline")) else {
                continue;
            };
            let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
            if args.len() > 2 && args[1] == b"__serve" && args[2] == lab.as_bytes() {
                left.push(format!("process {}", p.file_name().to_string_lossy()));
            }
        }
    }
    left
}

/// Host links: a lab must never leave one in our own namespace.
fn host_links() -> String {
    String::from_utf8_lossy(&run(Command::new("ip").args(["-o", "link", "show"])).stdout)
        .lines()
        .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// SIGKILL `up` (and sometimes `down`) after a random delay, then `down`:
/// over two lab sizes, nothing of the lab is left after any cycle.
fn randomized_sigkill() -> Result<(), Failed> {
    let _alone = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let seed = std::env::var("LABCTL_TRUST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1
        });
    eprintln!("randomized_sigkill: seed {seed} (LABCTL_TRUST_SEED replays it)");
    let mut rng = Rng(seed);
    let links = host_links();
    let sizes: [(&str, Vec<std::ffi::OsString>, u64, usize); 2] = [
        // The Flannel pod network: 10 namespaces, built-in servers.
        ("small", flannel(), 120, 60),
        // 4 nodes x 12 pods: 53 namespaces.
        (
            "big",
            vec![
                "--var".into(),
                "nodes=4".into(),
                "--var".into(),
                "pods=12".into(),
                topo("scale.yaml").into(),
            ],
            250,
            40,
        ),
    ];
    let (mut killed, mut total) = (0, 0);
    for (tag, args, span_ms, cycles) in sizes {
        for i in 0..cycles {
            let lab = format!("{}-{i}", unique(&format!("rk{tag}")));
            let delay = Duration::from_millis(rng.below(span_ms));
            let mut up = labctl()
                .args(["up", "-q", "--name", &lab])
                .args(&args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            std::thread::sleep(delay);
            total += 1;
            if up.try_wait()?.is_none() {
                killed += 1;
            }
            let _ = up.kill();
            let _ = up.wait();
            // Now and then `down` itself is killed first, then run again.
            if rng.below(4) == 0 {
                let mut down = labctl()
                    .args(["down", "-q", &lab])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()?;
                std::thread::sleep(Duration::from_millis(rng.below(40)));
                let _ = down.kill();
                let _ = down.wait();
            }
            let o = run(labctl().args(["down", "-q", &lab]));
            // Killed before its record, the lab never existed: exit 3.
            ensure(
                o.status.success() || o.status.code() == Some(3),
                format!("{lab} (after {delay:?}): {}", text(&o)),
            )?;
            let left = leftovers(&lab);
            ensure(
                left.is_empty(),
                format!("{lab}, killed after {delay:?} (seed {seed}): left {left:?}"),
            )?;
        }
    }
    eprintln!("randomized_sigkill: {killed} of {total} `up`s killed while running");
    ensure(links == host_links(), "the host's links changed")
}

fn main() {
    let args = Arguments::from_args();
    let trials = vec![
        Trial::ignorable_test("hostile_state_file", || gate(hostile_state_file)),
        Trial::ignorable_test("hostile_vm_record", || gate(hostile_vm_record)),
        Trial::ignorable_test("hostile_lab_names", || gate(hostile_lab_names)),
        Trial::ignorable_test("foreign_namespace_during_up", || {
            gate(foreign_namespace_during_up)
        }),
        Trial::ignorable_test("foreign_namespace_after_interrupted_up", || {
            gate(foreign_namespace_after_interrupted_up)
        }),
        Trial::ignorable_test("process_holding_a_namespace", || {
            gate(process_holding_a_namespace)
        }),
        Trial::ignorable_test("global_sysctl_refused", || gate(global_sysctl_refused)),
        Trial::ignorable_test("runaway_templates", || gate(runaway_templates)),
        Trial::ignorable_test("silent_vm_agent", || gate(silent_vm_agent)),
        Trial::ignorable_test("randomized_sigkill", || gate(randomized_sigkill)),
        Trial::ignorable_test("capabilities_suffice", || gate(capabilities_suffice)),
        Trial::ignorable_test("busy_lab_has_its_own_code", || {
            gate(busy_lab_has_its_own_code)
        }),
    ];
    libtest_mimic::run(&args, trials).exit();
}
