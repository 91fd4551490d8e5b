use actix_web::{HttpResponse, delete, get, http::header, patch, post, put, web};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::json::{FieldErrors, JsonBody, nullable};
use crate::{
    auth::AuthUser,
    domain::{
        Email, ListQuery, Page, Password, Role, SortField, SortOrder, User, UserFilter, UserId,
        UserName, Username,
    },
    error::AppError,
    services::{CreateUser, UserChanges, require_admin, require_self_or_admin},
    state::AppState,
};

pub fn configure(cfg: &mut web::ServiceConfig) {
    // `me` before `{id}`, so that it is not taken for an id.
    cfg.service(list_users)
        .service(create_user)
        .service(get_me)
        .service(put_me)
        .service(patch_me)
        .service(delete_me)
        .service(get_user)
        .service(put_user)
        .service(patch_user)
        .service(delete_user)
        .service(activate_user)
        .service(deactivate_user);
}

/// A user as every endpoint returns it: never the password or its hash.
#[derive(Debug, Serialize, Deserialize)]
pub struct UserResponse {
    pub id: String,
    pub name: String,
    pub username: Option<String>,
    pub email: String,
    pub role: Role,
    pub active: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_login_at: Option<OffsetDateTime>,
}

impl From<User> for UserResponse {
    fn from(user: User) -> Self {
        Self {
            id: user.id.to_hex(),
            name: user.name.as_str().to_owned(),
            username: user.username.map(|u| u.as_str().to_owned()),
            email: user.email.as_str().to_owned(),
            role: user.role,
            active: user.active,
            created_at: user.created_at,
            updated_at: user.updated_at,
            last_login_at: user.last_login_at,
        }
    }
}

/// 201 with the user and its `Location`.
pub fn created(user: User) -> HttpResponse {
    HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/api/users/{}", user.id)))
        .json(UserResponse::from(user))
}

fn ok(user: User) -> HttpResponse {
    HttpResponse::Ok().json(UserResponse::from(user))
}

#[derive(Debug, Serialize)]
pub struct UserPage {
    pub items: Vec<UserResponse>,
    pub page: u32,
    pub per_page: u32,
    pub total: u64,
    pub total_pages: u64,
}

/// The query string of the list, as sent; parsed below so that each bad value is named.
#[derive(Debug, Deserialize)]
pub struct ListParams {
    page: Option<String>,
    per_page: Option<String>,
    q: Option<String>,
    role: Option<String>,
    active: Option<String>,
    sort: Option<String>,
}

impl ListParams {
    fn parse(self) -> Result<ListQuery, AppError> {
        let bad =
            |name: &str, rule: &str| AppError::BadRequest(format!("query parameter {name} {rule}"));
        let number = |name: &str, raw: Option<String>, default: u32, max: u32| match raw {
            None => Ok(default),
            Some(raw) => raw
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| bad(name, &format!("must be a whole number from 1 to {max}"))),
        };
        let page = number("page", self.page, 1, 1_000_000)?;
        let per_page = number("per_page", self.per_page, 20, 100)?;
        let role = match self.role.as_deref() {
            None => None,
            Some(raw) => Some(
                raw.parse::<Role>()
                    .map_err(|_| bad("role", "must be user or admin"))?,
            ),
        };
        let active = match self.active.as_deref() {
            None => None,
            Some("true") => Some(true),
            Some("false") => Some(false),
            Some(_) => return Err(bad("active", "must be true or false")),
        };
        let (sort, order) = match self.sort.as_deref().unwrap_or("-created_at") {
            "created_at" => (SortField::CreatedAt, SortOrder::Ascending),
            "-created_at" => (SortField::CreatedAt, SortOrder::Descending),
            "name" => (SortField::Name, SortOrder::Ascending),
            "-name" => (SortField::Name, SortOrder::Descending),
            "email" => (SortField::Email, SortOrder::Ascending),
            "-email" => (SortField::Email, SortOrder::Descending),
            _ => {
                return Err(bad(
                    "sort",
                    "must be one of created_at, -created_at, name, -name, email, -email",
                ));
            }
        };
        let q = self
            .q
            .map(|q| q.trim().to_owned())
            .filter(|q| !q.is_empty());
        if q.as_ref().is_some_and(|q| q.chars().count() > 254) {
            return Err(bad("q", "must be at most 254 characters"));
        }
        Ok(ListQuery {
            page,
            per_page,
            filter: UserFilter { q, role, active },
            sort,
            order,
        })
    }
}

