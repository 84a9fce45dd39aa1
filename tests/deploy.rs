#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The Kubernetes manifests in `deploy/`: valid against the Kubernetes schemas
//! (`kubernetes-validate`, offline), carrying a configuration authgate accepts (its listeners
//! on Unix sockets in an emptyDir only Envoy and authgate mount) and an Envoy configuration
//! that is `envoy/envoy-grpc-uds.yaml` plus what a pod needs, and a keys Secret made the way
//! the comments say that authgate loads from a read-only Secret volume. Also: the shipped
//! Unix socket variants (`envoy/envoy-grpc-uds.yaml`, `nginx/nginx-uds.conf`) are the TCP
//! files with authgate's addresses swapped and nothing else changed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

mod support;

use support::process::{envoy_bin, on_path, repo_path};

use authgate::client_addr::ClientAddr;
use authgate::clock::Clock;
use authgate::config::{BackendConfig, BackendKind, Config, ListenAddr, StoreKind};
use authgate::token::{Kind, TokenService, keys};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use secrecy::{ExposeSecret, SecretString};

/// The oldest Kubernetes the manifests support (the preStop `sleep` action is on by default
/// from 1.30) and newer releases the validator bundles.
const KUBERNETES_VERSIONS: &[&str] = &["1.30.0", "1.33.0", "1.37.0"];

/// Where the Deployment mounts the `authgate-keys` Secret: `<store.path>/keys`.
const KEYS_MOUNT: &str = "/var/lib/authgate/keys";

const VALIDATE_HINT: &str = "install it with `python3 -m venv target/envoy-venv && \
     target/envoy-venv/bin/pip install kubernetes-validate==1.37.0` (scripts/install-test-deps \
     does it), or put `kubernetes-validate` on PATH";

fn read(relative: &str) -> String {
    std::fs::read_to_string(repo_path(relative))
        .unwrap_or_else(|e| panic!("cannot read {relative}: {e}"))
}

/// The venv's `kubernetes-validate`, else one on `PATH`; never a silent skip.
fn validator() -> PathBuf {
    let venv = repo_path("target/envoy-venv/bin/kubernetes-validate");
    if venv.is_file() {
        return venv;
    }
    on_path("kubernetes-validate").unwrap_or_else(|| {
        panic!(
            "kubernetes-validate was not found ({} is missing, none on PATH); {VALIDATE_HINT}",
            venv.display()
        )
    })
}

/// Runs `kubernetes-validate --strict` on `files` against `version`; returns its output, or
/// panics with it when validation fails.
fn kubernetes_validate(version: &str, files: &[PathBuf]) -> String {
    let output = Command::new(validator())
        .arg("--strict")
        .args(["--kubernetes-version", version])
        .args(files)
        .output()
        .expect("run kubernetes-validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "kubernetes-validate --strict -k {version} failed ({}):\n{text}",
        output.status
    );
    text
}

/// The manifests users copy: every `deploy/*.yaml`.
fn manifests() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo_path("deploy"))
        .expect("read deploy/")
        .map(|entry| entry.expect("deploy/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    files
}

/// The text of the literal block scalar `key: |` in `yaml` (a ConfigMap data entry),
/// de-indented, with the `|` (clip) chomping: one final newline.
fn block_scalar(yaml: &str, key: &str) -> String {
    let header = format!("{key}: |");
    let mut lines = yaml.lines();
    let key_indent = loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("no `{header}` block found"));
        if line.trim_start() == header {
            break line.len() - line.trim_start().len();
        }
    };
    let mut body: Vec<&str> = Vec::new();
    let mut indent = None;
    for line in lines {
        if line.trim().is_empty() {
            body.push("");
            continue;
        }
        let this = line.len() - line.trim_start().len();
        if this <= key_indent {
            break;
        }
        let indent = *indent.get_or_insert(this);
        if this < indent {
            break;
        }
        body.push(&line[indent..]);
    }
    while body.last() == Some(&"") {
        body.pop();
    }
    assert!(!body.is_empty(), "the `{header}` block is empty");
    format!("{}\n", body.join("\n"))
}

