use actix_web::{HttpRequest, HttpResponse, delete, get, http::header, patch, post, put, web};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

use super::{
    AppState,
    conditional::{IfMatch, IfNoneMatch, not_modified, tagged},
    error::{ApiError, Problem},
    extract::SignedIn,
    idempotency,
    json::{FieldErrors, JsonBody, nullable, text},
    query::{self, Params},
    schemas,
};
use crate::{
    domain::{
        DisplayName, Email, NewPassword, Role, SortField, SortOrder, User, UserFilter, UserId,
        Username,
    },
    services::{AccountAccess, IdempotencyScope, NewAccount, Position, ServiceError, UserChanges},
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
        .service(deactivate_user)
        .service(unlock_user);
}

/// A role as the API spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = Role)]
pub enum ApiRole {
    #[serde(rename = "user")]
    User,
    #[serde(rename = "admin")]
    Admin,
}

impl From<Role> for ApiRole {
    fn from(role: Role) -> Self {
        match role {
            Role::User => ApiRole::User,
            Role::Admin => ApiRole::Admin,
        }
    }
}

impl From<ApiRole> for Role {
    fn from(role: ApiRole) -> Self {
        match role {
            ApiRole::User => Role::User,
            ApiRole::Admin => Role::Admin,
        }
    }
}

/// A user as every endpoint returns it: never the password or its hash.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"id": "65f0c1e2a4b5c6d7e8f90123", "name": "Mario Rossi", "username": "mario",
    "email": "mario@example.com", "email_verified": false, "role": "user", "active": true, "created_at": "2026-11-22T07:00:00Z",
    "updated_at": "2026-11-22T07:00:00Z", "last_login_at": null, "locked_until": null}))]
pub struct UserResponse {
    #[schema(pattern = "^[0-9a-f]{24}$")]
    pub id: String,
    pub name: String,
    pub username: Option<String>,
    pub email: String,
    pub email_verified: bool,
    pub role: ApiRole,
    pub active: bool,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_login_at: Option<OffsetDateTime>,
    /// Whether login asks for a second factor (read-only).
    pub mfa_enabled: bool,
    /// The end of a login lock in force, else `null`.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub locked_until: Option<OffsetDateTime>,
}

impl From<User> for UserResponse {
    fn from(user: User) -> Self {
        Self::shown_at(user, crate::domain::now())
    }
}

impl UserResponse {
    /// The user as shown at `at` (a login lock that has passed by then is none).
    fn shown_at(user: User, at: OffsetDateTime) -> Self {
        let locked_until = user.lock_in_force(at);
        Self {
            id: user.id.to_hex(),
            name: user.name.as_str().to_owned(),
            username: user.username.map(|u| u.as_str().to_owned()),
            email: user.email.as_str().to_owned(),
            email_verified: user.email_verified,
            role: user.role.into(),
            active: user.active,
            mfa_enabled: user.mfa_enabled,
            created_at: user.created_at,
            updated_at: user.updated_at,
            last_login_at: user.last_login_at,
            locked_until,
        }
    }
}

/// 201 with the user, its `Location` and `ETag`.
pub fn created(user: User) -> HttpResponse {
    let at = crate::domain::now();
    tagged(HttpResponse::Created(), &user, at)
        .insert_header((header::LOCATION, format!("/api/users/{}", user.id)))
        .json(UserResponse::shown_at(user, at))
}

/// 200 with the user and its `ETag`.
pub(super) fn ok(user: User) -> HttpResponse {
    let at = crate::domain::now();
    tagged(HttpResponse::Ok(), &user, at).json(UserResponse::shown_at(user, at))
}