#[get("/users")]
async fn list_users(
    state: web::Data<AppState>,
    AuthUser(actor): AuthUser,
    params: web::Query<ListParams>,
) -> Result<HttpResponse, AppError> {
    require_admin(&actor)?;
    let query = params.into_inner().parse()?;
    let Page { items, total } = state.users.list(&actor, &query).await?;
    Ok(HttpResponse::Ok().json(UserPage {
        items: items.into_iter().map(UserResponse::from).collect(),
        page: query.page,
        per_page: query.per_page,
        total,
        total_pages: total.div_ceil(u64::from(query.per_page)),
    }))
}

/// The body of registration and of an admin's create.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUserRequest {
    name: Option<String>,
    email: Option<String>,
    password: Option<String>,
    username: Option<String>,
    role: Option<Role>,
    active: Option<bool>,
}

/// Registration takes no role or active flag.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    name: Option<String>,
    email: Option<String>,
    password: Option<String>,
    username: Option<String>,
}

impl From<RegisterRequest> for CreateUserRequest {
    fn from(r: RegisterRequest) -> Self {
        Self {
            name: r.name,
            email: r.email,
            password: r.password,
            username: r.username,
            role: None,
            active: None,
        }
    }
}

impl CreateUserRequest {
    pub fn into_domain(self) -> Result<CreateUser, AppError> {
        let mut errors = FieldErrors::default();
        let name = errors.required("name", self.name.as_deref(), UserName::parse);
        let email = errors.required("email", self.email.as_deref(), Email::parse);
        let password = errors.required("password", self.password.as_deref(), Password::parse);
        let username = errors.optional("username", self.username.as_deref(), Username::parse);
        errors.finish(|| {
            Some(CreateUser {
                name: name?,
                email: email?,
                username: username?,
                password: password?,
                role: self.role.unwrap_or(Role::User),
                active: self.active.unwrap_or(true),
            })
        })
    }
}

#[post("/users")]
async fn create_user(
    state: web::Data<AppState>,
    AuthUser(actor): AuthUser,
    body: JsonBody,
) -> Result<HttpResponse, AppError> {
    require_admin(&actor)?;
    let input = body.parse::<CreateUserRequest>()?.into_domain()?;
    Ok(created(state.users.create(input).await?))
}

/// PUT and PATCH alike: fields left out stay as they are.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateUserRequest {
    #[serde(default, deserialize_with = "nullable")]
    name: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    email: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    username: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    password: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    current_password: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    role: Option<Option<Role>>,
    #[serde(default, deserialize_with = "nullable")]
    active: Option<Option<bool>>,
}

impl UpdateUserRequest {
    fn into_domain(self) -> Result<UserChanges, AppError> {
        let mut errors = FieldErrors::default();
        let name = errors.not_null("name", text(&self.name), UserName::parse);
        let email = errors.not_null("email", text(&self.email), Email::parse);
        let password = errors.not_null("password", text(&self.password), Password::parse);
        let current = errors.not_null("current_password", text(&self.current_password), |s| {
            Ok(s.to_owned())
        });
        // `null` is how a username is removed.
        let username = match text(&self.username) {
            None => Some(None),
            Some(None) => Some(Some(None)),
            Some(Some(raw)) => errors
                .optional("username", Some(raw), Username::parse)
                .map(Some),
        };
        let role = errors.not_null_value("role", self.role);
        let active = errors.not_null_value("active", self.active);
        errors.finish(|| {
            Some(UserChanges {
                name: name?,
                email: email?,
                username: username?,
                password: password?,
                current_password: current?,
                role: role?,
                active: active?,
            })
        })
    }
}

