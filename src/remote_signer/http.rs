//! The HTTP side of the protocol as octez's signer serves it: routes,
//! query strings, the JSON bodies of requests and replies. Pure: no I/O.

use crate::keys::{self, PublicKey};
use crate::watermark::KeyHash;

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `POST /keys/<pkh>`: sign.
    Sign(KeyHash),
    /// `GET /keys/<pkh>`: the public key.
    PublicKey(KeyHash),
    /// `GET /authorized_keys`.
    AuthorizedKeys,
    /// `GET /known_keys`.
    KnownKeys,
    /// `GET /bls_prove_possession/<pkh>`.
    ProvePossession(KeyHash),
    /// `GET /healthz`.
    Healthz,
}

/// Why a request could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// No such path.
    #[error("no such path: {0}")]
    NotFound(String),
    /// The path exists, with other methods.
    #[error("method {method} not allowed on {path}")]
    MethodNotAllowed {
        /// The method used.
        method: String,
        /// The path.
        path: String,
    },
    /// Anything else wrong with the request (400).
    #[error("{0}")]
    BadRequest(String),
}

fn key_hash(s: &str) -> Result<KeyHash, HttpError> {
    s.parse().map_err(|_| {
        let hint = if s.starts_with("tz5") {
            " (tz5 keys cannot be consensus keys)"
        } else {
            ""
        };
        HttpError::BadRequest(format!("{s:?} is not a tz1..tz4 key hash{hint}"))
    })
}

/// Route `method path` (the path without its query).
pub fn route(method: &str, path: &str) -> Result<Route, HttpError> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (route, allowed): (Route, &[&str]) = match segments.as_slice() {
        ["keys", pkh] => {
            let k = key_hash(pkh)?;
            match method {
                "POST" => (Route::Sign(k), &["POST", "GET"]),
                _ => (Route::PublicKey(k), &["POST", "GET"]),
            }
        }
        ["authorized_keys"] => (Route::AuthorizedKeys, &["GET"]),
        ["known_keys"] => (Route::KnownKeys, &["GET"]),
        ["bls_prove_possession", pkh] => (Route::ProvePossession(key_hash(pkh)?), &["GET"]),
        ["healthz"] => (Route::Healthz, &["GET"]),
        _ => return Err(HttpError::NotFound(path.to_string())),
    };
    if allowed.contains(&method) {
        Ok(route)
    } else {
        Err(HttpError::MethodNotAllowed {
            method: method.to_string(),
            path: path.to_string(),
        })
    }
}

/// The query parameters of a sign request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SignQuery {
    /// The raw authentication signature (`authentication=<b58>`).
    pub authentication: Option<Vec<u8>>,
    /// The signature version (`version=N`).
    pub version: Option<u8>,
}

fn percent_decode(s: &str) -> Result<String, HttpError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| {
                        HttpError::BadRequest("bad percent-encoding in the query".into())
                    })?;
                out.push(hex);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| HttpError::BadRequest("the query is not UTF-8".into()))
}

/// Parse the query of `POST /keys/<pkh>`. Unknown parameters are refused
/// (a typo must not silently drop the authentication).
pub fn parse_sign_query(query: Option<&str>) -> Result<SignQuery, HttpError> {
    let mut q = SignQuery::default();
    let Some(query) = query.filter(|q| !q.is_empty()) else {
        return Ok(q);
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value)?;
        match name {
            "authentication" => {
                if q.authentication.is_some() {
                    return Err(HttpError::BadRequest("authentication given twice".into()));
                }
                let sig = keys::signature_from_b58(&value)
                    .map_err(|e| HttpError::BadRequest(format!("authentication: {e}")))?;
                q.authentication = Some(sig);
            }
            "version" => {
                if q.version.is_some() {
                    return Err(HttpError::BadRequest("version given twice".into()));
                }
                let v: u8 = value.parse().map_err(|_| {
                    HttpError::BadRequest(format!("version {value:?} is not a number"))
                })?;
                q.version = Some(v);
            }
            other => {
                return Err(HttpError::BadRequest(format!(
                    "unknown query parameter {other:?}"
                )))
            }
        }
    }
    Ok(q)
}

