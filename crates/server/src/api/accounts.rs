//! Account routes: who am I, my API tokens, my saved git tokens, my SSH keys; for admins, users (with their
//! quotas) and the audit log.
//!
//! | route | who |
//! |---|---|
//! | `GET /api/v1/me` | anyone signed in |
//! | `GET/POST /api/v1/tokens`, `DELETE /api/v1/tokens/{id}` | a user (their own tokens) |
//! | `GET /api/v1/me/git-credentials`, `PUT/DELETE /api/v1/me/git-credentials/{host}` | a user |
//! | `GET/POST /api/v1/me/ssh-keys`, `DELETE /api/v1/me/ssh-keys/{id}` | a user (their own keys) |
//! | `GET/POST /api/v1/users`, `GET/PATCH/DELETE /api/v1/users/{id}` | admins |
//! | `GET /api/v1/audit` | admins |

use super::signin::admin;
use super::{ApiJson, ApiPath, ApiQuery, AppState, Routes};
use crate::accounts::store::AuditFilter;
use crate::accounts::{user_view, Caller, Principal};
use crate::error::ApiError;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use mayfly_proto::accounts::{
    ApiToken, AuditPage, CreateToken, CreateUser, CreatedToken, Me, QuotaUsage, SaveGitCredential, SavedGitCredential,
    UpdateUser, User, AddSshKey, SshKey,
};
use serde::Deserialize;
use time::OffsetDateTime;

pub fn routes() -> Routes {
    Routes::new()
        .get("/api/v1/me", me)
        .get("/api/v1/tokens", list_tokens)
        .post("/api/v1/tokens", create_token)
        .delete("/api/v1/tokens/{id}", revoke_token)
        .get("/api/v1/me/git-credentials", list_git)
        .put("/api/v1/me/git-credentials/{host}", save_git)
        .delete("/api/v1/me/git-credentials/{host}", delete_git)
        .get("/api/v1/me/ssh-keys", list_ssh_keys)
        .post("/api/v1/me/ssh-keys", add_ssh_key)
        .delete("/api/v1/me/ssh-keys/{id}", remove_ssh_key)
        .get("/api/v1/users", list_users)
        .post("/api/v1/users", create_user)
        .get("/api/v1/users/{id}", get_user)
        .patch("/api/v1/users/{id}", update_user)
        .delete("/api/v1/users/{id}", delete_user)
        .get("/api/v1/audit", audit)
}

async fn me(State(st): State<AppState>, caller: Caller) -> Result<Json<Me>, ApiError> {
    let accounts = st.manager.accounts();
    let user = match &caller.who {
        Principal::User { id, .. } => accounts.store().user(id).await.map_err(crate::accounts::AccountError::from)?,
        _ => None,
    };
    let quotas = match &user {
        Some(u) => accounts.effective_quotas(u),
        None => Default::default(),
    };
    let usage = usage(&st, &caller).await;
    Ok(Json(Me {
        user: user.as_ref().map(user_view),
        role: caller.who.role(),
        bootstrap: caller.who == Principal::ServerToken,
        quotas,
        usage,
        ssh_port: st.manager.ssh_port(),
    }))
}

/// What `caller` has in use now.
async fn usage(st: &AppState, caller: &Caller) -> QuotaUsage {
    let Some(user) = caller.who.user_id() else { return QuotaUsage::default() };
    let mut u = st.manager.usage_of(user);
    u.agent_runs_today = st.agent.runs_today(user).await.unwrap_or(0);
    u
}

async fn list_tokens(State(st): State<AppState>, caller: Caller) -> Result<Json<Vec<ApiToken>>, ApiError> {
    Ok(Json(st.manager.accounts().tokens(&caller).await?))
}

