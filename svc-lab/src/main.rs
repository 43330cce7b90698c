//! `svc-lab`: a cluster of network namespaces on this machine.
use std::{net::Ipv4Addr, process::ExitCode};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use svc_agent::{
    model::{BackendRef, BackendState, Frontend, FrontendKind, OnEmpty, Protocol},
    render,
};
use svc_lab::{Lab, NodeSpec, PodSpec, Topology};

#[derive(Debug, Parser)]
#[command(
    name = "svc-lab",
    version,
    about = "A Kubernetes-like lab of network namespaces for svc-lb"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// One node, a web pod and a client pod, a ClusterIP in front of the web
    /// pod and one with no backend: curl through both, then show the tables
    /// the kernel holds. Everything is removed at the end.
    Demo,
}

const CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 10);
const EMPTY_CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 11);

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo => demo(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("svc-lab: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn demo() -> anyhow::Result<()> {
    let topology = Topology {
        nodes: vec![NodeSpec {
            name: "node-1".into(),
            pods: vec![
                PodSpec::new("web", &[8080], &[]),
                PodSpec::new("curl", &[], &[]),
            ],
        }],
    };
    let lab = Lab::up(&topology).context("building the lab")?;
    let web = lab.pod("web")?;
    println!(
        "lab {}: node-1 with pods web ({}) and curl ({})",
        lab.id(),
        web.address,
        lab.pod("curl")?.address
    );

    lab.load_datapath("node-1")
        .context("loading svc-lb on node-1")?;
    let frontends = [
        cluster_ip(
            "demo/web",
            CLUSTER_IP,
            vec![BackendRef {
                address: web.address,
                port: 8080,
                state: BackendState::Ready,
            }],
        ),
        cluster_ip("demo/no-endpoints", EMPTY_CLUSTER_IP, Vec::new()),
    ];
    lab.tables("node-1")?.apply(&frontends)?;

    println!("\n$ curl http://{CLUSTER_IP}/   (from pod curl)");
    let answer = curl(&lab, CLUSTER_IP)?;
    if !answer.status.success() {
        bail!(
            "curl through the ClusterIP failed: {}",
            String::from_utf8_lossy(&answer.stderr).trim()
        );
    }
    print!("{}", String::from_utf8_lossy(&answer.stdout));

    println!("\n$ curl http://{EMPTY_CLUSTER_IP}/   (a Service with no endpoints)");
    let refused = curl(&lab, EMPTY_CLUSTER_IP)?;
    if refused.status.success() {
        bail!("a frontend without backends answered; it should refuse");
    }
    print!("{}", String::from_utf8_lossy(&refused.stderr));

    println!("\n$ svc-agent dump   (node-1: the tables the kernel holds)");
    let tables = lab.tables("node-1")?;
    print!(
        "{}",
        render::dump_table(&tables.read()?, &tables.drop_counters()?)
    );
    Ok(())
}

fn cluster_ip(service: &str, address: Ipv4Addr, backends: Vec<BackendRef>) -> Frontend {
    Frontend {
        service: service.into(),
        port_name: "http".into(),
        kind: FrontendKind::ClusterIP,
        address,
        port: 80,
        protocol: Protocol::TCP,
        backends,
        affinity_timeout_seconds: None,
        on_empty: OnEmpty::Reject,
        source_ranges: Vec::new(),
        health_check_node_port: None,
    }
}

fn curl(lab: &Lab, address: Ipv4Addr) -> anyhow::Result<std::process::Output> {
    lab.pod("curl")?
        .command("curl")?
        .args(["-sS", "--max-time", "5", &format!("http://{address}/")])
        .output()
        .context("running curl")
}
