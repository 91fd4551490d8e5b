//! Schemas of request fields whose rules a derive cannot state: each says exactly what the
//! domain type's `parse` accepts (the domain modules test that their patterns agree).

use utoipa::openapi::{KnownFormat, Object, ObjectBuilder, SchemaFormat, Type, schema::SchemaType};

use crate::domain::{DisplayName, Email, Password, Username, text::trimmed_text_pattern};

fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

fn nullable(builder: ObjectBuilder) -> ObjectBuilder {
    builder.schema_type(SchemaType::from_iter([Type::String, Type::Null]))
}

/// A person's name.
pub fn name() -> Object {
    string()
        .description(Some(format!(
            "1 to {} characters once white space around them is trimmed (and stored trimmed); \
             no control characters.",
            DisplayName::MAX_LEN
        )))
        .min_length(Some(1))
        .pattern(Some(DisplayName::pattern()))
        .build()
}

/// An e-mail address, as `validator` checks it (close to the HTML standard's rule).
pub fn email() -> Object {
    string()
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Email)))
        .description(Some(format!(
            "An e-mail address of at most {} characters; white space around it is trimmed. \
             Compared and stored lower-cased.",
            Email::MAX_LEN
        )))
        .max_length(Some(Email::MAX_LEN))
        .build()
}

fn username_rule() -> String {
    format!(
        "{} to {} of the characters `A-Z a-z 0-9 _ . -`; unique regardless of case.",
        Username::MIN_LEN,
        Username::MAX_LEN
    )
}

/// A login handle.
pub fn username() -> Object {
    string()
        .description(Some(username_rule()))
        .pattern(Some(Username::PATTERN))
        .build()
}

/// A login handle, or `null` for none.
pub fn optional_username() -> Object {
    nullable(string())
        .description(Some(format!(
            "{} `null` (or leaving it out) means none.",
            username_rule()
        )))
        .pattern(Some(Username::PATTERN))
        .build()
}

/// A new password. JSON Schema counts characters, the rule counts UTF-8 bytes: for ASCII
/// the two agree, and the description states the rule, with the refusals no schema can list.
pub fn password() -> Object {
    string()
        .description(Some(format!(
            "{} to {} bytes of UTF-8 (for ASCII, as many characters); bcrypt reads no further, \
             so longer ones are refused rather than cut. Also refused (422 on this field): one \
             of the 10,000 most common passwords, and one equal to the account's email, the \
             part of it before `@`, its username or its name, all without regard to case.",
            Password::MIN_BYTES,
            Password::MAX_BYTES
        )))
        .min_length(Some(Password::MIN_BYTES))
        .max_length(Some(Password::MAX_BYTES))
        .build()
}

/// The `q` filter of the user list.
pub fn search_text() -> Object {
    string()
        .description(Some(
            "Case-insensitive substring of name, email or username: at most 254 characters \
             once white space around them is trimmed, no control characters; blank means no \
             filter.",
        ))
        .pattern(Some(trimmed_text_pattern(0, 254)))
        .build()
}