/// Decode lowercase or uppercase hex.
pub fn decode_hex(s: &str) -> Result<Vec<u8>, HttpError> {
    if !s.len().is_multiple_of(2) {
        return Err(HttpError::BadRequest(format!(
            "odd number of hex digits ({})",
            s.len()
        )));
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    s.as_bytes()
        .chunks(2)
        .enumerate()
        .map(|(i, p)| match (digit(p[0]), digit(p[1])) {
            (Some(h), Some(l)) => Ok(h << 4 | l),
            _ => Err(HttpError::BadRequest(format!(
                "not a hex digit at position {}",
                2 * i
            ))),
        })
        .collect()
}

/// Lowercase hex.
pub fn encode_hex(bytes: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(D[(b >> 4) as usize] as char);
        s.push(D[(b & 15) as usize] as char);
    }
    s
}

/// The body of a sign request: a JSON string of hex (magic byte first).
pub fn parse_sign_body(body: &[u8]) -> Result<Vec<u8>, HttpError> {
    let s: String = serde_json::from_slice(body).map_err(|e| {
        HttpError::BadRequest(format!("the body must be a JSON string of hex: {e}"))
    })?;
    let bytes = decode_hex(&s)?;
    if bytes.is_empty() {
        return Err(HttpError::BadRequest("nothing to sign (empty data)".into()));
    }
    Ok(bytes)
}

/// The body a client sends to sign `data`.
pub fn sign_body(data: &[u8]) -> String {
    format!("\"{}\"", encode_hex(data))
}

fn object(name: &str, value: serde_json::Value) -> String {
    let mut m = serde_json::Map::new();
    m.insert(name.into(), value);
    serde_json::Value::Object(m).to_string()
}

/// `{"signature": "<b58>"}`.
pub fn signature_reply(b58: &str) -> String {
    object("signature", b58.into())
}

/// `{"public_key": "<b58>"}`.
pub fn public_key_reply(key: &PublicKey) -> String {
    object("public_key", key.to_string().into())
}

/// `{}` when the signer does not require authentication, else
/// `{"authorized_keys": [...]}`.
pub fn authorized_keys_reply(keys: Option<&[KeyHash]>) -> String {
    match keys {
        None => "{}".into(),
        Some(k) => object(
            "authorized_keys",
            k.iter()
                .map(|h| serde_json::Value::String(h.to_string()))
                .collect(),
        ),
    }
}

/// `{"known_keys": [...]}`.
pub fn known_keys_reply(keys: &[KeyHash]) -> String {
    object(
        "known_keys",
        keys.iter()
            .map(|h| serde_json::Value::String(h.to_string()))
            .collect(),
    )
}

/// The query of `GET /bls_prove_possession/<pkh>`: `bls_pk=<BLpk>`.
pub fn parse_pop_query(query: Option<&str>) -> Result<Option<Vec<u8>>, HttpError> {
    let mut pk = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "bls_pk" if pk.is_none() => {
                let key: PublicKey = percent_decode(value)?
                    .parse()
                    .map_err(|e| HttpError::BadRequest(format!("bls_pk: {e}")))?;
                if key.curve() != crate::watermark::Curve::Bls {
                    return Err(HttpError::BadRequest("bls_pk is not a BLpk key".into()));
                }
                pk = Some(key.as_bytes().to_vec());
            }
            other => {
                return Err(HttpError::BadRequest(format!(
                    "unexpected query parameter {other:?}"
                )))
            }
        }
    }
    Ok(pk)
}

/// `{"bls_prove_possession": "BLsig..."}`.
pub fn proof_of_possession_reply(b58: &str) -> String {
    object("bls_prove_possession", b58.into())
}

