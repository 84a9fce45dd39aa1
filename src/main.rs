//! The `authgate` command: parse the CLI, load the configuration, run until a shutdown signal.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use authgate::config::{BackendConfig, Config};

/// Exit status for a configuration error (sysexits EX_USAGE).
const EXIT_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(
    name = "authgate",
    version,
    about = "External-authorization sidecar: JWT checks for Envoy ext_authz and nginx auth_request"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service. Without --config, reads ./authgate.toml if present, else defaults;
    /// AUTHGATE_<SECTION>__<KEY> environment variables override any key.
    Serve {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Validate a configuration file: exit 0 if valid, 64 naming the bad key otherwise.
    CheckConfig {
        #[arg(long)]
        config: PathBuf,
    },
    /// Print the argon2id hash of a password read from standard input (for the users file).
    HashPassword,
    /// Add or replace a user of the `file` backend; the password is read from standard input.
    UserAdd {
        name: String,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Start signing with a new key. Old keys retire: they keep verifying only the tokens they
    /// signed before now (plus tokens.rotation_grace), access tokens for at most access_ttl
    /// more. Running servers pick the change up within 10 seconds. Also creates the sealing
    /// key when the key directory has none yet.
    RotateKeys {
        #[arg(long)]
        config: Option<PathBuf>,
        /// A key leaked: delete the old signing keys, so every token they signed is refused
        /// (every user logs in again).
        #[arg(long)]
        revoke_old: bool,
        /// Also add a sealing key (backend credentials, TOTP secrets); servers seal with it
        /// tokens.rotation_grace later, and what older sealing keys sealed still opens.
        #[arg(long)]
        sealing_key: bool,
    },
    /// Act on a running server through its admin API ([admin] listen of --config): one JSON
    /// document on stdout; exit 0 on success, 1 on failure (e.g. nothing serving), 64 on a
    /// usage error.
    Admin {
        #[command(subcommand)]
        action: AdminCommand,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// {"lockdown","sessions","store":{"up"},"keys"}: sessions live in the store (all replicas).
    Status {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// The live sessions of a user: [{"sid","user","amr","created","last_refresh",...}].
    Sessions {
        #[arg(long, allow_hyphen_values = true)]
        user: String,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Revokes one session (--sid) or every session of a user (--user) on every replica
    /// within 1 s: {"revoked":n}, n newly revoked.
    Revoke {
        // Session ids are random base64url: one in 64 starts with '-', which is a value here,
        // not an option (as for user names).
        #[arg(
            long,
            required_unless_present = "user",
            conflicts_with = "user",
            allow_hyphen_values = true
        )]
        sid: Option<String>,
        #[arg(long, allow_hyphen_values = true)]
        user: Option<String>,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Lockdown on: password login, OTP login and refresh answer 503 on every replica (existing
    /// sessions keep working); --revoke-all also revokes every session. Kept across restarts.
    Lockdown {
        state: OnOff,
        #[arg(long)]
        revoke_all: bool,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Mints a service token (amr ["svc"], own sid, no backend credential) accepted only on
    /// routes with access = "service": {"token","sid","expires_in"}.
    Token {
        #[arg(long, allow_hyphen_values = true)]
        sub: String,
        /// e.g. "1h"; at most admin.max_token_ttl.
        #[arg(long, value_parser = parse_ttl)]
        ttl: u64,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Starts signing with a new key on the running server (as `authgate rotate-keys`).
    RotateKeys {
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum OnOff {
    On,
    Off,
}

fn parse_ttl(text: &str) -> Result<u64, String> {
    let d = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if d.as_secs() == 0 {
        return Err("must be at least 1s".into());
    }
    Ok(d.as_secs())
}

fn load(path: Option<&Path>) -> Result<Config, ExitCode> {
    Config::load(path, std::env::vars()).map_err(|e| {
        eprintln!("authgate: {e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

fn read_password() -> std::io::Result<String> {
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text)?;
    Ok(text.trim_end_matches(['\n', '\r']).to_owned())
}

/// argon2id (the `file` backend) works in a fresh 19 MiB block per password check. glibc raises
/// its mmap threshold once such a block is freed, so later ones come from the heap and stay
/// resident (tens of MiB per concurrent login, never returned). A fixed threshold turns the
/// dynamic one off: blocks of 128 KiB and more are mmapped and unmapped when freed.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn return_large_blocks_to_the_os() {
    // SAFETY: called first thing in `main`, before any other thread exists; mallopt only
    // changes allocator parameters.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

fn main() -> ExitCode {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    return_large_blocks_to_the_os();
    authgate::tls::install_default_provider();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    ExitCode::SUCCESS
                }
                // Usage errors exit like configuration errors (sysexits EX_USAGE).
                _ => ExitCode::from(EXIT_CONFIG),
            };
        }
    };
    match cli.command {
        Command::Admin { action } => admin(action),
        Command::Serve { config } => match load(config.as_deref()) {
            Ok(cfg) => serve(cfg),
            Err(code) => code,
        },
        Command::CheckConfig { config } => match load(Some(&config)) {
            Ok(_) => {
                println!("{}: ok", config.display());
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::HashPassword => match read_password() {
            Ok(pw) if !pw.is_empty() => {
                println!("{}", authgate::backend::file::hash_password(&pw));
                ExitCode::SUCCESS
            }
            _ => {
                eprintln!("authgate: expected a password on standard input");
                ExitCode::FAILURE
            }
        },
        Command::UserAdd { name, config } => {
            let cfg = match load(config.as_deref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let BackendConfig::File(file) = &cfg.backend else {
                eprintln!(
                    "authgate: invalid configuration at `backend.kind`: user-add manages the users \
                     file of the \"file\" backend, not of {:?}",
                    cfg.backend.kind().as_str()
                );
                return ExitCode::from(EXIT_CONFIG);
            };
            let password = match read_password() {
                Ok(pw) if !pw.is_empty() => pw,
                _ => {
                    eprintln!("authgate: expected a password on standard input");
                    return ExitCode::FAILURE;
                }
            };
            if let Err(e) = private_parent(&file.users_file) {
                eprintln!("authgate: {e}");
                return ExitCode::FAILURE;
            }
            match authgate::backend::file::set_user(&file.users_file, &name, &password) {
                Ok(()) => {
                    println!("user {name} saved in {}", file.users_file.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("authgate: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::RotateKeys {
            config,
            revoke_old,
            sealing_key,
        } => {
            let cfg = match load(config.as_deref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match rotate_keys(&cfg, revoke_old, sealing_key) {
                Ok(report) => {
                    print!("{report}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("authgate: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// `authgate admin ...`: one call to the admin API, its answer as one JSON document.
fn admin(action: AdminCommand) -> ExitCode {
    use AdminCommand as A;
    let config = match &action {
        A::Status { config }
        | A::Sessions { config, .. }
        | A::Revoke { config, .. }
        | A::Lockdown { config, .. }
        | A::Token { config, .. }
        | A::RotateKeys { config } => config.clone(),
    };
    if let A::Lockdown {
        state: OnOff::Off,
        revoke_all: true,
        ..
    } = action
    {
        eprintln!("authgate: --revoke-all goes with `lockdown on`");
        return ExitCode::from(EXIT_CONFIG);
    }
    let cfg = match load(config.as_deref()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("authgate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let mut client = authgate::admin::Client::connect(&cfg)
            .await
            .map_err(|e| (ExitCode::FAILURE, format!("{e:#}")))?;
        let call = |e: tonic::Status| {
            let code = match e.code() {
                tonic::Code::InvalidArgument => ExitCode::from(EXIT_CONFIG),
                _ => ExitCode::FAILURE,
            };
            (code, format!("admin API: {}", e.message()))
        };
        Ok::<_, (ExitCode, String)>(match action {
            A::Status { .. } => {
                let s = client.status().await.map_err(call)?;
                serde_json::json!({
                    "lockdown": s.lockdown,
                    "sessions": s.sessions,
                    "store": {"up": s.store_up},
                    "keys": s.keys,
                })
            }
            A::Sessions { user, .. } => {
                let list = client.list_sessions(&user).await.map_err(call)?;
                if list.truncated {
                    eprintln!("authgate: more sessions than listed");
                }
                let none_if_empty = |s: String| (!s.is_empty()).then_some(s);
                serde_json::Value::Array(
                    list.sessions
                        .into_iter()
                        .map(|s| {
                            serde_json::json!({
                                "sid": s.sid,
                                "user": s.user,
                                "amr": s.amr,
                                "created": s.created,
                                "last_refresh": (s.last_refresh != 0).then_some(s.last_refresh),
                                "expires_at": s.expires_at,
                                "client": none_if_empty(s.client),
                                "user_agent": none_if_empty(s.user_agent),
                                "device": none_if_empty(s.device),
                            })
                        })
                        .collect(),
                )
            }
            A::Revoke { sid, user, .. } => {
                let revoked = match (sid, user) {
                    (Some(sid), _) => client.revoke_session(&sid).await,
                    (None, Some(user)) => client.revoke_user(&user).await,
                    (None, None) => {
                        return Err((ExitCode::from(EXIT_CONFIG), "--sid or --user".into()));
                    }
                }
                .map_err(call)?;
                serde_json::json!({ "revoked": revoked })
            }
            A::Lockdown {
                state, revoke_all, ..
            } => {
                let r = client
                    .set_lockdown(matches!(state, OnOff::On), revoke_all)
                    .await
                    .map_err(call)?;
                serde_json::json!({ "lockdown": r.lockdown, "revoked": r.revoked })
            }
            A::Token { sub, ttl, .. } => {
                let t = client.mint_service_token(&sub, ttl).await.map_err(call)?;
                serde_json::json!({ "token": t.token, "sid": t.sid, "expires_in": t.expires_in })
            }
            A::RotateKeys { .. } => {
                let kid = client.rotate_keys().await.map_err(call)?;
                serde_json::json!({ "kid": kid })
            }
        })
    });
    match result {
        Ok(document) => {
            println!("{document}");
            ExitCode::SUCCESS
        }
        Err((code, message)) => {
            eprintln!("authgate: {message}");
            code
        }
    }
}

/// `authgate rotate-keys`: what it did, one line per change.
fn rotate_keys(
    cfg: &Config,
    revoke_old: bool,
    sealing_key: bool,
) -> Result<String, authgate::token::keys::KeyError> {
    use authgate::token::keys;
    let (path, alg) = (&cfg.store.path, cfg.tokens.algorithm);
    let now = authgate::clock::Clock::system().now();
    // Also creates the sealing key when missing, so a key directory prepared with this
    // command (e.g. for a Kubernetes Secret) is complete.
    keys::load_or_create_seal_key(path)?;
    let mut report = String::new();
    if revoke_old {
        let (kid, revoked) = keys::rotate_and_revoke(path, alg, now)?;
        report.push_str(&format!("new signing key {kid}\n"));
        if !revoked.is_empty() {
            report.push_str(&format!(
                "revoked signing keys {}: servers refuse every token they signed within 10 s\n",
                revoked.join(", ")
            ));
        }
    } else {
        let kid = keys::rotate(path, alg, now)?;
        report.push_str(&format!("new signing key {kid}\n"));
    }
    if sealing_key {
        let id = keys::rotate_seal_key(path)?;
        report.push_str(&format!("new sealing key {id}\n"));
    }
    Ok(report)
}

/// Creates the directory of a data file (the users file) owner-only when it is missing: it
/// holds password hashes and, on first start, the demo password.
fn private_parent(file: &Path) -> std::io::Result<()> {
    match file.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => authgate::token::keys::create_private_dir(dir),
        None => Ok(()),
    }
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("AUTHGATE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_env_filter(filter)
        .with_writer(std::io::stdout)
        .init();
}

fn serve(cfg: Config) -> ExitCode {
    init_tracing();
    if let BackendConfig::File(file) = &cfg.backend
        && let Err(e) = private_parent(&file.users_file)
            .and_then(|()| authgate::backend::file::ensure_demo_user(&file.users_file))
    {
        tracing::error!(error = %e, "cannot create the users file");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("authgate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let running = match authgate::server::start(cfg).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = format!("{e:#}"), "start-up failed");
                return ExitCode::FAILURE;
            }
        };
        shutdown_signal().await;
        tracing::info!("shutdown signal received; draining");
        running.shutdown().await;
        tracing::info!("stopped");
        ExitCode::SUCCESS
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
