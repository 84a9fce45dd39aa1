//! The `authgate` binary as an operator runs it: --help/--version, check-config exit codes,
//! user management, and `serve` end to end: first-run demo user, login, checks, SIGTERM drain
//! with exit 0, and no secret anywhere in its output.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod support;
use support::process::free_port;

const BIN: &str = env!("CARGO_BIN_EXE_authgate");

fn run(args: &[&str], dir: &Path, stdin: &str) -> (i32, String, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A command that does not read its stdin (check-config) may exit before the write: a
    // broken pipe then is no failure of the command's.
    let written = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    if let Err(e) = written {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_and_version() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, _) = run(&["--version"], dir.path(), "");
    assert_eq!(code, 0);
    assert!(out.contains(env!("CARGO_PKG_VERSION")));
    let (code, out, _) = run(&["--help"], dir.path(), "");
    assert_eq!(code, 0);
    for sub in [
        "serve",
        "check-config",
        "hash-password",
        "user-add",
        "rotate-keys",
        "admin",
    ] {
        assert!(out.contains(sub), "--help lacks {sub}");
    }
}

#[test]
fn check_config_exits_64_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_owned()
    };
    let good = write("good.toml", "[tokens]\naccess_ttl = \"5m\"\n");
    assert_eq!(
        run(&["check-config", "--config", &good], dir.path(), "").0,
        0
    );
    for (text, key) in [
        ("[tokens]\naccess_ttl = \"forever\"\n", "tokens.access_ttl"),
        ("[tokens]\nsurprise = true\n", "tokens.surprise"),
        (
            "[lockout]\nmax_failures = \"five\"\n",
            "lockout.max_failures",
        ),
        ("[backend]\nkind = \"ldap\"\n", "backend.kind"),
        ("[tokens\n", "(file)"),
    ] {
        let path = write("bad.toml", text);
        let (code, _, err) = run(&["check-config", "--config", &path], dir.path(), "");
        assert_eq!(code, 64, "{text}");
        assert!(err.contains(key), "{text}: {err}");
    }
    // A Unix socket path past the kernel's 107 bytes.
    let long = format!("/run/{}/http.sock", "d".repeat(100));
    let path = write("long.toml", &format!("[listen]\nhttp = \"unix:{long}\"\n"));
    let (code, _, err) = run(&["check-config", "--config", &path], dir.path(), "");
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("listen.http") && err.contains("107"), "{err}");
    let missing = dir.path().join("nope.toml");
    assert_eq!(
        run(
            &["check-config", "--config", missing.to_str().unwrap()],
            dir.path(),
            ""
        )
        .0,
        64
    );
}

/// The `*_file` keys are read by `check-config` as by `serve`: an unreadable or unusable file
/// is exit 64 naming the key (and the path), never quoting what the file holds.
#[test]
fn check_config_reads_the_secret_and_ca_files() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_owned()
    };
    let secret = "hunter2-in-a-file";
    let password = file("password", &format!("{secret}\n"));
    let empty = file("empty", "\n");
    let not_pem = file("not-pem", &format!("{secret}\n"));
    let ca = file("ca.pem", &support::tls::TestCa::new("cli CA").cert_pem);
    let url_file = file("url", &format!("rediss://:{secret}@127.0.0.1:6380/\n"));
    let insecure = file(
        "insecure-url",
        &format!("rediss://:{secret}@h:6380/#insecure"),
    );
    let missing = dir.path().join("missing").to_str().unwrap().to_owned();
    let redis = "[store]\nkind = \"redis\"\n";
    let https = "[backend]\nkind = \"nethcti\"\nurl = \"https://10.0.0.5/webrest\"\n";
    let config = dir.path().join("authgate.toml");
    let check = |text: &str| {
        std::fs::write(&config, text).unwrap();
        run(
            &["check-config", "--config", config.to_str().unwrap()],
            dir.path(),
            "",
        )
    };
    for text in [
        format!(
            "{redis}url = \"rediss://127.0.0.1:6380/\"\npassword_file = {password:?}\nca_file = {ca:?}\n"
        ),
        format!("{redis}url_file = {url_file:?}\nca_file = {ca:?}\n"),
        format!("{https}ca_file = {ca:?}\n"),
    ] {
        let (code, out, err) = check(&text);
        assert_eq!(code, 0, "{text}\n{out}{err}");
    }
    // (text, key named, the file named when the file itself is at fault)
    let cases: Vec<(String, &str, Option<&str>)> = vec![
        (
            format!("{redis}url = \"redis://h\"\npassword_file = {missing:?}\n"),
            "store.password_file",
            Some(&missing),
        ),
        (
            format!("{redis}url = \"redis://h\"\npassword_file = {empty:?}\n"),
            "store.password_file",
            Some(&empty),
        ),
        (
            format!("{redis}url = \"redis://:pw@h\"\npassword_file = {password:?}\n"),
            "store.password_file",
            None,
        ),
        (
            format!("{redis}url_file = {missing:?}\n"),
            "store.url_file",
            Some(&missing),
        ),
        (
            format!("{redis}url = \"redis://h\"\nurl_file = {url_file:?}\n"),
            "store.url_file",
            None,
        ),
        (
            format!("{redis}url_file = {insecure:?}\n"),
            "store.url_file",
            None,
        ),
        (
            format!("{redis}url = \"rediss://h\"\nca_file = {not_pem:?}\n"),
            "store.ca_file",
            Some(&not_pem),
        ),
        (
            format!("{redis}url = \"redis://h\"\nca_file = {ca:?}\n"),
            "store.ca_file",
            None,
        ),
        (
            format!("{https}ca_file = {missing:?}\n"),
            "backend.ca_file",
            Some(&missing),
        ),
        (
            format!("{https}ca_file = {not_pem:?}\n"),
            "backend.ca_file",
            Some(&not_pem),
        ),
        (
            format!("[backend]\nkind = \"http\"\nurl = \"http://h/login\"\nca_file = {ca:?}\n"),
            "backend.ca_file",
            None,
        ),
    ];
    for (text, key, path) in cases {
        let (code, out, err) = check(&text);
        assert_eq!(code, 64, "{text}\n{out}{err}");
        assert!(err.contains(key), "{text}: {err}");
        assert!(path.is_none_or(|p| err.contains(p)), "{text}: {err}");
        assert!(!format!("{out}{err}").contains(secret), "{text}: {err}");
    }
}