/// A GET of one user: 304 when `If-None-Match` names its current version, else 200.
fn fetched(user: User, if_none_match: &IfNoneMatch) -> HttpResponse {
    let at = crate::domain::now();
    match not_modified(if_none_match, &user, at) {
        Some(response) => response,
        None => tagged(HttpResponse::Ok(), &user, at).json(UserResponse::shown_at(user, at)),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserPage {
    pub items: Vec<UserResponse>,
    /// `null` when the page was asked for with `after`.
    pub page: Option<u32>,
    pub per_page: u32,
    /// Users matching the filters, on every page.
    pub total: u64,
    pub total_pages: u64,
    /// Pass as `after` for the next page (same filters and sort); `null` on the last one.
    pub next_cursor: Option<String>,
}

/// The query string of the list, as sent; parsed below so that each bad value is named.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// 1-based page number; not with `after`.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000000, default = 1)]
    page: Option<String>,
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100, default = 20)]
    per_page: Option<String>,
    /// The `next_cursor` of the page before (keyset paging, fast at any depth); not with
    /// `page`.
    #[param(value_type = Option<String>, min_length = 1)]
    after: Option<String>,
    #[param(schema_with = schemas::search_text)]
    q: Option<String>,
    #[param(value_type = Option<ApiRole>)]
    role: Option<String>,
    #[param(value_type = Option<bool>)]
    active: Option<String>,
    /// `-` sorts descending.
    #[param(schema_with = sort_schema)]
    sort: Option<String>,
}

/// A listing as asked for.
struct UserList {
    filter: UserFilter,
    sort: (SortField, SortOrder),
    per_page: u32,
    position: Position,
}

fn sort_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .enum_values(Some(SORTS.iter().map(|(name, _, _)| *name)))
        .default(Some("-created_at".into()))
        .build()
}

const SORTS: [(&str, SortField, SortOrder); 6] = [
    ("created_at", SortField::CreatedAt, SortOrder::Ascending),
    ("-created_at", SortField::CreatedAt, SortOrder::Descending),
    ("name", SortField::Name, SortOrder::Ascending),
    ("-name", SortField::Name, SortOrder::Descending),
    ("email", SortField::Email, SortOrder::Ascending),
    ("-email", SortField::Email, SortOrder::Descending),
];

impl ListParams {
    fn parse(self) -> Result<UserList, ApiError> {
        let (per_page, position) = query::paging(self.page, self.per_page, self.after)?;
        let role = match self.role.as_deref() {
            None => None,
            Some("user") => Some(Role::User),
            Some("admin") => Some(Role::Admin),
            Some(_) => return Err(query::bad("role", "must be user or admin")),
        };
        let active = match self.active.as_deref() {
            None => None,
            Some("true") => Some(true),
            Some("false") => Some(false),
            Some(_) => return Err(query::bad("active", "must be true or false")),
        };
        let wanted = self.sort.as_deref().unwrap_or("-created_at");
        let (_, sort, order) = SORTS
            .iter()
            .find(|(name, _, _)| *name == wanted)
            .copied()
            .ok_or_else(|| {
                query::bad(
                    "sort",
                    "must be one of created_at, -created_at, name, -name, email, -email",
                )
            })?;
        let q = self
            .q
            .map(|q| q.trim().to_owned())
            .filter(|q| !q.is_empty());
        if q.as_ref().is_some_and(|q| q.chars().count() > 254) {
            return Err(query::bad("q", "must be at most 254 characters"));
        }
        // No stored name, email or username holds one, and MongoDB refuses NUL in a regex.
        if q.as_ref().is_some_and(|q| q.chars().any(char::is_control)) {
            return Err(query::bad("q", "must not contain control characters"));
        }
        Ok(UserList {
            filter: UserFilter { q, role, active },
            sort: (sort, order),
            per_page,
            position,
        })
    }
}

#[utoipa::path(
    context_path = "/api", tag = "users", operation_id = "list_users",
    summary = "List users (admin)",
    params(ListParams),
    security(("bearer_auth" = [])),
    responses((status = 200, description = "A page of users", body = UserPage), (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"))
)]
#[get("/users")]
pub(crate) async fn list_users(
    state: web::Data<AppState>,
    SignedIn(actor): SignedIn,
    params: Params<ListParams>,
) -> Result<HttpResponse, ApiError> {
    let admin = actor.admin()?;
    let list = params.0.parse()?;
    let page = state
        .users
        .list(admin, list.filter, list.sort, list.per_page, list.position)
        .await?;
    Ok(HttpResponse::Ok().json(UserPage {
        items: page.items.into_iter().map(UserResponse::from).collect(),
        page: page.page,
        per_page: page.per_page,
        total: page.total,
        total_pages: page.total_pages,
        next_cursor: page.next_cursor,
    }))
}