/// Drops the lines between `# <marker>: begin` and `# <marker>: end` (markers included).
fn without_blocks(text: &str, marker: &str) -> String {
    let (begin, end) = (format!("# {marker}: begin"), format!("# {marker}: end"));
    let mut out = String::new();
    let mut inside = false;
    for line in text.lines() {
        match line.trim() {
            l if l == begin => {
                assert!(!inside, "nested `{begin}`");
                inside = true;
            }
            l if l == end => {
                assert!(inside, "`{end}` without a begin");
                inside = false;
            }
            _ if !inside => {
                out.push_str(line);
                out.push('\n');
            }
            _ => {}
        }
    }
    assert!(!inside, "unterminated `{begin}`");
    out
}

/// `tcp` with each `(from, to)` replaced; every `from` must occur.
fn swapped(tcp: &str, pairs: &[(&str, &str)]) -> String {
    let mut text = tcp.to_owned();
    for (from, to) in pairs {
        assert!(text.contains(from), "expected {from:?} in the TCP file");
        text = text.replace(from, to);
    }
    text
}

/// What distinguishes `envoy/envoy-grpc-uds.yaml` from `envoy/envoy-grpc.yaml`.
const ENVOY_UDS: &[(&str, &str)] = &[
    (
        "socket_address: { address: 127.0.0.1, port_value: 9191 }",
        "pipe: { path: /run/authgate/grpc.sock }",
    ),
    (
        "socket_address: { address: 127.0.0.1, port_value: 8080 }",
        "pipe: { path: /run/authgate/http.sock }",
    ),
    ("(127.0.0.1:9191)", "(unix:/run/authgate/grpc.sock)"),
    ("(127.0.0.1:8080)", "(unix:/run/authgate/http.sock)"),
    ("envoy -c envoy-grpc.yaml", "envoy -c envoy-grpc-uds.yaml"),
];

/// What distinguishes `nginx/nginx-uds.conf` from `nginx/nginx.conf`.
const NGINX_UDS: &[(&str, &str)] = &[
    (
        "server 127.0.0.1:8080;",
        "server unix:/run/authgate/http.sock;",
    ),
    ("(127.0.0.1:8080)", "(unix:/run/authgate/http.sock)"),
];

#[test]
fn unix_socket_variants_are_the_tcp_files_with_authgates_addresses_swapped() {
    for (uds, tcp, pairs) in [
        (
            "envoy/envoy-grpc-uds.yaml",
            "envoy/envoy-grpc.yaml",
            ENVOY_UDS,
        ),
        ("nginx/nginx-uds.conf", "nginx/nginx.conf", NGINX_UDS),
    ] {
        let text = read(uds);
        assert!(text.contains("# uds: begin"), "{uds} explains itself");
        assert_eq!(
            without_blocks(&text, "uds"),
            swapped(&read(tcp), pairs),
            "{uds} must be {tcp} with authgate's addresses on Unix sockets and `# uds:` blocks \
             added, nothing else: copy the changes of {tcp} into it"
        );
    }
}

#[test]
fn manifests_pass_the_kubernetes_schemas() {
    let files = manifests();
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for required in ["sidecar.yaml", "redis.yaml"] {
        assert!(
            names.iter().any(|n| n == required),
            "deploy/{required} is missing"
        );
    }
    let expected = [
        "configmap/authgate-config",
        "configmap/envoy-config",
        "deployment/nethcti",
        "service/nethcti",
        "networkpolicy/nethcti",
        "persistentvolumeclaim/authgate-redis-data",
        "deployment/authgate-redis",
        "service/authgate-redis",
        "networkpolicy/authgate-redis",
    ];
    for version in KUBERNETES_VERSIONS {
        let output = kubernetes_validate(version, &files);
        println!("{output}");
        for resource in expected {
            assert!(
                output.contains(&format!("passed for resource {resource} ")),
                "kubernetes-validate -k {version} did not report {resource} as passed:\n{output}"
            );
        }
        assert!(
            !output.contains("ERROR"),
            "kubernetes-validate -k {version} reported errors:\n{output}"
        );
    }
}