/// What `serve` would refuse at start-up because of the configuration, `check-config` refuses
/// first, naming the key (without I/O: nothing here exists or listens).
#[test]
fn check_config_refuses_what_serve_would() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    for (text, key) in [
        ("[store]\nkind = \"redis\"\n", "store.url"),
        (
            "[store]\nkind = \"redis\"\nurl = \"redis://:hunter2@h:port\"\n",
            "store.url",
        ),
        (
            "[backend]\nkind = \"http\"\nurl = \"http://user:pw@h/login\"\n",
            "backend.url",
        ),
        (
            "[backend]\nkind = \"nethcti\"\ntimeout = \"0s\"\n",
            "backend.timeout",
        ),
        (
            "[[policy.routes]]\npath_prefix = \"/\"\naccess = \"token\"\nmethods = []\n",
            "policy.routes[0].methods",
        ),
    ] {
        std::fs::write(&path, text).unwrap();
        let (code, out, err) = run(
            &["check-config", "--config", path.to_str().unwrap()],
            dir.path(),
            "",
        );
        assert_eq!(code, 64, "{text}");
        assert!(err.contains(key), "{text}: {err}");
        assert!(!format!("{out}{err}").contains("hunter2"), "{text}: {err}");
    }
    // user-add manages the file backend's users; with another backend there is no users file.
    std::fs::write(&path, "[backend]\nkind = \"nethcti\"\n").unwrap();
    let (code, _, err) = run(
        &["user-add", "bob", "--config", path.to_str().unwrap()],
        dir.path(),
        "pw\n",
    );
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("backend.kind"), "{err}");
    assert!(!dir.path().join("data/users").exists());
}

#[test]
fn hash_password_and_user_add() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, _) = run(&["hash-password"], dir.path(), "s3cret\n");
    assert_eq!(code, 0);
    assert!(out.starts_with("$argon2id$"), "{out}");
    assert!(!out.contains("s3cret"));
    let (code, _, _) = run(&["user-add", "bob"], dir.path(), "pw\n");
    assert_eq!(code, 0);
    let users = std::fs::read_to_string(dir.path().join("data/users")).unwrap();
    assert!(users.starts_with("bob:$argon2id$"));
    assert_eq!(run(&["user-add", "bad:name"], dir.path(), "pw\n").0, 1);
}

