//! A real kube-apiserver (1.20, built from Debian's source package by
//! `cargo xtask apiserver`) and etcd, on the loopback of a lab node's
//! network namespace, so the agent in that namespace reaches it and nothing
//! else does. Both are killed and their files removed on drop.
//!
//! Authorization is RBAC, as on a real cluster: the tests act as an admin
//! (system:masters), and the agent as deploy/'s ServiceAccount with a
//! token the API server issued for it (TokenRequest), bound to exactly
//! deploy/rbac.yaml's ClusterRole.
//!
//! 1.20 serves EndpointSlice only as v1beta1: it runs with that version off
//! and a CRD stands in for discovery.k8s.io/v1 (unknown fields preserved),
//! so v1 clients work. Watch cache off and compaction every second make a
//! watch that resumes from an old resourceVersion get 410 Gone.
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use svc_lab::netns::Netns;

const TOKEN: &str = "svc-lb-test-token";
const ETCD: &str = "http://127.0.0.1:12379";
pub const SERVER: &str = "https://127.0.0.1:16443";
/// Where `cargo xtask apiserver` caches the binary, by package version.
pub const CACHE_DIR: &str = "/var/cache/svc-lb";

/// The kube-apiserver binary: $SVC_KUBE_APISERVER, or the newest cached
/// one. `None` when there is none and $SVC_REQUIRE_APISERVER is unset (the
/// test is skipped, saying so); with it set, a missing binary fails.
pub fn binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("SVC_KUBE_APISERVER") {
        return Some(path.into());
    }
    let cached = fs::read_dir(CACHE_DIR)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("kube-apiserver-"))
        })
        .max();
    if cached.is_none() {
        assert!(
            std::env::var_os("SVC_REQUIRE_APISERVER").is_none(),
            "no kube-apiserver in {CACHE_DIR}: run `cargo xtask apiserver`"
        );
        eprintln!("SKIPPED: no kube-apiserver in {CACHE_DIR} (`cargo xtask apiserver` builds it)");
    }
    cached
}

/// deploy/'s RBAC objects, as an operator applies them.
const DEPLOY_RBAC: &str = include_str!("../../deploy/rbac.yaml");
/// The ServiceAccount deploy/ runs the agent as.
pub const AGENT_ACCOUNT: (&str, &str) = ("kube-system", "svc-agent");

pub struct ApiServer<'lab> {
    dir: PathBuf,
    netns: &'lab Netns,
    binary: PathBuf,
    etcd: Option<Child>,
    apiserver: Option<Child>,
}

