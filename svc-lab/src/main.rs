//! `svc-lab`: a cluster of network namespaces on this machine.
use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use svc_lab::{
    cluster::query::{Namespaces, Query, Selector},
    tool::{self, DEFAULT_STATE, Target},
};

#[derive(Debug, Parser)]
#[command(
    name = "svc-lab",
    version,
    about = "A Kubernetes-like cluster of network namespaces, with svc-lb's agent on every node"
)]
struct Cli {
    /// Directory holding the lab's state, the manifests its agents read
    /// and their logs; separate invocations share it.
    #[arg(long, global = true, env = "SVC_LAB_STATE", default_value = DEFAULT_STATE)]
    state: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build the cluster: Nodes from Node manifests (else --nodes
    /// generated ones), Pods from Pod and Deployment manifests, Services
    /// with ClusterIP, NodePorts and a load balancer IP; one svc-agent per
    /// node; an external `client`.
    Up {
        /// Manifest files or directories.
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
        /// Nodes to make when the manifests hold no Node.
        #[arg(long, default_value_t = 2)]
        nodes: usize,
        /// Start no agent (to load a datapath by hand).
        #[arg(long)]
        no_agent: bool,
        /// A flag for every node's `svc-agent run`, after the lab's own
        /// (which it overrides): `--agent-arg=--nat-ports=61000-61031`.
        /// Repeatable.
        #[arg(long = "agent-arg", value_name = "FLAG", allow_hyphen_values = true)]
        agent_args: Vec<String>,
        /// The svc-agent binary the nodes run (default: the one beside
        /// svc-lab). A later `restart` runs the one beside svc-lab, or its
        /// own --agent: an upgrade on live pins.
        #[arg(long, value_name = "PATH")]
        agent: Option<PathBuf>,
    },
    /// Create or change objects (a Deployment's selector cannot change).
    Apply {
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
    },
    /// Delete the objects of manifests, or KIND/NAME.
    Delete {
        #[arg(short = 'f', long = "filename")]
        files: Vec<PathBuf>,
        /// pod/NAME, deployment/NAME or service/NAME.
        object: Option<String>,
    },
    /// pods, svc, endpoints or endpointslices, as kubectl prints them.
    Get {
        what: String,
        /// One object by name.
        name: Option<String>,
        /// wide, json or yaml (a List of the objects, status filled in;
        /// the object itself when NAME is given).
        #[arg(short, long)]
        output: Option<String>,
        /// Only objects whose labels match (app=web, app!=web,
        /// 'app in (a,b)', app, !app; comma-separated).
        #[arg(short = 'l', long = "selector")]
        selector: Option<String>,
        #[command(flatten)]
        namespaces: NamespaceFlags,
    },
    /// Set a Deployment's replica count (deployment/NAME): new pods start,
    /// excess ones terminate gracefully (preStop, SIGTERM, grace period).
    Scale {
        target: String,
        #[arg(long)]
        replicas: i32,
    },
    /// `rollout restart deployment/NAME`: replaces every pod as the
    /// Deployment's strategy allows (maxSurge, maxUnavailable; Recreate),
    /// new ones ready before old ones terminate, and waits until done
    /// (`--no-wait`: returns at once, the rollout goes on). `rollout
    /// status deployment/NAME` waits for a rollout to complete.
    Rollout {
        /// restart or status
        action: String,
        target: String,
        /// restart: return at once; the rollout goes on in the background.
        #[arg(long)]
        no_wait: bool,
    },
    /// A Service or Pod as kubectl describes it, with the lab's events.
    Describe {
        /// svc or pod.
        what: String,
        name: String,
        #[arg(short = 'n', long = "namespace", default_value = "default")]
        namespace: String,
    },
    /// Run a command of this machine inside node/NAME (SVC_PIN_PATH set to
    /// that node's pins), pod/NAME or client.
    Exec {
        target: String,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// A node's agent log (node/NAME) or a pod's server log (pod/NAME).
    Logs { target: String },
    /// Restart node/NAME's agent on its pins (SIGTERM; SIGKILL with
    /// --kill) and wait until its initial sync is in the maps. Traffic is
    /// served throughout by the pinned datapath.
    Restart {
        target: String,
        #[arg(long)]
        kill: bool,
        /// The svc-agent binary to start (default: the one beside
        /// svc-lab).
        #[arg(long, value_name = "PATH")]
        agent: Option<PathBuf>,
    },
    /// `route lb --via node/NAME|all`: the client reaches LoadBalancer IPs
    /// through that node only, or through every node by a multipath route
    /// (ECMP by addresses, the kernel's default hash; the lab's default),
    /// so a node's failover can be tried.
    Route {
        /// lb (the LoadBalancer ingress IPs).
        what: String,
        #[arg(long, value_name = "node/NAME|all")]
        via: String,
    },
    /// Remove everything of the lab: processes, namespaces, pins, state
    /// (also after a crash or a killed `up`).
    Down,
    /// The lab's keeper process (started by `up`).
    #[command(hide = true)]
    Hold,
    /// A pod's lab server (started by `up` and `apply`).
    #[command(hide = true)]
    Serve {
        #[arg(long)]
        pod: String,
        #[arg(long)]
        node: String,
        #[arg(long, value_delimiter = ',')]
        tcp: Vec<u16>,
        #[arg(long, value_delimiter = ',')]
        udp: Vec<u16>,
    },
}

/// kubectl's namespace flags.
#[derive(clap::Args, Debug)]
struct NamespaceFlags {
    /// Look in this namespace (default: default).
    #[arg(short = 'n', long = "namespace")]
    namespace: Option<String>,
    /// Look in every namespace.
    #[arg(short = 'A', long = "all-namespaces")]
    all: bool,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("svc-lab: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let state = &cli.state;
    match cli.command {
        Command::Up {
            files,
            nodes,
            no_agent,
            agent_args,
            agent,
        } => {
            let agent = match agent {
                Some(path) => path,
                None => tool::agent_binary()?,
            };
            let agents = (!no_agent).then_some(agent.as_path());
            tool::up(state, &files, nodes, agents, &agent_args)?;
        }
        Command::Apply { files } => tool::apply(state, &files)?,
        Command::Delete { files, object } => match (files.is_empty(), object) {
            (false, None) => tool::delete_objects(state, &files)?,
            (true, Some(object)) => {
                let (kind, name) = object.split_once('/').ok_or_else(|| {
                    anyhow::anyhow!("give KIND/NAME (e.g. deployment/web), not {object:?}")
                })?;
                tool::delete(state, kind, name)?;
            }
            _ => anyhow::bail!("give either -f FILE... or one KIND/NAME"),
        },
        Command::Get {
            what,
            name,
            output,
            selector,
            namespaces,
        } => {
            let query = Query {
                namespaces: Namespaces::from_flags(namespaces.namespace, namespaces.all),
                selector: Selector::parse(selector.as_deref().unwrap_or_default())
                    .map_err(|error| anyhow::anyhow!(error))?,
                wide: false,
                name: None,
            };
            let listing = tool::get(state, &what, name.as_deref(), output.as_deref(), &query)?;
            print!("{}", listing.stdout);
            eprint!("{}", listing.stderr);
        }
        Command::Scale { target, replicas } => tool::scale(state, &target, replicas)?,
        Command::Rollout {
            action,
            target,
            no_wait,
        } => match action.as_str() {
            "restart" => tool::rollout_restart(state, &target, no_wait)?,
            "status" => tool::rollout_status(state, &target)?,
            other => anyhow::bail!("svc-lab rollout knows restart and status, not {other:?}"),
        },
        Command::Describe {
            what,
            name,
            namespace,
        } => print!("{}", tool::describe(state, &what, &name, &namespace)?),
        Command::Exec { target, command } => {
            let status = tool::exec(state, &Target::parse(&target)?, &command)?;
            let code = status
                .code()
                .and_then(|c| u8::try_from(c).ok())
                .unwrap_or(1);
            return Ok(ExitCode::from(code));
        }
        Command::Logs { target } => print!("{}", tool::logs(state, &Target::parse(&target)?)?),
        Command::Restart {
            target,
            kill,
            agent,
        } => {
            let node = target
                .strip_prefix("node/")
                .ok_or_else(|| anyhow::anyhow!("give node/NAME, not {target:?}"))?;
            let agent = match agent {
                Some(path) => path,
                None => tool::agent_binary()?,
            };
            let took = tool::restart(state, node, kill, &agent)?;
            println!(
                "node/{node}: agent {} and ready again after {} ms",
                if kill { "killed" } else { "stopped" },
                took.as_millis()
            );
        }
        Command::Route { what, via } => {
            if what != "lb" {
                anyhow::bail!("svc-lab route knows lb, not {what:?}");
            }
            print!("{}", tool::route_lb(state, &via)?);
        }
        Command::Down => tool::down(state)?,
        Command::Hold => tool::hold()?,
        Command::Serve {
            pod,
            node,
            tcp,
            udp,
        } => tool::serve(&pod, &node, &tcp, &udp)?,
    }
    Ok(ExitCode::SUCCESS)
}
