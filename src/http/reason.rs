//! An operator's reason for an action (a pause, a bulk retry): free text that goes into the
//! audit, so it is bounded and may not carry control characters (which would forge lines in
//! a log or a terminal).

use super::error::{ApiError, ApiResult};

/// The most a reason may hold, in characters.
pub const REASON_MAX: usize = 500;

/// `reason` as given, or 400 `invalid_reason` when it is empty, longer than [`REASON_MAX`]
/// characters or holds a control character.
pub fn checked(reason: Option<&str>) -> ApiResult<Option<&str>> {
    let Some(reason) = reason else {
        return Ok(None);
    };
    let chars = reason.chars().count();
    if chars == 0 || chars > REASON_MAX || reason.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid_reason",
            format!("reason must be 1 to {REASON_MAX} characters without control characters"),
        ));
    }
    Ok(Some(reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_is_one_to_500_characters_without_control_characters() {
        assert_eq!(checked(None).unwrap(), None);
        assert_eq!(checked(Some("incident 42")).unwrap(), Some("incident 42"));
        let longest = "é".repeat(REASON_MAX);
        assert_eq!(checked(Some(&longest)).unwrap(), Some(longest.as_str()));
        for bad in [
            "",
            "a\nb",
            "tab\there",
            "\u{85}",
            &"x".repeat(REASON_MAX + 1),
        ] {
            assert!(checked(Some(bad)).is_err(), "{bad:?} was taken");
        }
    }
}
