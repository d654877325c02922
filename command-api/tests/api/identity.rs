//! Identity and access over HTTP against real PostgreSQL and Redis:
//! sign-up, sign-in, refresh rotation with reuse detection, logout, MFA,
//! lockout, invitations, key rotation, bad tokens and role enforcement.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use pivotal_test_support::{TestEnv, http};
use reqwest::Response;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem, error_pointers};

pub const PASSWORD: &str = "correct horse battery staple";

pub fn unique_email(label: &str) -> String {
    format!("{label}-{}@example.com", uuid::Uuid::new_v4().simple())
}

/// The payload of a JWT, decoded without verification.
pub fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

pub fn header(token: &str) -> Value {
    let head = token.split('.').next().unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(head).unwrap()).unwrap()
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A thin client for the identity endpoints.
pub struct Identity<'a> {
    pub url: &'a str,
    pub client: reqwest::Client,
}

impl<'a> Identity<'a> {
    pub fn new(url: &'a str) -> Self {
        Self {
            url,
            client: http(),
        }
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Response {
        let mut request = self.client.post(format!("{}{path}", self.url)).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap()
    }

    pub async fn put(&self, path: &str, token: &str, body: Value) -> Response {
        self.client
            .put(format!("{}{path}", self.url))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str, token: &str) -> Response {
        self.client
            .get(format!("{}{path}", self.url))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    pub async fn delete(&self, path: &str, token: &str) -> Response {
        self.client
            .delete(format!("{}{path}", self.url))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    /// Signs up a new organization; returns the auth result.
    pub async fn sign_up(&self, org: &str, email: &str) -> Value {
        let response = self
            .post(
                "/v1/auth/signup",
                None,
                json!({
                    "organization": {"name": org, "defaultCurrency": "NZD", "timeZone": "Pacific/Auckland"},
                    "user": {"email": email, "password": PASSWORD, "firstName": "Aroha", "lastName": "Ngata"},
                }),
            )
            .await;
        assert_eq!(response.status(), 201, "{:?}", response.text().await);
        response.json().await.unwrap()
    }

    pub async fn login(&self, email: &str, password: &str) -> Response {
        self.post(
            "/v1/auth/login",
            None,
            json!({"email": email, "password": password}),
        )
        .await
    }

    pub async fn login_ok(&self, email: &str, password: &str) -> Value {
        let response = self.login(email, password).await;
        assert_eq!(response.status(), 200, "{:?}", response.text().await);
        response.json().await.unwrap()
    }

    pub async fn refresh(&self, token: &str) -> Response {
        self.post("/v1/auth/refresh", None, json!({"refreshToken": token}))
            .await
    }

    /// Creates a user with a password in the owner's organization.
    pub async fn create_user(&self, owner: &str, email: &str, roles: &[&str]) -> Value {
        let response = self
            .post(
                "/v1/users",
                Some(owner),
                json!({"email": email, "firstName": "Tama", "lastName": "Rangi",
                       "roles": roles, "password": PASSWORD}),
            )
            .await;
        assert_eq!(response.status(), 201, "{:?}", response.text().await);
        response.json().await.unwrap()
    }
}

async fn event_types(app: &TestApp, user_id: &str) -> Vec<String> {
    sqlx::query_as::<_, (String,)>(
        "SELECT event_type FROM events WHERE aggregate_type = 'user' AND aggregate_id = $1 ORDER BY sequence",
    )
    .bind(user_id)
    .fetch_all(&app.env.pool)
    .await
    .unwrap()
    .into_iter()
    .map(|(t,)| t)
    .collect()
}

#[tokio::test]
async fn sign_up_sign_in_refresh_rotation_reuse_and_logout() {
    let app = TestApp::spawn().await;
    let api = Identity::new(&app.url);
    let email = unique_email("owner");
    let signed_up = api.sign_up("Kōwhai Consulting", &email).await;

    // The access token carries exactly the seed's claims, EdDSA with a kid.
    let access = signed_up["accessToken"].as_str().unwrap();
    let head = header(access);
    assert_eq!(head["alg"], "EdDSA");
    assert_eq!(head["kid"], "dev-2026-1");
    let c = claims(access);
    assert_eq!(c["roles"], json!(["owner"]));
    assert_eq!(c["permissions"], json!(["*:*"]));
    assert_eq!(c["mfa"], false);
    assert_eq!(
        c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(),
        3600
    );
    assert_eq!(signed_up["expiresIn"], 3600);
    assert_eq!(signed_up["tokenType"], "Bearer");
    let user = &signed_up["user"];
    assert_eq!(user["email"], email);
    assert_eq!(user["roles"], json!(["owner"]));
    assert_eq!(user["loginCount"], 1);
    for secret_field in ["passwordHash", "password", "mfaSecret", "recoveryCodes"] {
        assert!(user.get(secret_field).is_none(), "{secret_field} leaked");
    }
    let user_id = c["sub"].as_str().unwrap().to_owned();
    assert_eq!(user["id"], user_id);

    // The token opens the API.
    let me = api.get(&format!("/v1/users/{user_id}"), access).await;
    assert_eq!(me.status(), 200);

    // The same email cannot sign up twice, whatever its case.
    let again = api
        .post(
            "/v1/auth/signup",
            None,
            json!({
                "organization": {"name": "Other", "defaultCurrency": "NZD"},
                "user": {"email": email.to_uppercase(), "password": PASSWORD, "firstName": "A", "lastName": "B"},
            }),
        )
        .await;
    assert_problem(again, 409, "email_taken").await;

    // Sign in; wrong password and unknown email get the same answer.
    let session = api.login_ok(&email, PASSWORD).await;
    assert_eq!(session["user"]["loginCount"], 2);
    let wrong = api.login(&email, "not the password at all").await;
    let wrong = assert_problem(wrong, 401, "invalid_credentials").await;
    let unknown = api
        .login(&unique_email("nobody"), "not the password at all")
        .await;
    let unknown = assert_problem(unknown, 401, "invalid_credentials").await;
    assert_eq!(wrong["detail"], unknown["detail"]);
    assert_eq!(wrong["title"], unknown["title"]);

    // Refresh rotates: the new pair works, the old refresh token is spent.
    let first = session["refreshToken"].as_str().unwrap().to_owned();
    let rotated = api.refresh(&first).await;
    assert_eq!(rotated.status(), 200);
    assert_eq!(
        rotated.headers()["cache-control"].to_str().unwrap(),
        "no-store"
    );
    let rotated: Value = rotated.json().await.unwrap();
    let second = rotated["refreshToken"].as_str().unwrap().to_owned();
    assert_ne!(first, second);
    assert_ne!(rotated["accessToken"], session["accessToken"]);

    // Presenting the spent token again is theft: the whole family dies,
    // and so do the user's access tokens.
    assert_problem(api.refresh(&first).await, 401, "refresh_token_reused").await;
    let stolen = rotated["accessToken"].as_str().unwrap();
    let refused = api.get(&format!("/v1/users/{user_id}"), stolen).await;
    assert_problem(refused, 401, "token_revoked").await;
    assert_problem(api.refresh(&second).await, 401, "invalid_refresh_token").await;
    let (reason,): (String,) = sqlx::query_as(
        "SELECT payload -> 'data' ->> 'reason' FROM events
         WHERE aggregate_id = $1 AND event_type = 'user.session.ended'",
    )
    .bind(&user_id)
    .fetch_one(&app.env.pool)
    .await
    .unwrap();
    assert_eq!(reason, "token_reuse");

    // Logout revokes the session; logging out twice is harmless.
    let other = api.login_ok(&email, PASSWORD).await;
    let refresh = other["refreshToken"].as_str().unwrap();
    let out = api
        .post("/v1/auth/logout", None, json!({"refreshToken": refresh}))
        .await;
    assert_eq!(out.status(), 204);
    let out = api
        .post("/v1/auth/logout", None, json!({"refreshToken": refresh}))
        .await;
    assert_eq!(out.status(), 204);
    assert_problem(api.refresh(refresh).await, 401, "invalid_refresh_token").await;
    assert_problem(api.refresh("made-up").await, 401, "invalid_refresh_token").await;

    let types = event_types(&app, &user_id).await;
    assert_eq!(
        types,
        [
            "user.created",
            "user.authenticated",
            "user.authenticated",
            "user.session.ended",
            "user.authenticated",
            "user.session.ended",
        ]
    );
    // user.authenticated carries method, address and agent.
    let (data,): (Value,) = sqlx::query_as(
        "SELECT payload::jsonb -> 'data' FROM events
         WHERE aggregate_id = $1 AND event_type = 'user.authenticated' ORDER BY sequence LIMIT 1",
    )
    .bind(&user_id)
    .fetch_one(&app.env.pool)
    .await
    .unwrap();
    assert_eq!(data["loginMethod"], "password");
    assert_eq!(data["ipAddress"], "127.0.0.1");
    assert!(data["userAgent"].is_string());
}

#[tokio::test]
async fn sign_up_and_login_refuse_bad_input_without_changing_anything() {
    let app = TestApp::spawn().await;
    let api = Identity::new(&app.url);
    let weak = api
        .post(
            "/v1/auth/signup",
            None,
            json!({
                "organization": {"name": " ", "defaultCurrency": "XXX", "timeZone": "Mars/Base", "fiscalYearStartMonth": 13},
                "user": {"email": "not-an-email", "password": "short", "firstName": "", "lastName": "N"},
            }),
        )
        .await;
    let body = assert_problem(weak, 422, "validation_failed").await;
    let pointers = error_pointers(&body);
    for expected in [
        "/organization/name",
        "/organization/defaultCurrency",
        "/organization/timeZone",
        "/organization/fiscalYearStartMonth",
        "/user/email",
        "/user/firstName",
    ] {
        assert!(pointers.contains(&expected), "{expected} in {pointers:?}");
    }
    // A valid body with a weak password names the password.
    let weak = api
        .post(
            "/v1/auth/signup",
            None,
            json!({
                "organization": {"name": "Acme", "defaultCurrency": "NZD"},
                "user": {"email": unique_email("weak"), "password": "aaaaaaaaaaaaaaaa", "firstName": "A", "lastName": "B"},
            }),
        )
        .await;
    let body = assert_problem(weak, 422, "validation_failed").await;
    assert_eq!(body["errors"][0]["pointer"], "/user/password");
    assert_eq!(body["errors"][0]["code"], "password_too_simple");
    assert_eq!(app.event_count().await, 0);

    let missing = api
        .post("/v1/auth/login", None, json!({"email": "a@b.co"}))
        .await;
    let body = assert_problem(missing, 422, "validation_failed").await;
    assert_eq!(body["errors"][0]["pointer"], "/password");
    let text = http()
        .post(format!("{}/v1/auth/login", app.url))
        .body("email=a")
        .send()
        .await
        .unwrap();
    assert_problem(text, 415, "unsupported_media_type").await;
    let mfa = api
        .post(
            "/v1/auth/mfa/verify",
            None,
            json!({"challenge": "x", "code": "123456", "recoveryCode": "abcd"}),
        )
        .await;
    assert_problem(mfa, 422, "validation_failed").await;
    let mfa = api
        .post(
            "/v1/auth/mfa/verify",
            None,
            json!({"challenge": "x", "code": "123456"}),
        )
        .await;
    assert_problem(mfa, 401, "invalid_mfa_challenge").await;
    assert_eq!(app.event_count().await, 0);
}

#[tokio::test]
async fn mfa_enrolment_login_with_totp_and_recovery_code() {
    let app = TestApp::spawn().await;
    let api = Identity::new(&app.url);
    let email = unique_email("mfa");
    let signed_up = api.sign_up("Tūī Design", &email).await;
    let access = signed_up["accessToken"].as_str().unwrap().to_owned();
    let user_id = signed_up["user"]["id"].as_str().unwrap().to_owned();

    // Confirming before starting is refused.
    let early = api
        .post(
            "/v1/me/mfa/totp/confirm",
            Some(&access),
            json!({"code": "123456"}),
        )
        .await;
    assert_problem(early, 409, "mfa_enrolment_not_started").await;

    let setup = api.post("/v1/me/mfa/totp", Some(&access), json!({})).await;
    assert_eq!(setup.status(), 200);
    let setup: Value = setup.json().await.unwrap();
    let secret = setup["secret"].as_str().unwrap().to_owned();
    let uri = setup["otpauthUri"].as_str().unwrap();
    assert!(uri.starts_with("otpauth://totp/Pivotal%20Flow:"), "{uri}");
    assert!(uri.contains(&format!("secret={secret}")));
    assert!(setup["qrCodeSvg"].as_str().unwrap().contains("<svg"));
    let code =
        |offset: u64| pivotal_identity::totp::code_for_base32(&secret, now() + offset).unwrap();

    // A wrong code does not enable MFA; the right one does, once.
    let wrong = format!("{:06}", (code(0).parse::<u32>().unwrap() + 1) % 1_000_000);
    let bad = api
        .post(
            "/v1/me/mfa/totp/confirm",
            Some(&access),
            json!({"code": wrong}),
        )
        .await;
    assert_problem(bad, 422, "validation_failed").await;
    // One code, kept: replayed below, it must be the very code used here,
    // not the code of whatever 30-second step the clock has reached by then.
    let confirming = code(0);
    let confirmed = api
        .post(
            "/v1/me/mfa/totp/confirm",
            Some(&access),
            json!({"code": confirming}),
        )
        .await;
    assert_eq!(confirmed.status(), 200);
    let codes: Vec<String> = confirmed.json::<Value>().await.unwrap()["recoveryCodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(codes.len(), 10);

    // A password alone now yields a challenge, not tokens.
    let challenge = api.login_ok(&email, PASSWORD).await;
    assert_eq!(challenge["mfaRequired"], true);
    assert!(challenge.get("accessToken").is_none());
    let c1 = challenge["challenge"].as_str().unwrap().to_owned();

    // The code used to confirm cannot be replayed; the next step's can.
    let replay = api
        .post(
            "/v1/auth/mfa/verify",
            None,
            json!({"challenge": c1, "code": confirming}),
        )
        .await;
    let replay_body = assert_problem(replay, 422, "validation_failed").await;
    assert_eq!(replay_body["errors"][0]["code"], "invalid_mfa_code");
    let next = code(30);
    let done = api
        .post(
            "/v1/auth/mfa/verify",
            None,
            json!({"challenge": c1, "code": next}),
        )
        .await;
    assert_eq!(done.status(), 200, "{:?}", done.text().await);
    let done: Value = done.json().await.unwrap();
    assert_eq!(claims(done["accessToken"].as_str().unwrap())["mfa"], true);
    // A challenge is single-use.
    let reused = api
        .post(
            "/v1/auth/mfa/verify",
            None,
            json!({"challenge": c1, "code": code(30)}),
        )
        .await;
    assert_problem(reused, 401, "invalid_mfa_challenge").await;
    // The same TOTP code on a fresh challenge is a replay.
    let c2 = api.login_ok(&email, PASSWORD).await["challenge"]
        .as_str()
        .unwrap()
        .to_owned();
    let replay = api
        .post(
            "/v1/auth/mfa/verify",
            None,
            json!({"challenge": c2, "code": next}),
        )
        .await;
    assert_problem(replay, 422, "validation_failed").await;

    // A recovery code works once (any case, with or without dashes).
    let typed = codes[0].to_uppercase().replace('-', "");
    let recovered = api
        .post(
            "/v1/auth/mfa/verify",
            None,
            json!({"challenge": c2, "recoveryCode": typed}),
        )
        .await;
    assert_eq!(recovered.status(), 200);
    let recovered: Value = recovered.json().await.unwrap();
    assert_eq!(
        claims(recovered["accessToken"].as_str().unwrap())["mfa"],
        true
    );
    let c3 = api.login_ok(&email, PASSWORD).await["challenge"]
        .as_str()
        .unwrap()
        .to_owned();
    let again = api
        .post(
            "/v1/auth/mfa/verify",
            None,
            json!({"challenge": c3, "recoveryCode": codes[0]}),
        )
        .await;
    assert_problem(again, 422, "validation_failed").await;

    // Five wrong codes use the challenge up.
    for _ in 0..4 {
        let r = api
            .post(
                "/v1/auth/mfa/verify",
                None,
                json!({"challenge": c3, "recoveryCode": "nope"}),
            )
            .await;
        assert_eq!(r.status(), 422);
    }
    let dead = api
        .post(
            "/v1/auth/mfa/verify",
            None,
            json!({"challenge": c3, "recoveryCode": codes[1]}),
        )
        .await;
    assert_problem(dead, 401, "invalid_mfa_challenge").await;

    let status: Value = api
        .get("/v1/me/mfa", recovered["accessToken"].as_str().unwrap())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status, json!({"enabled": true, "recoveryCodesLeft": 9}));

    // Disabling needs a current factor.
    let mfa_token = recovered["accessToken"].as_str().unwrap();
    let refused = api
        .post(
            "/v1/me/mfa/disable",
            Some(mfa_token),
            json!({"code": "000000"}),
        )
        .await;
    assert_problem(refused, 422, "validation_failed").await;
    let disabled = api
        .post(
            "/v1/me/mfa/disable",
            Some(mfa_token),
            json!({"recoveryCode": codes[2]}),
        )
        .await;
    assert_eq!(disabled.status(), 204);
    let plain = api.login_ok(&email, PASSWORD).await;
    assert!(plain["accessToken"].is_string());

    let types = event_types(&app, &user_id).await;
    assert!(types.contains(&"user.mfa.enabled".to_owned()));
    assert!(types.contains(&"user.mfa.disabled".to_owned()));
    let (methods,): (Vec<String>,) = sqlx::query_as(
        "SELECT array_agg(payload -> 'data' ->> 'loginMethod' ORDER BY sequence) FROM events
         WHERE aggregate_id = $1 AND event_type = 'user.authenticated'",
    )
    .bind(&user_id)
    .fetch_one(&app.env.pool)
    .await
    .unwrap();
    assert_eq!(
        methods,
        [
            "password",
            "password_totp",
            "password_recovery_code",
            "password"
        ]
    );
}

#[tokio::test]
async fn lockout_after_failures_admin_lock_deactivation_and_unlock() {
    // More sign-ins per minute for one account than the default allows.
    let app = TestApp::spawn_with(|s| s.auth.rate_limit.per_account = 100).await;
    let api = Identity::new(&app.url);
    let owner_email = unique_email("owner");
    let owner = api.sign_up("Rimu Ltd", &owner_email).await;
    let owner_token = owner["accessToken"].as_str().unwrap().to_owned();
    let member_email = unique_email("member");
    let member = api
        .create_user(&owner_token, &member_email, &["member"])
        .await;
    let member_id = member["id"].as_str().unwrap().to_owned();
    let member_session = api.login_ok(&member_email, PASSWORD).await;

    // Four failures are just failures; the fifth locks for 15 minutes.
    for _ in 0..5 {
        let r = api.login(&member_email, "wrong password, again").await;
        assert_problem(r, 401, "invalid_credentials").await;
    }
    let locked = api.login(&member_email, PASSWORD).await;
    let retry: u64 = locked.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((840..=900).contains(&retry), "{retry}");
    assert_problem(locked, 429, "account_temporarily_locked").await;
    let (reason, until): (String, Option<String>) = sqlx::query_as(
        "SELECT payload -> 'data' ->> 'reason', payload -> 'data' ->> 'until' FROM events
         WHERE aggregate_id = $1 AND event_type = 'user.locked'",
    )
    .bind(&member_id)
    .fetch_one(&app.env.pool)
    .await
    .unwrap();
    assert_eq!(reason, "too many failed sign-in attempts");
    assert!(until.is_some());

    // An unknown address behaves exactly the same: no enumeration.
    let ghost = unique_email("ghost");
    for _ in 0..5 {
        assert_problem(
            api.login(&ghost, "whatever it is").await,
            401,
            "invalid_credentials",
        )
        .await;
    }
    assert_problem(
        api.login(&ghost, PASSWORD).await,
        429,
        "account_temporarily_locked",
    )
    .await;

    // The owner unlocks; the member signs in again.
    let user_path = format!("/v1/users/{member_id}");
    let unlocked = api
        .post(
            &format!("{user_path}/unlock"),
            Some(&owner_token),
            json!({}),
        )
        .await;
    assert_eq!(unlocked.status(), 200, "{:?}", unlocked.text().await);
    api.login_ok(&member_email, PASSWORD).await;

    // A lock whose end is not a time is refused, saying how to write one,
    // and locks nothing.
    let refused = api
        .post(
            &format!("{user_path}/lock"),
            Some(&owner_token),
            json!({"reason": "away", "until": "tomorrow"}),
        )
        .await;
    let problem = assert_problem(refused, 422, "validation_failed").await;
    assert_eq!(
        problem["errors"],
        json!([{"pointer": "/until", "code": "invalid_type",
                "message": "\"tomorrow\" is not a time written as RFC 3339, such as 2026-12-31T17:00:00Z"}])
    );
    api.login_ok(&member_email, PASSWORD).await;

    // An administrator's lock: the right password gets a clear refusal,
    // a wrong one still just fails, and open sessions end.
    let lock = api
        .post(
            &format!("{user_path}/lock"),
            Some(&owner_token),
            json!({"reason": "laptop reported stolen"}),
        )
        .await;
    assert_eq!(lock.status(), 200);
    let refused = api.login(&member_email, PASSWORD).await;
    let body = assert_problem(refused, 403, "account_locked").await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("laptop reported stolen")
    );
    assert_problem(
        api.login(&member_email, "wrong password, again").await,
        401,
        "invalid_credentials",
    )
    .await;
    let old_refresh = member_session["refreshToken"].as_str().unwrap();
    assert_problem(api.refresh(old_refresh).await, 401, "invalid_refresh_token").await;
    // Introspection reports the still-unexpired access token inactive.
    let introspected: Value = api
        .post(
            "/v1/auth/introspect",
            None,
            json!({"token": member_session["accessToken"]}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(introspected["active"], false);
    assert_eq!(introspected["reason"], "token_revoked");
    // ... and the API refuses it at once, not only when it expires.
    let member_access = member_session["accessToken"].as_str().unwrap();
    let revoked = api.get(&user_path, member_access).await;
    assert_problem(revoked, 401, "token_revoked").await;
    let self_lock = api
        .post(
            &format!("/v1/users/{}/lock", owner["user"]["id"].as_str().unwrap()),
            Some(&owner_token),
            json!({"reason": "x"}),
        )
        .await;
    assert_problem(self_lock, 403, "self_action").await;
    api.post(
        &format!("{user_path}/unlock"),
        Some(&owner_token),
        json!({}),
    )
    .await;

    // Deactivation (deleteUser): refused with its own code; history kept.
    let gone = api
        .post(
            &format!("{user_path}/deactivate"),
            Some(&owner_token),
            json!({"reason": "left the company"}),
        )
        .await;
    assert_eq!(gone.status(), 200);
    let refused = api.login(&member_email, PASSWORD).await;
    assert_problem(refused, 403, "account_deactivated").await;
    let fetched: Value = api
        .get(&user_path, &owner_token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(fetched["status"], "deactivated");
    let reactivated = api
        .post(
            &format!("{user_path}/reactivate"),
            Some(&owner_token),
            json!({}),
        )
        .await;
    assert_eq!(reactivated.status(), 200);
    api.login_ok(&member_email, PASSWORD).await;
}

#[tokio::test]
async fn sign_in_is_rate_limited_per_address() {
    let mut env = TestEnv::new().await;
    env.settings.auth.rate_limit.per_ip = 3;
    let (url, _stop) = env.spawn_command_api().await;
    let api = Identity::new(&url);
    for _ in 0..3 {
        let r = api.login(&unique_email("x"), "whatever it is").await;
        assert_eq!(r.status(), 401);
    }
    let limited = api.login(&unique_email("x"), "whatever it is").await;
    assert!(limited.headers().contains_key("retry-after"));
    assert_problem(limited, 429, "rate_limited").await;
}

#[tokio::test]
async fn the_sign_in_window_slides() {
    let mut env = TestEnv::new().await;
    env.settings.auth.rate_limit.per_ip = 2;
    env.settings.auth.rate_limit.window_secs = 5;
    let (url, _stop) = env.spawn_command_api().await;
    let api = Identity::new(&url);
    for _ in 0..2 {
        let r = api.login(&unique_email("x"), "whatever it is").await;
        assert_eq!(r.status(), 401);
    }
    let limited = api.login(&unique_email("x"), "whatever it is").await;
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=5).contains(&retry_after), "{retry_after}");
    assert_problem(limited, 429, "rate_limited").await;
    // Once the first request has left the window there is room for one.
    tokio::time::sleep(std::time::Duration::from_secs(retry_after)).await;
    let again = api.login(&unique_email("x"), "whatever it is").await;
    assert_eq!(again.status(), 401);
}

#[tokio::test]
async fn sign_in_is_rate_limited_per_account() {
    let app = TestApp::spawn_with(|s| {
        s.auth.rate_limit.per_account = 3;
        s.auth.lockout.max_failures = 100;
    })
    .await;
    let api = Identity::new(&app.url);
    let email = unique_email("owner");
    api.sign_up("Nīkau", &email).await;
    for _ in 0..3 {
        assert_eq!(api.login(&email, "wrong guess here").await.status(), 401);
    }
    // Even the right password waits for the window to pass.
    let limited = api.login(&email, PASSWORD).await;
    assert!(limited.headers().contains_key("retry-after"));
    assert_problem(limited, 429, "rate_limited").await;
    // Other accounts are unaffected.
    let other = unique_email("other");
    api.sign_up("Kawakawa", &other).await;
    api.login_ok(&other, PASSWORD).await;
}

#[tokio::test]
async fn invited_users_choose_a_password_once() {
    let app = TestApp::spawn().await;
    let api = Identity::new(&app.url);
    let owner = api.sign_up("Kauri Ltd", &unique_email("owner")).await;
    let owner_token = owner["accessToken"].as_str().unwrap();
    let email = unique_email("invitee");
    let invited = api
        .post(
            "/v1/users",
            Some(owner_token),
            json!({"email": email, "firstName": "Mere", "lastName": "Parata", "roles": ["manager"]}),
        )
        .await;
    assert_eq!(invited.status(), 201);
    let invited: Value = invited.json().await.unwrap();
    assert_eq!(invited["user"]["status"], "invited");
    let token = invited["invitationToken"].as_str().unwrap();
    // No password yet: sign-in fails like any wrong password.
    assert_problem(
        api.login(&email, PASSWORD).await,
        401,
        "invalid_credentials",
    )
    .await;
    let weak = api
        .post(
            "/v1/auth/invitations/accept",
            None,
            json!({"token": token, "password": "short"}),
        )
        .await;
    assert_problem(weak, 422, "validation_failed").await;
    let accepted = api
        .post(
            "/v1/auth/invitations/accept",
            None,
            json!({"token": token, "password": PASSWORD}),
        )
        .await;
    assert_eq!(accepted.status(), 200);
    let accepted: Value = accepted.json().await.unwrap();
    assert_eq!(accepted["user"]["status"], "active");
    assert_eq!(
        claims(accepted["accessToken"].as_str().unwrap())["roles"],
        json!(["manager"])
    );
    let twice = api
        .post(
            "/v1/auth/invitations/accept",
            None,
            json!({"token": token, "password": PASSWORD}),
        )
        .await;
    assert_problem(twice, 401, "invalid_invitation").await;
    api.login_ok(&email, PASSWORD).await;
}

#[tokio::test]
async fn password_change_needs_the_current_one_and_ends_sessions() {
    let app = TestApp::spawn().await;
    let api = Identity::new(&app.url);
    let email = unique_email("pw");
    let signed = api.sign_up("Mataī", &email).await;
    let token = signed["accessToken"].as_str().unwrap();
    let wrong = api
        .post(
            "/v1/me/password",
            Some(token),
            json!({"currentPassword": "nope nope nope", "newPassword": "another fine passphrase"}),
        )
        .await;
    let body = assert_problem(wrong, 422, "validation_failed").await;
    assert_eq!(body["errors"][0]["pointer"], "/currentPassword");
    let changed = api
        .post(
            "/v1/me/password",
            Some(token),
            json!({"currentPassword": PASSWORD, "newPassword": "another fine passphrase"}),
        )
        .await;
    assert_eq!(changed.status(), 204);
    assert_problem(
        api.refresh(signed["refreshToken"].as_str().unwrap()).await,
        401,
        "invalid_refresh_token",
    )
    .await;
    assert_problem(
        api.login(&email, PASSWORD).await,
        401,
        "invalid_credentials",
    )
    .await;
    let fresh = api.login_ok(&email, "another fine passphrase").await;
    // Access tokens from before the change are refused; new ones work.
    let user_path = format!("/v1/users/{}", signed["user"]["id"].as_str().unwrap());
    assert_problem(api.get(&user_path, token).await, 401, "token_revoked").await;
    let ok = api
        .get(&user_path, fresh["accessToken"].as_str().unwrap())
        .await;
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn concurrent_refreshes_of_one_token_let_exactly_one_through() {
    let app = TestApp::spawn_with(|s| s.auth.rate_limit.per_ip = 1000).await;
    let api = Identity::new(&app.url);
    let email = unique_email("race");
    let signed = api.sign_up("Kererū", &email).await;
    let user_id = signed["user"]["id"].as_str().unwrap().to_owned();
    let token = signed["refreshToken"].as_str().unwrap().to_owned();
    let attempts = futures::future::join_all((0..8).map(|_| {
        let api = &api;
        let token = token.clone();
        async move {
            let r = api.refresh(&token).await;
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        }
    }))
    .await;
    let winners: Vec<&Value> = attempts
        .iter()
        .filter(|(s, _)| *s == 200)
        .map(|(_, b)| b)
        .collect();
    assert_eq!(winners.len(), 1, "{attempts:?}");
    // The first loser detects the reuse and revokes the family; later ones
    // find it revoked.
    let mut reused = 0;
    for (status, body) in attempts.iter().filter(|(s, _)| *s != 200) {
        assert_eq!(*status, 401);
        match body["code"].as_str().unwrap() {
            "refresh_token_reused" => reused += 1,
            "invalid_refresh_token" => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert!(reused >= 1, "{attempts:?}");
    // The losers revealed a reuse, so the winner's new token is dead too.
    let next = winners[0]["refreshToken"].as_str().unwrap();
    assert_problem(api.refresh(next).await, 401, "invalid_refresh_token").await;
    let (ended,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM events WHERE aggregate_id = $1 AND event_type = 'user.session.ended'",
    )
    .bind(&user_id)
    .fetch_one(&app.env.pool)
    .await
    .unwrap();
    assert!(ended >= 1);
}

#[tokio::test]
async fn concurrent_sign_ins_all_count() {
    let app = TestApp::spawn_with(|s| {
        s.auth.rate_limit.per_ip = 1000;
        s.auth.rate_limit.per_account = 1000;
    })
    .await;
    let api = Identity::new(&app.url);
    let email = unique_email("busy");
    let signed = api.sign_up("Kōkako", &email).await;
    let user_id = signed["user"]["id"].as_str().unwrap().to_owned();
    let results = futures::future::join_all((0..10).map(|_| api.login(&email, PASSWORD))).await;
    for r in results {
        assert_eq!(r.status(), 200);
    }
    // Every sign-in is one event with a consecutive count: none lost to a race.
    let counts: Vec<(i64,)> = sqlx::query_as(
        "SELECT (payload -> 'data' ->> 'loginCount')::bigint FROM events
         WHERE aggregate_id = $1 AND event_type = 'user.authenticated' ORDER BY sequence",
    )
    .bind(&user_id)
    .fetch_all(&app.env.pool)
    .await
    .unwrap();
    let counts: Vec<i64> = counts.into_iter().map(|(c,)| c).collect();
    assert_eq!(counts, (1..=11).collect::<Vec<_>>());
    let (families,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM token_families WHERE user_id = $1::uuid")
            .bind(&user_id)
            .fetch_one(&app.env.pool)
            .await
            .unwrap();
    assert_eq!(families, 11);
}
