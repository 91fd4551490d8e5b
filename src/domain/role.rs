/// What a user may do. Deliberately without serde: the stored, token and API spellings of a
/// role are each written out where that format is produced, so none changes by accident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    User,
    Admin,
}

impl Role {
    pub const ALL: [Role; 2] = [Role::User, Role::Admin];
}
