//! The admin API (SPEC 2.5, `proto/authgate/admin/v1/admin.proto`): a gRPC adapter over
//! [`crate::login::admin`], served only on `[admin] listen` (a Unix socket, mode 0600, by
//! default; a TCP address only with a bearer secret), never on the proxy-facing listeners, and
//! the client `authgate admin ...` uses. Every call on a listener with a secret must present
//! it (`authorization: Bearer <secret>`, compared in constant time); the secret is never
//! logged. Each action names its channel (`unix:<path>` or `tcp:<peer>`) in its security event.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;
use tonic::{Request, Response, Status};

use crate::config::{Config, ListenAddr};
use crate::listener::Listener;
use crate::login::LoginService;
use crate::login::admin::AdminError;

/// The generated messages, server and client.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod proto {
    tonic::include_proto!("authgate.admin.v1");
}

use proto::admin_server::{Admin, AdminServer};

/// Reads the bearer secret of `[admin] token_file` (surrounding whitespace ignored).
pub fn read_secret(path: &Path) -> anyhow::Result<SecretString> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading admin.token_file {}", path.display()))?;
    let secret = text.trim();
    anyhow::ensure!(
        !secret.is_empty(),
        "admin.token_file {} is empty",
        path.display()
    );
    Ok(SecretString::from(secret.to_owned()))
}

/// Connections the admin listener serves at once (operators, one CLI call each).
const MAX_CONNECTIONS: usize = 64;

/// Binds `[admin] listen`: a Unix socket is created mode 0600, in a directory created
/// owner-only when missing (`store.path`); see [`Listener::bind`] for the rest.
pub async fn bind(config: &Config) -> anyhow::Result<Listener> {
    let addr = config.admin_listen();
    if let ListenAddr::Unix(path) = &addr
        && let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
    {
        crate::token::keys::create_private_dir(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    Listener::bind("admin.listen", &addr, 0o600).await
}

/// Serves the admin API on `listener` until `stop` completes (a socket file is removed
/// with the listener).
pub async fn serve(
    listener: Listener,
    login: Arc<LoginService>,
    secret: Option<SecretString>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let channel = match listener.local_addr() {
        Ok(unix @ ListenAddr::Unix(_)) => Channel::Unix(unix.to_string()),
        _ => Channel::Tcp,
    };
    let service = AdminServer::new(AdminService {
        login,
        secret,
        channel,
    });
    let result = tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(crate::listener::capped(listener, MAX_CONNECTIONS), stop)
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "admin server failed");
    }
}

enum Channel {
    Unix(String),
    /// Named by the peer address of each call.
    Tcp,
}

struct AdminService {
    login: Arc<LoginService>,
    secret: Option<SecretString>,
    channel: Channel,
}

fn status_of(e: AdminError) -> Status {
    match e {
        AdminError::BadRequest(m) => Status::invalid_argument(m),
        AdminError::Failed(m) => Status::failed_precondition(m),
        AdminError::Login(e) => {
            tracing::error!(error = %e, "admin action failed");
            Status::unavailable(e.to_string())
        }
    }
}