async fn create_token(
    State(st): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateToken>,
) -> Result<Response, ApiError> {
    let created: CreatedToken = st.manager.accounts().create_token(&caller, req).await?;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

async fn revoke_token(State(st): State<AppState>, caller: Caller, ApiPath(id): ApiPath<String>) -> Result<StatusCode, ApiError> {
    st.manager.accounts().revoke_token(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_git(State(st): State<AppState>, caller: Caller) -> Result<Json<Vec<SavedGitCredential>>, ApiError> {
    Ok(Json(st.manager.accounts().saved_git_credentials(&caller).await?))
}

async fn save_git(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(host): ApiPath<String>,
    ApiJson(req): ApiJson<SaveGitCredential>,
) -> Result<Json<SavedGitCredential>, ApiError> {
    Ok(Json(st.manager.accounts().save_git_credential(&caller, &host, req).await?))
}

async fn delete_git(State(st): State<AppState>, caller: Caller, ApiPath(host): ApiPath<String>) -> Result<StatusCode, ApiError> {
    st.manager.accounts().delete_git_credential(&caller, &host).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_ssh_keys(State(st): State<AppState>, caller: Caller) -> Result<Json<Vec<SshKey>>, ApiError> {
    Ok(Json(st.manager.accounts().ssh_keys(&caller).await?))
}

async fn add_ssh_key(State(st): State<AppState>, caller: Caller, ApiJson(req): ApiJson<AddSshKey>) -> Result<Response, ApiError> {
    let key = st.manager.accounts().add_ssh_key(&caller, req).await?;
    Ok((StatusCode::CREATED, Json(key)).into_response())
}

async fn remove_ssh_key(State(st): State<AppState>, caller: Caller, ApiPath(id): ApiPath<String>) -> Result<StatusCode, ApiError> {
    st.manager.accounts().remove_ssh_key(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_users(State(st): State<AppState>, caller: Caller) -> Result<Json<Vec<User>>, ApiError> {
    admin(&caller)?;
    let users = st.manager.accounts().store().users().await.map_err(crate::accounts::AccountError::from)?;
    Ok(Json(users.iter().map(user_view).collect()))
}

async fn create_user(State(st): State<AppState>, caller: Caller, ApiJson(req): ApiJson<CreateUser>) -> Result<Response, ApiError> {
    admin(&caller)?;
    let u = st.manager.accounts().create_user(&caller, req).await?;
    Ok((StatusCode::CREATED, Json(user_view(&u))).into_response())
}

async fn get_user(State(st): State<AppState>, caller: Caller, ApiPath(id): ApiPath<String>) -> Result<Json<User>, ApiError> {
    admin(&caller)?;
    let u = st.manager.accounts().store().user(&id).await.map_err(crate::accounts::AccountError::from)?;
    u.map(|u| Json(user_view(&u))).ok_or_else(|| ApiError::not_found(format!("user {id} not found")))
}

async fn update_user(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<UpdateUser>,
) -> Result<Json<User>, ApiError> {
    admin(&caller)?;
    Ok(Json(user_view(&st.manager.accounts().update_user(&caller, &id, req).await?)))
}

/// Deletes a user: their tokens and sign-ins are revoked at once, then their sessions end.
async fn delete_user(State(st): State<AppState>, caller: Caller, ApiPath(id): ApiPath<String>) -> Result<StatusCode, ApiError> {
    admin(&caller)?;
    if caller.who.user_id() == Some(id.as_str()) {
        return Err(ApiError::bad_request("an admin cannot delete their own user"));
    }
    st.manager.accounts().delete_user(&caller, &id).await?;
    st.manager.end_sessions_of(&caller, &id).await;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    user: Option<String>,
    action: Option<String>,
    session: Option<String>,
    /// RFC 3339.
    since: Option<String>,
    until: Option<String>,
    before: Option<i64>,
    limit: Option<u32>,
}

async fn audit(State(st): State<AppState>, caller: Caller, ApiQuery(q): ApiQuery<AuditQuery>) -> Result<Json<AuditPage>, ApiError> {
    admin(&caller)?;
    let time = |field: &str, v: Option<String>| -> Result<Option<OffsetDateTime>, ApiError> {
        v.map(|t| {
            OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339)
                .map_err(|e| ApiError::bad_request(format!("{field}: {t:?} is not an RFC 3339 time ({e})")))
        })
        .transpose()
    };
    let filter = AuditFilter {
        user_id: q.user,
        action: q.action,
        session: q.session,
        since: time("since", q.since)?,
        until: time("until", q.until)?,
        before: q.before,
        limit: q.limit.unwrap_or(100),
    };
    Ok(Json(st.manager.accounts().audit_page(filter).await?))
}
