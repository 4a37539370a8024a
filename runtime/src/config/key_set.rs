//! A layer that says which keys verify tokens replaces the lower layers' keys as a whole.
//!
//! Layers merge key by key, so without this an upper layer could add keys but never take one
//! back: a file switching a service to `RS256` would leave the embedded defaults' HMAC secret
//! active beside its public key (an error at best, a published secret accepted at worst).

use figment::value::{Dict, Value};

/// `auth` keys that say what the verification keys are: a layer setting any of them replaces
/// the key material of every layer below it.
const DEFINING: [&str; 5] = ["algorithm", "keys", "jwks", "jwks_file", "jwks_url"];

/// `auth` keys that hold verification keys, removed from the layers below one that defines them.
const MATERIAL: [&str; 7] = [
    "hmac_secret",
    "public_key_pem",
    "public_key_file",
    "keys",
    "jwks",
    "jwks_file",
    "jwks_url",
];

/// Whether the layer `dict` defines the verification keys.
pub(super) fn defines_keys(dict: &Dict) -> bool {
    match dict.get("auth") {
        Some(Value::Dict(_, auth)) => DEFINING.iter().any(|key| auth.contains_key(*key)),
        _ => false,
    }
}

/// Removes the verification keys from the layer `dict` (one below a layer that defines them).
pub(super) fn remove_keys(dict: &mut Dict) {
    if let Some(Value::Dict(_, auth)) = dict.get_mut("auth") {
        for key in MATERIAL {
            auth.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use figment::providers::{Format, Toml};

    fn dict(toml: &str) -> Dict {
        Toml::from_str(toml).expect("TOML")
    }

    #[test]
    fn only_the_key_material_of_a_lower_layer_is_removed() {
        assert!(defines_keys(&dict("[auth]\nalgorithm = \"RS256\"\n")));
        assert!(defines_keys(&dict("[auth]\njwks_file = \"k.json\"\n")));
        assert!(!defines_keys(&dict(
            "[auth]\nhmac_secret = \"s\"\nissuer = \"i\"\n"
        )));
        assert!(!defines_keys(&dict("[server]\nalgorithm = \"x\"\n")));

        let mut lower = dict(
            "[auth]\nalgorithm = \"HS256\"\nhmac_secret = \"s\"\nissuer = \"i\"\n\
             [[auth.keys]]\nkid = \"a\"\n[server]\nhmac_secret = \"kept\"\n",
        );
        remove_keys(&mut lower);
        assert_eq!(
            lower,
            dict(
                "[auth]\nalgorithm = \"HS256\"\nissuer = \"i\"\n[server]\nhmac_secret = \"kept\"\n"
            )
        );
    }
}
