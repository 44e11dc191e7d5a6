//! `shardgate strategy ...`: inspect and check strategy components.

use clap::Subcommand;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum StrategyCommand {
    /// List the built-in strategies.
    List,
}

pub fn run(cmd: StrategyCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        StrategyCommand::List => {
            for b in shardgate_builtins::BUILTINS {
                println!("{:<12} {:>8} bytes", b.name, b.component.len());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
