//! The `nin` command-line tool: parses the command line and sends each subcommand to its module.
//! Only this crate (and xtask) prints; libraries return errors.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod data;

/// Network-in-Network CIFAR model zoo.
#[derive(Debug, Parser)]
#[command(name = "nin", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The subcommands; `train`, `eval`, `predict`, `list` and `bench` join them later.
#[derive(Debug, Subcommand)]
enum Command {
    /// Download, verify and describe the CIFAR datasets.
    Data(data::DataArgs),
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Data(args) => data::run(args),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // A closed pipe (e.g. `nin data info | head`) is not a failure.
            for cause in err.chain() {
                if let Some(ioerr) = cause.downcast_ref::<std::io::Error>() {
                    if ioerr.kind() == std::io::ErrorKind::BrokenPipe {
                        return ExitCode::from(0);
                    }
                }
            }
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}
