//! Secrets never leave the vault: a full sign-up, sign-in, refresh, MFA,
//! recovery-code, invitation and password-change scenario runs against a
//! `pivotal command-api` process logging at debug level, with the relay and
//! projector running; then every published message (key, headers, payload),
//! every read-model row, every stored event and every log line is searched
//! for every secret the scenario produced.

use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pivotal_test_support::{TestEnv, eventually, http, read_topic_until, workspace_root};
use rdkafka::Message;
use rdkafka::message::Headers;
use serde_json::{Value, json};

use crate::harness::{
    Process, free_port, relay_caught_up, spawn_projector, spawn_relay, wait_healthy,
};

const PASSWORD: &str = "vault scenario passphrase one";
const NEW_PASSWORD: &str = "vault scenario passphrase two";
const INVITEE_PASSWORD: &str = "vault scenario passphrase three";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

struct Client {
    url: String,
}

impl Client {
    async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        let mut request = http().post(format!("{}{path}", self.url)).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn ok(&self, path: &str, token: Option<&str>, body: Value) -> Value {
        let (status, body) = self.post(path, token, body).await;
        assert!((200..300).contains(&status), "{path}: {status} {body}");
        body
    }
}

/// Every secret the scenario handled, in every form it could leak in.
#[derive(Default)]
struct Secrets(Vec<(String, String)>);

impl Secrets {
    fn add(&mut self, what: &str, value: &str) {
        assert!(value.len() >= 6, "{what} is too short to search for");
        self.0.push((what.to_owned(), value.to_owned()));
    }

    fn scan(&self, place: &str, text: &str) {
        for (what, value) in &self.0 {
            assert!(!text.contains(value.as_str()), "{what} found in {place}");
        }
    }
}

