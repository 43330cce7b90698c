use super::*;

fn parse(path: &str, text: &str) -> Result<Snapshot, ManifestError> {
    let mut snapshot = Snapshot::default();
    add_file(&mut snapshot, Path::new(path), text)?;
    Ok(snapshot)
}

fn names<'a>(
    metas: impl Iterator<Item = &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>,
) -> Vec<String> {
    metas.map(object_key).collect()
}

const SERVICE_A: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\nspec:\n  clusterIP: 198.19.0.1\n  ports:\n    - port: 80\n";

#[test]
fn multi_document_yaml_is_read_in_order_skipping_blank_documents() {
    let text = format!(
        "# leading comment\n---\n{SERVICE_A}---\n# only a comment\n--- # separator with comment\n\
         apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  namespace: prod\n---\n\
         apiVersion: v1\nkind: Node\nmetadata:\n  name: node-1\n---\n\
         apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: a-1\naddressType: IPv4\n"
    );
    let snapshot = parse("all.yaml", &text).expect("valid manifests");
    assert_eq!(
        names(snapshot.services.iter().map(|o| &o.metadata)),
        ["default/a"]
    );
    assert_eq!(names(snapshot.pods.iter().map(|o| &o.metadata)), ["prod/p"]);
    assert_eq!(
        names(snapshot.nodes.iter().map(|o| &o.metadata)),
        ["default/node-1"]
    );
    assert_eq!(
        names(snapshot.deployments.iter().map(|o| &o.metadata)),
        ["default/web"]
    );
    assert_eq!(
        names(snapshot.endpoint_slices.iter().map(|o| &o.metadata)),
        ["default/a-1"]
    );
}

#[test]
fn lists_hold_objects_of_any_kind_and_typed_lists_fill_in_the_kind() {
    let text = "apiVersion: v1\nkind: List\nitems:\n\
                - apiVersion: v1\n  kind: Service\n  metadata: {name: a}\n\
                - apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: ignored}\n\
                - apiVersion: v1\n  kind: Pod\n  metadata: {name: p}\n\
                ---\n\
                apiVersion: v1\nkind: ServiceList\nitems:\n\
                - metadata: {name: b}\n";
    let snapshot = parse("list.yaml", text).expect("valid lists");
    assert_eq!(
        names(snapshot.services.iter().map(|o| &o.metadata)),
        ["default/a", "default/b"]
    );
    assert_eq!(
        names(snapshot.pods.iter().map(|o| &o.metadata)),
        ["default/p"]
    );
}

#[test]
fn json_files_hold_one_or_more_objects() {
    let text = r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a"}}
                  {"apiVersion": "v1", "kind": "List", "items": [
                      {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "b"}}]}"#;
    let snapshot = parse("objects.json", text).expect("valid JSON");
    assert_eq!(
        names(snapshot.services.iter().map(|o| &o.metadata)),
        ["default/a", "default/b"]
    );
}

#[test]
fn unknown_kinds_and_versions_are_skipped() {
    let text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n---\n\
                apiVersion: v1beta1\nkind: Service\nmetadata: {name: old}\n---\n\
                apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n";
    let snapshot = parse("other.yaml", text).expect("valid manifests");
    assert!(snapshot.services.is_empty());
    assert!(snapshot.pods.is_empty());
}

#[test]
fn yaml_syntax_error_names_file_and_document() {
    let text = format!("{SERVICE_A}---\nmetadata: [unclosed\n");
    let error = parse("broken.yaml", &text).expect_err("bad YAML");
    let ManifestError::Yaml { location, source } = &error else {
        panic!("wrong error: {error}");
    };
    assert_eq!(
        *location,
        Location {
            path: Path::new("broken.yaml").into(),
            document: 2,
            item: None
        }
    );
    // The parser's line numbers are the file's (the document starts on line 10).
    assert!(source.to_string().contains("line 10"), "{source}");
    assert!(
        error
            .to_string()
            .starts_with("broken.yaml document 2: not valid YAML"),
        "{error}"
    );
}

#[test]
fn json_syntax_error_names_the_document() {
    let text = r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a"}} {"kind": "#;
    let error = parse("broken.json", text).expect_err("bad JSON");
    let ManifestError::Json { location, .. } = &error else {
        panic!("wrong error: {error}");
    };
    assert_eq!(location.document, 2);
}