// Request fields are all `Option` so that every missing one is reported at once; the
// schema attributes document what is really required.

/// The body of an admin's create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "Mario Rossi", "email": "mario@example.com",
    "password": "correct horse battery", "username": "mario", "role": "user", "active": true}))]
pub struct CreateUserRequest {
    #[schema(schema_with = schemas::name, required = true)]
    name: Option<String>,
    #[schema(schema_with = schemas::email, required = true)]
    email: Option<String>,
    #[schema(schema_with = schemas::password, required = true)]
    password: Option<String>,
    #[schema(schema_with = schemas::optional_username)]
    username: Option<String>,
    /// `user` when left out (or `null`).
    role: Option<ApiRole>,
    /// `true` when left out (or `null`).
    active: Option<bool>,
    /// `false` when left out (or `null`): the user is mailed a verification link.
    email_verified: Option<bool>,
}

/// The fields every new account has, parsed with each bad one reported; registration and
/// an admin's create share them.
pub(super) fn new_account(
    errors: &mut FieldErrors,
    name: Option<&str>,
    email: Option<&str>,
    password: Option<&str>,
    username: Option<&str>,
) -> Option<NewAccount> {
    let name = errors.required("name", name, DisplayName::parse);
    let email = errors.required("email", email, Email::parse);
    let password = errors.required("password", password, NewPassword::parse);
    let username = errors.optional("username", username, Username::parse);
    Some(NewAccount {
        name: name?,
        email: email?,
        username: username?,
        password: password?,
    })
}

impl CreateUserRequest {
    fn into_domain(self) -> Result<(NewAccount, Role, bool, bool), ApiError> {
        let mut errors = FieldErrors::default();
        let account = new_account(
            &mut errors,
            self.name.as_deref(),
            self.email.as_deref(),
            self.password.as_deref(),
            self.username.as_deref(),
        );
        errors.finish(|| {
            Some((
                account?,
                self.role.map_or(Role::User, Role::from),
                self.active.unwrap_or(true),
                self.email_verified.unwrap_or(false),
            ))
        })
    }
}

#[utoipa::path(
    context_path = "/api", tag = "users", operation_id = "create_user",
    summary = "Create a user (admin)",
    request_body = CreateUserRequest,
    params(idempotency::KeyHeader),
    security(("bearer_auth" = [])),
    responses(
        (status = 201, description = "Created, or the answer to the first request with this Idempotency-Key given again", body = UserResponse, headers(
            ("Location" = String, description = "/api/users/{id}"),
            ("ETag" = String, description = "The version of the user, for If-Match and If-None-Match"),
            ("Idempotent-Replayed" = String, description = "`true` when this is the stored answer of an earlier request with the same Idempotency-Key"),
        )),
        (status = 400, description = "Malformed JSON, or a malformed Idempotency-Key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Email or username taken, or a request with this Idempotency-Key is still running (problem type ending in `idempotency-key-in-flight`, `Retry-After`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Validation failed or unknown field (every bad field is listed), or this Idempotency-Key was used with another body (problem type ending in `idempotency-key-reused`)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/users")]
pub(crate) async fn create_user(
    state: web::Data<AppState>,
    req: HttpRequest,
    SignedIn(actor): SignedIn,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    // 403 before 422: a non-admin learns nothing about the body.
    let admin = actor.admin()?;
    let key = idempotency::key_of(&req)?;
    let bytes = body.bytes();
    let (account, role, active, verified) = body.parse_then(CreateUserRequest::into_domain)?;
    let scope = IdempotencyScope::users_created_by(admin);
    idempotency::once(&state, &req, key, scope, &bytes, async {
        let user = state
            .users
            .create(admin, account, role, active, verified)
            .await?;
        Ok(created(user))
    })
    .await
}