#[tokio::test]
async fn no_secret_reaches_a_topic_a_read_model_a_response_or_a_log_line() {
    let env = TestEnv::new().await;
    let log_path = std::env::temp_dir().join(format!(
        "pivotal-secrets-{}.log",
        uuid::Uuid::new_v4().simple()
    ));
    let log = std::fs::File::create(&log_path).unwrap();
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_pivotal"))
        .arg("command-api")
        .envs(env.child_env())
        .env("PIVOTAL_COMMAND_API__LISTEN", format!("127.0.0.1:{port}"))
        .env("PIVOTAL_LOG__FILTER", "debug")
        .env("PIVOTAL_LOG__FORMAT", "json")
        .current_dir(workspace_root())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let process = Process(child);
    let (_relay, _status) = spawn_relay(&env);
    let _projector = spawn_projector(&env);
    let api = Client {
        url: format!("http://127.0.0.1:{port}"),
    };
    wait_healthy(&api.url, "the command API").await;

    let mut secrets = Secrets::default();
    let mut responses = Vec::new();
    secrets.add("password", PASSWORD);
    secrets.add("new password", NEW_PASSWORD);
    secrets.add("invitee password", INVITEE_PASSWORD);
    let email = format!("vault-{}@example.com", uuid::Uuid::new_v4().simple());

    // Sign-up, sign-in, refresh, reuse.
    let signed = api
        .ok(
            "/v1/auth/signup",
            None,
            json!({"organization": {"name": "Vault Ltd", "defaultCurrency": "NZD"},
                   "user": {"email": email, "password": PASSWORD, "firstName": "Vera", "lastName": "Vault"}}),
        )
        .await;
    let user_id = signed["user"]["id"].as_str().unwrap().to_owned();
    secrets.add("refresh token", signed["refreshToken"].as_str().unwrap());
    responses.push(signed.clone());
    let session = api
        .ok(
            "/v1/auth/login",
            None,
            json!({"email": email, "password": PASSWORD}),
        )
        .await;
    let first_refresh = session["refreshToken"].as_str().unwrap().to_owned();
    secrets.add("refresh token", &first_refresh);
    let rotated = api
        .ok(
            "/v1/auth/refresh",
            None,
            json!({"refreshToken": first_refresh}),
        )
        .await;
    secrets.add("refresh token", rotated["refreshToken"].as_str().unwrap());
    let (reused, _) = api
        .post(
            "/v1/auth/refresh",
            None,
            json!({"refreshToken": first_refresh}),
        )
        .await;
    assert_eq!(reused, 401);
    responses.extend([session, rotated]);
    // The reuse ended every session of the user: sign in again.
    let again = api
        .ok(
            "/v1/auth/login",
            None,
            json!({"email": email, "password": PASSWORD}),
        )
        .await;
    let owner = again["accessToken"].as_str().unwrap().to_owned();
    secrets.add("refresh token", again["refreshToken"].as_str().unwrap());
    responses.push(again);

    // MFA enrolment, then sign-in with TOTP and with a recovery code.
    let setup = api.ok("/v1/me/mfa/totp", Some(&owner), json!({})).await;
    let totp_secret = setup["secret"].as_str().unwrap().to_owned();
    secrets.add("TOTP secret (base32)", &totp_secret);
    let code = |offset: u64| {
        pivotal_identity::totp::code_for_base32(&totp_secret, now() + offset).unwrap()
    };
    let confirmed = api
        .ok(
            "/v1/me/mfa/totp/confirm",
            Some(&owner),
            json!({"code": code(0)}),
        )
        .await;
    let codes: Vec<String> = confirmed["recoveryCodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    for c in &codes {
        secrets.add("recovery code", c);
        secrets.add("recovery code (normalized)", &c.replace('-', ""));
    }
    let challenge = api
        .ok(
            "/v1/auth/login",
            None,
            json!({"email": email, "password": PASSWORD}),
        )
        .await;
    let c1 = challenge["challenge"].as_str().unwrap().to_owned();
    secrets.add("MFA challenge", &c1);
    let with_totp = api
        .ok(
            "/v1/auth/mfa/verify",
            None,
            json!({"challenge": c1, "code": code(30)}),
        )
        .await;
    secrets.add("refresh token", with_totp["refreshToken"].as_str().unwrap());
    let challenge = api
        .ok(
            "/v1/auth/login",
            None,
            json!({"email": email, "password": PASSWORD}),
        )
        .await;
    let c2 = challenge["challenge"].as_str().unwrap().to_owned();
    secrets.add("MFA challenge", &c2);
    let with_code = api
        .ok(
            "/v1/auth/mfa/verify",
            None,
            json!({"challenge": c2, "recoveryCode": codes[0]}),
        )
        .await;
    secrets.add("refresh token", with_code["refreshToken"].as_str().unwrap());
    let mfa_token = with_code["accessToken"].as_str().unwrap().to_owned();
    responses.extend([with_totp, with_code.clone()]);

    // An invited user, a password change and a logout.
    let invited = api
        .ok(
            "/v1/users",
            Some(&mfa_token),
            json!({"email": format!("invitee-{email}"), "firstName": "Ivy", "lastName": "Invitee"}),
        )
        .await;
    let invitation = invited["invitationToken"].as_str().unwrap().to_owned();
    secrets.add("invitation token", &invitation);
    let accepted = api
        .ok(
            "/v1/auth/invitations/accept",
            None,
            json!({"token": invitation, "password": INVITEE_PASSWORD}),
        )
        .await;
    secrets.add("refresh token", accepted["refreshToken"].as_str().unwrap());
    api.ok(
        "/v1/me/password",
        Some(&mfa_token),
        json!({"currentPassword": PASSWORD, "newPassword": NEW_PASSWORD}),
    )
    .await;
    api.ok(
        "/v1/auth/logout",
        None,
        json!({"refreshToken": accepted["refreshToken"]}),
    )
    .await;
    responses.push(accepted);

    // What the vault holds, in its stored forms.
    let hashes: Vec<(Option<String>,)> = sqlx::query_as("SELECT password_hash FROM credentials")
        .fetch_all(&env.pool)
        .await
        .unwrap();
    for (hash,) in hashes.into_iter().filter_map(|(h,)| h.map(|h| (h,))) {
        assert!(hash.starts_with("$argon2id$"));
        secrets.add("password hash", &hash);
        // The digest part alone, too.
        secrets.add("password hash digest", hash.rsplit('$').next().unwrap());
    }
    let sealed: Vec<(Vec<u8>,)> = sqlx::query_as("SELECT secret_encrypted FROM mfa_factors")
        .fetch_all(&env.pool)
        .await
        .unwrap();
    assert!(!sealed.is_empty());
    let raw = totp_rs::Secret::try_from_base32(&totp_secret).unwrap();
    let raw_hex: String = raw.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    secrets.add("TOTP secret (hex)", &raw_hex);
    for (ciphertext,) in sealed {
        assert!(
            !ciphertext
                .windows(raw.as_ref().len())
                .any(|w| w == raw.as_ref()),
            "the TOTP secret is stored in clear"
        );
    }

    // API responses carry only what they must (tokens to their owner).
    for response in &responses {
        let user = response["user"].to_string();
        secrets.scan("a user in an API response", &user);
    }

    // Published messages: every key, header and payload.
    relay_caught_up(&env, Duration::from_secs(60)).await;
    for aggregate in ["user", "organization"] {
        let (expected,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM events WHERE aggregate_type = $1")
                .bind(aggregate)
                .fetch_one(&env.pool)
                .await
                .unwrap();
        let topic = env.topic(aggregate);
        let messages = read_topic_until(
            &env.settings.kafka.brokers,
            &topic,
            Duration::from_secs(60),
            |m| m.len() as i64 >= expected,
        );
        for message in &messages {
            let payload = String::from_utf8_lossy(message.payload().unwrap_or_default());
            secrets.scan("a published payload", &payload);
            secrets.scan(
                "a message key",
                &String::from_utf8_lossy(message.key().unwrap_or_default()),
            );
            if let Some(headers) = message.headers() {
                for header in headers.iter() {
                    secrets.scan(
                        "a message header",
                        &String::from_utf8_lossy(header.value.unwrap_or_default()),
                    );
                }
            }
        }
        assert_eq!(
            messages.len() as i64,
            expected,
            "every {aggregate} event was read"
        );
    }
    let types: Vec<(String,)> =
        sqlx::query_as("SELECT DISTINCT event_type FROM events WHERE aggregate_id = $1 ORDER BY 1")
            .bind(&user_id)
            .fetch_all(&env.pool)
            .await
            .unwrap();
    let types: Vec<&str> = types.iter().map(|(t,)| t.as_str()).collect();
    for t in [
        "user.authenticated",
        "user.mfa.enabled",
        "user.password.changed",
        "user.session.ended",
    ] {
        assert!(types.contains(&t), "{t} in {types:?}");
    }

    // Every stored event (what the relay can ever publish).
    let stored: Vec<(String, String)> =
        sqlx::query_as("SELECT payload::text, metadata::text FROM events")
            .fetch_all(&env.pool)
            .await
            .unwrap();
    for (payload, metadata) in &stored {
        secrets.scan("a stored event", payload);
        secrets.scan("stored event metadata", metadata);
    }

    // Every read-model row, once the projector has applied everything.
    let caught_up = eventually(Duration::from_secs(60), || async {
        let (missing,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM (
                SELECT aggregate_type, aggregate_id, max(sequence) AS version FROM events
                WHERE aggregate_type IN ('user', 'organization') GROUP BY 1, 2) e
             LEFT JOIN projection_versions p
               ON p.aggregate_type = e.aggregate_type AND p.aggregate_id = e.aggregate_id
             WHERE p.version IS DISTINCT FROM e.version",
        )
        .fetch_one(&env.pool)
        .await
        .unwrap();
        (missing == 0).then_some(())
    })
    .await;
    assert!(caught_up.is_some(), "the projector did not catch up");
    let tables: Vec<(String,)> = sqlx::query_as(
        "SELECT table_name::text FROM information_schema.tables
         WHERE table_schema = 'public' AND (table_name LIKE 'rm\\_%' OR table_name LIKE 'projection\\_%')",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    assert!(tables.iter().any(|(t,)| t == "rm_users"));
    let mut rows = 0;
    for (table,) in &tables {
        let dump: Vec<(String,)> =
            sqlx::query_as(&format!("SELECT row_to_json(t)::text FROM {table} t"))
                .fetch_all(&env.pool)
                .await
                .unwrap();
        for (row,) in &dump {
            secrets.scan(&format!("a row of {table}"), row);
        }
        rows += dump.len();
    }
    let (users,): (i64,) = sqlx::query_as("SELECT count(*) FROM rm_users")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(users, 2);
    assert!(rows > 0);

    // Every log line of the command API process.
    drop(process);
    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        logs.lines().count() > 20,
        "the command API wrote its debug log"
    );
    assert!(logs.contains("/v1/auth/login"), "requests are in the log");
    secrets.scan("the command API's log", &logs);
    let _ = std::fs::remove_file(&log_path);
}
