use std::io::Write as _;

use anyhow::Context as _;
use clap::Parser as _;
use svc_agent::{
    cli::{Cli, Command, Output},
    dataplane::{self, Tables},
    diagnose,
    k8s::manifests,
    model::{self, Config},
    render,
};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // `run` tells what it does (info); the one-shot commands only warn.
    let default_log_level = match cli.command {
        Command::Run(_) => "info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        // Warnings (a manifest the agent cannot program) show unless
        // RUST_LOG says otherwise.
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_log_level)),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Plan {
            manifests: dir,
            node,
            output,
            nodeport_addresses,
        } => {
            let snapshot = manifests::load(&dir)?;
            let plan = model::plan(&snapshot, &node, &Config { nodeport_addresses })?;
            let text = match output {
                Output::Table => render::plan_table(&plan.frontends),
                Output::Json => render::plan_json(&plan)? + "\n",
            };
            // A closed pipe (`| head`) ends the output, not the process with a panic.
            std::io::stdout().lock().write_all(text.as_bytes())?;
        }
        Command::Dump { output, pin } => {
            let tables = Tables::open_pinned(&pin.pin_path)?;
            let states = tables.read()?;
            match output {
                Output::Table => {
                    let drops = tables.drop_counters()?;
                    print!("{}", render::dump_table(&states, &drops));
                }
                Output::Json => {
                    let json = serde_json::json!({ "frontends": states });
                    println!("{}", serde_json::to_string_pretty(&json)?);
                }
            }
        }
        Command::Diagnose {
            service,
            manifests: dir,
            node,
            pin,
        } => {
            let key = if service.contains('/') {
                service
            } else {
                format!("default/{service}")
            };
            let snapshot = manifests::load(&dir)?;
            let kernel = match (&node, Tables::open_pinned(&pin.pin_path)) {
                (Some(node), Ok(tables)) => Some(diagnose::KernelView {
                    node: node.clone(),
                    frontends: tables.read()?,
                }),
                _ => None,
            };
            println!("service {key}:");
            for finding in diagnose::diagnose(&snapshot, &key, node.as_deref(), kernel.as_ref())? {
                println!("- {finding}");
            }
            if node.is_some() && kernel.is_none() {
                println!(
                    "(kernel maps not checked: no pins at {})",
                    pin.pin_path.display()
                );
            }
        }
        Command::Run(args) => svc_agent::run::run(args.settings())?,
        Command::Cleanup { pin } => {
            dataplane::remove_pins(&pin.pin_path)
                .with_context(|| format!("removing {}", pin.pin_path.display()))?;
        }
    }
    Ok(())
}
