//! The `nin` command-line tool: parses the command line and sends each subcommand to its module.
//! Only this crate (and xtask) prints; libraries return errors.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod alloc;
mod bench;
mod charts;
mod common;
mod data;
mod eval;
mod exit;
mod explain;
mod export;
mod finetune;
mod import;
mod list;
mod model_arg;
mod predict;
mod pth;
mod render;
mod runtime;
mod train;

/// Network-in-Network CIFAR model zoo.
#[derive(Debug, Parser)]
#[command(name = "nin", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Train a zoo model on CIFAR-10/100 (resumable; writes a run folder).
    Train(train::TrainArgs),
    /// Accuracy of a trained model (directory, pretrained tag or hf-hub:) on a CIFAR split.
    Eval(eval::EvalArgs),
    /// Classify PNG/JPEG images with a trained model (directory, pretrained tag or hf-hub:).
    Predict(predict::PredictArgs),
    /// Where a model looks: class activation maps over images, or a sheet of test images.
    Explain(explain::ExplainArgs),
    /// The zoo's models with parameter counts and cost, and the pretrained weights.
    List(list::ListArgs),
    /// Download, verify and describe the CIFAR datasets.
    Data(data::DataArgs),
    /// Images per second of inference and training steps (CSV as benches/pytorch/bench_nin.py).
    Bench(bench::BenchArgs),
    /// Write a run or model directory as a Hub-ready repository with a model card.
    Export(export::ExportArgs),
    /// Convert a PyTorch checkpoint (.pth) into a model directory.
    Import(import::ImportArgs),
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Data(args) => data::run(args),
        Command::Train(args) => train::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Predict(args) => predict::run(args),
        Command::Explain(args) => explain::run(args),
        Command::List(args) => list::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Export(args) => export::run(args),
        Command::Import(args) => import::run(args),
    }
}

fn main() -> ExitCode {
    alloc::keep_freed_memory();
    runtime::park_candle_pool_early();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::from(exit::SUCCESS),
        Err(err) => {
            // A closed pipe (e.g. `nin data info | head`) is not a failure.
            for cause in err.chain() {
                if let Some(ioerr) = cause.downcast_ref::<std::io::Error>() {
                    if ioerr.kind() == std::io::ErrorKind::BrokenPipe {
                        return ExitCode::from(0);
                    }
                }
            }
            let code = exit::code_of(&err);
            if code == exit::INTERRUPTED {
                eprintln!("{err:#}");
            } else {
                eprintln!("error: {err:#}");
            }
            ExitCode::from(code)
        }
    }
}
