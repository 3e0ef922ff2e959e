"""The service layer: every request the CLI (or a later REST API) makes, validated and stored."""
