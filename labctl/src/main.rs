//! The `labctl` command line. Thin: one module per subcommand under `cli/`,
//! the clap doc comments are the help, and errors map to the exit codes
//! documented on [`cli::Exit`].

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
