//! Configuration errors: each names the file, and the line or field.

use std::path::{Path, PathBuf};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("{}: cannot read: {source}", file.display())]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}:{column}: {message}{}", file.display(), excerpt.as_ref().map(|e| format!("\n  {line} | {e}")).unwrap_or_default())]
    Parse {
        file: PathBuf,
        line: usize,
        column: usize,
        message: String,
        /// The offending line, so the key is in view.
        excerpt: Option<String>,
    },
    #[error("{}: {field}: {message}", file.display())]
    Invalid {
        file: PathBuf,
        field: String,
        message: String,
    },
}

impl ConfigError {
    /// A TOML or schema error, placed at its line and column.
    pub(super) fn parse(file: &Path, text: &str, e: &toml::de::Error) -> ConfigError {
        let offset = e.span().map(|s| s.start).unwrap_or(0).min(text.len());
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let column = offset - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
        let excerpt = text
            .lines()
            .nth(line - 1)
            .map(|l| l.trim_end().to_string())
            .filter(|l| !l.is_empty());
        ConfigError::Parse {
            file: file.to_path_buf(),
            line,
            column,
            message: e.message().trim().to_string(),
            excerpt,
        }
    }
}
