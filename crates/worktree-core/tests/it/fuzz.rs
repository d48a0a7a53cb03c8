//! Fuzzing name validation: purposes, identifiers and branch names from a
//! hostile alphabet. Whatever is accepted is safe as a path component and a
//! git ref, and the validators agree with independent reference predicates.

use proptest::prelude::*;
use test_support::fuzz;
use test_support::{GitRepo, TestResult};
use worktree_core::{CreateRequest, Error, MAX_NAME_LEN, validate_name};

use crate::open;

/// Names as an attacker (or a careless script) would write them.
fn hostile_name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z0-9._/-]{0,12}",
        2 => "[a-zA-Z0-9 ._~^:?*\\[\\\\@{}/;'\"$`!-]{0,16}",
        1 => prop::sample::select(vec![
            "..", ".", "../etc", "a/../b", "-rf", "--force", "x.lock", "a.lock/b", "HEAD",
            "@", "a@{1}", "refs/heads/x", "a//b", "a/", "/a", "a.", ".a", "a\0b", "a\nb",
            "a\tb", "é", "\u{202e}abc", "a\u{7f}b", "con", "x y",
        ])
        .prop_map(str::to_owned),
        1 => "[a-z]{60,70}",
        1 => "[a-z/]{250,260}",
        1 => "\\PC{0,16}",
        1 => any::<String>(),
    ]
}

/// Properties every accepted name must have, whatever the rules say.
fn is_safe(name: &str) -> bool {
    !name.is_empty()
        && !name.contains("..")
        && !name.contains('\0')
        && !name.chars().any(|c| c.is_control() || c.is_whitespace())
        && !name.starts_with('-')
}

/// The documented rule for purposes and identifiers.
fn reference_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !name.starts_with(['.', '-'])
        && !name.contains("..")
        && !name.ends_with(".lock")
}

#[test]
fn purposes_and_identifiers_are_validated() -> TestResult {
    fuzz::run("worktree_name", hostile_name(), |name| {
        match validate_name("identifier", &name) {
            Ok(()) => {
                prop_assert!(reference_name_ok(&name), "accepted {name:?}");
                prop_assert!(
                    is_safe(&name) && !name.contains('/'),
                    "accepted unsafe {name:?}"
                );
            }
            Err(Error::InvalidName {
                kind,
                name: refused,
                ..
            }) => {
                prop_assert!(!reference_name_ok(&name), "refused good {name:?}");
                prop_assert_eq!(kind, "identifier");
                prop_assert_eq!(refused, name);
            }
            Err(other) => prop_assert!(false, "{name:?}: unexpected error {other}"),
        }
        Ok(())
    })?;
    Ok(())
}

/// git's rules for a branch name (`git help check-ref-format`), plus
/// isolane's: no leading `-`, no `refs/` prefix, not `HEAD` or `@`, no
/// whitespace or control characters at all, at most 255 bytes.
fn reference_branch_ok(name: &str) -> bool {
    let component_ok = |c: &str| !c.is_empty() && !c.starts_with('.') && !c.ends_with(".lock");
    !name.is_empty()
        && name.len() <= 255
        && name != "HEAD"
        && name != "@"
        && !name.starts_with('-')
        && !name.starts_with("refs/")
        && !name.ends_with('.')
        && !name.contains("..")
        && !name.contains("@{")
        && !name
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || "~^:?*[\\".contains(c))
        && name.split('/').all(component_ok)
}

#[test]
fn branch_names_are_validated() -> TestResult {
    let repo = GitRepo::new()?;
    let worktrees = open(&repo)?;
    let before = std::fs::read_dir(repo.path())?.count();
    let names = prop_oneof![
        2 => hostile_name(),
        1 => "([a-z]{1,4}/){0,3}[a-z]{1,4}",
    ];
    fuzz::run("branch_name", names, |branch| {
        // A detached worktree takes no branch: a branch that passes
        // validation is refused right after it, so nothing is created.
        let mut request = CreateRequest::new("fuzz", "branch").branch(branch.clone());
        request.detach = true;
        match worktrees.create(&request) {
            Ok(created) => prop_assert!(false, "created {created:?}"),
            Err(Error::InvalidName { kind, name, .. }) => {
                prop_assert!(!reference_branch_ok(&branch), "refused good {branch:?}");
                prop_assert_eq!(kind, "branch");
                prop_assert_eq!(name, branch);
            }
            Err(Error::InvalidRequest { .. }) => {
                prop_assert!(reference_branch_ok(&branch), "accepted {branch:?}");
                prop_assert!(is_safe(&branch), "accepted unsafe {branch:?}");
                // git itself agrees that it names a branch.
                let checked =
                    test_support::git(repo.path(), ["check-ref-format", "--branch", &branch]);
                prop_assert!(checked.is_ok(), "git refuses {branch:?}: {checked:?}");
            }
            Err(other) => prop_assert!(false, "{branch:?}: unexpected error {other}"),
        }
        Ok(())
    })?;
    assert_eq!(
        std::fs::read_dir(repo.path())?.count(),
        before,
        "something was created"
    );
    Ok(())
}

/// Found by the fuzzer: git accepts these branch names, isolane must not.
#[test]
fn branch_names_git_allows_but_isolane_refuses() -> TestResult {
    let repo = GitRepo::new()?;
    let worktrees = open(&repo)?;
    for branch in ["@", "a\u{a0}b", "x\u{9b}31m", "\u{2028}", "a\u{3000}b"] {
        match worktrees.create(&CreateRequest::new("fuzz", "found").branch(branch)) {
            Err(Error::InvalidName { kind: "branch", .. }) => {}
            other => return Err(format!("branch {branch:?}: got {other:?}").into()),
        }
    }
    assert!(!worktrees.path_of("fuzz-found").exists());
    Ok(())
}
