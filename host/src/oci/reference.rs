//! `oci://registry/repository[:tag][@sha256:…]`: where a plugin is pulled
//! from. A digest pins the artefact (the manifest's digest, as Kubewarden,
//! Spin and `crane digest` name it); a tag alone is polled for moves.

use std::fmt;

use oci_client::Reference;

use super::OciError;

/// A parsed plugin source.
#[derive(Clone, PartialEq, Eq)]
pub struct OciRef {
    text: String,
    reference: Reference,
}

impl OciRef {
    /// Parses `oci://…`; the registry must be named (no implicit Docker Hub:
    /// a plugin should not come from somewhere its operator did not write).
    pub fn parse(text: &str) -> Result<Self, OciError> {
        let bad = |why: &str| OciError::Reference(format!("{text:?}: {why}"));
        let rest = text
            .strip_prefix("oci://")
            .ok_or_else(|| bad("expected oci://registry/repository[:tag][@sha256:<64 hex>]"))?;
        let registry = rest.split('/').next().unwrap_or_default();
        if !rest.contains('/') || !(registry.contains('.') || registry.contains(':') || registry == "localhost") {
            return Err(bad("name the registry host (e.g. oci://ghcr.io/org/plugin:1.0)"));
        }
        if let Some((_, digest)) = rest.split_once('@') {
            let hex = digest
                .strip_prefix("sha256:")
                .ok_or_else(|| bad("the digest must be sha256:<64 hex>"))?;
            if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()) {
                return Err(bad("the digest must be sha256: and 64 lower-case hex digits"));
            }
        }
        let reference = Reference::try_from(rest).map_err(|e| bad(&e.to_string()))?;
        if reference.tag().is_none() && reference.digest().is_none() {
            return Err(bad("name a tag or a digest"));
        }
        Ok(OciRef {
            text: text.to_string(),
            reference,
        })
    }

    /// The reference as oci-client takes it.
    pub fn reference(&self) -> &Reference {
        &self.reference
    }

    /// The pinned manifest digest, if any.
    pub fn digest(&self) -> Option<&str> {
        self.reference.digest()
    }

    /// `host[:port]`, as credentials are keyed.
    pub fn registry(&self) -> &str {
        self.reference.registry()
    }

    /// The same repository at `digest`.
    pub fn at(&self, digest: &str) -> Reference {
        Reference::with_digest(
            self.reference.registry().to_string(),
            self.reference.repository().to_string(),
            digest.to_string(),
        )
    }
}

impl fmt::Display for OciRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for OciRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn references_name_a_registry_and_a_tag_or_a_digest() {
        let r = OciRef::parse(&format!("oci://127.0.0.1:5000/plugins/healthy:1.0@{D}")).unwrap();
        assert_eq!((r.registry(), r.digest()), ("127.0.0.1:5000", Some(D)));
        assert_eq!(r.reference().repository(), "plugins/healthy");
        let r = OciRef::parse("oci://ghcr.io/org/healthy:stable").unwrap();
        assert_eq!((r.registry(), r.digest()), ("ghcr.io", None));

        for (text, why) in [
            ("ghcr.io/org/healthy:1", "expected oci://"),
            ("oci://healthy:1", "name the registry host"),
            ("oci://org/healthy:1", "name the registry host"),
            ("oci://ghcr.io/org/healthy@md5:abc", "sha256:<64 hex>"),
            ("oci://ghcr.io/org/healthy@sha256:ABC", "64 lower-case hex"),
        ] {
            let err = OciRef::parse(text).unwrap_err().to_string();
            assert!(err.contains(why), "{text}: {err}");
        }
    }
}