#[test]
fn configmap_carries_deploy_authgate_toml_and_authgate_accepts_it() {
    let sidecar = read("deploy/sidecar.yaml");
    let file = read("deploy/authgate.toml");
    let embedded = block_scalar(&sidecar, "authgate.toml");
    assert_eq!(
        embedded, file,
        "the authgate-config ConfigMap in deploy/sidecar.yaml must carry deploy/authgate.toml \
         exactly (indented by 4 spaces under `authgate.toml: |`)"
    );

    let cfg = Config::from_toml_str(&embedded)
        .unwrap_or_else(|e| panic!("deploy/authgate.toml is not valid for authgate: {e}"));
    // A sidecar: both listeners on Unix sockets where Envoy's pipe clusters point, in an
    // emptyDir that the Envoy and authgate containers (and no other) mount; Envoy's
    // X-Forwarded-For is believed on them. The legacy app beside it on loopback.
    let envoy = block_scalar(&sidecar, "envoy.yaml");
    let mut dirs = BTreeSet::new();
    for listen in [&cfg.listen.grpc, &cfg.listen.http] {
        let ListenAddr::Unix(path) = listen else {
            panic!("deploy/authgate.toml: {listen} is not a Unix socket")
        };
        assert!(
            envoy.contains(&format!("pipe: {{ path: {} }}", path.display())),
            "Envoy has no pipe cluster at {listen}"
        );
        dirs.insert(path.parent().unwrap().to_path_buf());
    }
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    let dir = dirs.pop_first().unwrap();
    let mount = format!(
        "- name: authgate-sockets\n          mountPath: {}\n",
        dir.display()
    );
    for container in ["envoy", "authgate"] {
        let spec = sidecar
            .split(&format!("      - name: {container}\n"))
            .nth(1)
            .unwrap_or_else(|| panic!("no {container} container"));
        let spec = spec.split("\n      - name: ").next().unwrap();
        assert!(
            spec.contains(&mount),
            "the {container} container does not mount authgate-sockets at {}",
            dir.display()
        );
    }
    assert_eq!(
        sidecar
            .matches("- name: authgate-sockets\n          mountPath:")
            .count(),
        2,
        "only Envoy and authgate mount the sockets"
    );
    assert!(
        sidecar.contains("      - name: authgate-sockets\n        emptyDir:\n"),
        "authgate-sockets is not an emptyDir"
    );
    assert_eq!(cfg.listen.trusted_proxies, vec![ClientAddr::Unix]);
    assert_eq!(cfg.backend.kind(), BackendKind::Nethcti);
    let BackendConfig::Nethcti(nethcti) = &cfg.backend else {
        panic!("{:?}", cfg.backend)
    };
    assert_eq!(nethcti.url, "http://127.0.0.1:8179");
    // Replicas share state through the Redis Service of deploy/redis.yaml.
    assert!(matches!(cfg.store.kind, StoreKind::Redis { .. }));
    let url = cfg.store.redis_url().unwrap_or_default();
    assert!(url.contains("authgate-redis:6379"), "store.url = {url}");
    // The keys Secret is mounted where authgate looks for keys.
    assert_eq!(
        keys::keys_dir(&cfg.store.path),
        Path::new(KEYS_MOUNT),
        "store.path/keys must be where deploy/sidecar.yaml mounts the authgate-keys Secret"
    );
    assert!(
        sidecar.contains(&format!("mountPath: {KEYS_MOUNT}\n")),
        "deploy/sidecar.yaml does not mount the keys Secret at {KEYS_MOUNT}"
    );
    assert!(
        sidecar.contains(&format!(
            "mountPath: {}\n",
            cfg.store.path.to_string_lossy()
        )),
        "deploy/sidecar.yaml does not mount a volume at store.path"
    );
    // Service links would put AUTHGATE_REDIS_PORT & co. (from the authgate-redis Service)
    // into authgate's environment, where every AUTHGATE_* variable is a config override.
    assert!(
        sidecar.contains("enableServiceLinks: false"),
        "the nethcti Deployment must set enableServiceLinks: false"
    );

    // The overrides the manifests use are accepted too: the Deployment's Redis URL with its
    // password, and the single-replica variant's embedded store.
    let path = repo_path("deploy/authgate.toml");
    let with_password = Config::load(
        Some(&path),
        [(
            "AUTHGATE_STORE__URL".to_owned(),
            "redis://:0123abcd@authgate-redis:6379/0".to_owned(),
        )],
    )
    .unwrap_or_else(|e| panic!("the Deployment's AUTHGATE_STORE__URL is refused: {e}"));
    assert_eq!(
        with_password.store.redis_url(),
        Some("redis://:0123abcd@authgate-redis:6379/0")
    );
    let embedded_store = Config::load(
        Some(&path),
        [("AUTHGATE_STORE__KIND".to_owned(), "embedded".to_owned())],
    )
    .unwrap_or_else(|e| panic!("the single-replica (embedded) variant is refused: {e}"));
    assert_eq!(embedded_store.store.kind, StoreKind::Embedded);
}

