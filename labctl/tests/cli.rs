//! The command line without root: validation messages, exit codes, render
//! and plan output.

use std::process::Command;

fn labctl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_labctl"))
}

fn topo(name: &str) -> String {
    format!("{}/../topologies/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn validate_reports_every_problem_with_its_location() {
    let dir = std::env::temp_dir().join(format!("labctl-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.yaml");
    std::fs::write(
        &file,
        "name: bad\nvpc:\n  subnets:\n    - { name: vsw-a, cidr: 10.0.0.0/24, gateway: 10.0.0.253 }\n  \
         routes:\n    - { destination: 172.23.96.0/26, next_hop: node-18 }\nnodes:\n  - name: node-180\n    \
         interfaces:\n      - { name: eth0, subnet: vsw-a, address: 10.0.2.180 }\n    pod_cidr: 172.23.96.0/26\n",
    )
    .unwrap();
    let o = labctl().arg("validate").arg(&file).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    let f = file.display();
    assert!(
        err.contains(&format!("error: {f}:6:48: unknown node `node-18`")),
        "{err}"
    );
    assert!(err.contains("help: did you mean `node-180`?"), "{err}");
    assert!(
        err.contains(&format!(
            "error: {f}:10:47: address 10.0.2.180 is outside subnet vsw-a"
        )),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn shipped_topologies_validate() {
    for t in ["flannel.yaml", "scale.yaml"] {
        let o = labctl().arg("validate").arg(topo(t)).output().unwrap();
        assert!(
            o.status.success(),
            "{t}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

#[test]
fn render_expands_templates_with_vars() {
    let o = labctl()
        .args(["render", "--var", "nodes=2", "--var", "pods=3"])
        .arg(topo("scale.yaml"))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success());
    assert_eq!(out.matches("- { name: pod").count(), 6, "{out}");
}

#[test]
fn bad_lab_name_override_is_a_usage_error() {
    let o = labctl()
        .args(["plan", "--name", "Bad"])
        .arg(topo("flannel.yaml"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("must start with a lowercase letter"));
}

#[test]
fn completions_and_man_page_cover_every_subcommand() {
    let o = labctl().args(["completions", "bash"]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let bash = String::from_utf8(o.stdout).unwrap();
    let o = labctl().arg("man").output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let man = String::from_utf8(o.stdout).unwrap();
    assert!(
        man.starts_with(".ie \\n(.g .ds Aq") || man.contains(".TH labctl"),
        "{man}"
    );
    // Every subcommand `--help` lists is in both.
    let o = labctl().arg("--help").output().unwrap();
    let help = String::from_utf8(o.stdout).unwrap();
    let subcommands: Vec<&str> = help
        .split("Commands:")
        .nth(1)
        .unwrap()
        .lines()
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    assert!(subcommands.len() >= 10, "{help}");
    for c in subcommands {
        assert!(bash.contains(c), "completions lack `{c}`");
        assert!(man.contains(c), "man page lacks `{c}`");
    }
    // A shell it does not know is a usage error naming the valid ones.
    let o = labctl().args(["completions", "cmd.exe"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("bash"));
}

/// `diff`'s command line is checked before anything runs (and before
/// root is needed): each nonsense has its one message and the usage code.
#[test]
fn diff_refuses_sides_that_do_not_make_two_labs() {
    let kata = topo("kata-peer-pods.yaml");
    let cases: &[(&[&str], &str)] = &[
        (&[], "nothing to compare"),
        (&["--var", "arp_responder=off"], "nothing to compare"),
        (
            &["--var", "arp_responder=on", "--var", "arp_responder=on"],
            "given twice with the same value",
        ),
        (
            &[
                "--var",
                "arp_responder=on",
                "--var",
                "arp_responder=off",
                "--var",
                "arp_responder=x",
            ],
            "is given 3 times",
        ),
        // `yes` is not `off`: the file makes the same lab of both.
        (
            &["--var", "arp_responder=on", "--var", "arp_responder=yes"],
            "make the same lab",
        ),
        (
            &[
                "--var",
                "arp_responder=on",
                "--var",
                "arp_responder=off",
                "nope",
            ],
            "neither side has a scenario `nope`",
        ),
        (
            &[
                "--var",
                "arp_responder=on",
                "--var",
                "arp_responder=off",
                "--name",
                "x;rm -rf /",
            ],
            "--name: side A would run as lab",
        ),
    ];
    for (args, want) in cases {
        let o = labctl()
            .arg("diff")
            .arg(&kata)
            .args(*args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: want `{want}` in {err}");
        assert!(o.stdout.is_empty(), "{args:?}");
    }
    // Two files, one of them given twice with a var varying too.
    let o = labctl()
        .arg("diff")
        .arg(&kata)
        .arg(topo("cilium-host-routing.yaml"))
        .args(["--var", "x=1", "--var", "x=2"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("two topology files make the two sides"));
}
