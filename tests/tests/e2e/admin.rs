//! The admin's way back to an account: the account list with key ids, adding keys (rotation)
//! and revoking them; only the admin token opens these routes.

use axum::body::Body;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::on_both_backends;
use crate::support::{ADMIN, TestApp, TestDb};

/// Creates an account; its id, first key id and API key.
async fn create(app: &TestApp, name: &str) -> (String, String, String) {
    let (status, body) = app.post_json("/v1/accounts", ADMIN, &json!({ "name": name })).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let text = |k: &str| body[k].as_str().unwrap_or_else(|| panic!("no {k} in {body}")).to_string();
    (text("id"), text("key_id"), text("api_key"))
}

/// Adds a key to an account; its id and the key.
async fn add_key(app: &TestApp, account_id: &str) -> (String, String) {
    let (status, body) = app.call("POST", &format!("/v1/admin/accounts/{account_id}/keys"), Some(ADMIN), None, Body::empty()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body.as_object().unwrap().len(), 2, "only the key id and the key: {body}");
    (body["key_id"].as_str().unwrap().to_string(), body["api_key"].as_str().unwrap().to_string())
}

async fn revoke(app: &TestApp, account_id: &str, key_id: &str) -> (StatusCode, Value) {
    app.call("DELETE", &format!("/v1/admin/accounts/{account_id}/keys/{key_id}"), Some(ADMIN), None, Body::empty()).await
}

/// Every account of the admin list, following `next_cursor` with pages of `limit`.
async fn all_accounts(app: &TestApp, limit: usize) -> Vec<Value> {
    let (mut accounts, mut cursor) = (Vec::new(), None::<String>);
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/admin/accounts?limit={limit}&cursor={c}"),
            None => format!("/v1/admin/accounts?limit={limit}"),
        };
        let (status, page) = app.get(&path, ADMIN).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let items = page["accounts"].as_array().unwrap();
        assert!(items.len() <= limit, "{page}");
        accounts.extend(items.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return accounts,
        }
    }
}

/// The key ids the admin list shows for an account.
async fn listed_key_ids(app: &TestApp, account_id: &str) -> Vec<String> {
    let accounts = all_accounts(app, 200).await;
    let account = accounts.iter().find(|a| a["id"] == account_id).unwrap_or_else(|| panic!("{account_id} not listed"));
    account["keys"].as_array().unwrap().iter().map(|k| k["key_id"].as_str().unwrap().to_string()).collect()
}

