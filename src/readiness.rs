//! Whether this replica can decide checks: keys loaded, revocations loaded once, not draining.
//! One value, read by `/readyz` and reported by `grpc.health.v1` (for the whole server, `""`,
//! and for ext_authz), so the two transports cannot disagree. It must never say ready before
//! start-up has finished, and turns false first on shutdown. A store or backend outage after
//! the first revocation load does not touch it: checks still work then, and a sidecar that
//! turned unready would take its whole application out of its Service.

use std::sync::atomic::{AtomicBool, Ordering};

use tonic_health::ServingStatus;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};

use crate::grpc::SERVICE_NAME;

/// The readiness of one authgate process: ready when serving (started, not draining) and the
/// revocation set has been loaded from the store once. Keys are loaded before anything serves.
pub struct Readiness {
    serving: AtomicBool,
    revocations_loaded: AtomicBool,
    /// `serving && revocations_loaded`, as last reported to both transports.
    ready: AtomicBool,
    /// Orders the updates, so the last one reported is the current truth.
    reporting: tokio::sync::Mutex<()>,
    health: HealthReporter,
}

impl Readiness {
    /// Not ready: `/readyz` answers 503 and gRPC health NOT_SERVING until both
    /// [`Readiness::set`] and [`Readiness::revocations_loaded`].
    pub async fn new() -> Self {
        let readiness = Self {
            serving: AtomicBool::new(false),
            revocations_loaded: AtomicBool::new(false),
            ready: AtomicBool::new(false),
            reporting: tokio::sync::Mutex::new(()),
            health: HealthReporter::new(),
        };
        readiness.report(false).await;
        readiness
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Serving (true once started) or draining (false); both transports see the resulting
    /// readiness once this returns.
    pub async fn set(&self, serving: bool) {
        self.serving.store(serving, Ordering::Release);
        self.update().await;
    }

    /// The revocation set has been loaded from the store once (stays so).
    pub async fn revocations_loaded(&self) {
        if !self.revocations_loaded.swap(true, Ordering::AcqRel) {
            self.update().await;
        }
    }

    pub fn has_revocations(&self) -> bool {
        self.revocations_loaded.load(Ordering::Acquire)
    }

    async fn update(&self) {
        let _order = self.reporting.lock().await;
        let ready =
            self.serving.load(Ordering::Acquire) && self.revocations_loaded.load(Ordering::Acquire);
        self.ready.store(ready, Ordering::Release);
        self.report(ready).await;
    }

    async fn report(&self, ready: bool) {
        let status = if ready {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.health.set_service_status("", status).await;
        self.health.set_service_status(SERVICE_NAME, status).await;
    }

    /// The `grpc.health.v1.Health` service reporting this readiness.
    pub fn health_service(&self) -> HealthServer<HealthService> {
        HealthServer::new(HealthService::from_health_reporter(self.health.clone()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use tonic_health::pb::health_check_response::ServingStatus as Wire;
    use tonic_health::pb::health_server::Health;
    use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

    async fn grpc_status(service: &HealthService, name: &str) -> i32 {
        let request = tonic::Request::new(HealthCheckRequest {
            service: name.into(),
        });
        let response: HealthCheckResponse = service.check(request).await.unwrap().into_inner();
        response.status
    }

    #[tokio::test]
    async fn one_value_for_readyz_and_grpc_health() {
        let readiness = Readiness::new().await;
        let service = HealthService::from_health_reporter(readiness.health.clone());
        let down = Wire::NotServing as i32;
        let up = Wire::Serving as i32;
        assert!(!readiness.is_ready());
        assert_eq!(grpc_status(&service, "").await, down);
        assert_eq!(grpc_status(&service, SERVICE_NAME).await, down);
        // Serving without the revocations loaded once (a store down at start): not ready.
        readiness.set(true).await;
        assert!(!readiness.is_ready());
        assert_eq!(grpc_status(&service, "").await, down);
        readiness.revocations_loaded().await;
        assert!(readiness.is_ready());
        assert_eq!(grpc_status(&service, "").await, up);
        assert_eq!(grpc_status(&service, SERVICE_NAME).await, up);
        readiness.set(false).await;
        assert!(!readiness.is_ready());
        assert_eq!(grpc_status(&service, "").await, down);
        assert_eq!(grpc_status(&service, SERVICE_NAME).await, down);
    }
}