/// `GET /healthz`: `{"ready": bool, ...detail}`.
pub fn health_reply(ready: bool, detail: &str) -> String {
    let mut m = serde_json::Map::new();
    m.insert("ready".into(), ready.into());
    m.insert("detail".into(), detail.into());
    serde_json::Value::Object(m).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PKH: &str = "tz1KqTpEZ7Yob7QbPE4Hy4Wo8fHG8LhKxZSx";

    #[test]
    fn routes() {
        let k: KeyHash = PKH.parse().unwrap();
        assert_eq!(route("POST", &format!("/keys/{PKH}")), Ok(Route::Sign(k)));
        assert_eq!(
            route("GET", &format!("/keys/{PKH}")),
            Ok(Route::PublicKey(k))
        );
        assert_eq!(route("GET", "/authorized_keys"), Ok(Route::AuthorizedKeys));
        assert_eq!(route("GET", "/known_keys"), Ok(Route::KnownKeys));
        assert_eq!(route("GET", "/healthz"), Ok(Route::Healthz));
        assert_eq!(
            route("GET", &format!("/bls_prove_possession/{PKH}")),
            Ok(Route::ProvePossession(k))
        );
        assert!(matches!(route("GET", "/nope"), Err(HttpError::NotFound(_))));
        assert!(matches!(route("GET", "/keys"), Err(HttpError::NotFound(_))));
        assert!(matches!(
            route("DELETE", &format!("/keys/{PKH}")),
            Err(HttpError::MethodNotAllowed { .. })
        ));
        assert!(matches!(
            route("POST", "/authorized_keys"),
            Err(HttpError::MethodNotAllowed { .. })
        ));
        assert!(matches!(
            route("POST", "/keys/tz1nope"),
            Err(HttpError::BadRequest(_))
        ));
    }

    #[test]
    fn sign_queries() {
        assert_eq!(parse_sign_query(None), Ok(SignQuery::default()));
        assert_eq!(parse_sign_query(Some("")), Ok(SignQuery::default()));
        assert_eq!(
            parse_sign_query(Some("version=3")).unwrap().version,
            Some(3)
        );
        let sig =
            crate::keys::signature_to_b58(crate::watermark::Curve::Ed25519, &[7; 64]).unwrap();
        let q = parse_sign_query(Some(&format!("authentication={sig}&version=0"))).unwrap();
        assert_eq!(q.authentication, Some(vec![7; 64]));
        assert_eq!(q.version, Some(0));
        assert!(parse_sign_query(Some("version=x")).is_err());
        assert!(parse_sign_query(Some("version=300")).is_err());
        assert!(parse_sign_query(Some("version=0&version=1")).is_err());
        assert!(parse_sign_query(Some("authentication=edsigXXXX")).is_err());
        assert!(parse_sign_query(Some("authentcation=x")).is_err());
    }

    #[test]
    fn bodies() {
        assert_eq!(parse_sign_body(br#""11aaFF""#), Ok(vec![0x11, 0xaa, 0xff]));
        assert_eq!(sign_body(&[0x13, 0x0a]), r#""130a""#);
        for bad in [
            &b"11aa"[..],
            b"\"1\"",
            b"\"zz\"",
            b"\"\"",
            b"{\"a\":1}",
            b"\"11aa",
        ] {
            assert!(
                matches!(parse_sign_body(bad), Err(HttpError::BadRequest(_))),
                "{bad:?}"
            );
        }
        assert!(parse_sign_body(b"\"abc\"")
            .unwrap_err()
            .to_string()
            .contains("odd"));
    }

    #[test]
    fn replies() {
        assert_eq!(signature_reply("edsigX"), r#"{"signature":"edsigX"}"#);
        let pk: PublicKey = "edpkuBknW28nW72KG6RoHtYW7p12T6GKc7nAbwYX5m8Wd9sDVC9yav"
            .parse()
            .unwrap();
        assert_eq!(
            public_key_reply(&pk),
            r#"{"public_key":"edpkuBknW28nW72KG6RoHtYW7p12T6GKc7nAbwYX5m8Wd9sDVC9yav"}"#
        );
        assert_eq!(authorized_keys_reply(None), "{}");
        let k: KeyHash = PKH.parse().unwrap();
        assert_eq!(
            authorized_keys_reply(Some(&[k])),
            format!(r#"{{"authorized_keys":["{PKH}"]}}"#)
        );
        assert_eq!(
            known_keys_reply(&[k]),
            format!(r#"{{"known_keys":["{PKH}"]}}"#)
        );
    }
}
