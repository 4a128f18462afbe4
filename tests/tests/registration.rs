//! Registration and security against a real hub process over real TLS. The agent side is
//! played by this test with its own P-256 key, speaking the protocol the klusterlet speaks.
//!
//! Bad credentials tried: expired, revoked, used-up and malformed bootstrap tokens; JWTs
//! signed by the wrong key, with `alg: none`, expired, for another cluster's subject, and
//! an access token after revocation; API tokens outside their clusters or verbs.

use std::time::{Duration, Instant};

use api::{
    ClientConfig, HubClient, LeaseRenewal, ListOptions, ManagedCluster, ManifestWork,
    RegistrationRequest, RegistrationState, TokenKind, TokenRequest, Verb,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use testkit::postgres::TestPostgres;
use testkit::procs::HubProcess;

fn init() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// A pretend agent: a key pair and the JWTs it signs.
struct AgentKey {
    private_pem: String,
    public_pem: String,
}

impl AgentKey {
    fn new() -> Self {
        let k = rcgen::KeyPair::generate().unwrap();
        AgentKey {
            private_pem: k.serialize_pem(),
            public_pem: k.public_key_pem(),
        }
    }

    fn assertion_with(&self, subject: &str, iat_offset: i64, life: i64) -> String {
        let now = chrono::Utc::now().timestamp() + iat_offset;
        let claims = json!({"iss": subject, "sub": subject, "aud": "fleethub", "iat": now, "exp": now + life, "jti": uuid::Uuid::new_v4().to_string()});
        jsonwebtoken::encode(
            &Header::new(Algorithm::ES256),
            &claims,
            &EncodingKey::from_ec_pem(self.private_pem.as_bytes()).unwrap(),
        )
        .unwrap()
    }

    fn assertion(&self, subject: &str) -> String {
        self.assertion_with(subject, 0, 120)
    }

    /// A JWT with exactly these claims, signed by this key.
    fn sign(&self, claims: &serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::ES256),
            claims,
            &EncodingKey::from_ec_pem(self.private_pem.as_bytes()).unwrap(),
        )
        .unwrap()
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn jti() -> String {
    uuid::Uuid::new_v4().to_string()
}

struct Fixture {
    hub: HubProcess,
    admin: HubClient,
    cfg: ClientConfig,
    _dir: tempfile::TempDir,
}

async fn start(extra: &[&str]) -> Fixture {
    init();
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["--lease-interval", "1s", "--lease-grace", "2s"];
    args.extend_from_slice(extra);
    let hub = HubProcess::start(dir.path(), &args).await.unwrap();
    let cfg = ClientConfig::load(&hub.client_config_path()).unwrap();
    let admin = HubClient::new(&cfg).unwrap();
    Fixture {
        hub,
        admin,
        cfg,
        _dir: dir,
    }
}

impl Fixture {
    fn as_token(&self, token: &str) -> HubClient {
        self.admin.with_token(Some(token.to_string()))
    }

    async fn bootstrap(&self, req: TokenRequest) -> String {
        self.admin
            .create_token(&TokenRequest {
                kind: TokenKind::Bootstrap,
                ..req
            })
            .await
            .unwrap()
            .token
            .unwrap()
    }

    /// Join, accept if needed, and return an access-token client for the cluster.
    async fn join(&self, name: &str, key: &AgentKey, auto: bool) -> HubClient {
        self.as_token(&self.join_token(name, key, auto).await)
    }

    /// Join, accept if needed, and return the cluster's access token.
    async fn join_token(&self, name: &str, key: &AgentKey, auto: bool) -> String {
        let token = self
            .bootstrap(TokenRequest {
                auto_accept: auto,
                ..Default::default()
            })
            .await;
        let reg = self
            .as_token(&token)
            .register(&request(name, key))
            .await
            .unwrap();
        if reg.state != RegistrationState::Accepted {
            self.admin.accept_registration(&reg.id).await.unwrap();
        }
        let access = self
            .admin
            .with_token(None)
            .credentials(name, &key.assertion(&format!("cluster:{name}")))
            .await
            .unwrap();
        access.access_token
    }

    async fn registrations(&self) -> usize {
        self.admin
            .list_registrations(&ListOptions::default())
            .await
            .unwrap()
            .value
            .items
            .len()
    }
}

fn request(name: &str, key: &AgentKey) -> RegistrationRequest {
    RegistrationRequest {
        cluster_name: name.into(),
        public_key: key.public_pem.clone(),
        ..Default::default()
    }
}

fn work(cluster: &str, name: &str) -> ManifestWork {
    ManifestWork::new(
        cluster,
        name,
        vec![
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "default"}, "stringData": {"password": "hunter2-top-secret"}}),
        ],
    )
}

