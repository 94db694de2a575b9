//! A candidate policy file: what `POST /api/v1/policies/simulate` and `check-config --simulate`
//! take. Its `[[policy]]` tables are read exactly as the config's (the same checks, the same
//! `FILE:LINE:COL: key: message` problems); a whole config file is accepted too, so that the
//! file about to be reloaded can be pasted as it is, but only its policies are simulated: its
//! other sections (`[redis]`, `[supervisor]`, `[http]`, `[logging]`) are named back as ignored
//! and never interpreted (no token file is read because of a pasted text). Any other top-level
//! key is refused, like every unknown key of the config.

use serde::de::IgnoredAny;
use serde::Deserialize;

use super::file::PolicySection;
use super::{policies, ConfigError, Locator};
use crate::policy::Policy;

/// A candidate file, parsed.
#[derive(Debug, Clone)]
pub struct PolicyFile {
    /// Its `[[policy]]` tables, in evaluation order.
    pub policies: Vec<Policy>,
    /// The config sections it also holds, which a simulation does not look at.
    pub ignored_sections: Vec<&'static str>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CandidateFile {
    #[serde(default, rename = "policy")]
    policies: Vec<PolicySection>,
    redis: Option<IgnoredAny>,
    supervisor: Option<IgnoredAny>,
    http: Option<IgnoredAny>,
    logging: Option<IgnoredAny>,
}

/// Parses a candidate policy file; every problem is located as `check-config` locates it.
pub fn parse_policy_file(text: &str, source: &str) -> Result<PolicyFile, ConfigError> {
    let locator = Locator { text };
    let refused = |problems| ConfigError {
        source: source.to_string(),
        problems,
    };
    let file: CandidateFile = toml::from_str(text).map_err(|e| {
        refused(vec![
            locator.problem(e.span(), e.message().trim().to_string())
        ])
    })?;
    let mut problems = Vec::new();
    let policies = policies::build_policies(&file.policies, &mut |span, message| {
        problems.push(locator.problem(span, message))
    });
    if !problems.is_empty() {
        return Err(refused(problems));
    }
    let sections = [
        ("redis", file.redis.is_some()),
        ("supervisor", file.supervisor.is_some()),
        ("http", file.http.is_some()),
        ("logging", file.logging.is_some()),
    ];
    Ok(PolicyFile {
        policies,
        ignored_sections: sections
            .into_iter()
            .filter_map(|(name, present)| present.then_some(name))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_file_gives_its_policies_in_order() {
        let file = parse_policy_file(
            "[[policy]]\nname = \"a\"\naction = \"ignore\"\n[[policy]]\nname = \"b\"\naction = \"purge\"\n",
            "candidate",
        )
        .unwrap();
        let names: Vec<&str> = file.policies.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert!(file.ignored_sections.is_empty());
    }

    #[test]
    fn a_whole_config_is_accepted_and_its_other_sections_named_as_ignored() {
        let file = parse_policy_file(
            "[redis]\nurl = \"redis://x\"\n[http]\nauth_token_file = \"/nonexistent\"\n[[policy]]\nname = \"a\"\n",
            "candidate",
        )
        .unwrap();
        assert_eq!(file.policies.len(), 1);
        assert_eq!(file.ignored_sections, ["redis", "http"]);
    }

    #[test]
    fn problems_are_located_like_check_config_locates_them() {
        let err = parse_policy_file(
            "[[policy]]\nname = \"a\"\nmax_attempts = 0\n[[policy]]\nname = \"a\"\n",
            "candidate",
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("candidate:3:16: policy[1].max_attempts: "),
            "{text}"
        );
        assert!(
            text.contains("candidate:5:8: policy[2].name: duplicate policy name"),
            "{text}"
        );
        assert_eq!(err.problems.len(), 2, "{text}");
    }

    #[test]
    fn an_unknown_top_level_key_is_refused_at_its_place() {
        let err = parse_policy_file("[[polcy]]\nname = \"a\"\n", "candidate").unwrap_err();
        assert_eq!(err.problems.len(), 1);
        assert_eq!(err.problems[0].position, Some((1, 3)), "{err}");
        assert!(
            err.problems[0].message.contains("unknown field `polcy`"),
            "{err}"
        );
    }
}
