"""The diagnostic model: features read from the curated schema, a Keras network, and its export."""