async fn the_list_shows_every_account_with_its_keys(db: TestDb) {
    let app = TestApp::new(db).await;
    assert_eq!(app.get("/v1/admin/accounts", ADMIN).await.1, json!({ "accounts": [], "next_cursor": null }));
    let mut created = Vec::new();
    for name in ["a", "b", "c"] {
        created.push(create(&app, name).await);
        app.clock.advance(1_000);
    }
    let (extra_id, _) = add_key(&app, &created[1].0).await;

    // Pages of two: newest account first, every account once.
    let (_, first) = app.get("/v1/admin/accounts?limit=2", ADMIN).await;
    assert_eq!(first["accounts"].as_array().unwrap().len(), 2);
    assert!(first["next_cursor"].is_string(), "{first}");
    let listed = all_accounts(&app, 2).await;
    let ids: Vec<&str> = listed.iter().map(|a| a["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [&created[2].0, &created[1].0, &created[0].0].map(String::as_str));
    for (account, (id, key_id, _)) in listed.iter().rev().zip(&created) {
        assert_eq!(account["id"], id.as_str());
        assert_eq!(account["plan"], "trial");
        assert_eq!(account["timezone"], "UTC");
        assert!(account["created_at"].is_string());
        let keys = account["keys"].as_array().unwrap();
        assert_eq!(keys[0]["key_id"], key_id.as_str(), "{account}");
        assert_eq!(keys[0]["created_at"], account["created_at"]);
        assert!(account.get("api_key").is_none() && keys[0].get("api_key").is_none(), "keys are never shown again");
    }
    assert_eq!(listed_key_ids(&app, &created[1].0).await, [created[1].1.clone(), extra_id], "oldest key first");

    // A key's last use is recorded.
    let key_of = |listed: &[Value], account: &str| listed.iter().find(|a| a["id"] == account).unwrap()["keys"][0].clone();
    assert_eq!(key_of(&listed, &created[0].0)["last_used_at"], Value::Null);
    assert_eq!(app.get("/v1/account", &created[0].2).await.0, StatusCode::OK);
    let used = key_of(&all_accounts(&app, 50).await, &created[0].0);
    assert_eq!(used["last_used_at"].as_str(), Some(switchboard_runtime::clock::to_rfc3339(app.now()).as_str()), "{used}");
}

async fn a_new_key_works_and_the_old_one_still_works(db: TestDb) {
    let app = TestApp::new(db).await;
    let (id, old_key_id, old_key) = create(&app, "a").await;
    let (new_key_id, new_key) = add_key(&app, &id).await;
    assert_ne!(new_key, old_key);
    assert_ne!(new_key_id, old_key_id);
    for key in [&old_key, &new_key] {
        let (status, account) = app.get("/v1/account", key).await;
        assert_eq!(status, StatusCode::OK, "{account}");
        assert_eq!(account["id"], id.as_str());
    }
    assert_eq!(listed_key_ids(&app, &id).await, [old_key_id, new_key_id]);

    let (status, body) = app.call("POST", "/v1/admin/accounts/no-such-account/keys", Some(ADMIN), None, Body::empty()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "not_found");
    assert_eq!(all_accounts(&app, 50).await.len(), 1, "no key was added to an unknown account");
}

async fn a_revoked_key_answers_401_and_leaves_the_list(db: TestDb) {
    let app = TestApp::new(db).await;
    let (id, old_key_id, old_key) = create(&app, "a").await;
    let (new_key_id, new_key) = add_key(&app, &id).await;
    // Used once before revocation: nothing remembers it afterwards.
    assert_eq!(app.get("/v1/account", &old_key).await.0, StatusCode::OK);

    let (status, body) = revoke(&app, &id, &old_key_id).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(body, Value::Null, "204 has no body");
    let (status, body) = app.get("/v1/account", &old_key).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"]["code"], "unauthorized");
    assert_eq!(app.get("/v1/workflows", &old_key).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(app.get("/v1/account", &new_key).await.0, StatusCode::OK, "the other key still works");
    assert_eq!(listed_key_ids(&app, &id).await, [new_key_id.as_str()]);
    assert_eq!(revoke(&app, &id, &old_key_id).await.0, StatusCode::NOT_FOUND, "already revoked");

    // The last key can go too; the account stays listed, without keys, and a new key opens it.
    assert_eq!(revoke(&app, &id, &new_key_id).await.0, StatusCode::NO_CONTENT);
    assert_eq!(app.get("/v1/account", &new_key).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(listed_key_ids(&app, &id).await, Vec::<String>::new());
    let (_, fresh) = add_key(&app, &id).await;
    assert_eq!(app.get("/v1/account", &fresh).await.1["id"], id.as_str());
}

async fn another_accounts_key_id_answers_404(db: TestDb) {
    let app = TestApp::new(db).await;
    let (a, a_key_id, a_key) = create(&app, "a").await;
    let (b, b_key_id, b_key) = create(&app, "b").await;

    let (status, body) = revoke(&app, &a, &b_key_id).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "not_found");
    assert_eq!(revoke(&app, &a, "no-such-key").await.0, StatusCode::NOT_FOUND);
    assert_eq!(revoke(&app, "no-such-account", &a_key_id).await.0, StatusCode::NOT_FOUND);
    assert_eq!(app.get("/v1/account", &b_key).await.1["id"], b.as_str(), "b's key was not touched");
    assert_eq!(app.get("/v1/account", &a_key).await.1["id"], a.as_str(), "nor a's");
    assert_eq!(listed_key_ids(&app, &b).await, [b_key_id]);
    assert_eq!(listed_key_ids(&app, &a).await, [a_key_id]);
}

async fn account_keys_are_refused_on_admin_routes(db: TestDb) {
    let app = TestApp::new(db).await;
    let (id, key_id, key) = create(&app, "a").await;
    let keys_path = format!("/v1/admin/accounts/{id}/keys");
    let key_path = format!("{keys_path}/{key_id}");
    for token in [Some(key.as_str()), None, Some("not-a-token")] {
        for (method, path) in [("GET", "/v1/admin/accounts"), ("POST", keys_path.as_str()), ("DELETE", key_path.as_str())] {
            let (status, body) = app.call(method, path, token, None, Body::empty()).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path} with {token:?}: {body}");
            assert_eq!(body["error"]["code"], "unauthorized");
        }
    }
    assert_eq!(listed_key_ids(&app, &id).await, [key_id], "nothing was added or revoked");
    assert_eq!(app.get("/v1/account", &key).await.0, StatusCode::OK);
}

/// A key made before keys had ids (migration 0008) gets an id derived from its hash, keeps
/// working, is listed under that id and can be revoked by it.
async fn keys_made_before_key_ids_get_ids_and_keep_working(db: TestDb) {
    use sqlx::Connection;

    let backend = if db.url.starts_with("sqlite:") { "sqlite" } else { "postgres" };
    let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations").join(backend);
    let mut before = sqlx::migrate::Migrator::new(folder).await.unwrap();
    let older: Vec<_> = before.migrations.iter().filter(|m| m.version < 8).cloned().collect();
    assert_eq!(older.len(), 7);
    before.migrations = older.into();
    sqlx::any::install_default_drivers();
    let url = if backend == "sqlite" { format!("{}?mode=rwc", db.url) } else { db.url.clone() };
    let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap();
    before.run(&mut conn).await.unwrap();
    let key = "sk_made_before_ids";
    let hash = switchboard_api::auth::hash_key(key);
    sqlx::query("INSERT INTO accounts (id, name, plan, timezone, created_at) VALUES ('old', 'Old', 'trial', 'UTC', 1)").execute(&mut conn).await.unwrap();
    sqlx::query("INSERT INTO api_keys (key_hash, account_id, created_at) VALUES ($1, 'old', 1)").bind(&hash).execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();

    let app = TestApp::new(db).await; // migrates the rest
    assert_eq!(app.get("/v1/account", key).await.1["id"], "old");
    let derived = format!("{}-{}-{}-{}-{}", &hash[0..8], &hash[8..12], &hash[12..16], &hash[16..20], &hash[20..32]);
    assert_eq!(listed_key_ids(&app, "old").await, [derived.as_str()]);
    let (fresh_id, fresh) = add_key(&app, "old").await;
    assert_eq!(revoke(&app, "old", &derived).await.0, StatusCode::NO_CONTENT);
    assert_eq!(app.get("/v1/account", key).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(app.get("/v1/account", &fresh).await.0, StatusCode::OK);
    assert_eq!(listed_key_ids(&app, "old").await, [fresh_id]);
}

on_both_backends!(
    keys_made_before_key_ids_get_ids_and_keep_working,
    the_list_shows_every_account_with_its_keys,
    a_new_key_works_and_the_old_one_still_works,
    a_revoked_key_answers_401_and_leaves_the_list,
    another_accounts_key_id_answers_404,
    account_keys_are_refused_on_admin_routes,
);
