//! Reading the claims Mayfly uses (email, name, groups) from the ID token and the userinfo
//! response, and the sign-in restrictions (allowed email domains and groups).

use openidconnect::AdditionalClaims;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Identity, OidcError, OidcSettings};

/// The claims besides the standard ones (where providers put groups), kept as JSON.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct ExtraClaims {
    #[serde(flatten)]
    claims: Map<String, Value>,
}

impl AdditionalClaims for ExtraClaims {}

impl ExtraClaims {
    /// The groups under `claim`: a JSON array of strings or a single string. A dotted name
    /// (`realm_access.roles`, as Keycloak nests roles) is looked up as a path when there is no
    /// claim of exactly that name. None when the claim is absent.
    pub fn groups(&self, claim: &str) -> Option<Vec<String>> {
        let value = match self.claims.get(claim) {
            Some(v) => v,
            None => {
                let mut parts = claim.split('.');
                let mut v = self.claims.get(parts.next()?)?;
                for part in parts {
                    v = v.get(part)?;
                }
                v
            }
        };
        match value {
            Value::String(s) => Some(vec![s.clone()]),
            Value::Array(items) => Some(items.iter().filter_map(|i| i.as_str().map(str::to_string)).collect()),
            _ => None,
        }
    }
}

/// Applies [`OidcSettings::allowed_email_domains`] and [`OidcSettings::allowed_groups`].
/// A domain restriction needs an email the provider says is verified (anyone can type any
/// address into an account's profile at many providers).
pub(super) fn check_allowed(settings: &OidcSettings, identity: &Identity) -> Result<(), OidcError> {
    if !settings.allowed_email_domains.is_empty() {
        let allowed = settings.allowed_email_domains.join(", ");
        let Some(email) = &identity.email else {
            return Err(OidcError::NotAllowed(format!(
                "the provider did not share the account's email address, and only addresses at {allowed} may sign in"
            )));
        };
        let domain = email.rsplit_once('@').map(|(_, d)| d).unwrap_or_default();
        if !settings.allowed_email_domains.iter().any(|d| d.trim_start_matches('@').eq_ignore_ascii_case(domain)) {
            return Err(OidcError::NotAllowed(format!(
                "{email} is not an address at an allowed domain (allowed: {allowed})"
            )));
        }
        if !identity.email_verified {
            return Err(OidcError::NotAllowed(format!("the provider has not verified the email address {email}")));
        }
    }
    if !settings.allowed_groups.is_empty() && !identity.groups.iter().any(|g| settings.allowed_groups.contains(g)) {
        return Err(OidcError::NotAllowed(format!(
            "the account is in none of the allowed groups ({}; the provider's \"{}\" claim lists: {})",
            settings.allowed_groups.join(", "),
            settings.groups_claim,
            if identity.groups.is_empty() { "none".to_string() } else { identity.groups.join(", ") }
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn extra(json: Value) -> ExtraClaims {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn groups_from_arrays_strings_and_paths() {
        let c = extra(serde_json::json!({"groups": ["a", "b", 3], "one": "x", "realm_access": {"roles": ["r"]}}));
        assert_eq!(c.groups("groups"), Some(vec!["a".to_string(), "b".to_string()]));
        assert_eq!(c.groups("one"), Some(vec!["x".to_string()]));
        assert_eq!(c.groups("realm_access.roles"), Some(vec!["r".to_string()]));
        assert_eq!(c.groups("missing"), None);
    }

    fn identity(email: Option<&str>, verified: bool, groups: &[&str]) -> Identity {
        Identity {
            issuer: "https://idp.example".into(),
            subject: "s".into(),
            email: email.map(str::to_string),
            email_verified: verified,
            name: None,
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    #[test]
    fn restrictions() {
        let mut s = OidcSettings::new("https://idp.example", "c");
        assert!(check_allowed(&s, &identity(None, false, &[])).is_ok());
        s.allowed_email_domains = vec!["Corp.Example".into()];
        assert!(check_allowed(&s, &identity(Some("a@corp.example"), true, &[])).is_ok());
        assert!(check_allowed(&s, &identity(Some("a@corp.example.evil"), true, &[])).is_err());
        assert!(check_allowed(&s, &identity(Some("a@corp.example"), false, &[])).is_err());
        assert!(check_allowed(&s, &identity(None, true, &[])).is_err());
        s.allowed_groups = vec!["admins".into()];
        assert!(check_allowed(&s, &identity(Some("a@corp.example"), true, &["devs", "admins"])).is_ok());
        let err = check_allowed(&s, &identity(Some("a@corp.example"), true, &["devs"])).unwrap_err();
        assert!(matches!(&err, OidcError::NotAllowed(m) if m.contains("admins") && m.contains("devs")), "{err}");
    }
}
