"""labelloop."""
