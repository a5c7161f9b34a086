//! PostgreSQL-compatible hash partitioning.
