//! Signed exports: an Ed25519 signature over the manifest line.
//!
//! The hash chain proves that nothing was changed relative to the head hashes, but whoever can
//! rewrite a whole file can recompute every hash and the manifest with it. The manifest lists
//! every stream's head hash and every blob digest, so a signature over the manifest's canonical
//! line, checked against a public key the auditor got out of band, proves who published the
//! whole file. The signature is the file's last line:
//! `{"algorithm":"ed25519","kind":"signature","public_key":"<hex>","signature":"<hex>"}`.
//!
//! Key files are one line of lowercase hex: the 32-byte secret seed (`KEYFILE`, written with
//! mode 0600) and the 32-byte public key (`KEYFILE.pub`).

use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer, Verifier};
pub use ed25519_dalek::{SigningKey, VerifyingKey};
use serde_json::{Map, Value};

/// The only signature algorithm this build writes and reads.
pub const ALGORITHM: &str = "ed25519";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write key file {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: a key file holds exactly 64 hex digits (32 bytes) on one line")]
    Malformed { path: PathBuf },
    #[error("{path}: not a valid Ed25519 public key")]
    NotAPublicKey {
        path: PathBuf,
        #[source]
        source: ed25519_dalek::SignatureError,
    },
    #[error("the operating system's random source failed: {0}")]
    Random(getrandom::Error),
    #[error("{0} exists already; refusing to overwrite a key")]
    Exists(PathBuf),
}

/// A freshly generated key pair, as written by [`write_key_pair`].
pub struct KeyPair {
    pub secret: SigningKey,
    pub public: VerifyingKey,
}

/// Generates a key pair from the operating system's random source.
pub fn generate() -> Result<KeyPair, KeyError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(KeyError::Random)?;
    let secret = SigningKey::from_bytes(&seed);
    let public = secret.verifying_key();
    Ok(KeyPair { secret, public })
}

/// The public key file that goes with a secret key file: `KEYFILE.pub`.
pub fn public_key_path(secret: &Path) -> PathBuf {
    let mut name = secret.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

/// Writes `path` (the secret seed, mode 0600, never overwritten) and `path.pub`.
pub fn write_key_pair(path: &Path, pair: &KeyPair) -> Result<PathBuf, KeyError> {
    use std::io::Write;
    let public_path = public_key_path(path);
    for existing in [path, public_path.as_path()] {
        if existing.exists() {
            return Err(KeyError::Exists(existing.to_owned()));
        }
    }
    let write_err = |path: &Path| {
        let path = path.to_owned();
        move |source| KeyError::Write { path, source }
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(write_err(path))?;
    writeln!(file, "{}", hex(pair.secret.as_bytes())).map_err(write_err(path))?;
    file.sync_all().map_err(write_err(path))?;
    std::fs::write(&public_path, format!("{}\n", hex(pair.public.as_bytes())))
        .map_err(write_err(&public_path))?;
    Ok(public_path)
}

/// Reads a secret key file written by [`write_key_pair`].
pub fn read_signing_key(path: &Path) -> Result<SigningKey, KeyError> {
    Ok(SigningKey::from_bytes(&read_key_bytes(path)?))
}

/// Reads a public key file (`KEYFILE.pub`).
pub fn read_verifying_key(path: &Path) -> Result<VerifyingKey, KeyError> {
    let bytes = read_key_bytes(path)?;
    VerifyingKey::from_bytes(&bytes).map_err(|source| KeyError::NotAPublicKey {
        path: path.to_owned(),
        source,
    })
}

fn read_key_bytes(path: &Path) -> Result<[u8; 32], KeyError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_hex32(text.trim_end_matches('\n')).ok_or_else(|| KeyError::Malformed {
        path: path.to_owned(),
    })
}

/// The signature line (without its newline) over `manifest_line`, the manifest's canonical
/// bytes without their newline.
pub fn signature_line(manifest_line: &[u8], key: &SigningKey) -> Map<String, Value> {
    let signature = key.sign(manifest_line);
    let mut line = Map::new();
    line.insert("kind".into(), Value::String("signature".into()));
    line.insert("algorithm".into(), Value::String(ALGORITHM.into()));
    line.insert(
        "public_key".into(),
        Value::String(hex(key.verifying_key().as_bytes())),
    );
    line.insert(
        "signature".into(),
        Value::String(hex(&signature.to_bytes())),
    );
    line
}

/// Why a signature line does not check out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureProblem {
    /// Not exactly `kind`, `algorithm`, `public_key`, `signature`, or not hex of the right size.
    Malformed(String),
    /// The signature does not verify over the manifest line with the line's own public key.
    Invalid,
}

/// Checks a signature line over `manifest_line`; returns the signer's public key.
pub fn check_signature_line(
    line: &Map<String, Value>,
    manifest_line: &[u8],
) -> Result<VerifyingKey, SignatureProblem> {
    let mut keys: Vec<&str> = line.keys().map(String::as_str).collect();
    keys.sort_unstable();
    if keys != ["algorithm", "kind", "public_key", "signature"] {
        return Err(SignatureProblem::Malformed(
            "a signature line has exactly kind, algorithm, public_key and signature".into(),
        ));
    }
    let algorithm = line
        .get("algorithm")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if algorithm != ALGORITHM {
        return Err(SignatureProblem::Malformed(format!(
            "algorithm `{algorithm}` is not supported (this build reads {ALGORITHM})"
        )));
    }
    let public = line
        .get("public_key")
        .and_then(Value::as_str)
        .and_then(parse_hex32)
        .and_then(|b| VerifyingKey::from_bytes(&b).ok())
        .ok_or_else(|| {
            SignatureProblem::Malformed("public_key is not 64 hex digits of an Ed25519 key".into())
        })?;
    let signature = line
        .get("signature")
        .and_then(Value::as_str)
        .and_then(parse_hex64)
        .map(|b| Signature::from_bytes(&b))
        .ok_or_else(|| SignatureProblem::Malformed("signature is not 128 hex digits".into()))?;
    public
        .verify(manifest_line, &signature)
        .map_err(|_| SignatureProblem::Invalid)?;
    Ok(public)
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

fn parse_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != N * 2
        || !text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[i * 2..i * 2 + 2], 16).ok()?;
    }
    Some(out)
}

fn parse_hex32(text: &str) -> Option<[u8; 32]> {
    parse_hex::<32>(text)
}

fn parse_hex64(text: &str) -> Option<[u8; 64]> {
    parse_hex::<64>(text)
}