#[test]
fn schema_error_names_object_and_field() {
    let text = format!(
        "{SERVICE_A}---\napiVersion: v1\nkind: List\nitems:\n\
                        - apiVersion: v1\n  kind: Service\n  metadata: {{name: ok}}\n\
                        - apiVersion: v1\n  kind: Service\n  metadata: {{name: web}}\n  spec:\n    ports:\n      - port: eighty\n"
    );
    let error = parse("svc.yaml", &text).expect_err("port is not a number");
    let ManifestError::Schema {
        location,
        kind,
        name,
        field,
        ..
    } = &error
    else {
        panic!("wrong error: {error}");
    };
    assert_eq!((location.document, location.item), (2, Some(2)));
    assert_eq!((kind.as_str(), name.as_str()), ("Service", "web"));
    assert_eq!(field, "spec.ports[0].port");
    let text = error.to_string();
    assert!(text.contains("svc.yaml document 2 item 2"), "{text}");
    assert!(text.contains("kubectl explain service"), "{text}");
}

#[test]
fn documents_without_api_version_or_kind_are_errors() {
    // (text, what the document is)
    let table = [
        ("metadata: {name: a}\n", "object"),
        ("apiVersion: v1\nmetadata: {name: a}\n", "object"),
        ("- a\n- b\n", "array"),
        ("just text\n", "scalar"),
    ];
    for (text, want) in table {
        let error = parse("x.yaml", text).expect_err(text);
        let ManifestError::NotAnObject { location, found } = &error else {
            panic!("wrong error for {text:?}: {error}");
        };
        assert_eq!((location.document, *found), (1, want), "{text:?}");
    }
}

#[test]
fn a_list_without_items_is_an_error() {
    let error = parse("x.yaml", "apiVersion: v1\nkind: PodList\n").expect_err("no items");
    assert!(
        matches!(&error, ManifestError::ListWithoutItems { kind, .. } if kind == "PodList"),
        "{error}"
    );
}

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("svc-agent-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("temp dir");
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_directory_is_read_in_file_name_order_skipping_other_files() {
    let dir = TempDir::new("manifests-dir");
    let service = |name: &str, ip: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{clusterIP: {ip}}}\n"
        )
    };
    fs::write(dir.0.join("b.yml"), service("b", "198.19.0.2")).expect("write");
    fs::write(dir.0.join("a.yaml"), service("a", "198.19.0.1")).expect("write");
    fs::write(
        dir.0.join("c.json"),
        r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "c"}}"#,
    )
    .expect("write");
    fs::write(dir.0.join("README.md"), "not: [a manifest").expect("write");
    fs::create_dir(dir.0.join("nested.yaml")).expect("mkdir");
    let snapshot = load(&dir.0).expect("valid directory");
    assert_eq!(
        names(snapshot.services.iter().map(|o| &o.metadata)),
        ["default/a", "default/b", "default/c"]
    );
}

#[test]
fn a_missing_directory_says_what_to_pass() {
    let error = load(Path::new("/nonexistent/svc-agent-manifests")).expect_err("missing");
    assert!(matches!(error, ManifestError::Read { .. }), "{error}");
    assert!(error.to_string().contains("--manifests"), "{error}");
}

#[test]
fn loading_derives_endpoints_from_pods_for_services_without_slices() {
    let dir = TempDir::new("manifests-derive");
    fs::write(
        dir.0.join("all.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\n\
         spec: {clusterIP: 198.19.0.10, selector: {app: nginx}, ports: [{port: 80}]}\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {name: web-1, labels: {app: nginx}}\n\
         spec: {containers: [{name: nginx}]}\n\
         status: {podIP: 198.18.1.11, conditions: [{type: Ready, status: 'True'}]}\n",
    )
    .expect("write");
    let snapshot = load(&dir.0).expect("valid directory");
    let addresses: Vec<&str> = snapshot
        .slices_of("default", "web")
        .flat_map(|slice| slice.endpoints.as_deref().unwrap_or_default())
        .map(|endpoint| endpoint.addresses[0].as_str())
        .collect();
    assert_eq!(addresses, ["198.18.1.11"]);
}