fn status(e: &api::ClientError) -> u16 {
    e.status().map(|s| s.as_u16()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_handshake_and_agent_scope() {
    let f = start(&[]).await;
    let key = AgentKey::new();
    let token = f
        .bootstrap(TokenRequest {
            labels: [("env".to_string(), "dev".to_string())].into(),
            ..Default::default()
        })
        .await;
    let reg = f
        .as_token(&token)
        .register(&RegistrationRequest {
            labels: [("zone".to_string(), "a".to_string())].into(),
            ..request("c1", &key)
        })
        .await
        .unwrap();
    assert_eq!(reg.state, RegistrationState::Pending);
    assert_eq!(
        reg.requested_labels,
        [("zone".to_string(), "a".to_string())].into(),
        "what the agent chose itself is shown for the admin's decision"
    );

    // The joining agent reads its own request with an assertion signed by its key, blocking.
    let mine = f
        .admin
        .with_token(Some(key.assertion(&format!("registration:{}", reg.id))));
    let first = mine
        .get_registration(&reg.id, &ListOptions::default())
        .await
        .unwrap();
    // Each assertion is good for one request: the blocking read signs a new one.
    let waiter = {
        let mine = f
            .admin
            .with_token(Some(key.assertion(&format!("registration:{}", reg.id))));
        let (id, index) = (reg.id.clone(), first.index);
        tokio::spawn(async move {
            mine.get_registration(
                &id,
                &ListOptions {
                    index: Some(index),
                    wait: Some(Duration::from_secs(30)),
                    ..Default::default()
                },
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let accepted = f.admin.accept_registration(&reg.id).await.unwrap();
    assert_eq!(accepted.state, RegistrationState::Accepted);
    assert!(
        accepted.requested_labels.is_empty(),
        "applied by the admin's accept"
    );
    let seen = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        seen.value.state,
        RegistrationState::Accepted,
        "the blocked agent saw its acceptance"
    );
    // Another agent's assertion cannot read it.
    let other = AgentKey::new();
    let e = f
        .admin
        .with_token(Some(other.assertion(&format!("registration:{}", reg.id))))
        .get_registration(&reg.id, &ListOptions::default())
        .await
        .unwrap_err();
    assert_eq!(status(&e), 401);

    let cluster = f.admin.get_cluster("c1").await.unwrap().value;
    assert!(cluster.spec.hub_accepts_client);
    assert_eq!(
        cluster.metadata.labels.get("env").map(String::as_str),
        Some("dev"),
        "the token's labels are stamped"
    );
    assert_eq!(
        cluster.metadata.labels.get("zone").map(String::as_str),
        Some("a")
    );

    let access = f
        .admin
        .with_token(None)
        .credentials("c1", &key.assertion("cluster:c1"))
        .await
        .unwrap();
    let agent = f.as_token(&access.access_token);
    assert_eq!(access.lease_interval_seconds, 1);
    agent
        .renew_lease("c1", &LeaseRenewal::default())
        .await
        .unwrap();
    // Works created from now on carry the agent's finalizer; the agent reads them unmasked.
    f.admin.put_work(&work("c1", "w"), None).await.unwrap();
    let w = agent
        .get_work("c1", "w", &ListOptions::default())
        .await
        .unwrap()
        .value;
    assert_eq!(w.metadata.finalizers, [api::CLEANUP_FINALIZER]);
    assert_eq!(
        w.spec.workload.manifests[0]["stringData"]["password"],
        "hunter2-top-secret"
    );
    agent
        .put_work_status("c1", "w", &Default::default())
        .await
        .unwrap();

    // Agent B may not touch cluster c1.
    let b = f.join("c2", &AgentKey::new(), true).await;
    assert_eq!(
        status(
            &b.get_work("c1", "w", &ListOptions::default())
                .await
                .unwrap_err()
        ),
        403
    );
    assert_eq!(
        status(
            &b.put_work_status("c1", "w", &Default::default())
                .await
                .unwrap_err()
        ),
        403
    );
    assert_eq!(
        status(
            &b.renew_lease("c1", &LeaseRenewal::default())
                .await
                .unwrap_err()
        ),
        403
    );
    assert_eq!(
        status(
            &b.remove_work_finalizer("c1", "w", api::CLEANUP_FINALIZER)
                .await
                .unwrap_err()
        ),
        403
    );
    assert_eq!(
        status(&b.put_work(&work("c2", "x"), None).await.unwrap_err()),
        403,
        "agents do not write works"
    );
    assert_eq!(
        status(&b.create_token(&TokenRequest::default()).await.unwrap_err()),
        403
    );
    let all = b
        .list_works(None, &ListOptions::default())
        .await
        .unwrap()
        .value;
    assert!(
        all.items
            .iter()
            .all(|w| w.metadata.namespace.as_deref() == Some("c2")),
        "lists across clusters are filtered to the agent's own"
    );
    let clusters = b
        .list_clusters(&ListOptions::default())
        .await
        .unwrap()
        .value;
    assert_eq!(
        clusters
            .items
            .iter()
            .map(|c| c.metadata.name.as_str())
            .collect::<Vec<_>>(),
        ["c2"]
    );
    // Credentials for another cluster's subject, or signed by the wrong key.
    assert_eq!(
        status(
            &f.admin
                .with_token(None)
                .credentials("c1", &other.assertion("cluster:c1"))
                .await
                .unwrap_err()
        ),
        401
    );
    assert_eq!(
        status(
            &f.admin
                .with_token(None)
                .credentials("c1", &key.assertion("cluster:c2"))
                .await
                .unwrap_err()
        ),
        401
    );
    // Expired, and alg none.
    assert_eq!(
        status(
            &f.admin
                .with_token(None)
                .credentials("c1", &key.assertion_with("cluster:c1", -600, 60))
                .await
                .unwrap_err()
        ),
        401
    );
    let none = format!(
        "{}.{}.",
        b64(r#"{"alg":"none","typ":"JWT"}"#),
        b64(&json!({"sub": "cluster:c1", "aud": "fleethub", "exp": 4102444800u64}).to_string())
    );
    assert_eq!(
        status(
            &f.admin
                .with_token(None)
                .credentials("c1", &none)
                .await
                .unwrap_err()
        ),
        401
    );
    assert_eq!(
        status(
            &f.as_token(&none)
                .get_work("c1", "w", &ListOptions::default())
                .await
                .unwrap_err()
        ),
        401
    );

    // Audit: the accept and the work write are there; the lease renewal is not.
    let audit = f.admin.list_audit(None, None).await.unwrap().items;
    let actions: Vec<&str> = audit.iter().map(|e| e.action.as_str()).collect();
    for a in [
        "token.create",
        "registration.create",
        "registration.accept",
        "work.put",
    ] {
        assert!(
            actions.contains(&a),
            "{a} missing from the audit log: {actions:?}"
        );
    }
    assert!(!actions.iter().any(|a| a.contains("lease")));

    // Secrets never reach the log.
    let log = f.hub.log_text();
    for secret in [
        &token,
        &access.access_token,
        f.cfg.token.as_ref().unwrap(),
        &"hunter2-top-secret".to_string(),
    ] {
        assert!(
            !log.contains(secret.as_str()),
            "a secret appeared in the hub's log"
        );
    }
    assert!(!log.contains("PRIVATE KEY"));
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_accept_deny_and_duplicate_names() {
    let f = start(&[]).await;
    let key = AgentKey::new();
    let auto = f
        .bootstrap(TokenRequest {
            auto_accept: true,
            ..Default::default()
        })
        .await;
    let reg = f
        .as_token(&auto)
        .register(&request("edge-1", &key))
        .await
        .unwrap();
    assert_eq!(reg.state, RegistrationState::Accepted, "auto-accept");
    // The same name with another key never takes over silently, even with auto-accept.
    let intruder = AgentKey::new();
    let dup = f
        .as_token(&auto)
        .register(&request("edge-1", &intruder))
        .await
        .unwrap();
    assert_eq!(dup.state, RegistrationState::Pending);
    assert!(dup.message.contains("another key"), "{}", dup.message);
    assert_eq!(
        status(
            &f.admin
                .with_token(None)
                .credentials("edge-1", &intruder.assertion("cluster:edge-1"))
                .await
                .unwrap_err()
        ),
        401
    );
    let denied = f.admin.deny_registration(&dup.id).await.unwrap();
    assert_eq!(denied.state, RegistrationState::Denied);
    assert_eq!(
        status(&f.admin.accept_registration(&dup.id).await.unwrap_err()),
        409,
        "a denied request cannot be accepted"
    );
    // The original agent still works.
    f.admin
        .with_token(None)
        .credentials("edge-1", &key.assertion("cluster:edge-1"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bootstrap_tokens_are_401_and_change_nothing() {
    let f = start(&[]).await;
    let key = AgentKey::new();
    let expired = f
        .bootstrap(TokenRequest {
            ttl: Some("1s".into()),
            ..Default::default()
        })
        .await;
    let revoked = f.bootstrap(TokenRequest::default()).await;
    f.admin
        .revoke_token(revoked.split('.').next().unwrap())
        .await
        .unwrap();
    let once = f
        .bootstrap(TokenRequest {
            max_uses: Some(1),
            ..Default::default()
        })
        .await;
    f.as_token(&once)
        .register(&request("ok-1", &key))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = f.registrations().await;
    let (id, _) = once.split_once('.').unwrap();
    for (what, token) in [
        ("expired", expired.clone()),
        ("revoked", revoked.clone()),
        ("used up", once.clone()),
        ("malformed", "not-a-token".to_string()),
        ("wrong secret", format!("{id}.0000")),
    ] {
        let e = f
            .as_token(&token)
            .register(&request("x-1", &key))
            .await
            .unwrap_err();
        assert_eq!(status(&e), 401, "{what}: {e}");
    }
    assert_eq!(
        f.registrations().await,
        before,
        "refused joins leave no request behind"
    );
    let tokens = f.admin.list_tokens().await.unwrap().items;
    assert_eq!(
        tokens.iter().find(|t| t.id == id).unwrap().uses,
        1,
        "refused joins use nothing"
    );
    assert!(
        tokens.iter().all(|t| t.token.is_none()),
        "secrets are shown once only"
    );
    // A malformed request does not use the token either.
    let fresh = f
        .bootstrap(TokenRequest {
            max_uses: Some(1),
            ..Default::default()
        })
        .await;
    let bad = RegistrationRequest {
        cluster_name: "Bad_Name".into(),
        public_key: "nope".into(),
        ..Default::default()
    };
    assert_eq!(
        status(&f.as_token(&fresh).register(&bad).await.unwrap_err()),
        422
    );
    f.as_token(&fresh)
        .register(&request("ok-2", &AgentKey::new()))
        .await
        .unwrap();
    // Bootstrap tokens read nothing else.
    assert_eq!(
        status(
            &f.as_token(&fresh)
                .list_works(None, &ListOptions::default())
                .await
                .unwrap_err()
        ),
        403
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acceptance_after_the_bootstrap_token_expired() {
    let f = start(&[]).await;
    let key = AgentKey::new();
    let token = f
        .bootstrap(TokenRequest {
            ttl: Some("1s".into()),
            ..Default::default()
        })
        .await;
    let reg = f
        .as_token(&token)
        .register(&request("late", &key))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    f.admin.accept_registration(&reg.id).await.unwrap();
    let mine = f
        .admin
        .with_token(Some(key.assertion(&format!("registration:{}", reg.id))));
    assert_eq!(
        mine.get_registration(&reg.id, &ListOptions::default())
            .await
            .unwrap()
            .value
            .state,
        RegistrationState::Accepted
    );
    f.admin
        .with_token(None)
        .credentials("late", &key.assertion("cluster:late"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_tokens_expire_and_renew_and_revocation_is_immediate() {
    let f = start(&["--access-token-ttl", "2s"]).await;
    let key = AgentKey::new();
    let agent = f.join("short", &key, true).await;
    agent.get_cluster("short").await.unwrap();
    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert_eq!(
        status(&agent.get_cluster("short").await.unwrap_err()),
        401,
        "an expired access token is refused"
    );
    let renewed = f.join_again("short", &key).await;
    renewed.get_cluster("short").await.unwrap();
    f.admin.revoke_cluster("short").await.unwrap();
    assert_eq!(
        status(&renewed.get_cluster("short").await.unwrap_err()),
        401,
        "revocation cuts the agent off at once"
    );
    assert_eq!(
        status(
            &f.admin
                .with_token(None)
                .credentials("short", &key.assertion("cluster:short"))
                .await
                .unwrap_err()
        ),
        401
    );
    assert!(
        f.admin.get_cluster("short").await.is_ok(),
        "revocation deletes nothing"
    );
}

/// Hubs keep each cluster's agent in memory for its heartbeats, dropped when the change
/// feed brings a change of the cluster: a revocation on one hub must reach another hub on
/// the same database within the feed's lag, and its lease renewals must stop working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_on_one_hub_cuts_the_agent_off_on_another() {
    let pg = TestPostgres::shared().await.unwrap();
    let url = pg.fresh_database().await.unwrap();
    let args = [
        "--database-url",
        url.as_str(),
        "--admin-token",
        "shared-admin",
    ];
    let (a, b) = (start(&args).await, start(&args).await);
    let key = AgentKey::new();
    let token = a.join_token("shared", &key, true).await;
    let (on_a, on_b) = (a.as_token(&token), b.as_token(&token));
    let renewal = LeaseRenewal::default();
    // Both hubs have the agent in memory now.
    on_a.renew_lease("shared", &renewal).await.unwrap();
    on_b.renew_lease("shared", &renewal).await.unwrap();
    a.admin.revoke_cluster("shared").await.unwrap();
    assert_eq!(
        status(&on_a.renew_lease("shared", &renewal).await.unwrap_err()),
        401,
        "the revoking hub cuts the agent off at once"
    );
    let revoked = Instant::now();
    loop {
        match on_b.renew_lease("shared", &renewal).await {
            Err(e) if status(&e) == 401 => break,
            r => {
                assert!(
                    revoked.elapsed() < Duration::from_secs(10),
                    "hub B still accepts the revoked agent: {r:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    println!(
        "revocation on hub A refused on hub B after {:?}",
        revoked.elapsed()
    );
}

impl Fixture {
    async fn join_again(&self, name: &str, key: &AgentKey) -> HubClient {
        let access = self
            .admin
            .with_token(None)
            .credentials(name, &key.assertion(&format!("cluster:{name}")))
            .await
            .unwrap();
        self.as_token(&access.access_token)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_tokens_stay_in_scope_and_secrets_are_masked() {
    let f = start(&[]).await;
    for (name, env) in [("a", "ci"), ("b", "ci"), ("c", "prod")] {
        let mut c = ManagedCluster::new(name, Default::default());
        c.metadata.labels.insert("env".into(), env.into());
        f.admin.put_cluster(&c).await.unwrap();
        f.admin.put_work(&work(name, "w"), None).await.unwrap();
    }
    let ci = f
        .admin
        .create_token(&TokenRequest {
            kind: TokenKind::Api,
            cluster_selector: Some("env=ci".into()),
            verbs: vec![Verb::Read, Verb::Write],
            ..Default::default()
        })
        .await
        .unwrap();
    let ci = f.as_token(ci.token.as_ref().unwrap());
    ci.put_work(&work("a", "new"), None).await.unwrap();
    assert_eq!(
        status(&ci.put_work(&work("c", "new"), None).await.unwrap_err()),
        403,
        "outside the selector"
    );
    assert_eq!(
        status(
            &ci.get_work("c", "w", &ListOptions::default())
                .await
                .unwrap_err()
        ),
        403
    );
    let listed = ci
        .list_works(None, &ListOptions::default())
        .await
        .unwrap()
        .value;
    let mut seen: Vec<&str> = listed
        .items
        .iter()
        .map(|w| w.metadata.namespace.as_deref().unwrap())
        .collect();
    seen.dedup();
    assert_eq!(
        seen,
        ["a", "b"],
        "lists across clusters are filtered, not refused"
    );
    for item in &listed.items {
        let data = &item.spec.workload.manifests[0]["stringData"]["password"];
        assert!(
            data.as_str().is_some_and(|d| d.starts_with("hmac-sha256:")),
            "a list without the secrets verb shows Secret data: {data}"
        );
    }
    // Without the secrets verb, Secret data reads as a hash, and the hash cannot be written back.
    let w = ci
        .get_work("a", "w", &ListOptions::default())
        .await
        .unwrap()
        .value;
    let masked = w.spec.workload.manifests[0]["stringData"]["password"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(masked.starts_with("hmac-sha256:") && !masked.contains("hunter2"));
    let e = ci.put_work(&w, None).await.unwrap_err();
    assert_eq!(status(&e), 422, "{e}");
    let reader = f
        .admin
        .create_token(&TokenRequest {
            kind: TokenKind::Api,
            clusters: vec!["a".into()],
            verbs: vec![Verb::Read, Verb::Secrets],
            ..Default::default()
        })
        .await
        .unwrap();
    let reader = f.as_token(reader.token.as_ref().unwrap());
    let w = reader
        .get_work("a", "w", &ListOptions::default())
        .await
        .unwrap()
        .value;
    assert_eq!(
        w.spec.workload.manifests[0]["stringData"]["password"],
        "hunter2-top-secret"
    );
    assert_eq!(
        status(&reader.delete_work("a", "w").await.unwrap_err()),
        403,
        "read-only"
    );
    assert_eq!(
        status(
            &reader
                .put_cluster(&ManagedCluster::new("a", Default::default()))
                .await
                .unwrap_err()
        ),
        403
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_turn_unknown_and_back() {
    let f = start(&[]).await;
    let agent = f.join("beat", &AgentKey::new(), true).await;
    agent
        .renew_lease("beat", &LeaseRenewal::default())
        .await
        .unwrap();
    let available = |c: &ManagedCluster| {
        c.condition("ManagedClusterConditionAvailable")
            .map(|c| c.status.clone())
            .unwrap_or_default()
    };
    let c = f.admin.get_cluster("beat").await.unwrap().value;
    assert_eq!(available(&c), "True");
    assert!(c.status.last_lease_time.is_some());
    let index = f.admin.get_cluster("beat").await.unwrap().index;
    // A renewal does not advance the index while nothing changes.
    agent
        .renew_lease("beat", &LeaseRenewal::default())
        .await
        .unwrap();
    assert_eq!(f.admin.get_cluster("beat").await.unwrap().index, index);
    // Silence past the grace (2 s): Unknown and tainted, by the hub's clock.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let c = f.admin.get_cluster("beat").await.unwrap().value;
        if available(&c) == "Unknown" {
            assert!(
                c.spec
                    .taints
                    .iter()
                    .any(|t| t["key"] == "cluster.open-cluster-management.io/unreachable")
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the lease never expired"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    agent
        .renew_lease("beat", &LeaseRenewal::default())
        .await
        .unwrap();
    let c = f.admin.get_cluster("beat").await.unwrap().value;
    assert_eq!(available(&c), "True");
    assert!(c.spec.taints.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_cluster_delete_removes_records_and_identity() {
    let f = start(&[]).await;
    let key = AgentKey::new();
    let agent = f.join("doomed", &key, true).await;
    f.admin.put_work(&work("doomed", "w"), None).await.unwrap();
    let d = f.admin.delete_cluster("doomed", false).await.unwrap().value;
    assert!(!d.removed, "the agent's finalizer holds the work");
    let w = agent
        .get_work("doomed", "w", &ListOptions::default())
        .await
        .unwrap()
        .value;
    assert!(
        w.metadata.deletion_timestamp.is_some(),
        "the agent still reads its deleting works"
    );
    let d = f.admin.delete_cluster("doomed", true).await.unwrap().value;
    assert!(d.removed);
    assert_eq!(d.works_left, ["w"]);
    assert!(
        f.admin
            .get_cluster("doomed")
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert_eq!(
        status(&agent.get_cluster("doomed").await.unwrap_err()),
        401,
        "the identity went with the cluster"
    );
}

/// A revoked cluster used to be taken over by any new key holding an auto-accept token
/// (accepted at once, reading the cluster's works and Secrets); and an auto-accepted
/// agent chose its own labels, which decide selector-scoped tokens and placements.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_accept_never_rebinds_a_name_nor_takes_the_agents_labels() {
    let f = start(&[]).await;
    let auto = f
        .bootstrap(TokenRequest {
            auto_accept: true,
            labels: [("tier".to_string(), "edge".to_string())].into(),
            ..Default::default()
        })
        .await;
    let key = AgentKey::new();
    let reg = f
        .as_token(&auto)
        .register(&RegistrationRequest {
            labels: [
                ("zone".to_string(), "a".to_string()),
                ("tier".to_string(), "core".to_string()),
            ]
            .into(),
            ..request("edge-r", &key)
        })
        .await
        .unwrap();
    assert_eq!(reg.state, RegistrationState::Accepted, "auto-accept");
    assert_eq!(
        reg.labels,
        [("tier".to_string(), "edge".to_string())].into()
    );
    assert_eq!(
        reg.requested_labels,
        [("zone".to_string(), "a".to_string())].into(),
        "asked for beyond the token's: recorded, not applied"
    );
    assert!(
        reg.message
            .contains(&format!("hub accept edge-r --request {}", reg.id)),
        "{}",
        reg.message
    );
    let labels = |c: ManagedCluster| c.metadata.labels;
    let cluster = labels(f.admin.get_cluster("edge-r").await.unwrap().value);
    assert_eq!(
        cluster,
        [("tier".to_string(), "edge".to_string())].into(),
        "the token's labels only"
    );

    // An admin's explicit accept applies them.
    let applied = f.admin.accept_registration(&reg.id).await.unwrap();
    assert!(applied.requested_labels.is_empty());
    assert_eq!(applied.labels.get("zone").map(String::as_str), Some("a"));
    let cluster = labels(f.admin.get_cluster("edge-r").await.unwrap().value);
    assert_eq!(cluster.get("zone").map(String::as_str), Some("a"));
    assert_eq!(cluster.get("tier").map(String::as_str), Some("edge"));

    // Revoked: neither a new key nor the revoked one gets back in through the token.
    f.admin.put_work(&work("edge-r", "w"), None).await.unwrap();
    f.admin.revoke_cluster("edge-r").await.unwrap();
    let intruder = AgentKey::new();
    let takeover = f
        .as_token(&auto)
        .register(&request("edge-r", &intruder))
        .await
        .unwrap();
    assert_eq!(takeover.state, RegistrationState::Pending, "{takeover:?}");
    assert!(
        takeover.message.contains("another key") && takeover.message.contains("revoked"),
        "{}",
        takeover.message
    );
    let e = f
        .admin
        .with_token(None)
        .credentials("edge-r", &intruder.assertion("cluster:edge-r"))
        .await
        .unwrap_err();
    assert_eq!(status(&e), 401);
    let again = f
        .as_token(&auto)
        .register(&request("edge-r", &key))
        .await
        .unwrap();
    assert_eq!(again.state, RegistrationState::Pending);
    assert!(again.message.contains("revoked"), "{}", again.message);
    assert_eq!(
        status(
            &f.admin
                .with_token(None)
                .credentials("edge-r", &key.assertion("cluster:edge-r"))
                .await
                .unwrap_err()
        ),
        401
    );
    // Only an admin re-binds the name; then the new key works.
    let rebound = f.admin.accept_registration(&takeover.id).await.unwrap();
    assert_eq!(rebound.state, RegistrationState::Accepted);
    let agent = f
        .admin
        .with_token(None)
        .credentials("edge-r", &intruder.assertion("cluster:edge-r"))
        .await
        .unwrap();
    let w = f
        .as_token(&agent.access_token)
        .get_work("edge-r", "w", &ListOptions::default())
        .await
        .unwrap();
    assert_eq!(w.value.metadata.name, "w");
    // A deleted cluster frees its name for any key.
    f.admin.delete_cluster("edge-r", true).await.unwrap();
    let fresh = f
        .as_token(&auto)
        .register(&request("edge-r", &AgentKey::new()))
        .await
        .unwrap();
    assert_eq!(fresh.state, RegistrationState::Accepted, "{fresh:?}");
}

/// Agent assertions (private_key_jwt): the hub's clock bounds `exp`, `nbf` is honoured,
/// `iss` must be `sub`, a `jti` is required, and each assertion works once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assertions_are_bounded_by_the_hubs_clock_and_single_use() {
    let f = start(&[]).await;
    let key = AgentKey::new();
    f.join("c1", &key, true).await;
    let sub = "cluster:c1";
    let credentials = |jwt: String| {
        let client = f.admin.with_token(None);
        async move { client.credentials("c1", &jwt).await }
    };
    let refused = [
        (
            "a future iat with exp = iat + 10 min",
            json!({"iss": sub, "sub": sub, "aud": "fleethub", "iat": now() + 3000, "exp": now() + 3600, "jti": jti()}),
        ),
        (
            "exp 15 min ahead",
            json!({"iss": sub, "sub": sub, "aud": "fleethub", "iat": now() + 300, "exp": now() + 900, "jti": jti()}),
        ),
        (
            "nbf in 5 min",
            json!({"iss": sub, "sub": sub, "aud": "fleethub", "iat": now(), "nbf": now() + 300, "exp": now() + 590, "jti": jti()}),
        ),
        (
            "iss differs from sub",
            json!({"iss": "cluster:other", "sub": sub, "aud": "fleethub", "iat": now(), "exp": now() + 60, "jti": jti()}),
        ),
        (
            "no jti",
            json!({"iss": sub, "sub": sub, "aud": "fleethub", "iat": now(), "exp": now() + 60}),
        ),
    ];
    for (what, claims) in refused {
        let e = credentials(key.sign(&claims)).await.unwrap_err();
        assert_eq!(status(&e), 401, "{what}: {e}");
    }
    // The leeway forgives a little clock skew.
    let skewed = json!({"iss": sub, "sub": sub, "aud": "fleethub", "iat": now() + 10, "exp": now() + 610, "jti": jti()});
    credentials(key.sign(&skewed)).await.unwrap();

    let once = key.assertion(sub);
    credentials(once.clone()).await.unwrap();
    let e = credentials(once).await.unwrap_err();
    assert_eq!(status(&e), 401, "a replayed assertion: {e}");
    assert!(e.to_string().contains("used before"), "{e}");

    // The same for a joining agent reading its request.
    let other = AgentKey::new();
    let plain = f.bootstrap(TokenRequest::default()).await;
    let reg = f
        .as_token(&plain)
        .register(&request("c2", &other))
        .await
        .unwrap();
    let mine = f
        .admin
        .with_token(Some(other.assertion(&format!("registration:{}", reg.id))));
    mine.get_registration(&reg.id, &ListOptions::default())
        .await
        .unwrap();
    let e = mine
        .get_registration(&reg.id, &ListOptions::default())
        .await
        .unwrap_err();
    assert_eq!(status(&e), 401, "a replayed registrant assertion: {e}");
}

/// Hubs sharing a Postgres share the spent assertion ids; and ids from requests that no
/// stored id can have (a NUL byte in a JWT's `sub`, a token id or a path) are 401/404, not
/// a database error (503 and an ERROR in the log).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_hubs_refuse_replays_and_unusable_ids() {
    let pg = TestPostgres::shared().await.unwrap();
    let url = pg.fresh_database().await.unwrap();
    let args = [
        "--database-url",
        url.as_str(),
        "--admin-token",
        "shared-admin",
    ];
    let (a, b) = (start(&args).await, start(&args).await);
    let key = AgentKey::new();
    a.join_token("pg-1", &key, true).await;
    let once = key.assertion("cluster:pg-1");
    a.admin
        .with_token(None)
        .credentials("pg-1", &once)
        .await
        .unwrap();
    let e = b
        .admin
        .with_token(None)
        .credentials("pg-1", &once)
        .await
        .unwrap_err();
    assert_eq!(status(&e), 401, "replayed on another hub: {e}");

    let nul_sub = format!(
        "{}.{}.c2ln",
        b64(r#"{"alg":"ES256","typ":"JWT"}"#),
        b64(&json!({"iss": "registration:x\u{0}y", "sub": "registration:x\u{0}y", "aud": "fleethub", "iat": now(), "exp": now() + 60, "jti": jti()}).to_string())
    );
    let e = a
        .as_token(&nul_sub)
        .get_registration("x", &ListOptions::default())
        .await
        .unwrap_err();
    assert_eq!(status(&e), 401, "{e}");
    let signed_nul = key.sign(&json!({"iss": "cluster:pg-1", "sub": "cluster:pg-1", "aud": "fleethub", "iat": now(), "exp": now() + 60, "jti": "a\u{0}b"}));
    let e = a
        .admin
        .with_token(None)
        .credentials("pg-1", &signed_nul)
        .await
        .unwrap_err();
    assert_eq!(status(&e), 401, "a NUL in the jti: {e}");
    for (method, path) in [
        (reqwest::Method::GET, "/api/v1/registrations/x%00y"),
        (reqwest::Method::POST, "/api/v1/registrations/x%00y/accept"),
        (reqwest::Method::POST, "/api/v1/registrations/x%00y/deny"),
        (reqwest::Method::DELETE, "/api/v1/tokens/x%00y"),
        (reqwest::Method::GET, "/api/v1/clusters/x%00y"),
        (reqwest::Method::POST, "/api/v1/clusters/x%00y/revoke"),
    ] {
        let r = a.admin.request(method.clone(), path).send().await.unwrap();
        let code = r.status().as_u16();
        assert!(
            code == 404 || code == 422 || code == 400,
            "{method} {path}: {code} {}",
            r.text().await.unwrap_or_default()
        );
    }
    let r = a
        .admin
        .with_token(None)
        .request(reqwest::Method::POST, "/api/v1/clusters/x%00y/credentials")
        .json(&json!({"assertion": key.assertion("cluster:pg-1")}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());
    for hub in [&a, &b] {
        let log = hub.hub.log_text();
        assert!(
            !log.contains("ERROR"),
            "a bad id reached the database:\n{log}"
        );
    }
}

/// A refused `ID.SECRET` token must not tell whether its id exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_token_ids_and_wrong_secrets_read_the_same() {
    let f = start(&[]).await;
    let token = f.bootstrap(TokenRequest::default()).await;
    let (id, _) = token.split_once('.').unwrap();
    let mut bodies = Vec::new();
    for bad in [
        format!("{id}.0000"),
        "deadbeef.0000".to_string(),
        "x%y.0000".to_string(),
    ] {
        let e = f
            .as_token(&bad)
            .register(&request("same-1", &AgentKey::new()))
            .await
            .unwrap_err();
        let api::ClientError::Api { status, body } = e else {
            panic!("{bad}: {e}")
        };
        assert_eq!(status.as_u16(), 401);
        bodies.push((body.code, body.message));
    }
    assert!(
        bodies.windows(2).all(|w| w[0] == w[1]),
        "the answers differ: {bodies:?}"
    );
}