/// A path id; a malformed one is simply not found.
/// `Option<Option<String>>` as borrowed text.
fn text(value: &Option<Option<String>>) -> Option<Option<&str>> {
    value.as_ref().map(Option::as_deref)
}

fn user_id(raw: &str) -> Result<UserId, AppError> {
    UserId::parse(raw).map_err(|_| AppError::not_found())
}

async fn get(state: &AppState, actor: &User, id: UserId) -> Result<HttpResponse, AppError> {
    Ok(ok(state.users.get(actor, &id).await?))
}

async fn update(
    state: &AppState,
    actor: &User,
    id: UserId,
    body: JsonBody,
) -> Result<HttpResponse, AppError> {
    require_self_or_admin(actor, &id)?;
    let changes = body.parse::<UpdateUserRequest>()?.into_domain()?;
    Ok(ok(state.users.update(actor, &id, changes).await?))
}

async fn remove(state: &AppState, actor: &User, id: UserId) -> Result<HttpResponse, AppError> {
    state.users.delete(actor, &id).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[get("/users/me")]
async fn get_me(
    state: web::Data<AppState>,
    AuthUser(actor): AuthUser,
) -> Result<HttpResponse, AppError> {
    get(&state, &actor, actor.id).await
}

#[put("/users/me")]
async fn put_me(
    state: web::Data<AppState>,
    AuthUser(actor): AuthUser,
    body: JsonBody,
) -> Result<HttpResponse, AppError> {
    update(&state, &actor, actor.id, body).await
}

#[patch("/users/me")]
async fn patch_me(
    state: web::Data<AppState>,
    AuthUser(actor): AuthUser,
    body: JsonBody,
) -> Result<HttpResponse, AppError> {
    update(&state, &actor, actor.id, body).await
}

#[delete("/users/me")]
async fn delete_me(
    state: web::Data<AppState>,
    AuthUser(actor): AuthUser,
) -> Result<HttpResponse, AppError> {
    remove(&state, &actor, actor.id).await
}

#[get("/users/{id}")]
async fn get_user(
    state: web::Data<AppState>,
    AuthUser(actor): AuthUser,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    get(&state, &actor, user_id(&id)?).await
}

#[put("/users/{id}")]
async fn put_user(
    state: web::Data<AppState>,
    AuthUser(actor): AuthUser,
    id: web::Path<String>,
    body: JsonBody,
) -> Result<HttpResponse, AppError> {
    update(&state, &actor, user_id(&id)?, body).await
}

#[patch("/users/{id}")]
async fn patch_user(
    state: web::Data<AppState>,
    AuthUser(actor): AuthUser,
    id: web::Path<String>,
    body: JsonBody,
) -> Result<HttpResponse, AppError> {
    update(&state, &actor, user_id(&id)?, body).await
}

#[delete("/users/{id}")]
async fn delete_user(
    state: web::Data<AppState>,
    AuthUser(actor): AuthUser,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    remove(&state, &actor, user_id(&id)?).await
}

#[put("/users/{id}/activate")]
async fn activate_user(
    state: web::Data<AppState>,
    AuthUser(actor): AuthUser,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    Ok(ok(state
        .users
        .set_active(&actor, &user_id(&id)?, true)
        .await?))
}

#[put("/users/{id}/deactivate")]
async fn deactivate_user(
    state: web::Data<AppState>,
    AuthUser(actor): AuthUser,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    Ok(ok(state
        .users
        .set_active(&actor, &user_id(&id)?, false)
        .await?))
}