impl AdminService {
    /// The channel of an authorised call, or `unauthenticated`.
    fn authorize<T>(&self, request: &Request<T>) -> Result<String, Status> {
        if let Some(secret) = &self.secret {
            let presented = request
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            let expected = secret.expose_secret().as_bytes();
            if !bool::from(presented.as_bytes().ct_eq(expected)) {
                tracing::warn!(target: "security", event = "admin_unauthorized", peer = ?request.remote_addr(), "admin call without the right bearer secret");
                return Err(Status::unauthenticated("admin bearer secret required"));
            }
        }
        Ok(match &self.channel {
            Channel::Unix(name) => name.clone(),
            Channel::Tcp => match request.remote_addr() {
                Some(peer) => format!("tcp:{peer}"),
                None => "tcp".to_owned(),
            },
        })
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn status(
        &self,
        request: Request<proto::StatusRequest>,
    ) -> Result<Response<proto::StatusResponse>, Status> {
        self.authorize(&request)?;
        let s = self.login.admin_status().await;
        Ok(Response::new(proto::StatusResponse {
            lockdown: s.lockdown,
            sessions: s.sessions,
            store_up: s.store_up,
            keys: s.keys,
        }))
    }

    async fn list_sessions(
        &self,
        request: Request<proto::ListSessionsRequest>,
    ) -> Result<Response<proto::ListSessionsResponse>, Status> {
        self.authorize(&request)?;
        let user = &request.get_ref().user;
        if user.is_empty() {
            return Err(Status::invalid_argument("user is required"));
        }
        let (sessions, truncated) = self.login.list_sessions(user).await.map_err(status_of)?;
        Ok(Response::new(proto::ListSessionsResponse {
            sessions: sessions
                .into_iter()
                .map(|s| proto::Session {
                    sid: s.sid,
                    user: s.user,
                    amr: s.amr,
                    created: s.created,
                    last_refresh: s.last_refresh.unwrap_or(0),
                    expires_at: s.expires_at,
                    client: s.client.unwrap_or_default(),
                    user_agent: s.user_agent.unwrap_or_default(),
                    device: s.device.unwrap_or_default(),
                })
                .collect(),
            truncated,
        }))
    }

    async fn revoke_session(
        &self,
        request: Request<proto::RevokeSessionRequest>,
    ) -> Result<Response<proto::RevokeResponse>, Status> {
        let channel = self.authorize(&request)?;
        let sid = &request.get_ref().sid;
        if sid.is_empty() {
            return Err(Status::invalid_argument("sid is required"));
        }
        let revoked = self
            .login
            .admin_revoke_session(sid, &channel)
            .await
            .map_err(status_of)?;
        Ok(Response::new(proto::RevokeResponse { revoked }))
    }

    async fn revoke_user(
        &self,
        request: Request<proto::RevokeUserRequest>,
    ) -> Result<Response<proto::RevokeResponse>, Status> {
        let channel = self.authorize(&request)?;
        let user = &request.get_ref().user;
        if user.is_empty() {
            return Err(Status::invalid_argument("user is required"));
        }
        let revoked = self
            .login
            .admin_revoke_user(user, &channel)
            .await
            .map_err(status_of)?;
        Ok(Response::new(proto::RevokeResponse { revoked }))
    }

    async fn set_lockdown(
        &self,
        request: Request<proto::SetLockdownRequest>,
    ) -> Result<Response<proto::SetLockdownResponse>, Status> {
        let channel = self.authorize(&request)?;
        let r = request.get_ref();
        if !r.on && r.revoke_all {
            return Err(Status::invalid_argument("revoke_all goes with lockdown on"));
        }
        let revoked = self
            .login
            .set_lockdown(r.on, r.revoke_all, &channel)
            .await
            .map_err(status_of)?;
        Ok(Response::new(proto::SetLockdownResponse {
            lockdown: r.on,
            revoked,
        }))
    }

    async fn rotate_keys(
        &self,
        request: Request<proto::RotateKeysRequest>,
    ) -> Result<Response<proto::RotateKeysResponse>, Status> {
        let channel = self.authorize(&request)?;
        let kid = self.login.admin_rotate_keys(&channel).map_err(status_of)?;
        Ok(Response::new(proto::RotateKeysResponse { kid }))
    }

    async fn mint_service_token(
        &self,
        request: Request<proto::MintServiceTokenRequest>,
    ) -> Result<Response<proto::MintServiceTokenResponse>, Status> {
        let channel = self.authorize(&request)?;
        let r = request.get_ref();
        let minted = self
            .login
            .mint_service_token(&r.sub, r.ttl_seconds, &channel)
            .await
            .map_err(status_of)?;
        Ok(Response::new(proto::MintServiceTokenResponse {
            token: minted.token.expose().clone(),
            sid: minted.sid,
            expires_in: minted.expires_in,
        }))
    }
}

/// The client side, for `authgate admin ...`: a connection to the admin listener of a
/// configuration, with its bearer secret on every call when it has one.
pub struct Client {
    inner: proto::admin_client::AdminClient<tonic::transport::Channel>,
    bearer: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

impl Client {
    /// Connects to the admin listener `config` names. The error says what is not serving.
    pub async fn connect(config: &Config) -> anyhow::Result<Self> {
        let bearer = match &config.admin.token_file {
            Some(path) => {
                let secret = read_secret(path)?;
                Some(
                    format!("Bearer {}", secret.expose_secret())
                        .parse()
                        .context("admin.token_file holds characters a header cannot carry")?,
                )
            }
            None => None,
        };
        let channel = match config.admin_listen() {
            ListenAddr::Unix(path) => {
                let shown = path.display().to_string();
                tonic::transport::Endpoint::from_static("http://admin.invalid")
                    .connect_with_connector(tower::service_fn(move |_: http::Uri| {
                        let path = path.clone();
                        async move {
                            let stream = tokio::net::UnixStream::connect(path).await?;
                            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                        }
                    }))
                    .await
                    .with_context(|| {
                        format!("nothing serving the admin API at unix:{shown} (is authgate running with this --config?)")
                    })?
            }
            ListenAddr::Tcp(addr) => tonic::transport::Endpoint::from_shared(format!(
                "http://{addr}"
            ))?
            .connect()
            .await
            .with_context(|| {
                format!("nothing serving the admin API at tcp:{addr} (is authgate running with this --config?)")
            })?,
        };
        Ok(Self {
            inner: proto::admin_client::AdminClient::new(channel),
            bearer,
        })
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if let Some(b) = &self.bearer {
            request.metadata_mut().insert("authorization", b.clone());
        }
        request
    }