/// PUT and PATCH alike: fields left out stay as they are. `username: null` removes it;
/// `role` and `active` are for admins; changing one's own password needs `current_password`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "Mario Bianchi", "username": null}))]
pub(crate) struct UpdateUserRequest {
    #[serde(default, deserialize_with = "nullable")]
    #[schema(schema_with = schemas::name)]
    name: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(schema_with = schemas::email)]
    email: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(schema_with = schemas::optional_username)]
    username: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(schema_with = schemas::password)]
    password: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = String, nullable = false)]
    current_password: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = ApiRole, nullable = false)]
    role: Option<Option<ApiRole>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = bool, nullable = false)]
    active: Option<Option<bool>>,
    /// For admins. A new `email` is unverified unless this says otherwise.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = bool, nullable = false)]
    email_verified: Option<Option<bool>>,
}

/// The body of PUT and PATCH `/users/me`: an [`UpdateUserRequest`] that, as a new password or
/// email for oneself needs the current password, has `current_password` whenever it has
/// `password` or `email`. (Through
/// `/users/{id}` that depends on whose id it is, which no schema can know.) The handlers read
/// an `UpdateUserRequest`; this type only describes it.
pub(crate) struct UpdateMeRequest;

impl utoipa::PartialSchema for UpdateMeRequest {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
        use utoipa::openapi::{AllOfBuilder, ObjectBuilder, Ref, Type, extensions::Extensions};
        // `dependentRequired` (JSON Schema 2020-12) is a keyword utoipa has no field for.
        let dependent: Extensions = [(
            "dependentRequired",
            serde_json::json!({"password": ["current_password"], "email": ["current_password"]}),
        )]
        .into_iter()
        .collect();
        AllOfBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "As for any user, and `current_password` is required with `password` or `email`.",
            ))
            .item(Ref::from_schema_name(UpdateUserRequest::name()))
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Object)
                    .extensions(Some(dependent)),
            )
            .into()
    }
}

impl ToSchema for UpdateMeRequest {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        use utoipa::PartialSchema;
        schemas.push((
            UpdateUserRequest::name().into(),
            UpdateUserRequest::schema(),
        ));
        <UpdateUserRequest as ToSchema>::schemas(schemas);
    }
}

impl UpdateUserRequest {
    fn into_domain(self) -> Result<UserChanges, ApiError> {
        let mut errors = FieldErrors::default();
        let name = errors.not_null("name", text(&self.name), DisplayName::parse);
        let email = errors.not_null("email", text(&self.email), Email::parse);
        let password = errors.not_null("password", text(&self.password), NewPassword::parse);
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
        let email_verified = errors.not_null_value("email_verified", self.email_verified);
        errors.finish(|| {
            Some(UserChanges {
                name: name?,
                email: email?,
                username: username?,
                password: password?,
                current_password: current?,
                role: role?.map(Role::from),
                active: active?,
                email_verified: email_verified?,
            })
        })
    }
}

/// The `{id}` of a user's path.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct UserPath {
    /// 24 lower-case hex characters; any other value is not found.
    #[param(pattern = "^[0-9a-f]{24}$")]
    pub(super) id: String,
}

/// A path id; a malformed one is simply not found.
pub(super) fn user_id(raw: &str) -> Result<UserId, ApiError> {
    UserId::parse(raw).map_err(|_| ServiceError::NotFound.into())
}

async fn update(
    state: &AppState,
    access: AccountAccess<'_>,
    body: JsonBody,
    IfMatch(if_match): IfMatch,
) -> Result<HttpResponse, ApiError> {
    let changes = body.parse_then(UpdateUserRequest::into_domain)?;
    Ok(ok(state
        .users
        .update_if(access, changes, if_match.as_ref())
        .await?))
}

