//! The SQLite account store: users, tokens, deletion, the audit log's filters and paging.

use super::*;

fn alice() -> UserRecord {
    UserRecord {
        id: "ualice".into(),
        email: "alice@example.com".into(),
        name: "Alice".into(),
        role: Role::Member,
        password_hash: Some("$argon2id$x".into()),
        oidc: None,
        quotas: Quotas { max_sessions: Some(2), ..Default::default() },
        created_at: OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(),
        last_sign_in_at: None,
    }
}

#[tokio::test]
async fn users_tokens_and_deletion() {
    let store = SqliteStore::in_memory().await.unwrap();
    let a = alice();
    store.insert_user(&a).await.unwrap();
    assert_eq!(store.user("ualice").await.unwrap(), Some(a.clone()));
    assert_eq!(store.user_by_email("alice@example.com").await.unwrap().map(|u| u.id), Some("ualice".into()));
    let dup = UserRecord { id: "u2".into(), ..a.clone() };
    assert!(matches!(store.insert_user(&dup).await, Err(StoreError::Duplicate(_))), "emails are unique");

    let t = TokenRecord {
        id: "tok1".into(),
        user_id: "ualice".into(),
        name: "ci".into(),
        hash: "h".into(),
        created_at: a.created_at,
        expires_at: None,
        last_used_at: None,
    };
    store.insert_token(&t).await.unwrap();
    assert!(!store.delete_token("someone-else", "tok1").await.unwrap(), "only the owner revokes");
    assert_eq!(store.tokens_of("ualice").await.unwrap().len(), 1);
    store.put_git_credential(&GitCredentialRecord {
        user_id: "ualice".into(),
        host: "git.example".into(),
        username: None,
        sealed_token: "sealed".into(),
        updated_at: a.created_at,
    })
    .await
    .unwrap();

    assert!(store.delete_user("ualice", a.created_at).await.unwrap());
    assert!(!store.delete_user("ualice", a.created_at).await.unwrap(), "already deleted");
    assert_eq!(store.user("ualice").await.unwrap(), None);
    assert_eq!(store.token("tok1").await.unwrap(), None, "tokens are revoked with the user");
    assert!(store.git_credentials("ualice").await.unwrap().is_empty());
    assert_eq!(store.email_of("ualice").await.unwrap().as_deref(), Some("alice@example.com"), "kept for the audit log");
    store.insert_user(&dup).await.unwrap();
}

#[tokio::test]
async fn audit_filters_and_pages() {
    let store = SqliteStore::in_memory().await.unwrap();
    let at = |s| OffsetDateTime::from_unix_timestamp(s).unwrap();
    for (i, user) in ["ua", "ub", "ua", "ua"].iter().enumerate() {
        let e = AuditRecord {
            at: at(1000 + i as i64),
            user_id: Some(user.to_string()),
            actor: format!("{user}@x"),
            action: if i == 3 { "sign_in".into() } else { "session_create".into() },
            session: Some(format!("s{i}")),
            detail: serde_json::json!({"i": i}),
            ip: None,
        };
        store.append_audit(&e).await.unwrap();
    }
    let all = store.audit(&AuditFilter { limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(all.iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![4, 3, 2, 1], "newest first");
    let ua = store.audit(&AuditFilter { user_id: Some("ua".into()), limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(ua.len(), 3);
    let page = store.audit(&AuditFilter { user_id: Some("ua".into()), limit: 1, before: Some(4), ..Default::default() }).await.unwrap();
    assert_eq!(page.iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![3]);
    let window = store
        .audit(&AuditFilter { since: Some(at(1001)), until: Some(at(1003)), limit: 10, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(window.iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![3, 2]);
    let signins = store.audit(&AuditFilter { action: Some("sign_in".into()), limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(signins[0].1.detail, serde_json::json!({"i": 3}));
}