#[test]
fn serve_first_run_login_check_and_sigterm_without_leaking_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, base) = serve_defaults(dir.path(), Stdio::piped);

    let password = std::fs::read_to_string(dir.path().join("data/demo-password")).unwrap();
    let password = password.trim();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (access, refresh) = rt.block_on(async {
        let c = support::http_client();
        let bad = c
            .post(format!("{base}/auth/login"))
            .json(&serde_json::json!({"username": "demo", "password": "wrong-password-123"}))
            .send()
            .await
            .unwrap();
        assert_eq!(bad.status(), 401);
        let v: serde_json::Value = c
            .post(format!("{base}/auth/login"))
            .json(&serde_json::json!({"username": "demo", "password": password}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let access = v["access_token"].as_str().unwrap().to_owned();
        let refresh = v["refresh_token"].as_str().unwrap().to_owned();
        for (path, auth) in [
            ("/authz/api".to_owned(), Some(format!("Bearer {access}"))),
            (format!("/authz/api?access_token={access}"), None),
            ("/authz/api".to_owned(), Some(format!("Bearer {refresh}"))),
            ("/authz/api".to_owned(), Some("Bearer x.y.z".to_owned())),
        ] {
            let mut req = c.get(format!("{base}{path}"));
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            req.send().await.unwrap();
        }
        let logout = c
            .post(format!("{base}/auth/logout"))
            .header("authorization", format!("Bearer {access}"))
            .send()
            .await
            .unwrap();
        assert_eq!(logout.status(), 204);
        (access, refresh)
    });

    let started = Instant::now();
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    for event in ["login_success", "login_failure", "logout"] {
        assert!(
            out.contains(&format!("\"event\":\"{event}\"")),
            "no {event} event in:\n{out}"
        );
    }
    assert!(out.contains("\"target\":\"security\""));
    for secret in [password, "wrong-password-123", &access, &refresh] {
        assert!(!out.contains(secret), "a secret leaked into the output");
    }
    // Signatures alone must not appear either.
    for tok in [&access, &refresh] {
        assert!(!out.contains(tok.rsplit('.').next().unwrap()));
    }
    // Every line is JSON.
    for line in out.lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|_| panic!("not JSON: {line}"));
    }
}

/// `authgate serve` on its defaults in `dir` (free ports on 127.0.0.1, no malloc tuning from
/// the caller's environment), once ready; its base URL.
fn serve_defaults(dir: &Path, output: fn() -> Stdio) -> (std::process::Child, String) {
    let (grpc, http) = (free_port(), free_port());
    let child = Command::new(BIN)
        .args(["serve"])
        .current_dir(dir)
        .env("AUTHGATE_LISTEN__GRPC", format!("127.0.0.1:{grpc}"))
        .env("AUTHGATE_LISTEN__HTTP", format!("127.0.0.1:{http}"))
        .env_remove("MALLOC_MMAP_THRESHOLD_")
        .stdout(output())
        .stderr(output())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{http}");
    assert!(
        wait_ready(&format!("{base}/readyz"), Duration::from_secs(20)),
        "authgate did not become ready"
    );
    (child, base)
}

fn wait_ready(url: &str, within: Duration) -> bool {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(r) = support::http_client().get(url).send().await
                && r.status() == 200
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    })
}

#[test]
fn rotate_keys_prepares_a_complete_key_directory() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, _) = run(&["rotate-keys"], dir.path(), "");
    assert_eq!(code, 0, "{out}");
    let keys = dir.path().join("data/keys");
    assert!(keys.join("seal.key").is_file());
    let signing: Vec<_> = std::fs::read_dir(&keys)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .collect();
    assert_eq!(signing.len(), 1);
    // A second rotation keeps the first key (retired, still verifying) and the seal key.
    let seal = std::fs::read(keys.join("seal.key")).unwrap();
    assert_eq!(run(&["rotate-keys"], dir.path(), "").0, 0);
    assert_eq!(std::fs::read(keys.join("seal.key")).unwrap(), seal);
    assert_eq!(std::fs::read_dir(&keys).unwrap().count(), 3);
}

/// Resident memory of a process, from /proc.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Each argon2id check takes a 19 MiB block. glibc's dynamic mmap threshold would keep those
/// blocks on the heap after the first one is freed (measured: 30 MiB idle, 150-190 MiB after
/// these logins); the binary fixes the threshold so they go back to the OS (11 MiB throughout).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn password_logins_give_their_memory_back() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, base) = serve_defaults(dir.path(), Stdio::null);
    let password = std::fs::read_to_string(dir.path().join("data/demo-password")).unwrap();
    let idle = vm_rss_kib(child.id());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let statuses = rt.block_on(async {
        let c = support::http_client();
        let body = serde_json::json!({"username": "demo", "password": password.trim()});
        let mut statuses = Vec::new();
        // Two rounds of four at once: several blocking threads, each with its own arena.
        for _ in 0..2 {
            let logins: Vec<_> = (0..4)
                .map(|_| tokio::spawn(c.post(format!("{base}/auth/login")).json(&body).send()))
                .collect();
            for login in logins {
                statuses.push(login.await.unwrap().map(|r| r.status().as_u16()).ok());
            }
        }
        statuses
    });
    let after = vm_rss_kib(child.id());
    let _ = child.kill();
    let _ = child.wait();
    assert!(statuses.iter().all(|s| *s == Some(200)), "{statuses:?}");
    // Less than one retained argon2 block, whatever the build profile's baseline.
    assert!(
        after < idle + 16 * 1024,
        "RSS grew from {idle} KiB to {after} KiB over 8 logins"
    );
}

