use std::{io::Write as _, process::ExitCode};

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

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `run` tells what it does (info); the one-shot commands only warn,
    // and leave kube's client to the one-line error they end with.
    let default_log_level = match cli.command {
        Command::Run(_) => "info",
        // What an API server would have allocated is beside the question.
        Command::Plan { .. } | Command::Diagnose(_) => "warn,allocation=off,kube_client=off",
        _ => "warn,kube_client=off",
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
    match execute(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("svc-agent: {}", one_line(&error));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line. A cause whose text its parent
/// already holds is left out (kube and hyper errors repeat their source).
fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

fn execute(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Plan {
            manifests: dir,
            node,
            output,
            nodeport_addresses,
            external_ip_cidrs,
            lb_algorithm,
        } => {
            let snapshot = manifests::load(&dir)?;
            let config = Config {
                nodeport_addresses,
                external_ip_cidrs,
                lb_algorithm,
            };
            let plan = model::plan(&snapshot, &node, &config)?;
            let text = match output {
                Output::Table => {
                    render::plan_table(&plan.frontends) + &render::left_out_lines(&plan.left_out)
                }
                Output::Json => render::plan_json(&plan)? + "\n",
            };
            // A closed pipe (`| head`) ends the output, not the process with a panic.
            std::io::stdout().lock().write_all(text.as_bytes())?;
        }
        Command::Dump { output, pin, agent } => {
            let tables = Tables::open_pinned(&pin.pin_path)?;
            let states = tables.read()?;
            // The kernel's tables are the truth and stand alone; what the
            // agent left out of them comes from the agent, when it runs.
            let left_out = svc_agent::run::fetch_left_out(agent.agent)
                .inspect_err(|error| {
                    eprintln!(
                        "(what the agent left out is unknown: no answer from {}: {error})",
                        agent.agent
                    );
                })
                .ok();
            match output {
                Output::Table => {
                    let drops = tables.drop_counters()?;
                    print!("{}", render::dump_table(&states, &drops));
                    print!(
                        "{}",
                        render::left_out_lines(left_out.as_deref().unwrap_or_default())
                    );
                }
                Output::Json => {
                    let json = serde_json::json!({ "frontends": states, "left_out": left_out });
                    println!("{}", serde_json::to_string_pretty(&json)?);
                }
            }
        }
        Command::Diagnose(args) => print!("{}", diagnose::report(&args.settings())?),
        Command::Lookup {
            protocol,
            from,
            to,
            output,
            pin,
        } => {
            let tables = Tables::open_pinned(&pin.pin_path)?;
            let lookups = tables
                .lookup_each(protocol.into(), &from, to)?
                .with_context(|| format!("{to} ({protocol:?}) is no frontend on this node"))?;
            match (output, &lookups[..]) {
                (Output::Json, [one]) => println!("{}", serde_json::to_string_pretty(one)?),
                (Output::Json, many) => println!("{}", serde_json::to_string_pretty(many)?),
                (Output::Table, many) => {
                    let tables: Vec<String> = many.iter().map(render::lookup_table).collect();
                    print!("{}", tables.join("\n"));
                }
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
