use std::sync::Arc;

use tokio::sync::Mutex;

use crate::{
    auth::PasswordHasher,
    domain::{
        Email, ListQuery, NewUser, Page, Password, Role, User, UserFilter, UserId, UserName,
        UserUpdate, Username,
    },
    error::AppError,
    storage::DynRepository,
};

/// A user to create, as an admin (or registration) asked for it.
#[derive(Debug)]
pub struct CreateUser {
    pub name: UserName,
    pub email: Email,
    pub username: Option<Username>,
    pub password: Password,
    pub role: Role,
    pub active: bool,
}

/// Requested changes; `None` leaves a field alone, `username: Some(None)` clears it.
#[derive(Debug, Default)]
pub struct UserChanges {
    pub name: Option<UserName>,
    pub email: Option<Email>,
    pub username: Option<Option<Username>>,
    pub password: Option<Password>,
    pub current_password: Option<String>,
    pub role: Option<Role>,
    pub active: Option<bool>,
}

#[derive(Clone)]
pub struct UserService {
    repo: DynRepository,
    hasher: PasswordHasher,
    /// Serialises changes that can remove an active admin, so two of them cannot both see
    /// "another admin is left" and remove the last two. (Per process: see the README.)
    admin_guard: Arc<Mutex<()>>,
}

fn active_admins() -> UserFilter {
    UserFilter {
        role: Some(Role::Admin),
        active: Some(true),
        q: None,
    }
}

impl UserService {
    pub fn new(repo: DynRepository, hasher: PasswordHasher) -> Self {
        Self {
            repo,
            hasher,
            admin_guard: Arc::new(Mutex::new(())),
        }
    }

    pub async fn create(&self, input: CreateUser) -> Result<User, AppError> {
        let password_hash = self
            .hasher
            .hash(&input.password)
            .await
            .map_err(AppError::Internal)?;
        Ok(self
            .repo
            .create_user(NewUser {
                name: input.name,
                username: input.username,
                email: input.email,
                role: input.role,
                active: input.active,
                password_hash,
            })
            .await?)
    }

    pub async fn get(&self, actor: &User, id: &UserId) -> Result<User, AppError> {
        require_self_or_admin(actor, id)?;
        self.repo
            .user_by_id(id)
            .await?
            .ok_or_else(AppError::not_found)
    }

    pub async fn list(&self, actor: &User, query: &ListQuery) -> Result<Page<User>, AppError> {
        require_admin(actor)?;
        Ok(self.repo.list_users(query).await?)
    }

    pub async fn update(
        &self,
        actor: &User,
        id: &UserId,
        changes: UserChanges,
    ) -> Result<User, AppError> {
        require_self_or_admin(actor, id)?;
        if actor.role != Role::Admin && (changes.role.is_some() || changes.active.is_some()) {
            return Err(AppError::Forbidden(
                "only an admin may set role or active".into(),
            ));
        }
        if changes.password.is_some() && actor.id == *id {
            let current = changes.current_password.as_deref().unwrap_or_default();
            if !self
                .hasher
                .verify(current, Some(&actor.password_hash))
                .await
                .map_err(AppError::Internal)?
            {
                return Err(AppError::Forbidden(
                    "current_password is missing or wrong".into(),
                ));
            }
        }
        let mut update = UserUpdate {
            name: changes.name,
            username: changes.username,
            email: changes.email,
            role: changes.role,
            active: changes.active,
            password_hash: None,
        };
        let demotes = update.role == Some(Role::User) || update.active == Some(false);
        let _guard = if demotes {
            Some(self.admin_guard.lock().await)
        } else {
            None
        };
        let target = self
            .repo
            .user_by_id(id)
            .await?
            .ok_or_else(AppError::not_found)?;
        if update.is_empty() && changes.password.is_none() {
            // Nothing to change: not even `updated_at` moves.
            return Ok(target);
        }
        if demotes && target.is_active_admin() {
            self.ensure_another_active_admin().await?;
        }
        // Hashed last, so that a request refused above costs no bcrypt work.
        if let Some(password) = &changes.password {
            update.password_hash = Some(
                self.hasher
                    .hash(password)
                    .await
                    .map_err(AppError::Internal)?,
            );
        }
        let password_changed = update.password_hash.is_some();
        let user = self
            .repo
            .update_user(id, update)
            .await?
            .ok_or_else(AppError::not_found)?;
        if password_changed {
            // A new password ends every session that the old one opened.
            self.repo.revoke_user_refresh_tokens(id).await?;
        }
        Ok(user)
    }

    pub async fn set_active(
        &self,
        actor: &User,
        id: &UserId,
        active: bool,
    ) -> Result<User, AppError> {
        require_admin(actor)?;
        self.update(
            actor,
            id,
            UserChanges {
                active: Some(active),
                ..UserChanges::default()
            },
        )
        .await
    }

    pub async fn delete(&self, actor: &User, id: &UserId) -> Result<(), AppError> {
        require_self_or_admin(actor, id)?;
        let _guard = self.admin_guard.lock().await;
        let target = self
            .repo
            .user_by_id(id)
            .await?
            .ok_or_else(AppError::not_found)?;
        if target.is_active_admin() {
            self.ensure_another_active_admin().await?;
        }
        if self.repo.delete_user(id).await? {
            Ok(())
        } else {
            Err(AppError::not_found())
        }
    }

    /// Creates the configured admin unless a user with that email exists already.
    pub async fn ensure_admin(
        &self,
        email: Email,
        name: UserName,
        password: Password,
    ) -> anyhow::Result<bool> {
        if self.repo.user_by_email(&email).await?.is_some() {
            return Ok(false);
        }
        let created = self
            .create(CreateUser {
                name,
                email,
                username: None,
                password,
                role: Role::Admin,
                active: true,
            })
            .await;
        match created {
            Ok(_) => Ok(true),
            // Another instance created it between our read and our write.
            Err(AppError::Conflict { .. }) => Ok(false),
            Err(e) => Err(anyhow::anyhow!(e)),
        }
    }

    async fn ensure_another_active_admin(&self) -> Result<(), AppError> {
        if self.repo.count_users(&active_admins()).await? <= 1 {
            return Err(AppError::Conflict {
                message: "the last active admin cannot be removed, deactivated or demoted".into(),
                errors: Vec::new(),
            });
        }
        Ok(())
    }
}

pub fn require_admin(actor: &User) -> Result<(), AppError> {
    if actor.role == Role::Admin {
        Ok(())
    } else {
        Err(AppError::Forbidden("this needs the admin role".into()))
    }
}

pub fn require_self_or_admin(actor: &User, id: &UserId) -> Result<(), AppError> {
    if actor.id == *id || actor.role == Role::Admin {
        Ok(())
    } else {
        Err(AppError::Forbidden(
            "you may only access your own account".into(),
        ))
    }
}