#[test]
fn configmap_envoy_yaml_is_envoy_grpc_uds_yaml_plus_the_pod_listeners() {
    let sidecar = read("deploy/sidecar.yaml");
    let embedded = block_scalar(&sidecar, "envoy.yaml");

    // Undo the pod adaptations: what is left must be the file the Envoy tests run.
    let reverted = without_blocks(&embedded, "deploy").replace(
        "socket_address: { address: 0.0.0.0, port_value: 10000 }",
        "socket_address: { address: 127.0.0.1, port_value: 10000 }",
    );
    assert_eq!(
        reverted,
        read("envoy/envoy-grpc-uds.yaml"),
        "the envoy-config ConfigMap in deploy/sidecar.yaml must be envoy/envoy-grpc-uds.yaml \
         with only `# deploy: begin/end` blocks added and the ingress listener on 0.0.0.0: \
         copy the changes of envoy/envoy-grpc-uds.yaml into it"
    );
    // The Service's listener and the probes' ops listener are on the pod's address.
    for port in [10000, 8081] {
        assert!(
            embedded.contains(&format!(
                "socket_address: {{ address: 0.0.0.0, port_value: {port} }}"
            )),
            "Envoy must listen on 0.0.0.0:{port} in the pod"
        );
    }

    // And Envoy accepts it as is.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("envoy.yaml");
    std::fs::write(&config, &embedded).unwrap();
    let output = Command::new(envoy_bin())
        .arg("--mode")
        .arg("validate")
        .arg("--config-path")
        .arg(&config)
        .arg("--disable-hot-restart")
        .args(["--log-level", "warn"])
        .output()
        .expect("run envoy --mode validate");
    assert!(
        output.status.success(),
        "envoy --mode validate rejected the envoy-config ConfigMap ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Every file name under `dir`, recursively, without following symlinks.
fn listing(dir: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            out.extend(listing(&path));
        }
        out.insert(path);
    }
    out
}

/// Lays `files` out the way the kubelet mounts a Secret volume: the files in a timestamped
/// directory, `..data` pointing at it, and one symlink per key through `..data`; read-only.
fn secret_volume(dir: &Path, files: &[(String, Vec<u8>)]) {
    use std::os::unix::fs::{PermissionsExt, symlink};
    let stamp = "..2026_01_01_00_00_00.000000001";
    std::fs::create_dir_all(dir.join(stamp)).unwrap();
    for (name, bytes) in files {
        let file = dir.join(stamp).join(name);
        std::fs::write(&file, bytes).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o400)).unwrap();
        symlink(Path::new("..data").join(name), dir.join(name)).unwrap();
    }
    symlink(stamp, dir.join("..data")).unwrap();
    std::fs::set_permissions(dir.join(stamp), std::fs::Permissions::from_mode(0o555)).unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).unwrap();
}

