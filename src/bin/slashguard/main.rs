//! `slashguard`: the operator's command-line tool (feature `cli`).
//!
//! One concept per module: `args` (the command line), `settings` (flags,
//! environment and config file), `exit` (exit codes and failures),
//! `output` (text or JSON), and one module per subcommand.

mod args;
mod device;
mod doctor;
mod etcd_args;
#[cfg(feature = "etcd")]
mod etcd_conn;
mod exit;
mod held;
mod identity;
mod node;
mod output;
mod settings;
#[cfg(feature = "signer")]
mod signer;
mod signer_args;
mod tower;
#[cfg(feature = "alpenglow")]
mod vote_history;
mod watermark;

use std::process::ExitCode;

use clap::Parser;

use crate::args::{Cli, Command};
use crate::exit::{Code, Failure};
use crate::output::{print_failure, print_report, Report};
use crate::settings::Settings;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            let _ = e.print();
            // clap uses 2 for usage errors; 2 means "refused" here.
            return match e.kind() {
                ErrorKind::DisplayHelp
                | ErrorKind::DisplayVersion
                | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => ExitCode::SUCCESS,
                _ => ExitCode::from(Code::BadInput as u8),
            };
        }
    };
    let json = cli.json;
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            print_failure(
                &Failure::new(Code::Other, format!("cannot start the runtime: {e}")),
                json,
            );
            return ExitCode::from(Code::Other as u8);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(report) => {
            print_report(report, json);
            ExitCode::SUCCESS
        }
        Err(f) => {
            print_failure(&f, json);
            ExitCode::from(f.code as u8)
        }
    }
}

async fn run(cli: Cli) -> Result<Report, Failure> {
    let mut settings = Settings::resolve(&cli)?;
    let json = cli.json;
    match cli.command {
        Command::Tower(c) => tower::run(c, &settings).await,
        #[cfg(feature = "alpenglow")]
        Command::VoteHistory(c) => vote_history::run(c, &settings).await,
        #[cfg(not(feature = "alpenglow"))]
        Command::VoteHistory(_) => Err(Failure::bad_input(
            "this slashguard was built without Solana Alpenglow support",
        )
        .hint("rebuild with `cargo install slashguard --features cli,alpenglow`")),
        Command::Identity(c) => identity::run(c, &settings).await,
        Command::Watermark(c) => watermark::run(c, &mut settings).await,
        Command::Device(c) => device::run(c).await,
        Command::Doctor(a) => doctor::run(a, &settings, json).await,
        #[cfg(feature = "signer")]
        Command::Signer(c) => signer::run(c, &settings).await,
        #[cfg(not(feature = "signer"))]
        Command::Signer(_) => Err(Failure::bad_input(
            "this slashguard was built without the remote signer",
        )
        .hint("rebuild with `cargo install slashguard --features cli,signer`")),
    }
}
