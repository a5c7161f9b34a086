//! What a copy in key-range chunks shares with the stream that runs beside
//! it: the key a table is copied by ([`key`]), and the book of what every
//! destination shard holds of it ([`book`]). The copy writes the book; the
//! stream decides each change by it.

pub(crate) mod book;
pub(crate) mod key;
