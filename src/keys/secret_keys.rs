//! octez-client's `<base_dir>/secret_keys` file: a JSON list of
//! `{"name": alias, "value": uri}`, the uri being `unencrypted:<b58>`,
//! `encrypted:<b58>`, or a remote/ledger locator this module does not load.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use zeroize::Zeroizing;

use crate::keys::software::SoftwareKey;
use crate::keys::{encrypted, KeyError};

#[derive(Deserialize)]
struct Entry {
    name: String,
    value: String,
}

/// The entries of a `secret_keys` file, not yet decoded (the secrets stay
/// in this struct, zeroed on drop, until [`load`](Self::load)).
pub struct SecretKeysFile {
    path: PathBuf,
    entries: Vec<(String, Zeroizing<String>)>,
}

impl std::fmt::Debug for SecretKeysFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretKeysFile")
            .field("path", &self.path)
            .field("aliases", &self.aliases().collect::<Vec<_>>())
            .finish()
    }
}

impl SecretKeysFile {
    /// Read and parse the file.
    pub fn read(path: impl AsRef<Path>) -> Result<Self, KeyError> {
        let path = path.as_ref().to_path_buf();
        let text =
            Zeroizing::new(
                std::fs::read_to_string(&path).map_err(|source| KeyError::Io {
                    path: path.clone(),
                    source,
                })?,
            );
        Self::parse(&text, path)
    }

    /// Parse the text of a file that was read from `path`.
    pub fn parse(text: &str, path: PathBuf) -> Result<Self, KeyError> {
        let entries: Vec<Entry> = serde_json::from_str(text).map_err(|e| KeyError::Damaged {
            path: path.clone(),
            // serde_json's message can quote the offending value, which may
            // be a secret key: only the class and the position.
            detail: redacted(&e),
        })?;
        let mut seen = std::collections::BTreeSet::new();
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            if !seen.insert(e.name.clone()) {
                return Err(KeyError::Damaged {
                    path,
                    detail: format!("alias {:?} appears twice", e.name),
                });
            }
            out.push((e.name, Zeroizing::new(e.value)));
        }
        Ok(SecretKeysFile { path, entries: out })
    }

    /// The aliases in file order.
    pub fn aliases(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(n, _)| n.as_str())
    }

    /// Load the key named `alias`. `password` is asked for only when the
    /// key is encrypted; it returns the password bytes or why there is none.
    pub fn load(
        &self,
        alias: &str,
        password: impl FnOnce() -> Result<Zeroizing<Vec<u8>>, KeyError>,
    ) -> Result<SoftwareKey, KeyError> {
        let (_, uri) = self
            .entries
            .iter()
            .find(|(n, _)| n == alias)
            .ok_or_else(|| KeyError::NoSuchAlias {
                alias: alias.to_string(),
                path: self.path.clone(),
            })?;
        let in_alias = |e: KeyError| KeyError::InAlias {
            alias: alias.to_string(),
            source: Box::new(e),
        };
        let (scheme, rest) = uri.split_once(':').ok_or_else(|| {
            in_alias(KeyError::Damaged {
                path: self.path.clone(),
                detail: "the value is not a secret key URI (scheme:...)".into(),
            })
        })?;
        match scheme {
            "unencrypted" => rest.parse().map_err(in_alias),
            "encrypted" => {
                let pw = password().map_err(in_alias)?;
                encrypted::decrypt(rest, &pw).map_err(in_alias)
            }
            other => Err(in_alias(KeyError::UnsupportedUri {
                scheme: other.to_string(),
            })),
        }
    }
}

/// What is wrong with a `secret_keys` file, without any of its text.
fn redacted(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let class = match e.classify() {
        Category::Io => "unreadable",
        Category::Syntax => "not JSON",
        Category::Data => "not a list of {name, value} entries",
        Category::Eof => "truncated",
    };
    format!("{class} at line {}, column {}", e.line(), e.column())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_damaged_file_error_never_quotes_its_text() {
        let secret = "edsk3QoqBuvdamxouPhin7swCvkQNgq4jP5KZPbwWNnwdZpSpJiEbq";
        for text in [
            format!("[\"{secret}\"]"),
            format!("[{{\"name\": \"a\", \"value\": [\"{secret}\"]}}]"),
            format!("[{{\"name\": \"{secret}\" \"value\": 1}}]"),
        ] {
            let e = SecretKeysFile::parse(&text, PathBuf::from("secret_keys")).unwrap_err();
            let msg = e.to_string();
            assert!(matches!(e, KeyError::Damaged { .. }), "{msg}");
            assert!(!msg.contains("edsk"), "{msg}");
            assert!(msg.contains("line 1"), "{msg}");
        }
    }
}
