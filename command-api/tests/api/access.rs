//! Authorization over HTTP: role enforcement with the missing permission
//! named, conditional grants, custom roles, the MFA policy, tenant
//! isolation, bad tokens and key rotation with two live keys.

use pivotal_auth::{Jwks, TokenIssuer};
use pivotal_settings::{PublicKeySettings, SigningKeySettings};
use pivotal_test_support::{TestEnv, http, workspace_root};
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem};
use crate::identity::{Identity, PASSWORD, claims, header, unique_email};

struct Org {
    owner: String,
    owner_id: String,
    member: String,
    member_id: String,
    customer_id: String,
}

async fn organization(api: &Identity<'_>, name: &str) -> Org {
    let owner = api.sign_up(name, &unique_email("owner")).await;
    let owner_token = owner["accessToken"].as_str().unwrap().to_owned();
    let member_email = unique_email("member");
    let member = api
        .create_user(&owner_token, &member_email, &["member"])
        .await;
    let member_session = api.login_ok(&member_email, PASSWORD).await;
    let customer = api
        .post(
            "/v1/customers",
            Some(&owner_token),
            json!({"legalName": format!("{name} client"), "currency": "NZD"}),
        )
        .await;
    assert_eq!(customer.status(), 201);
    let customer: Value = customer.json().await.unwrap();
    Org {
        owner: owner_token,
        owner_id: owner["user"]["id"].as_str().unwrap().to_owned(),
        member: member_session["accessToken"].as_str().unwrap().to_owned(),
        member_id: member["id"].as_str().unwrap().to_owned(),
        customer_id: customer["id"].as_str().unwrap().to_owned(),
    }
}

