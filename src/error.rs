//! Errors of the library. Messages name the file, node or tensor at fault.

use std::path::{Path, PathBuf};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The model is malformed; the message names the node or tensor.
    #[error("{}{message}", file.as_ref().map(|f| format!("{}: ", f.display())).unwrap_or_default())]
    Invalid {
        file: Option<PathBuf>,
        message: String,
    },
    /// A feature the model uses that onnxq does not support.
    #[error("{0}")]
    Unsupported(String),
}

impl Error {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::Invalid {
            file: None,
            message: message.into(),
        }
    }
    /// Attaches the file name to an error that lacks one.
    pub fn in_file(self, path: &Path) -> Self {
        match self {
            Error::Invalid {
                file: None,
                message,
            } => Error::Invalid {
                file: Some(path.to_path_buf()),
                message,
            },
            other => other,
        }
    }
}