#[utoipa::path(
    context_path = "/api", tag = "users", operation_id = "get_me", summary = "The signed-in user",
    params(("If-None-Match" = Option<String>, Header, description = "304 without a body when the user is still at one of these versions")), security(("bearer_auth" = [])),
    responses((status = 200, description = "The user", body = UserResponse, headers(("ETag" = String, description = "The version of the user, for If-Match and If-None-Match"))), (status = 304, description = "Not modified: the user is still at the version If-None-Match names", headers(("ETag" = String, description = "The current version"))))
)]
#[get("/users/me")]
pub(crate) async fn get_me(
    state: web::Data<AppState>,
    SignedIn(actor): SignedIn,
    if_none_match: IfNoneMatch,
) -> Result<HttpResponse, ApiError> {
    let user = state.users.get(actor.access(actor.id())?).await?;
    Ok(fetched(user, &if_none_match))
}

#[utoipa::path(
    context_path = "/api", tag = "users", operation_id = "put_me", summary = "Update the signed-in user (partial)",
    request_body = UpdateMeRequest, params(("If-Match" = Option<String>, Header, description = "Only if the user is still at one of these versions (entity tags from ETag, or *); else 412 and nothing changes")), security(("bearer_auth" = [])),
    responses((status = 200, description = "The updated user", body = UserResponse, headers(("ETag" = String, description = "The version of the user, for If-Match and If-None-Match"))), (status = 403, description = "Wrong current_password, or role/active set by a non-admin", body = Problem, content_type = "application/problem+json"), (status = 409, description = "Taken, or the last active admin", body = Problem, content_type = "application/problem+json"), (status = 412, description = "If-Match names no current version of the user: nothing changed", body = Problem, content_type = "application/problem+json"))
)]
#[put("/users/me")]
pub(crate) async fn put_me(
    state: web::Data<AppState>,
    SignedIn(actor): SignedIn,
    body: JsonBody,
    if_match: IfMatch,
) -> Result<HttpResponse, ApiError> {
    update(&state, actor.access(actor.id())?, body, if_match).await
}

#[utoipa::path(
    context_path = "/api", tag = "users", operation_id = "patch_me", summary = "Update the signed-in user (partial)",
    request_body = UpdateMeRequest, params(("If-Match" = Option<String>, Header, description = "Only if the user is still at one of these versions (entity tags from ETag, or *); else 412 and nothing changes")), security(("bearer_auth" = [])),
    responses((status = 200, description = "The updated user", body = UserResponse, headers(("ETag" = String, description = "The version of the user, for If-Match and If-None-Match"))), (status = 403, description = "Wrong current_password, or role/active set by a non-admin", body = Problem, content_type = "application/problem+json"), (status = 409, description = "Taken, or the last active admin", body = Problem, content_type = "application/problem+json"), (status = 412, description = "If-Match names no current version of the user: nothing changed", body = Problem, content_type = "application/problem+json"))
)]
#[patch("/users/me")]
pub(crate) async fn patch_me(
    state: web::Data<AppState>,
    SignedIn(actor): SignedIn,
    body: JsonBody,
    if_match: IfMatch,
) -> Result<HttpResponse, ApiError> {
    update(&state, actor.access(actor.id())?, body, if_match).await
}