#[test]
fn keys_secret_made_as_documented_is_valid_and_loads_read_only() {
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("authgate-state");
    std::fs::create_dir_all(&state).unwrap();

    // The steps deploy/sidecar.yaml documents, with this build of authgate.
    let output = Command::new(env!("CARGO_BIN_EXE_authgate"))
        .args(["rotate-keys", "--config"])
        .arg(repo_path("deploy/authgate.toml"))
        .env("AUTHGATE_STORE__PATH", &state)
        .output()
        .expect("run authgate rotate-keys");
    assert!(
        output.status.success(),
        "authgate rotate-keys failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    // rotate-keys also made seal.key: the directory is complete as it is.

    // What `kubectl create secret generic authgate-keys --from-file=authgate-state/keys/`
    // puts in the Secret: one key per regular file.
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(state.join("keys"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    files.sort();
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.contains(&"seal.key"), "{names:?}");
    assert_eq!(
        names.iter().filter(|n| n.ends_with(".json")).count(),
        1,
        "{names:?}"
    );
    for name in &names {
        assert!(
            !name.is_empty()
                && !name.starts_with("..")
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')),
            "{name:?} is not a valid Secret key"
        );
    }
    let mut secret = String::from(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: authgate-keys\ntype: Opaque\ndata:\n",
    );
    for (name, bytes) in &files {
        secret.push_str(&format!("  {name}: {}\n", STANDARD.encode(bytes)));
    }
    let secret_file = work.path().join("authgate-keys-secret.yaml");
    std::fs::write(&secret_file, &secret).unwrap();
    let output = kubernetes_validate(KUBERNETES_VERSIONS[0], &[secret_file]);
    assert!(
        output.contains("passed for resource secret/authgate-keys "),
        "{output}"
    );

    // Two replicas, each with the Secret mounted read-only at <store.path>/keys.
    let mut replicas = Vec::new();
    for i in 0..2 {
        let store = work.path().join(format!("replica-{i}"));
        secret_volume(&store.join("keys"), &files);
        let before = listing(&store);
        let mut cfg = Config::from_toml_str(&read("deploy/authgate.toml")).unwrap();
        cfg.store.path = store.clone();
        let tokens = TokenService::new(&cfg, Clock::system())
            .unwrap_or_else(|e| panic!("replica {i} cannot load the keys Secret: {e}"));
        tokens.reload_keys().unwrap();
        assert_eq!(
            listing(&store),
            before,
            "authgate wrote into the (read-only) keys Secret mount"
        );
        replicas.push(tokens);
    }

    // They sign with the Secret's key and accept each other's tokens, sealed credential
    // included: what lets requests land on any replica.
    let kid = names.iter().find_map(|n| n.strip_suffix(".json")).unwrap();
    let jwks: serde_json::Value = serde_json::from_slice(&replicas[0].jwks()).unwrap();
    assert_eq!(jwks["keys"][0]["kid"], kid, "{jwks}");
    let credential = SecretString::from("alice:15372d36008c1fd11c4a362b373529f72bfeaca2");
    let (token, _) = replicas[0]
        .mint(
            Kind::Access,
            "alice",
            "sid-1",
            &["pwd"],
            60,
            Some(&credential),
        )
        .unwrap();
    let verified = replicas[1].verify(&token).unwrap();
    assert_eq!(&*verified.sub, "alice");
    assert_eq!(
        verified.credential.as_ref().map(|c| c.expose_secret()),
        Some(credential.expose_secret())
    );

    // Writable again, so the temporary directory can be removed by a non-root user too.
    for i in 0..2 {
        make_writable(&work.path().join(format!("replica-{i}/keys")));
    }
}

fn make_writable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
            make_writable(&path);
        }
    }
}

