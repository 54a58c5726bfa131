//! `nonstop demo`: an update server, three nodes under load, four updates pushed in waves.

use std::time::Duration;

use anyhow::Context;
use nonstop_demo::{DemoConfig, ProgressTo, render, run};

#[derive(clap::Args)]
pub struct Args {
    /// Shortest length of the traffic, in seconds.
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// Print the report as one JSON object on stdout (the timeline goes to stderr).
    #[arg(long)]
    json: bool,
    /// Keep the working directory (logs, databases) and say where it is.
    #[arg(long)]
    keep: bool,
}

pub fn run_cmd(args: &Args) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("finding the nonstop executable")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let report = runtime
        .block_on(run(DemoConfig {
            exe,
            duration: Duration::from_secs(args.duration),
            keep: args.keep,
            progress: if args.json {
                ProgressTo::Stderr
            } else {
                ProgressTo::Stdout
            },
        }))
        .map_err(anyhow::Error::msg)?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", render(&report));
    }
    if !report.passed() {
        anyhow::bail!(
            "{} requests failed; {} of {} acknowledged records found",
            report.failed_requests,
            report.records_found,
            report.records_acknowledged
        );
    }
    Ok(())
}