#[utoipa::path(
    context_path = "/api", tag = "users", operation_id = "delete_me", summary = "Delete the signed-in user",
    params(("If-Match" = Option<String>, Header, description = "Only if the user is still at one of these versions (entity tags from ETag, or *); else 412 and nothing changes")), security(("bearer_auth" = [])),
    responses((status = 204, description = "Deleted"), (status = 409, description = "The last active admin", body = Problem, content_type = "application/problem+json"), (status = 412, description = "If-Match names no current version of the user: nothing changed", body = Problem, content_type = "application/problem+json"))
)]
#[delete("/users/me")]
pub(crate) async fn delete_me(
    state: web::Data<AppState>,
    SignedIn(actor): SignedIn,
    IfMatch(if_match): IfMatch,
) -> Result<HttpResponse, ApiError> {
    state
        .users
        .delete_if(actor.access(actor.id())?, if_match.as_ref())
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(
    context_path = "/api", tag = "users", operation_id = "get_user", summary = "A user (self or admin)",
    params(UserPath, ("If-None-Match" = Option<String>, Header, description = "304 without a body when the user is still at one of these versions")), security(("bearer_auth" = [])),
    responses((status = 200, description = "The user", body = UserResponse, headers(("ETag" = String, description = "The version of the user, for If-Match and If-None-Match"))), (status = 403, description = "Another user's id", body = Problem, content_type = "application/problem+json"), (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"), (status = 304, description = "Not modified: the user is still at the version If-None-Match names", headers(("ETag" = String, description = "The current version"))))
)]
#[get("/users/{id}")]
pub(crate) async fn get_user(
    state: web::Data<AppState>,
    SignedIn(actor): SignedIn,
    path: web::Path<UserPath>,
    if_none_match: IfNoneMatch,
) -> Result<HttpResponse, ApiError> {
    let user = state.users.get(actor.access(user_id(&path.id)?)?).await?;
    Ok(fetched(user, &if_none_match))
}

#[utoipa::path(
    context_path = "/api", tag = "users", operation_id = "put_user", summary = "Update a user (partial; self or admin)",
    params(UserPath, ("If-Match" = Option<String>, Header, description = "Only if the user is still at one of these versions (entity tags from ETag, or *); else 412 and nothing changes")), request_body = UpdateUserRequest, security(("bearer_auth" = [])),
    responses((status = 200, description = "The updated user", body = UserResponse, headers(("ETag" = String, description = "The version of the user, for If-Match and If-None-Match"))), (status = 403, description = "Not allowed", body = Problem, content_type = "application/problem+json"), (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"), (status = 409, description = "Taken, or the last active admin", body = Problem, content_type = "application/problem+json"), (status = 412, description = "If-Match names no current version of the user: nothing changed", body = Problem, content_type = "application/problem+json"))
)]
#[put("/users/{id}")]
pub(crate) async fn put_user(
    state: web::Data<AppState>,
    SignedIn(actor): SignedIn,
    path: web::Path<UserPath>,
    body: JsonBody,
    if_match: IfMatch,
) -> Result<HttpResponse, ApiError> {
    update(&state, actor.access(user_id(&path.id)?)?, body, if_match).await
}

#[utoipa::path(
    context_path = "/api", tag = "users", operation_id = "patch_user", summary = "Update a user (partial; self or admin)",
    params(UserPath, ("If-Match" = Option<String>, Header, description = "Only if the user is still at one of these versions (entity tags from ETag, or *); else 412 and nothing changes")), request_body = UpdateUserRequest, security(("bearer_auth" = [])),
    responses((status = 200, description = "The updated user", body = UserResponse, headers(("ETag" = String, description = "The version of the user, for If-Match and If-None-Match"))), (status = 403, description = "Not allowed", body = Problem, content_type = "application/problem+json"), (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"), (status = 409, description = "Taken, or the last active admin", body = Problem, content_type = "application/problem+json"), (status = 412, description = "If-Match names no current version of the user: nothing changed", body = Problem, content_type = "application/problem+json"))
)]
#[patch("/users/{id}")]
pub(crate) async fn patch_user(
    state: web::Data<AppState>,
    SignedIn(actor): SignedIn,
    path: web::Path<UserPath>,
    body: JsonBody,
    if_match: IfMatch,
) -> Result<HttpResponse, ApiError> {
    update(&state, actor.access(user_id(&path.id)?)?, body, if_match).await
}

#[utoipa::path(
    context_path = "/api", tag = "users", operation_id = "delete_user", summary = "Delete a user (self or admin)",
    params(UserPath, ("If-Match" = Option<String>, Header, description = "Only if the user is still at one of these versions (entity tags from ETag, or *); else 412 and nothing changes")), security(("bearer_auth" = [])),
    responses((status = 204, description = "Deleted"), (status = 403, description = "Another user's id", body = Problem, content_type = "application/problem+json"), (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"), (status = 409, description = "The last active admin", body = Problem, content_type = "application/problem+json"), (status = 412, description = "If-Match names no current version of the user: nothing changed", body = Problem, content_type = "application/problem+json"))
)]
#[delete("/users/{id}")]
pub(crate) async fn delete_user(
    state: web::Data<AppState>,
    SignedIn(actor): SignedIn,
    path: web::Path<UserPath>,
    IfMatch(if_match): IfMatch,
) -> Result<HttpResponse, ApiError> {
    state
        .users
        .delete_if(actor.access(user_id(&path.id)?)?, if_match.as_ref())
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(
    context_path = "/api", tag = "users", operation_id = "activate_user", summary = "Activate a user (admin)",
    params(UserPath, ("If-Match" = Option<String>, Header, description = "Only if the user is still at one of these versions (entity tags from ETag, or *); else 412 and nothing changes")), security(("bearer_auth" = [])),
    responses((status = 200, description = "The user", body = UserResponse, headers(("ETag" = String, description = "The version of the user, for If-Match and If-None-Match"))), (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"), (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"), (status = 412, description = "If-Match names no current version of the user: nothing changed", body = Problem, content_type = "application/problem+json"))
)]
#[put("/users/{id}/activate")]
pub(crate) async fn activate_user(
    state: web::Data<AppState>,
    SignedIn(actor): SignedIn,
    path: web::Path<UserPath>,
    IfMatch(if_match): IfMatch,
) -> Result<HttpResponse, ApiError> {
    let admin = actor.admin()?;
    Ok(ok(state
        .users
        .set_active_if(admin, user_id(&path.id)?, true, if_match.as_ref())
        .await?))
}

#[utoipa::path(
    context_path = "/api", tag = "users", operation_id = "deactivate_user", summary = "Deactivate a user (admin)",
    params(UserPath, ("If-Match" = Option<String>, Header, description = "Only if the user is still at one of these versions (entity tags from ETag, or *); else 412 and nothing changes")), security(("bearer_auth" = [])),
    responses((status = 200, description = "The user", body = UserResponse, headers(("ETag" = String, description = "The version of the user, for If-Match and If-None-Match"))), (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"), (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"), (status = 409, description = "The last active admin", body = Problem, content_type = "application/problem+json"), (status = 412, description = "If-Match names no current version of the user: nothing changed", body = Problem, content_type = "application/problem+json"))
)]
#[put("/users/{id}/deactivate")]
pub(crate) async fn deactivate_user(
    state: web::Data<AppState>,
    SignedIn(actor): SignedIn,
    path: web::Path<UserPath>,
    IfMatch(if_match): IfMatch,
) -> Result<HttpResponse, ApiError> {
    let admin = actor.admin()?;
    Ok(ok(state
        .users
        .set_active_if(admin, user_id(&path.id)?, false, if_match.as_ref())
        .await?))
}

#[utoipa::path(
    context_path = "/api", tag = "users", operation_id = "unlock_user", summary = "End a user's login lock (admin)",
    params(UserPath, ("If-Match" = Option<String>, Header, description = "Only if the user is still at one of these versions (entity tags from ETag, or *); else 412 and nothing changes")), security(("bearer_auth" = [])),
    responses((status = 200, description = "The user, no longer locked", body = UserResponse, headers(("ETag" = String, description = "The version of the user, for If-Match and If-None-Match"))), (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"), (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"), (status = 412, description = "If-Match names no current version of the user: nothing changed", body = Problem, content_type = "application/problem+json"))
)]
#[put("/users/{id}/unlock")]
pub(crate) async fn unlock_user(
    state: web::Data<AppState>,
    SignedIn(actor): SignedIn,
    path: web::Path<UserPath>,
    IfMatch(if_match): IfMatch,
) -> Result<HttpResponse, ApiError> {
    let admin = actor.admin()?;
    Ok(ok(state
        .accounts
        .unlock_if(admin, user_id(&path.id)?, if_match.as_ref())
        .await?))
}