impl<'lab> ApiServer<'lab> {
    /// Starts etcd and kube-apiserver in `netns` and waits until the API
    /// serves EndpointSlices as v1.
    pub fn start(netns: &'lab Netns, binary: PathBuf) -> Self {
        let dir = std::env::temp_dir().join(format!("{}-apiserver", netns.name()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join("tokens.csv"),
            format!("{TOKEN},admin,admin,system:masters\n"),
        )
        .unwrap();
        let key = Command::new("openssl")
            .args(["genrsa", "-out"])
            .arg(dir.join("sa.key"))
            .arg("2048")
            .output()
            .unwrap();
        assert!(key.status.success(), "openssl genrsa failed");
        fs::write(dir.join("kubeconfig"), kubeconfig()).unwrap();
        let etcd = netns
            .command("etcd")
            .unwrap()
            .arg("--data-dir")
            .arg(dir.join("etcd"))
            .args([
                "--listen-client-urls",
                ETCD,
                "--advertise-client-urls",
                ETCD,
            ])
            .args(["--listen-peer-urls", "http://127.0.0.1:12380"])
            .stdout(Stdio::null())
            .stderr(log_file(&dir, "etcd.log"))
            .spawn()
            .unwrap();
        let mut server = Self {
            dir,
            netns,
            binary,
            etcd: Some(etcd),
            apiserver: None,
        };
        server.start_apiserver();
        server.register_endpoint_slice_v1();
        server.apply_deploy_rbac();
        let token = server.token_for(AGENT_ACCOUNT);
        fs::write(server.agent_kubeconfig(), kubeconfig_with(&token)).unwrap();
        server
    }

    /// An admin's kubeconfig (what an operator runs `diagnose` with).
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// The agent's kubeconfig: deploy/'s ServiceAccount, nothing more.
    pub fn agent_kubeconfig(&self) -> PathBuf {
        self.dir.join("agent.kubeconfig")
    }

    /// Creates every object of deploy/rbac.yaml (once kube-system exists).
    fn apply_deploy_rbac(&self) {
        self.wait_for(
            Duration::from_secs(20),
            "/api/v1/namespaces/kube-system",
            "namespace kube-system made",
        );
        for document in DEPLOY_RBAC.split("\n---") {
            let object: serde_json::Value = serde_saphyr::from_str(document)
                .unwrap_or_else(|error| panic!("deploy/rbac.yaml: {error}"));
            self.create(&collection_path(&object), &object);
        }
    }

    /// A token the API server issues for the ServiceAccount (TokenRequest,
    /// one hour).
    pub fn token_for(&self, (namespace, name): (&str, &str)) -> String {
        let request = serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 3600}
        });
        let answer = self.create(
            &format!("/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token"),
            &request,
        );
        let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
        answer["status"]["token"]
            .as_str()
            .unwrap_or_else(|| panic!("no token in {answer}"))
            .to_owned()
    }

    /// One call with `token`: the HTTP status and the body, whatever the
    /// status.
    pub fn call_as(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> (u16, String) {
        let mut command = self.command(Path::new("curl"));
        command
            .args(["-sk", "--max-time", "5", "-X", method])
            .args(["-w", "\n%{http_code}"])
            .args(["-H", &format!("Authorization: Bearer {token}")]);
        if let Some(body) = body {
            command
                .args(["-H", "Content-Type: application/json"])
                .args(["--data-binary", &body.to_string()]);
        }
        let output = command.arg(format!("{SERVER}{path}")).output().unwrap();
        let text = String::from_utf8_lossy(&output.stdout);
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        (code.trim().parse().unwrap_or(0), body.to_owned())
    }

    fn command(&self, program: &Path) -> Command {
        self.netns.command(program.to_str().unwrap()).unwrap()
    }

    /// Starts kube-apiserver and waits until /readyz says ok.
    pub fn start_apiserver(&mut self) {
        let dir = &self.dir;
        let child = self
            .command(&self.binary)
            .args(["--etcd-servers", ETCD])
            .args(["--secure-port", "16443", "--bind-address", "127.0.0.1"])
            .args(["--advertise-address", "127.0.0.1"])
            .arg(format!("--cert-dir={}", dir.join("certs").display()))
            .arg(format!(
                "--token-auth-file={}",
                dir.join("tokens.csv").display()
            ))
            .arg(format!(
                "--service-account-key-file={}",
                dir.join("sa.key").display()
            ))
            .arg(format!(
                "--service-account-signing-key-file={}",
                dir.join("sa.key").display()
            ))
            .arg("--service-account-issuer=https://kubernetes.default.svc")
            .arg("--service-cluster-ip-range=198.19.0.0/16")
            .arg("--runtime-config=discovery.k8s.io/v1beta1=false")
            .arg("--watch-cache=false")
            .arg("--etcd-compaction-interval=1s")
            .arg("--authorization-mode=RBAC")
            .stdout(Stdio::null())
            .stderr(log_file(dir, "apiserver.log"))
            .spawn()
            .unwrap();
        self.apiserver = Some(child);
        self.wait_for(Duration::from_secs(60), "/readyz", "API server ready");
    }

    /// Kills kube-apiserver (etcd keeps the objects).
    pub fn stop_apiserver(&mut self) {
        if let Some(mut child) = self.apiserver.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn wait_for(&self, within: Duration, path: &str, what: &str) {
        let deadline = Instant::now() + within;
        while self.request("GET", path, None).is_none() {
            assert!(
                Instant::now() < deadline,
                "{what}: not within {within:?}\n{}",
                fs::read_to_string(self.dir.join("apiserver.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn register_endpoint_slice_v1(&self) {
        let crd = serde_json::json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {
                "name": "endpointslices.discovery.k8s.io",
                "annotations": {
                    "api-approved.kubernetes.io":
                        "unapproved, test-only stand-in for the built-in v1 API"
                }
            },
            "spec": {
                "group": "discovery.k8s.io",
                "scope": "Namespaced",
                "names": {
                    "plural": "endpointslices", "singular": "endpointslice",
                    "kind": "EndpointSlice", "listKind": "EndpointSliceList"
                },
                "versions": [{
                    "name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {
                        "type": "object", "x-kubernetes-preserve-unknown-fields": true
                    }}
                }]
            }
        });
        self.create(
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            &crd,
        );
        self.wait_for(
            Duration::from_secs(20),
            "/apis/discovery.k8s.io/v1/endpointslices",
            "EndpointSlice v1 served",
        );
    }

    /// One API call through curl in the namespace: the response body on a
    /// 2xx, `None` otherwise.
    pub fn request(&self, method: &str, path: &str, body: Option<(&str, &str)>) -> Option<String> {
        let mut command = self.command(Path::new("curl"));
        command
            .args(["-sfk", "--max-time", "5", "-X", method])
            .args(["-H", &format!("Authorization: Bearer {TOKEN}")]);
        if let Some((content_type, body)) = body {
            command
                .args(["-H", &format!("Content-Type: {content_type}")])
                .args(["--data-binary", body]);
        }
        let output = command.arg(format!("{SERVER}{path}")).output().unwrap();
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Many calls as the admin over one connection (one curl): each
    /// (method, path, content type, body); their HTTP statuses, in order.
    /// A hundred calls take one process, not a hundred.
    pub fn batch(&self, calls: &[(&str, String, &str, serde_json::Value)]) -> Vec<u16> {
        let mut command = self.command(Path::new("curl"));
        for (index, (method, path, content_type, body)) in calls.iter().enumerate() {
            if index > 0 {
                command.arg("--next");
            }
            command
                .args(["-sk", "--max-time", "30", "-o", "/dev/null"])
                .args(["-w", "%{http_code}\n", "-X", method])
                .args(["-H", &format!("Authorization: Bearer {TOKEN}")])
                .args(["-H", &format!("Content-Type: {content_type}")])
                .args(["--data-binary", &body.to_string()])
                .arg(format!("{SERVER}{path}"));
        }
        let output = command.output().unwrap();
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|code| code.trim().parse().unwrap_or(0))
            .collect()
    }

    /// POST `object` to the collection at `path`.
    pub fn create(&self, path: &str, object: &serde_json::Value) -> String {
        self.request(
            "POST",
            path,
            Some(("application/json", &object.to_string())),
        )
        .unwrap_or_else(|| panic!("POST {path} failed: {object}"))
    }

    /// Merge-patches the object at `path`.
    pub fn patch(&self, path: &str, patch: &serde_json::Value) {
        self.request(
            "PATCH",
            path,
            Some(("application/merge-patch+json", &patch.to_string())),
        )
        .unwrap_or_else(|| panic!("PATCH {path} failed: {patch}"));
    }

    pub fn delete(&self, path: &str) {
        self.request("DELETE", path, None)
            .unwrap_or_else(|| panic!("DELETE {path} failed"));
    }

    /// The `items` of the list at `path`.
    pub fn list<T: serde::de::DeserializeOwned>(&self, path: &str) -> Vec<T> {
        let text = self
            .request("GET", path, None)
            .unwrap_or_else(|| panic!("GET {path} failed"));
        let list: serde_json::Value = serde_json::from_str(&text).unwrap();
        serde_json::from_value(list["items"].clone()).unwrap()
    }
}

impl Drop for ApiServer<'_> {
    fn drop(&mut self) {
        self.stop_apiserver();
        if let Some(mut child) = self.etcd.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn log_file(dir: &Path, name: &str) -> fs::File {
    fs::File::create(dir.join(name)).unwrap()
}

/// Node `name` with `address` as its InternalIP (no kubelet runs).
pub fn create_node(api: &ApiServer, name: &str, address: std::net::Ipv4Addr) {
    api.create(
        "/api/v1/nodes",
        &serde_json::json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
                            "status": {"addresses": [{"type": "InternalIP",
                                                      "address": address.to_string()}]}}),
    );
}

/// The collection an object is created in, from its apiVersion and kind
/// (the kinds deploy/ holds).
pub fn collection_path(object: &serde_json::Value) -> String {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    let prefix = if api_version == "v1" {
        "/api/v1".to_owned()
    } else {
        format!("/apis/{api_version}")
    };
    let (plural, namespaced) = match kind {
        "ServiceAccount" => ("serviceaccounts", true),
        "ClusterRole" => ("clusterroles", false),
        "ClusterRoleBinding" => ("clusterrolebindings", false),
        "DaemonSet" => ("daemonsets", true),
        other => panic!("no collection known for kind {other}"),
    };
    match object["metadata"]["namespace"].as_str() {
        Some(namespace) if namespaced => format!("{prefix}/namespaces/{namespace}/{plural}"),
        _ => format!("{prefix}/{plural}"),
    }
}

fn kubeconfig() -> String {
    kubeconfig_with(TOKEN)
}

fn kubeconfig_with(token: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: lab
  cluster: {{server: \"{SERVER}\", insecure-skip-tls-verify: true}}
users:
- name: lab
  user: {{token: {token}}}
contexts:
- name: lab
  context: {{cluster: lab, user: lab}}
current-context: lab
"
    )
}