/// Every file authgate creates under `dir` (recursively) with its permission bits.
fn modes_under(dir: &Path) -> Vec<(std::path::PathBuf, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                todo.push(path.clone());
            }
            out.push((path, meta.permissions().mode() & 0o777));
        }
    }
    out
}

fn assert_private(data: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(data).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "{} is {mode:o}", data.display());
    for (path, mode) in modes_under(data) {
        let want = if path.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode, want, "{} is {mode:o}", path.display());
    }
}

/// The data directory holds keys, the database, password hashes and the demo password: no
/// other local user may read any of it, whatever the umask (issue 11, item 10).
#[test]
fn data_files_are_private_after_first_start_and_user_add() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, _base) = serve_defaults(dir.path(), Stdio::null);
    let _ = child.kill();
    let _ = child.wait();
    let data = dir.path().join("data");
    for name in ["authgate.redb", "users", "demo-password", "keys/seal.key"] {
        assert!(data.join(name).is_file(), "{name} missing");
    }
    assert_private(&data);
    assert_eq!(run(&["user-add", "bob"], dir.path(), "pw\n").0, 0);
    assert_private(&data);

    // user-add on a fresh machine creates the directory itself.
    let fresh = tempfile::tempdir().unwrap();
    assert_eq!(run(&["user-add", "carol"], fresh.path(), "pw\n").0, 0);
    assert!(fresh.path().join("data/users").is_file());
    assert_private(&fresh.path().join("data"));
}

/// A leaked key: `rotate-keys --revoke-old` on the command line, and the running server
/// refuses the tokens the old key signed within its 10 s key reload, while new logins work.
#[test]
fn rotate_keys_revoke_old_reaches_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, base) = serve_defaults(dir.path(), Stdio::null);
    let password = std::fs::read_to_string(dir.path().join("data/demo-password")).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let login = || rt.block_on(demo_login(&base, password.trim()));
    let check = |token: &str| rt.block_on(authz_status(&base, token));
    let old = login();
    assert_eq!(check(&old), 200);

    let (code, out, err) = run(&["rotate-keys", "--revoke-old"], dir.path(), "");
    assert_eq!(code, 0, "{err}");
    let old_kid = {
        let header = old.split('.').next().unwrap();
        let header =
            base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, header)
                .unwrap();
        let header: serde_json::Value = serde_json::from_slice(&header).unwrap();
        header["kid"].as_str().unwrap().to_owned()
    };
    assert!(out.contains(&old_kid), "{out}");
    let started = Instant::now();
    while check(&old) == 200 {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the revoked key still verifies"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(check(&old), 401);
    assert_eq!(check(&login()), 200);
    let _ = child.kill();
    let _ = child.wait();
}

async fn demo_login(base: &str, password: &str) -> String {
    let v: serde_json::Value = support::http_client()
        .post(format!("{base}/auth/login"))
        .json(&serde_json::json!({"username": "demo", "password": password}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["access_token"].as_str().unwrap().to_owned()
}

async fn authz_status(base: &str, token: &str) -> u16 {
    support::http_client()
        .get(format!("{base}/authz/api"))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// `rotate-keys --sealing-key` adds a sealing key beside `seal.key`, which stays as it was
/// (it opens everything sealed before), and `--revoke-old` deletes the old signing keys.
#[test]
fn rotate_keys_flags_change_the_key_directory_as_documented() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("data/keys");
    assert_eq!(run(&["rotate-keys"], dir.path(), "").0, 0);
    let seal = std::fs::read(keys.join("seal.key")).unwrap();
    let (code, out, err) = run(&["rotate-keys", "--sealing-key"], dir.path(), "");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("new sealing key 1"), "{out}");
    assert_eq!(std::fs::read(keys.join("seal.key")).unwrap(), seal);
    let mode = std::fs::metadata(keys.join("seal-1.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let signing = || {
        std::fs::read_dir(&keys)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .count()
    };
    assert_eq!(signing(), 2);
    let (code, out, _) = run(&["rotate-keys", "--revoke-old"], dir.path(), "");
    assert_eq!(code, 0);
    assert!(out.contains("revoked signing keys"), "{out}");
    assert_eq!(signing(), 1);
    assert!(keys.join("seal-1.key").is_file());
}
