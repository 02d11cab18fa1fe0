//! Batch id rules: letters, digits, `-` and `_`, 1 to 64 characters.

/// The longest id Batch accepts for jobs, tasks and pools.
pub const MAX_ID_LEN: usize = 64;

/// Checks an id against Batch's rules; the error says what is accepted.
pub fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("must not be empty (accepted: 1-64 letters, digits, '-' or '_')".into());
    }
    if id.chars().count() > MAX_ID_LEN {
        return Err(format!(
            "is {} characters long; at most {MAX_ID_LEN} are accepted",
            id.chars().count()
        ));
    }
    if let Some(bad) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(format!(
            "{id:?} contains {bad:?}; only letters, digits, '-' and '_' are accepted"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(check_id("task-1_A").is_ok());
        assert!(check_id(&"a".repeat(64)).is_ok());
        assert!(check_id(&"a".repeat(65)).unwrap_err().contains("65"));
        assert!(check_id("").is_err());
        assert!(check_id("a b").unwrap_err().contains("' '"));
        assert!(check_id("a.b").is_err());
        assert!(check_id("tâche").is_err());
    }
}
