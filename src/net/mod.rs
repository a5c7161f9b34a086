//! Client connections to PostgreSQL.
