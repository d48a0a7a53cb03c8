use crate::error::{Error, Result};

/// The longest purpose or identifier accepted, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// Checks a purpose or identifier: ASCII letters, digits, `-`, `_` and `.`,
/// no leading dot or dash, no `..`, at most [`MAX_NAME_LEN`] bytes.
pub fn validate_name(kind: &'static str, name: &str) -> Result<()> {
    validate(kind, name, MAX_NAME_LEN)
}

/// Checks a worktree id given back by a caller (`<purpose>-<identifier>`).
pub(crate) fn validate_id(id: &str) -> Result<()> {
    validate("worktree id", id, 2 * MAX_NAME_LEN + 1)
}

fn validate(kind: &'static str, name: &str, max: usize) -> Result<()> {
    let refuse = |reason| {
        Err(Error::InvalidName {
            kind,
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return refuse("it is empty");
    }
    if name.len() > max {
        return refuse("it is too long");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return refuse("only ASCII letters, digits, '-', '_' and '.' are allowed");
    }
    if name.starts_with('.') {
        return refuse("it starts with '.'");
    }
    if name.starts_with('-') {
        return refuse("it starts with '-'");
    }
    if name.contains("..") {
        return refuse("it contains '..'");
    }
    if name.ends_with(".lock") {
        return refuse("it ends with '.lock'");
    }
    Ok(())
}

/// Checks a branch name: a valid git branch name that cannot be mistaken for
/// an option, a revision or a full ref name, without whitespace or control
/// characters.
///
/// ```
/// assert!(worktree_core::validate_branch("feature/user-roles").is_ok());
/// assert!(worktree_core::validate_branch("a..b").is_err());
/// ```
pub fn validate_branch(name: &str) -> Result<()> {
    let refuse = |reason| {
        Err(Error::InvalidName {
            kind: "branch",
            name: name.to_owned(),
            reason,
        })
    };
    if name.starts_with('-') {
        return refuse("it starts with '-'");
    }
    if name.starts_with("refs/") {
        return refuse("give the short branch name, not a full ref name");
    }
    if name.len() > 255 {
        return refuse("it is longer than 255 bytes");
    }
    // git allows non-ASCII spaces and C1 controls (terminal escapes).
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return refuse("it contains whitespace or control characters");
    }
    // `@` is valid for git but means HEAD in every revision argument.
    if name == "HEAD" || name == "@" || !git2::Branch::name_is_valid(name).unwrap_or(false) {
        return refuse("it is not a valid git branch name");
    }
    Ok(())
}

/// The id of a worktree: `<purpose>-<identifier>`.
pub(crate) fn worktree_id(purpose: &str, identifier: &str) -> Result<String> {
    validate_name("purpose", purpose)?;
    validate_name("identifier", identifier)?;
    Ok(format!("{purpose}-{identifier}"))
}
