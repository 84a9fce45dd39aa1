//! Whether this replica can decide checks: keys loaded, revocations loaded once, not draining.
//! One value, read by `/readyz` and reported by `grpc.health.v1` (for the whole server, `""`,
//! and for ext_authz), so the two transports cannot disagree. It must never say ready before
//! start-up has finished, and turns false first on shutdown.

use std::sync::atomic::{AtomicBool, Ordering};

use tonic_health::ServingStatus;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};

use crate::grpc::SERVICE_NAME;

/// The readiness of one authgate process.
pub struct Readiness {
    ready: AtomicBool,
    health: HealthReporter,
}

impl Readiness {
    /// Not ready: `/readyz` answers 503 and gRPC health NOT_SERVING until [`Readiness::set`].
    pub async fn new() -> Self {
        let readiness = Self {
            ready: AtomicBool::new(false),
            health: HealthReporter::new(),
        };
        readiness.report(false).await;
        readiness
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Sets readiness; both transports see it once this returns.
    pub async fn set(&self, ready: bool) {
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
        readiness.set(true).await;
        assert!(readiness.is_ready());
        assert_eq!(grpc_status(&service, "").await, up);
        assert_eq!(grpc_status(&service, SERVICE_NAME).await, up);
        readiness.set(false).await;
        assert!(!readiness.is_ready());
        assert_eq!(grpc_status(&service, "").await, down);
        assert_eq!(grpc_status(&service, SERVICE_NAME).await, down);
    }
}
