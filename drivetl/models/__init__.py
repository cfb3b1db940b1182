"""drivetl.models."""
