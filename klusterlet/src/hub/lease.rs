//! The lease loop: `PUT /api/v1/clusters/{c}/lease` every interval the hub asks for, with
//! the claims when they changed since the last renewal the hub accepted.

use std::sync::Arc;
use std::time::Duration;

use api::{Claim, LeaseRenewal};
use tokio::sync::watch;

use super::session::{HUB_CALL_TIMEOUT, Session, log_failure, no_answer};
use crate::{Error, sleep_or_stop, telemetry};
use api::retry::Backoff;

/// The lease interval assumed until the hub says otherwise.
const DEFAULT_LEASE_INTERVAL: Duration = Duration::from_secs(10);

/// Renews the lease every interval the hub asks for, sending the claims when they changed.
pub async fn lease_loop(
    session: Arc<Session>,
    claims: watch::Receiver<Option<Vec<Claim>>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    let mut interval = DEFAULT_LEASE_INTERVAL;
    let mut sent_claims: Option<Vec<Claim>> = None;
    let mut refused_in_a_row = 0u32;
    loop {
        let latest = claims.borrow().clone();
        let renewal = LeaseRenewal {
            claims: latest.clone().filter(|c| sent_claims.as_ref() != Some(c)),
        };
        let delay = match renew(&session, &renewal).await {
            Ok(status) => {
                session.reached();
                telemetry::lease_renewed();
                backoff.reset();
                refused_in_a_row = 0;
                if renewal.claims.is_some() {
                    sent_claims = latest;
                }
                interval = Duration::from_secs(status.lease_interval_seconds.max(1));
                tracing::debug!(renewed_at = %status.renewed_at, "lease renewed");
                // ±5 %: agents that started together (after a hub or node restart) drift
                // apart instead of renewing in step, a burst on the hub every interval.
                interval.mul_f64(0.95 + 0.1 * rand::random::<f64>())
            }
            Err(Renewal::Unauthorized(generation)) => {
                session.invalidate(generation).await;
                refused_in_a_row += 1;
                tracing::warn!("the hub refused the access token; minting a new one");
                // The first 401 is usually an expired token: retry at once.
                if refused_in_a_row == 1 {
                    Duration::ZERO
                } else {
                    backoff.next_delay()
                }
            }
            Err(Renewal::Failed(e)) => {
                if e.is_transient() {
                    session.unreachable();
                }
                log_failure("renewing the lease", &e);
                backoff
                    .next_delay()
                    .min(interval.max(Duration::from_secs(1)) * 3)
            }
        };
        if sleep_or_stop(delay, &mut stop).await {
            return;
        }
    }
}

enum Renewal {
    Unauthorized(u64),
    Failed(Error),
}

#[tracing::instrument(level = "debug", skip_all, fields(cluster = %session.cluster(), claims = renewal.claims.is_some()))]
async fn renew(session: &Session, renewal: &LeaseRenewal) -> Result<api::LeaseStatus, Renewal> {
    let auth = session.authorized().await.map_err(Renewal::Failed)?;
    let answer = tokio::time::timeout(
        HUB_CALL_TIMEOUT,
        telemetry::hub_call(
            "renew_lease",
            auth.client.renew_lease(session.cluster(), renewal),
        ),
    )
    .await
    .map_err(|_| Renewal::Failed(no_answer(auth.client.base_url())))?;
    match answer {
        Ok(status) => Ok(status),
        Err(e) if e.status() == Some(reqwest::StatusCode::UNAUTHORIZED) => {
            Err(Renewal::Unauthorized(auth.generation))
        }
        Err(e) => Err(Renewal::Failed(e.into())),
    }
}
