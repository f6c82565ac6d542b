"""What a gate reads: audit sets and models."""
