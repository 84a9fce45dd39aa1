//! The `file` backend: a users file with one `name:<argon2id PHC hash>` per line (`#` starts a
//! comment). The file is re-read when its modification time changes, so `authgate user add`
//! takes effect without a restart. Unknown users cost the same argon2 work as known ones, so
//! timing does not tell them apart.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use std::time::SystemTime;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use secrecy::{ExposeSecret, SecretString};

use super::{BackendError, Verdict};

/// Hashes `password` with argon2id and a random salt (PHC string).
pub fn hash_password(password: &str) -> String {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .unwrap_or_default()
}

/// A user name that fits the users file and the legacy `user:token` header.
pub fn valid_username(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name
            .chars()
            .any(|c| c == ':' || c.is_control() || c.is_whitespace())
}

struct Loaded {
    modified: Option<SystemTime>,
    users: Arc<HashMap<String, String>>,
}

pub struct FileBackend {
    path: PathBuf,
    /// The users as last read, and the file's modification time then. Re-read when the file
    /// changes; two logins racing to re-read it both store the same content.
    loaded: ArcSwap<Loaded>,
    /// argon2id takes 19 MiB and tens of milliseconds per check: a few at a time, so a burst
    /// of logins queues instead of taking all memory and every core.
    hashing: tokio::sync::Semaphore,
    /// Verified against for unknown users, so they take as long as known ones.
    decoy: String,
}

fn parse(text: &str) -> HashMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(u, h)| (u.to_owned(), h.to_owned()))
        .collect()
}

fn unavailable(path: &Path, e: std::io::Error) -> BackendError {
    BackendError::Unavailable(format!("users file {}: {e}", path.display()))
}

impl FileBackend {
    pub fn open(path: &Path) -> Result<Self, BackendError> {
        let backend = Self {
            path: path.to_owned(),
            loaded: ArcSwap::from_pointee(Loaded {
                modified: None,
                users: Arc::default(),
            }),
            decoy: hash_password("decoy password that matches nothing"),
            hashing: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            ),
        };
        backend.users()?;
        Ok(backend)
    }

    fn users(&self) -> Result<Arc<HashMap<String, String>>, BackendError> {
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .map_err(|e| unavailable(&self.path, e))?;
        let loaded = self.loaded.load();
        if loaded.modified == Some(modified) {
            return Ok(loaded.users.clone());
        }
        let text = std::fs::read_to_string(&self.path).map_err(|e| unavailable(&self.path, e))?;
        let users = Arc::new(parse(&text));
        self.loaded.store(Arc::new(Loaded {
            modified: Some(modified),
            users: users.clone(),
        }));
        Ok(users)
    }

    pub async fn authenticate(
        &self,
        username: &str,
        password: &SecretString,
    ) -> Result<Verdict, BackendError> {
        let users = self.users()?;
        let hash = users.get(username).cloned();
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.decoy.clone());
        let password = password.clone();
        let _permit = self
            .hashing
            .acquire()
            .await
            .map_err(|_| BackendError::Unavailable("password check failed".into()))?;
        let ok = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash)
                .map(|parsed| {
                    Argon2::default()
                        .verify_password(password.expose_secret().as_bytes(), &parsed)
                        .is_ok()
                })
                .unwrap_or(false)
        })
        .await
        .map_err(|_| BackendError::Unavailable("password check failed".into()))?;
        // The lookup is exact, so the name as typed is the name in the users file.
        Ok(if ok && known {
            Verdict::Accepted {
                user: username.to_owned(),
                credential: None,
            }
        } else {
            Verdict::Rejected
        })
    }
}

/// Adds or replaces `username` in the users file (created with mode 0600 if missing).
pub fn set_user(path: &Path, username: &str, password: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if !valid_username(username) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "invalid user name",
        ));
    }
    let existing = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e),
    };
    let mut out: String = existing
        .lines()
        .filter(|l| l.split_once(':').is_none_or(|(u, _)| u.trim() != username))
        .map(|l| format!("{l}\n"))
        .collect();
    out.push_str(&format!("{username}:{}\n", hash_password(password)));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(out.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(tmp, path)
}

/// First run of the `file` backend: when the users file does not exist, creates it with a
/// user `demo` whose random password is written next to it in `demo-password` (mode 0600).
/// The password itself is never logged.
pub fn ensure_demo_user(path: &Path) -> std::io::Result<()> {
    if path.exists() {
        return Ok(());
    }
    let password = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        rand::random::<[u8; 15]>(),
    );
    let secret_path = path.with_file_name("demo-password");
    set_user(path, "demo", &password)?;
    crate::token::keys::write_private(&secret_path, format!("{password}\n").as_bytes())
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    tracing::warn!(
        users_file = %path.display(),
        password_file = %secret_path.display(),
        "created users file with user 'demo'; its password is in the password file"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[tokio::test]
    async fn accepts_the_right_password_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        set_user(&path, "alice", "correct horse").unwrap();
        set_user(&path, "bob", "battery").unwrap();
        let b = FileBackend::open(&path).unwrap();
        let pw = |s: &str| SecretString::from(s.to_owned());
        assert!(matches!(
            b.authenticate("alice", &pw("correct horse")).await.unwrap(),
            Verdict::Accepted { ref user, credential: None } if user == "alice"
        ));
        assert!(matches!(
            b.authenticate("alice", &pw("battery")).await.unwrap(),
            Verdict::Rejected
        ));
        assert!(matches!(
            b.authenticate("carol", &pw("battery")).await.unwrap(),
            Verdict::Rejected
        ));
        // Replacing a password takes effect without reopening.
        set_user(&path, "alice", "new one").unwrap();
        assert!(matches!(
            b.authenticate("alice", &pw("new one")).await.unwrap(),
            Verdict::Accepted { .. }
        ));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2);
        assert!(!text.contains("new one"));
    }

    #[test]
    fn rejects_names_that_break_the_file_or_header() {
        for bad in ["", "a:b", "a b", "a\nb"] {
            assert!(!valid_username(bad), "{bad:?}");
        }
        assert!(valid_username("alice@example.org"));
    }
}
