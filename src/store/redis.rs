//! Redis store (placeholder until implemented).
use super::StoreError;
use crate::clock::Clock;

pub struct RedisStore;

impl RedisStore {
    pub async fn connect(_url: &str, _clock: Clock) -> Result<Self, StoreError> {
        Err(StoreError::Unavailable("redis store not built yet".into()))
    }
}