    pub async fn status(&mut self) -> Result<proto::StatusResponse, Status> {
        let r = self.request(proto::StatusRequest {});
        Ok(self.inner.status(r).await?.into_inner())
    }

    pub async fn list_sessions(
        &mut self,
        user: &str,
    ) -> Result<proto::ListSessionsResponse, Status> {
        let r = self.request(proto::ListSessionsRequest {
            user: user.to_owned(),
        });
        Ok(self.inner.list_sessions(r).await?.into_inner())
    }

    pub async fn revoke_session(&mut self, sid: &str) -> Result<u64, Status> {
        let r = self.request(proto::RevokeSessionRequest {
            sid: sid.to_owned(),
        });
        Ok(self.inner.revoke_session(r).await?.into_inner().revoked)
    }

    pub async fn revoke_user(&mut self, user: &str) -> Result<u64, Status> {
        let r = self.request(proto::RevokeUserRequest {
            user: user.to_owned(),
        });
        Ok(self.inner.revoke_user(r).await?.into_inner().revoked)
    }

    pub async fn set_lockdown(
        &mut self,
        on: bool,
        revoke_all: bool,
    ) -> Result<proto::SetLockdownResponse, Status> {
        let r = self.request(proto::SetLockdownRequest { on, revoke_all });
        Ok(self.inner.set_lockdown(r).await?.into_inner())
    }

    pub async fn rotate_keys(&mut self) -> Result<String, Status> {
        let r = self.request(proto::RotateKeysRequest {});
        Ok(self.inner.rotate_keys(r).await?.into_inner().kid)
    }

    pub async fn mint_service_token(
        &mut self,
        sub: &str,
        ttl_seconds: u64,
    ) -> Result<proto::MintServiceTokenResponse, Status> {
        let r = self.request(proto::MintServiceTokenRequest {
            sub: sub.to_owned(),
            ttl_seconds,
        });
        Ok(self.inner.mint_service_token(r).await?.into_inner())
    }
}
