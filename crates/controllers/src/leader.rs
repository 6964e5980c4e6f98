//! Leader election through a coordination.k8s.io/v1 Lease, with client-go's semantics: acquire when
//! the Lease is absent or expired (renewTime + leaseDurationSeconds in the past), renew every retry
//! period, and give up leadership when renewals keep failing for the renew deadline; on shutdown the
//! holder releases the Lease (empty holder) so a standby takes over without waiting for expiry.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::PostParams;
use kube::{Api, Client};

use crate::util;

#[derive(Clone, Debug)]
pub struct LeaderConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl LeaderConfig {
    pub fn new(identity: String) -> Self {
        LeaderConfig {
            namespace: "kube-system".into(),
            name: "yard-controller-manager".into(),
            identity,
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// What one attempt found.
#[derive(Debug, PartialEq, Eq)]
pub enum Attempt {
    /// We hold the lease (acquired or renewed).
    Held,
    /// Someone else holds a lease that has not expired.
    Other(String),
}

/// The Lease records whole seconds; never less than one.
fn lease_seconds(cfg: &LeaderConfig) -> i32 {
    (cfg.lease_duration.as_secs_f64().ceil() as i32).max(1)
}

fn lease_expired(spec: &LeaseSpec, now: jiff::Timestamp) -> bool {
    let dur = i64::from(spec.lease_duration_seconds.unwrap_or(15));
    match spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) {
        Some(t) => t.0.as_millisecond() + dur * 1000 < now.as_millisecond(),
        None => true,
    }
}

/// One try to acquire or renew (tryAcquireOrRenew).
pub async fn try_acquire_or_renew(client: &Client, cfg: &LeaderConfig) -> Result<Attempt, kube::Error> {
    let api: Api<Lease> = Api::namespaced(client.clone(), &cfg.namespace);
    let now = jiff::Timestamp::now();
    let micro = MicroTime(now);
    match api.get_opt(&cfg.name).await? {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(cfg.name.clone()),
                    namespace: Some(cfg.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(cfg.identity.clone()),
                    lease_duration_seconds: Some(lease_seconds(cfg)),
                    acquire_time: Some(micro.clone()),
                    renew_time: Some(micro),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            api.create(&PostParams::default(), &lease).await?;
            Ok(Attempt::Held)
        }
        Some(mut lease) => {
            let spec = lease.spec.clone().unwrap_or_default();
            let holder = spec.holder_identity.clone().unwrap_or_default();
            let ours = holder == cfg.identity;
            if !ours && !holder.is_empty() && !lease_expired(&spec, now) {
                return Ok(Attempt::Other(holder));
            }
            let mut new = spec.clone();
            if !ours {
                new.acquire_time = Some(micro.clone());
                new.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                new.holder_identity = Some(cfg.identity.clone());
            }
            new.renew_time = Some(micro);
            new.lease_duration_seconds = Some(lease_seconds(cfg));
            lease.spec = Some(new);
            api.replace(&cfg.name, &PostParams::default(), &lease).await?;
            Ok(Attempt::Held)
        }
    }
}

/// Blocks until this instance holds the lease.
pub async fn acquire(client: &Client, cfg: &LeaderConfig) {
    let mut last_holder = String::new();
    loop {
        match try_acquire_or_renew(client, cfg).await {
            Ok(Attempt::Held) => {
                tracing::info!(identity = %cfg.identity, lease = %format!("{}/{}", cfg.namespace, cfg.name), "acquired leadership");
                return;
            }
            Ok(Attempt::Other(h)) => {
                if h != last_holder {
                    tracing::info!(holder = %h, "waiting for leadership");
                    last_holder = h;
                }
            }
            Err(e) => tracing::debug!(error = %e, "leader election attempt failed"),
        }
        tokio::time::sleep(cfg.retry_period).await;
    }
}

/// Renews until leadership is lost (returns when renewals failed for longer than the renew deadline
/// or another holder took the lease).
pub async fn hold(client: &Client, cfg: &LeaderConfig) {
    let mut last_ok = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(cfg.retry_period).await;
        match tokio::time::timeout(cfg.renew_deadline, try_acquire_or_renew(client, cfg)).await {
            Ok(Ok(Attempt::Held)) => last_ok = tokio::time::Instant::now(),
            Ok(Ok(Attempt::Other(h))) => {
                tracing::warn!(holder = %h, "leadership lost");
                return;
            }
            Ok(Err(e)) if util::is_conflict(&e) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "lease renewal failed"),
            Err(_) => tracing::warn!("lease renewal timed out"),
        }
        if last_ok.elapsed() > cfg.renew_deadline {
            tracing::warn!("leadership lost: could not renew within the deadline");
            return;
        }
    }
}

/// Give the Lease up if we hold it (client-go's ReleaseOnCancel): empty holder, 1s duration.
pub async fn release(client: &Client, cfg: &LeaderConfig) {
    let api: Api<Lease> = Api::namespaced(client.clone(), &cfg.namespace);
    let Ok(Some(mut lease)) = api.get_opt(&cfg.name).await else { return };
    let Some(spec) = lease.spec.as_mut() else { return };
    if spec.holder_identity.as_deref() != Some(cfg.identity.as_str()) {
        return;
    }
    let now = MicroTime(jiff::Timestamp::now());
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    spec.renew_time = Some(now.clone());
    spec.acquire_time = Some(now);
    match tokio::time::timeout(
        cfg.retry_period.max(Duration::from_secs(1)),
        api.replace(&cfg.name, &PostParams::default(), &lease),
    )
    .await
    {
        Ok(Ok(_)) => tracing::info!(identity = %cfg.identity, "released leadership"),
        Ok(Err(e)) => tracing::debug!(error = %e, "releasing the lease"),
        Err(_) => tracing::debug!("releasing the lease timed out"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry() {
        let now = jiff::Timestamp::from_second(1000).unwrap();
        let spec = |renew: i64| LeaseSpec {
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(jiff::Timestamp::from_second(renew).unwrap())),
            ..Default::default()
        };
        assert!(!lease_expired(&spec(990), now));
        assert!(lease_expired(&spec(984), now));
        assert!(lease_expired(&LeaseSpec::default(), now));
    }
}
