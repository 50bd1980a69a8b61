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
    let runtime = match runtime_for(&cli.command) {
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

/// The runtime of a command: one thread, except for the remote signer's
/// daemon. There each request's CPU work (HTTP parsing, the signature,
/// the reply and the log line: about 100 us) runs on a runtime thread,
/// so with one thread the daemon serves at most one core's worth of
/// signatures while concurrent bakers wait (measured: about 25% more
/// signatures per second with 64 clients on 2 cores, the same latency for
/// one). One worker per core, at most 4: beyond that the shared watermark
/// store's flush, not the CPU, bounds the rate.
fn runtime_for(command: &Command) -> std::io::Result<tokio::runtime::Runtime> {
    let daemon = matches!(
        command,
        Command::Signer(crate::args::SignerCommand::Serve { .. })
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if daemon && cores > 1 {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cores.min(4))
            .thread_name("slashguard-rt")
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    }
}