/// The manifests run the image `scripts/build-image` makes from `Containerfile`: the same
/// name and version, as the same non-root user, with a read-only root filesystem.
#[test]
fn manifests_run_the_image_the_containerfile_builds() {
    let image = format!("ghcr.io/nethesis/authgate:{}", env!("CARGO_PKG_VERSION"));
    let script = read("scripts/build-image");
    assert!(
        script.contains(r#"image="${IMAGE:-ghcr.io/nethesis/authgate:$version}""#),
        "scripts/build-image no longer names the image ghcr.io/nethesis/authgate:<version>"
    );
    let containerfile = read("Containerfile");
    let user = containerfile
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("Containerfile sets USER");
    assert_eq!(user.trim(), "65532:65532", "non-root USER in Containerfile");
    assert!(containerfile.lines().any(|l| l.trim() == "FROM scratch"));

    for manifest in ["deploy/sidecar.yaml"] {
        let yaml = read(manifest);
        let authgate = yaml
            .split("- name: authgate\n")
            .nth(1)
            .unwrap_or_else(|| panic!("{manifest}: no authgate container"));
        let container = authgate.split("\n      volumes:").next().unwrap();
        assert!(
            container.contains(&format!("image: {image}\n")),
            "{manifest}: the authgate container must run {image}"
        );
        for setting in [
            "runAsNonRoot: true",
            "runAsUser: 65532",
            "runAsGroup: 65532",
            "readOnlyRootFilesystem: true",
        ] {
            assert!(
                container.contains(setting),
                "{manifest}: authgate's securityContext lacks {setting}"
            );
        }
    }
}

/// `deploy/nethvoice/authgate.toml` passes `authgate check-config` (the profile's `[compat]`
/// keys included) and loads as the nethcti-middleware profile with the nethcti backend.
#[test]
fn nethvoice_authgate_toml_passes_check_config() {
    let path = repo_path("deploy/nethvoice/authgate.toml");
    let output = Command::new(env!("CARGO_BIN_EXE_authgate"))
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .expect("run authgate check-config");
    assert!(
        output.status.success(),
        "authgate check-config --config deploy/nethvoice/authgate.toml: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let cfg = Config::from_toml_str(&read("deploy/nethvoice/authgate.toml"))
        .unwrap_or_else(|e| panic!("deploy/nethvoice/authgate.toml: {e}"));
    assert_eq!(cfg.backend.kind(), BackendKind::Nethcti);
}

/// The addresses in `deploy/nethvoice/authgate.toml` are the ones its Envoy and nginx configs
/// send to (authgate's listeners, nethcti-server), and the `[compat]` section says what the
/// README says.
#[test]
fn nethvoice_configs_agree_on_addresses() {
    let toml: toml::Table = read("deploy/nethvoice/authgate.toml")
        .parse()
        .expect("deploy/nethvoice/authgate.toml is TOML");
    let key = |section: &str, key: &str| {
        toml[section][key]
            .as_str()
            .unwrap_or_else(|| panic!("[{section}] {key}"))
            .to_owned()
    };
    let port = |addr: String| addr.rsplit(':').next().unwrap().to_owned();
    let grpc = port(key("listen", "grpc"));
    let http = port(key("listen", "http"));
    let legacy = port(key("backend", "url"));
    assert_eq!(key("backend", "kind"), "nethcti");
    assert_eq!(key("listen", "grpc"), format!("127.0.0.1:{grpc}"));
    assert_eq!(key("listen", "http"), format!("127.0.0.1:{http}"));
    assert_eq!(key("backend", "url"), format!("http://127.0.0.1:{legacy}"));
    assert_eq!(toml["compat"]["nethcti_middleware"].as_bool(), Some(true));
    assert_eq!(key("compat", "prefix"), "/api");

    let envoy = read("deploy/nethvoice/envoy.yaml");
    for p in [&grpc, &http, &legacy] {
        assert!(
            envoy.contains(&format!(
                "socket_address: {{ address: 127.0.0.1, port_value: {p} }}"
            )),
            "deploy/nethvoice/envoy.yaml does not send to 127.0.0.1:{p}"
        );
    }
    let nginx = read("deploy/nethvoice/nginx.conf");
    for p in [&http, &legacy] {
        assert!(
            nginx.contains(&format!("server 127.0.0.1:{p};")),
            "deploy/nethvoice/nginx.conf does not send to 127.0.0.1:{p}"
        );
    }
}