#[tokio::test]
async fn roles_are_enforced_with_the_missing_permission_named() {
    let app = TestApp::spawn().await;
    let api = Identity::new(&app.url);
    let org = organization(&api, "Harakeke").await;
    let before = app.event_count().await;

    // A member may not create users or customers; the problem names what is missing.
    let denied = api
        .post(
            "/v1/users",
            Some(&org.member),
            json!({"email": unique_email("x"), "firstName": "A", "lastName": "B"}),
        )
        .await;
    let body = assert_problem(denied, 403, "forbidden").await;
    assert!(
        body["detail"].as_str().unwrap().contains("users:create"),
        "{body}"
    );
    let denied = api
        .post(
            "/v1/customers",
            Some(&org.member),
            json!({"legalName": "X", "currency": "NZD"}),
        )
        .await;
    let body = assert_problem(denied, 403, "forbidden").await;
    assert!(body["detail"].as_str().unwrap().contains("customers:write"));
    assert_eq!(app.event_count().await, before);

    // Conditional grant: a member edits their own profile, nobody else's.
    let profile = json!({"firstName": "Tama", "lastName": "Rangi", "timeZone": "Pacific/Auckland",
                         "preferences": {"theme": "dark"}});
    let own = api
        .put(
            &format!("/v1/users/{}/profile", org.member_id),
            &org.member,
            profile.clone(),
        )
        .await;
    assert_eq!(own.status(), 200, "{:?}", own.text().await);
    let other = api
        .put(
            &format!("/v1/users/{}/profile", org.owner_id),
            &org.member,
            profile,
        )
        .await;
    let body = assert_problem(other, 403, "forbidden").await;
    assert!(body["detail"].as_str().unwrap().contains("users:update"));

    // checkPermission answers for the caller and, with users:read, for others.
    let check = |token: String, body: Value| {
        let api = &api;
        async move {
            let r = api.post("/v1/permissions/check", Some(&token), body).await;
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        }
    };
    let own = check(
        org.member.clone(),
        json!({"resource": "users", "action": "update", "context": {"userId": org.member_id}}),
    )
    .await;
    assert_eq!(
        own,
        json!({"allowed": true, "reason": "granted", "grantedBy": "member"})
    );
    let theirs = check(
        org.member.clone(),
        json!({"resource": "users", "action": "update", "context": {"userId": org.owner_id}}),
    )
    .await;
    assert_eq!(theirs["reason"], "conditions_not_met");
    let none = check(
        org.owner.clone(),
        json!({"userId": org.member_id, "resource": "invoices", "action": "delete"}),
    )
    .await;
    assert_eq!(none["reason"], "no_grant");

    // A custom role with an amount limit, assigned to the member.
    let role = api
        .put(
            "/v1/roles/quote-approver",
            &org.owner,
            json!({"name": "Quote approver", "grants": [
                {"resource": "quotes", "action": "approve",
                 "conditions": [{"attribute": "totalAmount", "operator": "lte", "value": 500000}]}
            ]}),
        )
        .await;
    assert_eq!(role.status(), 200, "{:?}", role.text().await);
    let bad_role = api
        .put(
            "/v1/roles/admin",
            &org.owner,
            json!({"name": "", "grants": [{"resource": "Quotes", "action": "x"}]}),
        )
        .await;
    let body = assert_problem(bad_role, 422, "validation_failed").await;
    assert_eq!(body["errors"].as_array().unwrap().len(), 3, "{body}");
    let assign = api
        .post(
            &format!("/v1/users/{}/roles", org.member_id),
            Some(&org.owner),
            json!({"role": "quote-approver"}),
        )
        .await;
    assert_eq!(assign.status(), 200);
    let unknown = api
        .post(
            &format!("/v1/users/{}/roles", org.member_id),
            Some(&org.owner),
            json!({"role": "astronaut"}),
        )
        .await;
    assert_problem(unknown, 422, "validation_failed").await;
    for (amount, allowed) in [(500_000, true), (500_001, false)] {
        let r = check(
            org.owner.clone(),
            json!({"userId": org.member_id, "resource": "quotes", "action": "approve",
                   "context": {"totalAmount": amount}}),
        )
        .await;
        assert_eq!(r["allowed"], allowed, "{amount}: {r}");
    }
    let roles: Value = api
        .get(&format!("/v1/users/{}/roles", org.member_id), &org.owner)
        .await
        .json()
        .await
        .unwrap();
    let keys: Vec<&str> = roles["roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["member", "quote-approver"]);
    let all: Value = api.get("/v1/roles", &org.owner).await.json().await.unwrap();
    assert_eq!(all["roles"].as_array().unwrap().len(), 7);

    // Only an owner hands out the owner role.
    let admin_email = unique_email("admin");
    api.create_user(&org.owner, &admin_email, &["admin"]).await;
    let admin = api.login_ok(&admin_email, PASSWORD).await;
    let admin = admin["accessToken"].as_str().unwrap();
    let grab = api
        .post(
            &format!("/v1/users/{}/roles", org.member_id),
            Some(admin),
            json!({"role": "owner"}),
        )
        .await;
    assert_problem(grab, 403, "forbidden").await;
    let revoke = api
        .delete(
            &format!("/v1/users/{}/roles/quote-approver", org.member_id),
            admin,
        )
        .await;
    assert_eq!(revoke.status(), 200);

    // The organization's policy makes role changes need an MFA token.
    let policy = api
        .put(
            "/v1/organization/security-policy",
            &org.owner,
            json!({"requireMfaForSensitiveOperations": true}),
        )
        .await;
    assert_eq!(policy.status(), 200);
    let needs_mfa = api
        .post(
            &format!("/v1/users/{}/roles", org.member_id),
            Some(&org.owner),
            json!({"role": "manager"}),
        )
        .await;
    assert_problem(needs_mfa, 403, "mfa_required").await;
    let email_change = api
        .put(
            &format!("/v1/users/{}/email", org.member_id),
            &org.member,
            json!({"email": unique_email("new")}),
        )
        .await;
    assert_problem(email_change, 403, "mfa_required").await;
    let password_change = api
        .post(
            "/v1/me/password",
            Some(&org.member),
            json!({"currentPassword": PASSWORD, "newPassword": "a whole new passphrase"}),
        )
        .await;
    assert_problem(password_change, 403, "mfa_required").await;
    // The same token with mfa: true (as after verifyMFA) passes.
    let mut c: pivotal_auth::Claims = serde_json::from_value(claims(&org.owner)).unwrap();
    c.mfa = true;
    let with_mfa = app.env.issuer.sign(&c).unwrap();
    let ok = api
        .post(
            &format!("/v1/users/{}/roles", org.member_id),
            Some(&with_mfa),
            json!({"role": "manager"}),
        )
        .await;
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn another_organization_sees_nothing_of_ours() {
    let app = TestApp::spawn().await;
    let api = Identity::new(&app.url);
    let ours = organization(&api, "Pōhutukawa").await;
    let theirs = organization(&api, "Kahikatea").await;
    let before = app.event_count().await;
    let token = &theirs.owner;
    let user = &ours.member_id;
    let customer = &ours.customer_id;

    let reads = [
        format!("/v1/users/{user}"),
        format!("/v1/users/{user}/roles"),
        format!("/v1/customers/{customer}"),
    ];
    for path in &reads {
        let r = api.get(path, token).await;
        assert_eq!(r.status(), 404, "GET {path}");
    }
    let writes: Vec<(String, Value)> = vec![
        (format!("/v1/users/{user}/deactivate"), json!({})),
        (format!("/v1/users/{user}/reactivate"), json!({})),
        (format!("/v1/users/{user}/lock"), json!({"reason": "x"})),
        (format!("/v1/users/{user}/unlock"), json!({})),
        (
            format!("/v1/users/{user}/roles"),
            json!({"role": "manager"}),
        ),
        (
            format!("/v1/customers/{customer}/rename"),
            json!({"legalName": "Mine"}),
        ),
        (format!("/v1/customers/{customer}/archive"), json!({})),
        (format!("/v1/customers/{customer}/restore"), json!({})),
        (
            "/v1/permissions/check".to_owned(),
            json!({"userId": user, "resource": "users", "action": "read"}),
        ),
    ];
    for (path, body) in &writes {
        let r = api.post(path, Some(token), body.clone()).await;
        assert_eq!(r.status(), 404, "POST {path}");
    }
    let puts: Vec<(String, Value)> = vec![
        (
            format!("/v1/users/{user}/profile"),
            json!({"firstName": "A", "lastName": "B"}),
        ),
        (
            format!("/v1/users/{user}/email"),
            json!({"email": unique_email("z")}),
        ),
        (
            format!("/v1/customers/{customer}/tags"),
            json!({"tags": ["x"]}),
        ),
        (format!("/v1/customers/{customer}/contact"), json!({})),
    ];
    for (path, body) in &puts {
        let r = api.put(path, token, body.clone()).await;
        assert_eq!(r.status(), 404, "PUT {path}");
    }
    let r = api
        .delete(&format!("/v1/users/{user}/roles/member"), token)
        .await;
    assert_eq!(r.status(), 404);
    assert_eq!(app.event_count().await, before, "nothing was written");

    // Custom roles are the organization's own.
    let defined = api
        .put(
            "/v1/roles/night-shift",
            &ours.owner,
            json!({"name": "Night shift", "grants": [{"resource": "time", "action": "write"}]}),
        )
        .await;
    assert_eq!(defined.status(), 200);
    let r = api.delete("/v1/roles/night-shift", token).await;
    assert_problem(r, 404, "role_not_found").await;
    let theirs_roles: Value = api.get("/v1/roles", token).await.json().await.unwrap();
    assert!(!theirs_roles.to_string().contains("night-shift"));
    let ours_roles: Value = api
        .get("/v1/roles", &ours.owner)
        .await
        .json()
        .await
        .unwrap();
    assert!(ours_roles.to_string().contains("night-shift"));
    let assign = api
        .post(
            &format!("/v1/users/{}/roles", theirs.member_id),
            Some(token),
            json!({"role": "night-shift"}),
        )
        .await;
    assert_problem(assign, 422, "validation_failed").await;

    // The organization endpoints only ever show the caller's own.
    let mine: Value = api
        .get("/v1/organization", token)
        .await
        .json()
        .await
        .unwrap();
    let ours_org: Value = api
        .get("/v1/organization", &ours.owner)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(mine["name"], "Kahikatea");
    assert_eq!(ours_org["name"], "Pōhutukawa");
}

#[tokio::test]
async fn every_kind_of_bad_token_is_401() {
    let app = TestApp::spawn().await;
    let api = Identity::new(&app.url);
    let org = organization(&api, "Tōtara").await;
    let path = format!("/v1/users/{}", org.member_id);
    let good: pivotal_auth::Claims = serde_json::from_value(claims(&org.owner)).unwrap();
    let issuer = &app.env.issuer;
    let now = chrono::Utc::now().timestamp();
    let signed = |edit: &dyn Fn(&mut pivotal_auth::Claims)| {
        let mut c = good.clone();
        edit(&mut c);
        issuer.sign(&c).unwrap()
    };
    let b64 = |v: &Value| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    };
    let parts: Vec<&str> = org.owner.split('.').collect();
    let public_pem = std::fs::read(workspace_root().join("config/dev/jwt-public-key.pem")).unwrap();
    let mut hs_header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    hs_header.kid = Some("dev-2026-1".into());
    let mut unknown_kid = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    unknown_kid.kid = Some("retired-key".into());
    let signing = std::fs::read(workspace_root().join("config/dev/jwt-signing-key.pem")).unwrap();
    let bad: Vec<(&str, String)> = vec![
        ("expired", signed(&|c| c.exp = now - 120)),
        ("not yet valid", signed(&|c| c.nbf = now + 3600)),
        (
            "wrong audience",
            signed(&|c| c.aud = "billing-service".into()),
        ),
        ("wrong issuer", signed(&|c| c.iss = "evil".into())),
        (
            "unknown kid",
            jsonwebtoken::encode(
                &unknown_kid,
                &good,
                &jsonwebtoken::EncodingKey::from_ed_pem(&signing).unwrap(),
            )
            .unwrap(),
        ),
        (
            "tampered",
            format!(
                "{}.{}.{}",
                parts[0],
                b64(&json!({"sub": good.sub, "org": good.org, "roles": ["owner"]})),
                parts[2]
            ),
        ),
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(&json!({"alg": "none", "typ": "JWT", "kid": "dev-2026-1"})),
                parts[1]
            ),
        ),
        (
            "HS256 with the public key",
            jsonwebtoken::encode(
                &hs_header,
                &good,
                &jsonwebtoken::EncodingKey::from_secret(&public_pem),
            )
            .unwrap(),
        ),
        ("garbage", "not.a.token".into()),
    ];
    for (why, token) in &bad {
        let r = api.get(&path, token).await;
        assert_eq!(r.status(), 401, "{why}");
        assert_eq!(
            r.headers()["content-type"].to_str().unwrap(),
            "application/problem+json",
            "{why}"
        );
        let introspected: Value = api
            .post("/v1/auth/introspect", None, json!({"token": token}))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(introspected["active"], false, "{why}");
    }
    let missing = http()
        .get(format!("{}{path}", app.url))
        .send()
        .await
        .unwrap();
    assert_problem(missing, 401, "token_missing").await;

    // The good token introspects active, with its claims.
    let active: Value = api
        .post("/v1/auth/introspect", None, json!({"token": org.owner}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(active["active"], true);
    assert_eq!(active["sub"], org.owner_id);
    assert_eq!(active["tokenType"], "access_token");
}

/// Keys: `dev-2026-1` (old) and `test-next` (new, signing).
fn rotated(env: &mut TestEnv, keep_old: bool) {
    let root = workspace_root();
    let mut keys = vec![PublicKeySettings {
        kid: "test-next".into(),
        pem_file: root.join("config/test/jwt-next-public-key.pem"),
    }];
    if keep_old {
        keys.insert(
            0,
            PublicKeySettings {
                kid: "dev-2026-1".into(),
                pem_file: root.join("config/dev/jwt-public-key.pem"),
            },
        );
    }
    env.settings.auth.public_keys = keys;
    env.settings.auth.signing_key = Some(SigningKeySettings {
        kid: "test-next".into(),
        pem_file: root.join("config/test/jwt-next-signing-key.pem"),
    });
}

#[tokio::test]
async fn key_rotation_keeps_old_tokens_valid_until_the_key_is_retired() {
    let mut env = TestEnv::new().await;
    // Before rotation: tokens signed with the old key.
    let (old_url, old_stop) = env.spawn_command_api().await;
    let api = Identity::new(&old_url);
    let email = unique_email("rot");
    let before = api.sign_up("Miro", &email).await;
    let old_token = before["accessToken"].as_str().unwrap().to_owned();
    assert_eq!(header(&old_token)["kid"], "dev-2026-1");
    let user_id = before["user"]["id"].as_str().unwrap().to_owned();
    drop(old_stop);

    // Rotation: the new key signs, both are published.
    rotated(&mut env, true);
    let (url, _stop) = env.spawn_command_api().await;
    let api = Identity::new(&url);
    let jwks: Jwks = http()
        .get(format!("{url}/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kids: Vec<&str> = jwks.keys.iter().map(|k| k.kid.as_str()).collect();
    assert_eq!(kids, ["dev-2026-1", "test-next"]);
    assert!(
        jwks.keys
            .iter()
            .all(|k| k.kty == "OKP" && k.crv == "Ed25519")
    );
    let new_token = api.login_ok(&email, PASSWORD).await["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(header(&new_token)["kid"], "test-next");
    for token in [&old_token, &new_token] {
        let r = api.get(&format!("/v1/users/{user_id}"), token).await;
        assert_eq!(r.status(), 200);
    }

    // The query API verifies from the published key set, fetched and cached.
    env.settings.auth.jwks_url = format!("{url}/.well-known/jwks.json");
    env.settings.auth.public_keys = Vec::new();
    let (query_url, _query_stop) = env.spawn_query_api().await;
    for token in [&old_token, &new_token] {
        let body: Value = http()
            .post(format!("{query_url}/graphql"))
            .bearer_auth(token)
            .json(&json!({"query": "{ me { id } }"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(body.get("errors").is_none(), "{body}");
    }

    // Retired: tokens of the old key are refused everywhere.
    let mut retired = TestEnv::new().await;
    retired.settings.database = env.settings.database.clone();
    retired.pool = env.pool.clone();
    rotated(&mut retired, false);
    let (retired_url, _retired_stop) = retired.spawn_command_api().await;
    let r = http()
        .get(format!("{retired_url}/v1/users/{user_id}"))
        .bearer_auth(&old_token)
        .send()
        .await
        .unwrap();
    assert_problem(r, 401, "token_unknown_key").await;
    let r = http()
        .get(format!("{retired_url}/v1/users/{user_id}"))
        .bearer_auth(&new_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A signing key that is not published refuses to start.
    let mut broken = retired.settings.auth.clone();
    broken.signing_key = Some(SigningKeySettings {
        kid: "dev-2026-1".into(),
        pem_file: workspace_root().join("config/dev/jwt-signing-key.pem"),
    });
    assert!(TokenIssuer::from_settings(&broken).is_err());
}
