"""drivetl.data."""
