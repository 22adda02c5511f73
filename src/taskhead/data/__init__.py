"""Data readers, validation helpers and collators."""
