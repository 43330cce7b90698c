use anyhow::Context as _;
use clap::Parser as _;
use svc_agent::{
    cli::{Cli, Command, Output},
    dataplane::{self, Tables},
    render,
};

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
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
        Command::Cleanup { pin } => {
            dataplane::remove_pins(&pin.pin_path)
                .with_context(|| format!("removing {}", pin.pin_path.display()))?;
        }
    }
    Ok(())
}
