//! The one error type of the core. Every message names what is wrong (file, tensor,
//! field, expected and found values) so that the Python layer can pass it on as is.

use std::fmt;
use std::path::Path;

/// What went wrong, with the context a user needs to fix it.
#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// A configuration value is out of range or inconsistent.
    Config(String),
    /// A tensor has the wrong shape: `what` names it.
    Shape {
        what: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    /// A weights file is malformed: `path` names the file, `detail` what is wrong in it.
    Format { path: String, detail: String },
    /// Reading or writing a file failed.
    Io { path: String, detail: String },
    /// An argument of a call is invalid (token id out of range, bad temperature, ...).
    Value(String),
    /// Text cannot be encoded or ids cannot be decoded.
    Tokenizer(String),
    /// Numbers went non-finite (NaN or infinity) where they must not.
    NonFinite(String),
    /// A buffer of `bytes` bytes for `what` could not be allocated.
    OutOfMemory { bytes: u128, what: String },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn config(msg: impl Into<String>) -> Self {
        Error::Config(msg.into())
    }

    pub fn value(msg: impl Into<String>) -> Self {
        Error::Value(msg.into())
    }

    pub fn tokenizer(msg: impl Into<String>) -> Self {
        Error::Tokenizer(msg.into())
    }

    pub fn format(path: &Path, detail: impl Into<String>) -> Self {
        Error::Format {
            path: path.display().to_string(),
            detail: detail.into(),
        }
    }

    pub fn io(path: &Path, err: &std::io::Error) -> Self {
        let detail = match err.kind() {
            std::io::ErrorKind::NotFound => "no such file".to_string(),
            std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
            _ => err.to_string(),
        };
        Error::Io {
            path: path.display().to_string(),
            detail,
        }
    }

    pub fn shape(what: impl Into<String>, expected: &[usize], found: &[usize]) -> Self {
        Error::Shape {
            what: what.into(),
            expected: expected.to_vec(),
            found: found.to_vec(),
        }
    }

    /// Adds the file a lower-level error came from, for errors that do not name one yet.
    pub fn in_file(self, path: &Path) -> Self {
        match self {
            Error::Format { .. } | Error::Io { .. } => self,
            other => Error::format(path, other.to_string()),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(msg) => write!(f, "invalid config: {msg}"),
            Error::Shape {
                what,
                expected,
                found,
            } => write!(
                f,
                "shape mismatch for {what}: expected {expected:?}, found {found:?}"
            ),
            Error::Format { path, detail } => write!(f, "{path}: {detail}"),
            Error::Io { path, detail } => write!(f, "{path}: {detail}"),
            Error::Value(msg) => write!(f, "{msg}"),
            Error::Tokenizer(msg) => write!(f, "{msg}"),
            Error::NonFinite(msg) => write!(f, "{msg}"),
            Error::OutOfMemory { bytes, what } => write!(
                f,
                "cannot allocate {bytes} bytes ({:.2} GiB) for {what}: not enough memory",
                *bytes as f64 / (1u64 << 30) as f64
            ),
        }
    }
}

impl std::error::Error for Error {}
